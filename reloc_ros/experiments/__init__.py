"""Experiments: studies that measure the method, not steps of using it (their figures are in docs/RESULTS.md).

Modules:
    bench    ``reloc bench``: per-stage latency, learned vs SIFT, resolutions, INT8, map-size scaling
    ablate   ``reloc ablate``: the seed methods' variants side by side
"""
