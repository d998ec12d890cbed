"""Moving-average-crossover parameter sweep: one numba kernel over many (fast, slow) windows, and a pandas reference.

No Dagster here. The kernel is single-threaded (``@njit(cache=True, nogil=True)``, no ``prange``); callers that want
several cores can run disjoint blocks of combinations in threads (the GIL is released).

Conventions (chosen to reproduce ``vectorbt.Portfolio.from_signals`` with its defaults, see
``benchmarks/bench_ma_sweep.py``)
* Bars are the rows of ``close`` (no calendar: a gap in the data is simply the next row). ``close`` must be finite
  and positive.
* Moving averages are simple, over ``w`` bars, defined from index ``w - 1`` on (NaN before), computed once per
  distinct window from one running sum: ``ma_w[i] = (S[i] - S[i-w]) / w`` with ``S`` the cumulative sum of
  ``close`` (``S[-1] = 0``). This is exactly vectorbt's ``rolling_mean_1d_nb`` (so both sides see bit-identical
  averages, hence identical crossings); it agrees with ``pandas.rolling(w).mean()`` to rounding.
* Signals (vectorbt's ``MA.ma_crossed_above`` / ``ma_crossed_below``): bar i is an *entry* if fast[i] > slow[i],
  bar i-1 was not strictly above, and fast was strictly below slow at some bar since both averages exist; *exit*
  symmetrically. Bars where fast == slow are neutral (they neither trigger nor cancel). Equivalently: signals fire
  at the strict sign changes of fast - slow, the first strict sign after warm-up arming but not firing.
* Execution: a signal computed at the close of bar i is filled at close[i] (vectorbt's default ``price=close``), so
  the new position earns the return of bar i+1 onwards, i.e. the position *from* close i. No look-ahead: the
  averages at i use closes <= i.
* Long/flat (``allow_short=False``, vectorbt ``direction='longonly'``): entry buys with all cash, exit sells all.
  Long/short (``allow_short=True``): entry goes long with all equity, exit goes short with all equity (a reversal
  is closing the old position and opening the new one at the same close; both legs pay fees). Sizing of a short:
  |q| = cash / (price · (1 + fee)), the short's proceeds (less fees) are added to cash and the short is not
  rebalanced (its weight drifts with price), as vectorbt's ``direction='both', lock_cash=True`` does (checked to
  1e-9 in the tests). Not reproduced: if a short loses so much that covering costs more than the cash (the price
  roughly doubles during one short), vectorbt covers only partially; here the value just goes negative.
* Fees: ``fee_bps`` · 1e-4 of the notional traded, paid in cash. A buy with all cash C buys C / (price·(1+fee))
  units (notional C/(1+fee), fee C·fee/(1+fee)); a sale of q units receives q·price·(1-fee). This is vectorbt's
  ``fees=fee_bps*1e-4`` with ``size=np.inf``. No slippage, no funding, no interest on cash.
* Portfolio value at each close = cash + units · close[i] (initial cash 100; all outputs are ratios). An open
  position at the end is valued at the last close, not closed (no exit fee), as vectorbt's ``total_return``.

Outputs per combination
* ``total_return`` = value[n-1] / 100 - 1.
* ``sharpe`` = mean(r) / std(r, ddof=1) · sqrt(ann_factor) over all n bar returns r_i = value_i / value_{i-1} - 1
  (value_{-1} = 100; bars before warm-up and while flat contribute 0). ``ann_factor`` = 8760 (hourly bars, 365-day
  year, vectorbt's ``freq='1h'``). +inf if std == 0 (never traded), as vectorbt.
* ``max_drawdown`` = min_i value_i / max_{j<=i} value_j - 1 (<= 0, vectorbt's sign convention).
* ``n_trades`` = number of positions opened (a reversal opens one; an open position counts) — vectorbt's
  ``pf.trades.count()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

HOURS_PER_YEAR = 8760.0
INIT_CASH = 100.0
RESULT_COLUMNS = ("fast", "slow", "total_return", "sharpe", "max_drawdown", "n_trades")


@dataclass(frozen=True)
class SweepGrid:
    """The distinct windows and, per combination, the row of its fast and slow average in the MA table."""

    windows: np.ndarray  # (m,) int64, sorted distinct windows
    fast_idx: np.ndarray  # (k,) int64 into windows
    slow_idx: np.ndarray  # (k,) int64 into windows

    @property
    def fast(self) -> np.ndarray:
        return self.windows[self.fast_idx]

    @property
    def slow(self) -> np.ndarray:
        return self.windows[self.slow_idx]


def make_grid(fast_windows: Sequence[int], slow_windows: Sequence[int]) -> SweepGrid:
    """All (fast, slow) pairs of the two lists with fast < slow, fast-major in the order given."""
    fast = np.asarray(fast_windows, dtype=np.int64)
    slow = np.asarray(slow_windows, dtype=np.int64)
    if fast.ndim != 1 or slow.ndim != 1 or fast.size == 0 or slow.size == 0:
        raise ValueError("fast_windows and slow_windows must be non-empty 1-d sequences")
    if fast.min() < 1 or slow.min() < 1:
        raise ValueError("windows must be >= 1")
    ff, ss = np.meshgrid(fast, slow, indexing="ij")
    keep = ff < ss
    return make_pairs(ff[keep], ss[keep])


def make_pairs(fast: Sequence[int], slow: Sequence[int]) -> SweepGrid:
    """Explicit (fast[k], slow[k]) pairs (fast < slow required)."""
    fast = np.asarray(fast, dtype=np.int64)
    slow = np.asarray(slow, dtype=np.int64)
    if fast.shape != slow.shape or fast.ndim != 1:
        raise ValueError("fast and slow must be 1-d and of the same length")
    if np.any(fast >= slow) or (fast.size and fast.min() < 1):
        raise ValueError("every pair needs 1 <= fast < slow")
    windows = np.unique(np.concatenate([fast, slow]))
    return SweepGrid(windows, np.searchsorted(windows, fast), np.searchsorted(windows, slow))


@njit(cache=True, nogil=True)
def moving_averages(close: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(len(windows), n) table of simple moving averages from one cumulative sum (vectorbt-identical rounding)."""
    n = close.shape[0]
    csum = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc += close[i]
        csum[i] = acc
    out = np.empty((windows.shape[0], n))
    for k in range(windows.shape[0]):
        w = windows[k]
        row = out[k]
        for i in range(min(w - 1, n)):
            row[i] = np.nan
        if w - 1 < n:
            row[w - 1] = csum[w - 1] / w
        for i in range(w, n):
            row[i] = (csum[i] - csum[i - w]) / w
    return out


@njit(cache=True, nogil=True)
def _bar_returns(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums P1, P2 (length n+1) of the bar returns R_i = close_i/close_{i-1} - 1 and of R_i² (R_0 = 0)."""
    n = close.shape[0]
    p1 = np.zeros(n + 1)
    p2 = np.zeros(n + 1)
    for i in range(1, n):
        r = (close[i] - close[i - 1]) / close[i - 1]
        p1[i + 1] = p1[i] + r
        p2[i + 1] = p2[i] + r * r
    return p1, p2


@njit(cache=True, nogil=True)
def _one_combo(close, fm, sm, start, fee, allow_short, ann_factor, p1, p2, out, k):
    """Backtest one (fast, slow) pair; fm/sm are its averages, valid from ``start``. Writes row k of ``out``."""
    n = close.shape[0]
    cash = INIT_CASH
    units = 0.0  # signed position in units of the asset
    pos = 0  # -1 short, 0 flat, 1 long
    value_prev = INIT_CASH
    peak = INIT_CASH
    min_ratio = 1.0  # min value/peak
    s1 = 0.0  # sum of bar returns over trading-affected bars
    s2 = 0.0
    n_trades = 0
    # Arming: the first bar with a strict sign of fast - slow sets the regime without firing.
    i = start
    regime = 0
    while i < n:
        d = fm[i] - sm[i]
        if d > 0.0:
            regime = 1
            break
        if d < 0.0:
            regime = -1
            break
        i += 1
    i += 1
    while i < n:
        # Scan to the next strict sign flip of fast - slow (the next signal), carrying the position meanwhile.
        j = i
        if regime == 1:
            while j < n and not (fm[j] < sm[j]):
                j += 1
        else:
            while j < n and not (fm[j] > sm[j]):
                j += 1
        # Bars i .. j-1: no order. Returns and drawdown of the held position.
        if pos == 1 and j > i:
            # value = units·close: bar return is R, summed from the prefix sums; drawdown on close itself.
            s1 += p1[j] - p1[i]
            s2 += p2[j] - p2[i]
            pk = peak / units
            mr = min_ratio
            for t in range(i, j):
                c = close[t]
                if c > pk:
                    pk = c
                elif c < pk * mr:
                    mr = c / pk
            peak = pk * units
            min_ratio = mr
            value_prev = units * close[j - 1]
        elif pos == -1 and j > i:
            for t in range(i, j):
                v = cash + units * close[t]
                r = (v - value_prev) / value_prev
                s1 += r
                s2 += r * r
                if v > peak:
                    peak = v
                elif v < peak * min_ratio:
                    min_ratio = v / peak
                value_prev = v
        if j >= n:
            break
        # Signal at bar j, filled at close[j].
        regime = -regime
        price = close[j]
        if regime == 1:
            if pos == -1:  # cover the short
                cost = -units * price
                cash -= cost + cost * fee
                units = 0.0
            if pos != 1:
                bought = cash / (1.0 + fee) / price
                units = bought
                cash = 0.0
                pos = 1
                n_trades += 1
        else:
            if pos == 1:
                proceeds = units * price
                cash = proceeds - proceeds * fee
                units = 0.0
                pos = 0
            if allow_short and pos == 0:
                q = cash / (price * (1.0 + fee))
                proceeds = q * price
                cash += proceeds - proceeds * fee
                units = -q
                pos = -1
                n_trades += 1
        v = cash + units * price
        r = (v - value_prev) / value_prev
        s1 += r
        s2 += r * r
        if v > peak:
            peak = v
        elif v < peak * min_ratio:
            min_ratio = v / peak
        value_prev = v
        i = j + 1
    final = cash + units * close[n - 1]
    mean = s1 / n
    var = (s2 - s1 * mean) / (n - 1)
    out[k, 0] = final / INIT_CASH - 1.0
    if var > 0.0:
        out[k, 1] = mean / np.sqrt(var) * np.sqrt(ann_factor)
    elif s1 == 0.0 and s2 == 0.0:
        out[k, 1] = np.inf
    else:
        out[k, 1] = 0.0
    out[k, 2] = min_ratio - 1.0
    out[k, 3] = n_trades


@njit(cache=True, nogil=True)
def sweep_kernel(close, ma, windows, fast_idx, slow_idx, fee, allow_short, ann_factor):
    """(k, 4) array: total_return, sharpe, max_drawdown, n_trades for each combination (fast_idx[k], slow_idx[k])."""
    p1, p2 = _bar_returns(close)
    k_total = fast_idx.shape[0]
    out = np.empty((k_total, 4))
    for k in range(k_total):
        fi = fast_idx[k]
        si = slow_idx[k]
        start = max(windows[fi], windows[si]) - 1
        _one_combo(close, ma[fi], ma[si], start, fee, allow_short, ann_factor, p1, p2, out, k)
    return out


def _check_close(close) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(close, dtype=np.float64))
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError("close must be 1-d with at least 2 bars")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError("close must be finite and positive")
    return arr


def ma_crossover_sweep(
    close,
    fast_windows: Sequence[int] | None = None,
    slow_windows: Sequence[int] | None = None,
    *,
    grid: SweepGrid | None = None,
    fee_bps: float = 10.0,
    allow_short: bool = False,
    ann_factor: float = HOURS_PER_YEAR,
) -> pd.DataFrame:
    """Sweep every (fast, slow) pair with fast < slow (or the pairs of ``grid``); one row per pair.

    Columns: fast, slow, total_return, sharpe, max_drawdown, n_trades (see the module docstring for conventions).
    """
    arr = _check_close(close)
    if grid is None:
        if fast_windows is None or slow_windows is None:
            raise ValueError("give fast_windows and slow_windows, or grid")
        grid = make_grid(fast_windows, slow_windows)
    ma = moving_averages(arr, grid.windows)
    res = sweep_kernel(
        arr, ma, grid.windows, grid.fast_idx, grid.slow_idx, float(fee_bps) * 1e-4, bool(allow_short), float(ann_factor)
    )
    return pd.DataFrame(
        {
            "fast": grid.fast,
            "slow": grid.slow,
            "total_return": res[:, 0],
            "sharpe": res[:, 1],
            "max_drawdown": res[:, 2],
            "n_trades": res[:, 3].astype(np.int64),
        }
    )


def ma_crossover_reference(
    close, fast: int, slow: int, *, fee_bps: float = 10.0, allow_short: bool = False, ann_factor: float = HOURS_PER_YEAR
) -> dict[str, float]:
    """Plain pandas/Python backtest of one pair, bar by bar, for the tests (same conventions as the kernel).

    Averages from the cumulative sum (as the kernel and vectorbt; equal to ``rolling(w).mean()`` to rounding),
    signals from vectorbt's crossing rule written out literally, a cash/units ledger per bar.
    """
    arr = _check_close(close)
    if not 1 <= fast < slow:
        raise ValueError("need 1 <= fast < slow")
    s = pd.Series(arr)
    csum = s.cumsum()

    def sma(w: int) -> pd.Series:
        out = (csum - csum.shift(w, fill_value=0.0)) / w
        out.iloc[: w - 1] = np.nan
        return out

    def crossed_above(a: pd.Series, b: pd.Series) -> np.ndarray:
        sig = np.zeros(len(a), dtype=bool)
        was_below, prev_above = False, False
        for i, (x, y) in enumerate(zip(a.to_numpy(), b.to_numpy(), strict=True)):
            if np.isnan(x) or np.isnan(y):
                was_below, prev_above = False, False
                continue
            above = x > y
            sig[i] = above and was_below and not prev_above
            was_below = was_below or x < y
            prev_above = above
        return sig

    fm, sm = sma(fast), sma(slow)
    entries, exits = crossed_above(fm, sm), crossed_above(sm, fm)
    fee = fee_bps * 1e-4
    cash, units, n_trades = INIT_CASH, 0.0, 0
    value = np.empty(len(arr))
    for i, price in enumerate(arr):
        if entries[i] and units <= 0:
            if units < 0:
                cost = -units * price
                cash -= cost + cost * fee
            units = cash / (1.0 + fee) / price
            cash = 0.0
            n_trades += 1
        elif exits[i] and units > 0:
            proceeds = units * price
            cash, units = proceeds - proceeds * fee, 0.0
        if exits[i] and allow_short and units == 0:
            q = cash / (price * (1.0 + fee))
            cash += q * price - q * price * fee
            units = -q
            n_trades += 1
        value[i] = cash + units * price
    values = pd.Series(value)
    rets = values / values.shift(1, fill_value=INIT_CASH) - 1.0
    std = rets.std(ddof=1)
    sharpe = float("inf") if std == 0 else float(rets.mean() / std * np.sqrt(ann_factor))
    return {
        "total_return": value[-1] / INIT_CASH - 1.0,
        "sharpe": sharpe,
        "max_drawdown": float((values / values.cummax() - 1.0).min()),
        "n_trades": n_trades,
    }
