"""Bundled reference models (installed as the package ``edge.models``)."""
