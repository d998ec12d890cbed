"""10,000-combination moving-average-crossover sweep: ``ma_sweep`` (beside this script) vs vectorbt, same run, one core.

Target (issue): our sweep at least 40x vectorbt's throughput (combinations per second).

Both sides: the real hourly BTCUSDT closes (rows as stored, gaps not filled), the same 10,000 (fast, slow) pairs,
long/flat, fees 10 bps of notional traded, signals at the close filled at that close (vectorbt defaults:
``price=close``, ``size=inf``, ``direction='longonly'``, ``init_cash=100``), ``freq='1h'``. Both compute the same
outputs per pair: total return, Sharpe (annualised, 8760 h/year), max drawdown, number of trades.

Everything is pinned to one core (CPU affinity {0}, NUMBA_NUM_THREADS=1; vectorbt runs on its numba engine,
whose kernels are serial; it is chunked by 500 pairs because a 76k x 10k boolean signal array is 760 MB each).
Numba compile time is excluded from both: each is warmed up once on a small slice before timing.

Run: python3 benchmarks/bench_ma_sweep.py [--chunk 500] [--vbt-pairs N]   (needs ../shared/data beside the checkout;
``--vbt-pairs`` times vectorbt on the first N pairs only and extrapolates — say so when quoting it.)
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from ma_sweep import ma_crossover_sweep, make_pairs  # benchmarks/ma_sweep.py, beside this script

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FEE_BPS = 10.0
FAST = np.arange(5, 205, 2)  # 100 fast windows: 5 .. 203 hours
SLOW = np.arange(210, 1210, 10)  # 100 slow windows: 210 .. 1200 hours (all > every fast: 10,000 valid pairs)


def vectorbt_sweep(close: pd.Series, fast: np.ndarray, slow: np.ndarray, chunk: int) -> pd.DataFrame:
    """vectorbt doing the same sweep, ``chunk`` pairs at a time (MAs, crossings, simulation, the four metrics)."""
    import vectorbt as vbt

    parts = []
    for lo in range(0, len(fast), chunk):
        f, s = fast[lo : lo + chunk], slow[lo : lo + chunk]
        fast_ma = vbt.MA.run(close, window=list(f), short_name="fast")
        slow_ma = vbt.MA.run(close, window=list(s), short_name="slow")
        entries = fast_ma.ma_crossed_above(slow_ma)
        exits = fast_ma.ma_crossed_below(slow_ma)
        pf = vbt.Portfolio.from_signals(close, entries, exits, fees=FEE_BPS * 1e-4, freq="1h")
        parts.append(
            pd.DataFrame(
                {
                    "fast": f,
                    "slow": s,
                    "total_return": pf.total_return().to_numpy(),
                    "sharpe": pf.sharpe_ratio().to_numpy(),
                    "max_drawdown": pf.max_drawdown().to_numpy(),
                    "n_trades": pf.trades.count().to_numpy(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=500, help="vectorbt pairs per chunk")
    parser.add_argument("--vbt-pairs", type=int, default=0, help="time vectorbt on the first N pairs only (0 = all)")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    import numba

    numba.set_num_threads(1)
    import vectorbt as vbt

    vbt.settings["engine"] = "numba"

    bars = pd.read_parquet(DATA / "btcusdt_1h.parquet", columns=["timestamp", "close"])
    close = pd.Series(bars["close"].to_numpy(dtype=np.float64), index=pd.DatetimeIndex(bars["timestamp"]))
    ff, ss = np.meshgrid(FAST, SLOW, indexing="ij")
    fast, slow = ff.ravel(), ss.ravel()
    grid = make_pairs(fast, slow)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(
        f"data: {len(close):,} hourly closes {close.index[0]:%Y-%m-%d} .. {close.index[-1]:%Y-%m-%d}; "
        f"{len(fast):,} pairs (fast {FAST[0]}..{FAST[-1]}, slow {SLOW[0]}..{SLOW[-1]}), fees {FEE_BPS:g} bps, "
        f"long/flat; cores {cores}, numba threads {numba.get_num_threads()}, vectorbt {vbt.__version__} "
        f"engine={vbt.settings['engine']}"
    )

    # Warm-up on a small slice: numba compilation (or cache loading) excluded from both timings.
    small = close.iloc[:2_000]
    ma_crossover_sweep(small.to_numpy(), [5, 7], [210, 220], fee_bps=FEE_BPS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vectorbt_sweep(small, np.array([5, 7]), np.array([210, 220]), args.chunk)
    print("numba compile time excluded: both sides warmed up once on a 2,000-bar slice")

    t0 = time.perf_counter()
    ours = ma_crossover_sweep(close.to_numpy(), grid=grid, fee_bps=FEE_BPS)
    t_ours = time.perf_counter() - t0

    n_vbt = len(fast) if args.vbt_pairs <= 0 else min(args.vbt_pairs, len(fast))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = vectorbt_sweep(close, fast[:n_vbt], slow[:n_vbt], args.chunk)
    t_vbt = time.perf_counter() - t0

    mine = ours.iloc[:n_vbt].reset_index(drop=True)
    assert (mine["fast"].to_numpy() == theirs["fast"].to_numpy()).all()
    assert (mine["slow"].to_numpy() == theirs["slow"].to_numpy()).all()
    print(f"parity over {n_vbt:,} pairs (ours - vectorbt), max |difference|:")
    for col in ("total_return", "sharpe", "max_drawdown"):
        diff = np.abs(mine[col].to_numpy() - theirs[col].to_numpy())
        rel = diff / np.maximum(np.abs(theirs[col].to_numpy()), 1e-12)
        print(f"  {col:13s} abs {diff.max():.3e}  rel {rel.max():.3e}")
    print(f"  n_trades      mismatches {(mine['n_trades'].to_numpy() != theirs['n_trades'].to_numpy()).sum()}")

    ours_rate = len(fast) / t_ours
    vbt_rate = n_vbt / t_vbt
    note = "" if n_vbt == len(fast) else f" (timed on the first {n_vbt:,} pairs)"
    print(f"ours:     {len(fast):,} pairs in {t_ours:7.2f} s = {ours_rate:10,.0f} pairs/s")
    print(f"vectorbt: {n_vbt:,} pairs in {t_vbt:7.2f} s = {vbt_rate:10,.0f} pairs/s{note}")
    print(f"ratio: {ours_rate / vbt_rate:.1f}x (target >= 40x)")


if __name__ == "__main__":
    main()
