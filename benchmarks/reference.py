"""What the benchmarks share: the fixed reference workload every benchmark prints beside its own figures, so a reader
can compare machines (``np.cumsum(x * x)`` over 10⁶ standard normals (seed 0), best of ``repeat`` runs, in
milliseconds), and the real market bars they run on."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_market_bars(perp: bool = True) -> pd.DataFrame:
    """The hourly bars of the real 2017–2026 BTCUSDT spot data and funding (and the perp's own bars unless
    ``perp`` is False), as the chain builds them (``../shared/data``)."""
    from btc_assets.ingestion import build_market_bars, load_funding, load_ohlcv, load_perp_ohlcv

    ohlcv = load_ohlcv([DATA / "btcusdt_1h.parquet"]).frame
    funding = load_funding([DATA / "btcusdt_funding_8h.parquet"]).frame
    if not perp:
        return build_market_bars(ohlcv, funding).bars
    return build_market_bars(ohlcv, funding, load_perp_ohlcv([DATA / "btcusdt_perp_1h.parquet"]).frame).bars


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
