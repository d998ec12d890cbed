"""The fixed reference workload every benchmark prints beside its own figures, so a reader can compare machines:
``np.cumsum(x * x)`` over 10⁶ standard normals (seed 0), best of ``repeat`` runs, in milliseconds."""

from __future__ import annotations

import time

import numpy as np


def reference_ms(repeat: int = 50) -> float:
    """Best wall time of the reference workload, ms (one core)."""
    x = np.random.default_rng(0).normal(size=1_000_000)
    np.cumsum(x * x)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        np.cumsum(x * x)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def describe(ms: float) -> str:
    return f"reference workload (cumsum of 1e6 squares): {ms:.2f} ms"
