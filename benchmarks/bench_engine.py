"""One mixture-of-experts backtest over the whole real 2017–2026 hourly BTC history (target: < 2 ms, and within 2×
of the memory-bandwidth floor of the arrays it reads).

Inputs come from the real chain: the grid, GARCH forecasts, a (reduced-iteration) regime fit and the experts with
default parameters. Times ``backtest_score`` (scalars of one book), ``run_portfolio`` (full per-bar frame) and
``backtest_scores`` with 16 books side by side (what the random search calls, per book) after a warm-up, best and
median of 200 (50, 30) runs, on one core.

Memory-bandwidth floor: the bytes of every per-bar array the kernel reads (the ``BookInputs``: prices, funding,
tradable flags, the expert and probability matrices, both volatilities) divided by this machine's streaming read
bandwidth on one core, measured in the same run (a sum over a 512 MB array, far larger than any cache, best of 5).
No backtest can read its inputs from memory faster than that; the kernel's time over the floor says how much is
arithmetic and the sequential equity loop rather than reading data.

Run: python3 benchmarks/bench_engine.py   (needs ../shared/data beside the checkout)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
from reference import describe, real_market_bars, reference_ms

from btc_assets import experts
from btc_assets.config import EXPERTS, get_profile
from btc_assets.portfolio import backtest_score, backtest_scores, run_portfolio
from btc_assets.portfolio.tables import engine_params, prepare_inputs
from btc_assets.regimes import compute_regimes
from btc_assets.volatility import compute_volatility


def timed(fn: Callable[[], object], repeat: int = 200) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3, float(np.median(times)) * 1e3


def read_bandwidth_gbs(megabytes: int = 512, repeat: int = 5) -> float:
    """Streaming read bandwidth of one core, GB/s: best of ``repeat`` sums over an array far larger than the caches."""
    x = np.ones(megabytes * 2**20 // 8)
    best = min(timed(lambda: x.sum(), repeat=repeat))
    return x.nbytes / (best * 1e-3) / 1e9


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    profile = get_profile("full")
    bars = real_market_bars()
    vol = compute_volatility(bars, profile.schedule, profile.volatility)
    regimes = compute_regimes(bars, vol, profile.schedule, replace(profile.regimes, n_restarts=1, n_iter=15))
    signals = experts.expert_positions(experts.BarArrays.from_market_bars(bars))
    table = pd.DataFrame(signals, columns=list(experts.EXPERT_NAMES))
    inputs = prepare_inputs(bars, vol, regimes.probabilities, table, profile.portfolio)
    params = engine_params(profile.portfolio).to_array()
    gating = np.asarray(profile.portfolio.gating, dtype=np.float64)
    args = (inputs.book, gating, params, EXPERTS.index("carry"))
    score_best, score_median = timed(lambda: backtest_score(*args, check=False))
    # the random search's path: 16 books side by side, each with its own gating and expert column, per book
    rng = np.random.default_rng(0)
    books = 16
    gatings = np.stack([gating * rng.uniform(0.5, 1.5, gating.shape) for _ in range(books)])
    column = np.nan_to_num(inputs.book.experts[:, 0])[None, :] * rng.uniform(-1.0, 1.0, (books, 1))
    many = np.stack([params] * books)

    def side_by_side() -> None:
        backtest_scores(inputs.book, gatings, many, args[3], column=column, column_at=0, check=False)

    many_best, many_median = (t / books for t in timed(side_by_side, repeat=30))
    frame_best, frame_median = timed(lambda: run_portfolio(*args), repeat=50)
    ref_best = reference_ms()  # a fixed numpy workload: the machine's speed
    read = sum(a.nbytes for a in inputs.book)
    bandwidth = read_bandwidth_gbs()
    floor_ms = read / (bandwidth * 1e9) * 1e3
    print(f"bars: {len(bars):,}; experts {len(EXPERTS)}; regimes K={gating.shape[0]}")
    print(f"backtest_score (optimiser path): best {score_best:.2f} ms, median {score_median:.2f} ms (target < 2 ms)")
    print(
        f"memory-bandwidth floor: {read / 1e6:.1f} MB of per-bar inputs at {bandwidth:.1f} GB/s (one core, streaming "
        f"read) = {floor_ms:.2f} ms; backtest_score = {score_best / floor_ms:.2f}× the floor (target ≤ 2×)"
    )
    print(f"run_portfolio (per-bar frame):   best {frame_best:.2f} ms, median {frame_median:.2f} ms")
    print(
        f"backtest_scores, {books} books side by side (the random search's path): best {many_best:.2f} ms, median "
        f"{many_median:.2f} ms per book"
    )
    print(f"{describe(ref_best)}; backtest_score = {score_best / ref_best:.2f}× the reference")


if __name__ == "__main__":
    main()
