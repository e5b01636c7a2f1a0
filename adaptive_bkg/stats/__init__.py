"""Statistics of importance sampling: keep policies and weights, run metrics and speedups,
calibration. Pure numpy/scipy.

Layer: imports only `errors`, `physics`, `config` and `formats` (docs/architecture.md).
"""
