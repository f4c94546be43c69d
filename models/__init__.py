"""Bundled reference models (installed as the package ``edge_seg.models``)."""
