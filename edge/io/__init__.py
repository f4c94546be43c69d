"""Frames in and results out: sources (cameras, files, streams, the demo clip; ``sources``,
``readers``), sinks (video files, PNG folders; ``sinks``, with the format table and the H.264
writer in ``video``) and atomic publishing of every file the project writes (``publish``)."""
