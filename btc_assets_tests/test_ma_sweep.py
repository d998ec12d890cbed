"""The MA-crossover sweep kernel (``benchmarks/ma_sweep.py``, the sweep benchmark's own engine, not part of the
package) against its pandas reference, and against vectorbt on a slice of the real data."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import SHARED_DATA


def _load_sweep():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ma_sweep.py"
    spec = importlib.util.spec_from_file_location("ma_sweep", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ma_sweep"] = module
    spec.loader.exec_module(module)
    return module


_sweep = _load_sweep()
RESULT_COLUMNS = _sweep.RESULT_COLUMNS
ma_crossover_reference = _sweep.ma_crossover_reference
ma_crossover_sweep = _sweep.ma_crossover_sweep
make_grid = _sweep.make_grid
make_pairs = _sweep.make_pairs
moving_averages = _sweep.moving_averages

METRICS = ("total_return", "sharpe", "max_drawdown", "n_trades")


def random_close(n: int, seed: int, vol: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))


def assert_matches_reference(close: np.ndarray, df: pd.DataFrame, **kwargs) -> None:
    for row in df.itertuples():
        ref = ma_crossover_reference(close, row.fast, row.slow, **kwargs)
        for key in METRICS:
            assert getattr(row, key) == pytest.approx(ref[key], rel=1e-9, abs=1e-9), (row.fast, row.slow, key)


@pytest.mark.parametrize("allow_short", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_matches_reference_on_random_data(seed: int, allow_short: bool) -> None:
    close = random_close(2_500, seed)
    df = ma_crossover_sweep(close, [2, 3, 5, 8, 13, 40], [5, 13, 21, 50, 120], fee_bps=7.5, allow_short=allow_short)
    assert tuple(df.columns) == RESULT_COLUMNS
    assert (df["fast"] < df["slow"]).all() and len(df) == 23
    assert (df["n_trades"] > 0).all()
    assert_matches_reference(close, df, fee_bps=7.5, allow_short=allow_short)


def test_ties_flat_runs_and_no_fees() -> None:
    """Rounded prices make fast == slow bars (neutral for the crossing rule); a constant stretch never trades."""
    close = np.round(random_close(1_500, 5, vol=0.004), 0)
    close[600:800] = close[600]
    df = ma_crossover_sweep(close, [1, 2, 3, 4], [2, 5, 8], fee_bps=0.0)
    ma = moving_averages(close, np.array([2, 5]))
    assert np.any(ma[0, 10:] == ma[1, 10:])  # ties do occur
    assert_matches_reference(close, df, fee_bps=0.0)


def test_moving_averages_equal_pandas_rolling_mean() -> None:
    close = random_close(3_000, 3) * 1_000
    windows = np.array([1, 7, 50, 400])
    ma = moving_averages(close, windows)
    for k, w in enumerate(windows):
        expected = pd.Series(close).rolling(w).mean().to_numpy()
        np.testing.assert_array_equal(np.isnan(ma[k]), np.isnan(expected))
        np.testing.assert_allclose(ma[k], expected, rtol=1e-10)


def test_never_trading_pair_and_fees_cost() -> None:
    close = np.linspace(100.0, 200.0, 500)  # monotone: fast stays above slow, never armed by a "below" bar
    df = ma_crossover_sweep(close, [3], [10])
    assert df.loc[0, "n_trades"] == 0 and df.loc[0, "total_return"] == 0.0 and df.loc[0, "max_drawdown"] == 0.0
    assert df.loc[0, "sharpe"] == np.inf
    close = random_close(2_000, 4)
    cheap = ma_crossover_sweep(close, [3, 5], [20, 50], fee_bps=0.0)
    dear = ma_crossover_sweep(close, [3, 5], [20, 50], fee_bps=25.0)
    assert (dear["total_return"] < cheap["total_return"]).all()
    assert (dear["n_trades"] == cheap["n_trades"]).all()


def test_grid_and_pairs_validation() -> None:
    grid = make_grid([5, 10, 30], [10, 20])
    assert list(zip(grid.fast, grid.slow, strict=True)) == [(5, 10), (5, 20), (10, 20)]
    with pytest.raises(ValueError):
        make_pairs([10], [10])
    with pytest.raises(ValueError):
        ma_crossover_sweep(np.array([1.0, np.nan, 2.0]), [1], [2])


@pytest.mark.realdata
def test_parity_with_vectorbt_on_real_slice() -> None:
    if importlib.util.find_spec("vectorbt") is None:
        pytest.skip("vectorbt is not installed (benchmark-only dependency: pip install vectorbt==1.2.0)")
    path = SHARED_DATA / "btcusdt_1h.parquet"
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    import vectorbt as vbt

    bars = pd.read_parquet(path, columns=["timestamp", "close"]).iloc[20_000:26_000]
    close = pd.Series(bars["close"].to_numpy(dtype=np.float64), index=pd.DatetimeIndex(bars["timestamp"]))
    fast = np.array([3, 5, 8, 12, 20, 24, 30, 40, 50, 60] * 2)
    slow = np.array([20, 30, 40, 50, 60, 72, 100, 150, 200, 300, 10, 15, 25, 35, 80, 96, 120, 168, 240, 500])
    keep = fast < slow
    fast, slow = fast[keep], slow[keep]
    assert len(fast) >= 18
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast_ma = vbt.MA.run(close, window=list(fast), short_name="fast")
        slow_ma = vbt.MA.run(close, window=list(slow), short_name="slow")
        entries, exits = fast_ma.ma_crossed_above(slow_ma), fast_ma.ma_crossed_below(slow_ma)
        # Long/flat = vectorbt defaults; long/short = direction="both" with lock_cash (shorts sized on free cash).
        for allow_short, extra in ((False, {}), (True, {"direction": "both", "lock_cash": True})):
            ours = ma_crossover_sweep(
                close.to_numpy(), grid=make_pairs(fast, slow), fee_bps=10.0, allow_short=allow_short
            )
            pf = vbt.Portfolio.from_signals(close, entries, exits, fees=10.0 * 1e-4, freq="1h", **extra)
            theirs = {
                "total_return": pf.total_return().to_numpy(),
                "sharpe": pf.sharpe_ratio().to_numpy(),
                "max_drawdown": pf.max_drawdown().to_numpy(),
                "n_trades": pf.trades.count().to_numpy(),
            }
            for key in ("total_return", "sharpe", "max_drawdown"):
                np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-9, atol=1e-12, err_msg=key)
            np.testing.assert_array_equal(ours["n_trades"], theirs["n_trades"])
