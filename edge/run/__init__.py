"""`edge-seg run`: the options and command (``command``), the capture -> infer -> render
loop (``loop``), the float-model drift check (``drift``) and the live statistics every
report, log line and ``/stats.json`` share (``stats``)."""
