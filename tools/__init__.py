"""Tools run by hand, neither benchmarks nor tests: ``arm64/`` (the runtime under arm64
emulation) and ``research/`` (diagnostics behind docs/experiments.md). Run from the
repository root, e.g. ``python -m tools.research.stride_ceiling --help``."""
