"""One mixture-of-experts backtest over the whole real 2017–2026 hourly BTC history (target: < 2 ms).

Inputs come from the real chain: the grid, GARCH forecasts, a (reduced-iteration) regime fit and the experts with
default parameters. Times ``backtest_score`` (scalars, what the optimiser calls) and ``run_portfolio`` (full
per-bar frame) after a warm-up, best and median of 200 runs, on one core.

Run: python3 benchmarks/bench_engine.py   (needs ../shared/data beside the checkout)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from reference import describe, reference_ms

from btc_assets import experts
from btc_assets.config import EXPERTS, get_profile
from btc_assets.ingestion import build_market_bars, load_funding, load_ohlcv, load_perp_ohlcv
from btc_assets.portfolio import backtest_score, run_portfolio
from btc_assets.portfolio.tables import engine_params, prepare_inputs
from btc_assets.regimes import compute_regimes
from btc_assets.volatility import compute_volatility

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(fn: Callable[[], object], repeat: int = 200) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3, float(np.median(times)) * 1e3


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    profile = get_profile("full")
    bars = build_market_bars(
        load_ohlcv([DATA / "btcusdt_1h.parquet"]).frame,
        load_funding([DATA / "btcusdt_funding_8h.parquet"]).frame,
        load_perp_ohlcv([DATA / "btcusdt_perp_1h.parquet"]).frame,
    ).bars
    vol = compute_volatility(bars, profile.schedule, profile.volatility)
    regimes = compute_regimes(bars, vol, profile.schedule, replace(profile.regimes, n_restarts=1, n_iter=15))
    signals = experts.expert_positions(experts.BarArrays.from_market_bars(bars))
    table = pd.DataFrame(signals, columns=list(experts.EXPERT_NAMES))
    inputs = prepare_inputs(bars, vol, regimes.probabilities, table, profile.portfolio)
    params = engine_params(profile.portfolio).to_array()
    gating = np.asarray(profile.portfolio.gating, dtype=np.float64)
    args = (inputs.book, gating, params, EXPERTS.index("carry"))
    score_best, score_median = timed(lambda: backtest_score(*args, check=False))
    frame_best, frame_median = timed(lambda: run_portfolio(*args), repeat=50)
    ref_best = reference_ms()  # a fixed numpy workload: the machine's speed
    print(f"bars: {len(bars):,}; experts {len(EXPERTS)}; regimes K={gating.shape[0]}")
    print(f"backtest_score (optimiser path): best {score_best:.2f} ms, median {score_median:.2f} ms (target < 2 ms)")
    print(f"run_portfolio (per-bar frame):   best {frame_best:.2f} ms, median {frame_median:.2f} ms")
    print(f"{describe(ref_best)}; backtest_score = {score_best / ref_best:.2f}× the reference")


if __name__ == "__main__":
    main()
