"""Trading experts: causal target positions in [-1, 1] per hourly bar (no Dagster here).

Conventions
* Inputs are :class:`BarArrays`: open/high/low/close on the complete hourly grid with missing exchange hours
  forward-filled as *flat* bars (open = high = low = close = the last close, so no range is invented), plus the
  funding settlements on the bars they settle on (``btc_assets.ingestion.bars`` convention: the rate settled at
  the close of bar t sits on row t and is known at t).
* ``target[t]`` uses data up to and including the close of bar t only; the portfolio executes it one bar later.
  During an expert's warm-up (some line still undefined) the target is 0, never NaN.
* Each expert is a frozen dataclass of its parameters with ``SEARCH_SPACE`` (field -> (low, high, kind), kind
  "int" | "float" | "bool") for the optimiser, ``suggest(trial)`` for Optuna and ``positions(bars, cache)``.
  :data:`REGISTRY` (name -> class, in column order ``btc_assets.config.EXPERTS``) is the one list of experts the
  portfolio, the optimiser and the attribution read; :data:`DIRECTIONAL` the ones that take a view on price (the
  carry is market-neutral).

Experts
* :class:`TrendExpert` — Ichimoku. tenkan/kijun/senkou-B lines are (highest high + lowest low) / 2 over the last
  n bars (current bar included). Senkou spans A = (tenkan + kijun) / 2 and B are plotted ``displacement`` bars
  ahead, so the cloud at bar t is span A/B computed at bar t − displacement. Long when close > cloud top and
  tenkan > kijun, short when close < cloud bottom and tenkan < kijun, else flat. ``cloud_filter=False`` drops the
  cloud condition; ``chikou=True`` also requires close > close[t − displacement] (long) / < (short).
* :class:`MeanReversionExpert` — RSI (Wilder) + Bollinger (population std). Flat: enter long when close < lower
  band and RSI < oversold, short when close > upper band and RSI > overbought. Long exits when close >= middle
  band, short when close <= middle band; after an exit the entry rules are checked again on the same bar.
* :class:`BreakoutExpert` — Donchian + ATR. Channel of the previous ``window`` bars (bar t excluded): enter long on
  close > highest high, short on close < lowest low, only if ATR(atr_short) / ATR(atr_long) > ``expansion``. Long
  exits on close < lowest low of the previous ``exit_window`` bars or close <= entry close − stop_atr ×
  ATR(atr_short) at entry (short mirrored); then entries are checked again on the same bar.
* :class:`CarryExpert` — funding. EMA (span ``ema_span`` settlements, ``min_periods = ema_span``) of the settled
  rates expressed per 8 h; between settlements the last value holds. target = −clip(ema / full_at, −1, 1) when
  |ema| > threshold, else 0; 0 where funding is not known (``funding_known``) or before ``ema_span``
  settlements. A negative target (short perp) earns positive funding.

Lines (:data:`LINE_KINDS`) are numba kernels (``@njit(cache=True, nogil=True)``) each with a plain pandas
reference (``*_reference``): rolling mean (Kahan add/remove), rolling std (exact two-pass per window), rolling max/min
(monotonic deques, O(n)), exponential mean (pandas ``ewm(adjust=False)``), Wilder RSI and ATR
(``ewm(alpha=1/n, adjust=False, min_periods=n)``). :class:`LineCache` memoises them by (data fingerprint, kind,
window) so an optimiser that revisits integer windows does not recompute lines.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numba import njit

from btc_assets.config import EXPERTS, ExpertSettings
from btc_assets.line_store import SharedLines

EXPERT_NAMES: tuple[str, ...] = EXPERTS  # column order of every expert table
FUNDING_HOURS = 8.0
SearchSpace = Mapping[str, tuple[float, float, str]]


# --------------------------------------------------------------------------------------------------------- inputs


def _readonly(values: Any, dtype: Any = np.float64) -> np.ndarray:
    arr = np.array(values, dtype=dtype, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class BarArrays:
    """Forward-filled hourly OHLC and per-bar funding; read-only copies with a content fingerprint.

    ``funding``: the settled rate per 8 h on each settlement bar, NaN on every other bar (all NaN = no funding).
    ``funding_known``: bars inside the funding history (carry is flat elsewhere).
    """

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    funding: np.ndarray
    funding_known: np.ndarray
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        names = ("open", "high", "low", "close", "funding")
        for name in names:
            object.__setattr__(self, name, _readonly(getattr(self, name)))
        object.__setattr__(self, "funding_known", _readonly(self.funding_known, bool))
        n = self.close.shape[0]
        for name in (*names, "funding_known"):
            arr = getattr(self, name)
            if arr.ndim != 1 or arr.shape[0] != n:
                raise ValueError(f"{name} must be 1-d with {n} values")
        for name in names[:4]:
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"{name} must be finite (forward-fill missing hours first)")
        digest = hashlib.blake2b(digest_size=16)
        digest.update(str(n).encode())
        for name in (*names, "funding_known"):
            digest.update(getattr(self, name).tobytes())
        object.__setattr__(self, "fingerprint", digest.hexdigest())

    def __len__(self) -> int:
        return int(self.close.shape[0])

    @classmethod
    def from_arrays(
        cls,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        funding: np.ndarray | None = None,
        funding_known: np.ndarray | None = None,
    ) -> BarArrays:
        """Fill missing hours (NaN close) with flat bars at the last close; the first bar must be valid."""
        close = np.asarray(close, dtype=np.float64)
        missing = ~np.isfinite(close)
        if missing.size and missing[0]:
            raise ValueError("the first bar must have a price")
        filled_close = pd.Series(close).ffill().to_numpy()
        ohl = [np.where(missing, filled_close, np.asarray(a, dtype=np.float64)) for a in (open_, high, low)]
        n = close.shape[0]
        funding = np.full(n, np.nan) if funding is None else np.asarray(funding, dtype=np.float64)
        if funding_known is None:
            funding_known = np.ones(n, dtype=bool) if np.isfinite(funding).any() else np.zeros(n, dtype=bool)
        return cls(ohl[0], ohl[1], ohl[2], filled_close, funding, funding_known)

    @classmethod
    def from_market_bars(cls, bars: pd.DataFrame) -> BarArrays:
        """From the ``market_bars`` grid (``btc_assets.ingestion.bars``); rates are rescaled to per 8 h by the
        interval since the previous settlement (the first settlement is taken as an 8 h interval)."""
        funding = np.full(len(bars), np.nan)
        known = np.zeros(len(bars), dtype=bool)
        if "funding_time" in bars:
            settled = bars["funding_time"].notna().to_numpy()
            times = bars.loc[settled, "funding_time"]
            hours = times.diff().dt.total_seconds().to_numpy() / 3600.0
            hours[:1] = FUNDING_HOURS
            hours = np.where(hours > 0, hours, FUNDING_HOURS)
            funding[settled] = bars.loc[settled, "funding_rate"].to_numpy(dtype=np.float64) * FUNDING_HOURS / hours
            known = bars["funding_known"].to_numpy(dtype=bool)
        return cls.from_arrays(
            *(bars[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close")),
            funding=funding,
            funding_known=known,
        )


# ---------------------------------------------------------------------------------------------- numba line kernels


@njit(cache=True, nogil=True)
def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:  # pragma: no cover - compiled
    """Mean of x[t-window+1 .. t] (NaN for t < window-1); Kahan-compensated add/remove, exact on constant runs."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    total = 0.0
    comp = 0.0
    same = 0
    for t in range(n):
        if t >= window:
            y = -x[t - window] - comp
            s = total + y
            comp = (s - total) - y
            total = s
        y = x[t] - comp
        s = total + y
        comp = (s - total) - y
        total = s
        same = same + 1 if t > 0 and x[t] == x[t - 1] else 1
        if t >= window - 1:
            out[t] = x[t] if same >= window else total / window
    return out


@njit(cache=True, nogil=True)
def rolling_std(x: np.ndarray, window: int, ddof: int = 0) -> np.ndarray:  # pragma: no cover - compiled
    """Standard deviation of x[t-window+1 .. t] (NaN in warm-up) by an exact two-pass sum per window, O(n·window).

    Online add/remove updates (pandas ``rolling().std()``) lose ~1e-6 absolute on near-constant windows of
    prices; the corrected two-pass formula Σd² − (Σd)²/w, d = x − mean, is accurate to rounding in every window.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    if window - ddof <= 0:
        return out
    for t in range(window - 1, n):
        s = 0.0
        for i in range(t - window + 1, t + 1):
            s += x[i]
        m = s / window
        ss = 0.0
        sd = 0.0
        for i in range(t - window + 1, t + 1):
            d = x[i] - m
            ss += d * d
            sd += d
        var = (ss - sd * sd / window) / (window - ddof)
        out[t] = math.sqrt(var) if var > 0.0 else 0.0
    return out


@njit(cache=True, nogil=True)
def rolling_max(x: np.ndarray, window: int) -> np.ndarray:  # pragma: no cover - compiled
    """max(x[t-window+1 .. t]) by a monotonic deque of indices (values decreasing), O(n); NaN in warm-up."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    dq = np.empty(n, dtype=np.int64)
    head = 0
    tail = 0
    for t in range(n):
        while tail > head and x[dq[tail - 1]] <= x[t]:
            tail -= 1
        dq[tail] = t
        tail += 1
        if dq[head] <= t - window:
            head += 1
        if t >= window - 1:
            out[t] = x[dq[head]]
    return out


@njit(cache=True, nogil=True)
def rolling_min(x: np.ndarray, window: int) -> np.ndarray:  # pragma: no cover - compiled
    """min(x[t-window+1 .. t]) by a monotonic deque of indices (values increasing), O(n); NaN in warm-up."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    dq = np.empty(n, dtype=np.int64)
    head = 0
    tail = 0
    for t in range(n):
        while tail > head and x[dq[tail - 1]] >= x[t]:
            tail -= 1
        dq[tail] = t
        tail += 1
        if dq[head] <= t - window:
            head += 1
        if t >= window - 1:
            out[t] = x[dq[head]]
    return out


@njit(cache=True, nogil=True)
def ewm_mean(x: np.ndarray, alpha: float, min_periods: int) -> np.ndarray:  # pragma: no cover - compiled
    """pandas ``ewm(alpha=alpha, adjust=False, min_periods=min_periods).mean()`` for x finite after leading NaNs.

    y = x at the first finite value, then y = ((1 - alpha) y + alpha x) / ((1 - alpha) + alpha), as pandas does.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    y = np.nan
    nobs = 0
    for t in range(n):
        v = x[t]
        if np.isnan(v):
            if nobs > 0 and nobs >= min_periods:
                out[t] = y
            continue
        y = v if nobs == 0 else ((1.0 - alpha) * y + alpha * v) / ((1.0 - alpha) + alpha)
        nobs += 1
        if nobs >= min_periods:
            out[t] = y
    return out


@njit(cache=True, nogil=True)
def wilder_rsi(close: np.ndarray, period: int) -> np.ndarray:  # pragma: no cover - compiled
    """RSI = 100 g / (g + l) with g, l Wilder averages (alpha 1/period) of gains/losses of close-to-close changes
    from bar 1 on, defined from bar ``period``; 50 when g + l = 0."""
    n = close.shape[0]
    gain = np.full(n, np.nan)
    loss = np.full(n, np.nan)
    for t in range(1, n):
        d = close[t] - close[t - 1]
        gain[t] = d if d > 0.0 else 0.0
        loss[t] = -d if d < 0.0 else 0.0
    g = ewm_mean(gain, 1.0 / period, period)
    lo = ewm_mean(loss, 1.0 / period, period)
    out = np.full(n, np.nan)
    for t in range(n):
        if not np.isnan(g[t]):
            den = g[t] + lo[t]
            out[t] = 50.0 if den == 0.0 else 100.0 * g[t] / den
    return out


@njit(cache=True, nogil=True)
def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """max(h - l, |h - c_prev|, |l - c_prev|); h - l on bar 0."""
    n = close.shape[0]
    out = np.empty(n)
    for t in range(n):
        r = high[t] - low[t]
        if t > 0:
            r = max(r, abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
        out[t] = r
    return out


@njit(cache=True, nogil=True)
def wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:  # pragma: no cover
    """Wilder ATR: ewm(alpha=1/period, adjust=False, min_periods=period) of the true range."""
    return ewm_mean(true_range(high, low, close), 1.0 / period, period)


# ------------------------------------------------------------------------------------------ pandas line references


def rolling_mean_reference(x: np.ndarray, window: int) -> np.ndarray:
    return pd.Series(x).rolling(window, min_periods=window).mean().to_numpy()


def rolling_std_reference(x: np.ndarray, window: int, ddof: int = 0) -> np.ndarray:
    """pandas rolling window with numpy's two-pass std (pandas' own online ``std()`` drifts by ~1e-6 on flat runs)."""
    return pd.Series(x).rolling(window, min_periods=window).apply(lambda v: np.std(v, ddof=ddof), raw=True).to_numpy()


def rolling_max_reference(x: np.ndarray, window: int) -> np.ndarray:
    return pd.Series(x).rolling(window, min_periods=window).max().to_numpy()


def rolling_min_reference(x: np.ndarray, window: int) -> np.ndarray:
    return pd.Series(x).rolling(window, min_periods=window).min().to_numpy()


def ewm_mean_reference(x: np.ndarray, alpha: float, min_periods: int) -> np.ndarray:
    return pd.Series(x).ewm(alpha=alpha, adjust=False, min_periods=min_periods).mean().to_numpy()


def wilder_rsi_reference(close: np.ndarray, period: int) -> np.ndarray:
    delta = pd.Series(close).diff()
    g = delta.clip(lower=0.0).ewm(alpha=1.0 / period, adjust=False, min_periods=period).mean()
    lo = (-delta).clip(lower=0.0).ewm(alpha=1.0 / period, adjust=False, min_periods=period).mean()
    den = g + lo
    return np.where(den == 0.0, 50.0, 100.0 * g / den.where(den != 0.0))


def wilder_atr_reference(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    prev = pd.Series(close).shift(1)
    h, lo = pd.Series(high), pd.Series(low)
    tr = pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1)
    return tr.ewm(alpha=1.0 / period, adjust=False, min_periods=period).mean().to_numpy()


# ------------------------------------------------------------------------------------------------------ line cache


def _funding_ema(bars: BarArrays, span: int) -> np.ndarray:
    """EMA over settlements (span in settlements, min_periods span), held on the bars between settlements."""
    settled = np.flatnonzero(np.isfinite(bars.funding))
    out = np.full(len(bars), np.nan)
    if settled.size == 0:
        return out
    ema = ewm_mean(bars.funding[settled], 2.0 / (span + 1.0), span)
    last = np.searchsorted(settled, np.arange(len(bars)), side="right") - 1
    has = last >= 0
    out[has] = ema[last[has]]
    return out


_LINE_BUILDERS: dict[str, Callable[[BarArrays, LineCache, int], np.ndarray]] = {
    "high_max": lambda b, c, w: rolling_max(b.high, w),
    "low_min": lambda b, c, w: rolling_min(b.low, w),
    "midpoint": lambda b, c, w: (c.get(b, "high_max", w) + c.get(b, "low_min", w)) / 2.0,
    "close_mean": lambda b, c, w: rolling_mean(b.close, w),
    "close_std": lambda b, c, w: rolling_std(b.close, w, 0),
    "rsi": lambda b, c, w: wilder_rsi(b.close, w),
    "atr": lambda b, c, w: wilder_atr(b.high, b.low, b.close, w),
    "funding_ema": lambda b, c, w: _funding_ema(b, w),
}
LINE_KINDS: tuple[str, ...] = tuple(_LINE_BUILDERS)


class LineCache:
    """LRU memo of lines keyed by (bars fingerprint, line kind, window); returned arrays are read-only.

    A second request for the same line returns the identical array object. Thread safe (a line may be computed
    twice by racing threads; the first stored wins).
    """

    def __init__(self, maxsize: int = 2048, shared: SharedLines | None = None) -> None:
        self.maxsize = maxsize
        self.shared = shared  # lines of the search space, memory-mapped (btc_assets.line_store): looked up first
        self._store: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        with self._lock:
            self._store.clear()

    def get(self, bars: BarArrays, kind: str, window: int) -> np.ndarray:
        if kind not in _LINE_BUILDERS:
            raise KeyError(f"unknown line kind {kind!r}; known: {LINE_KINDS}")
        window = int(window)
        if window < 1:
            raise ValueError("window must be >= 1")
        if self.shared is not None:
            line = self.shared.line(bars.fingerprint, kind, window)
            if line is not None:
                return line
        key = (bars.fingerprint, kind, window)
        with self._lock:
            line = self._store.get(key)
            if line is not None:
                self._store.move_to_end(key)
                self.hits += 1
                return line
            self.misses += 1
        line = np.asarray(_LINE_BUILDERS[kind](bars, self, window), dtype=np.float64)
        line.setflags(write=False)
        with self._lock:
            line = self._store.setdefault(key, line)
            self._store.move_to_end(key)
            while len(self._store) > self.maxsize:
                self._store.popitem(last=False)
        return line


# ------------------------------------------------------------------------------------------------- expert kernels


@njit(cache=True, nogil=True)
def _trend_kernel(close, tenkan, kijun, senkou, displacement, cloud_filter, chikou):  # pragma: no cover - compiled
    """Ichimoku positions over ``len(close)`` bars. The cloud at t is read from the lines at t − displacement:
    span A = (tenkan + kijun) / 2 and span B = the senkou-B midpoint there (none before ``displacement``), exactly
    as :meth:`TrendExpert.lines` builds them."""
    n = close.shape[0]
    out = np.zeros(n)
    for t in range(n):
        tk = tenkan[t]
        kj = kijun[t]
        if np.isnan(tk) or np.isnan(kj):
            continue
        c = close[t]
        up = tk > kj
        down = tk < kj
        if cloud_filter:
            if t < displacement:
                continue
            a = (tenkan[t - displacement] + kijun[t - displacement]) / 2.0
            b = senkou[t - displacement]
            if np.isnan(a) or np.isnan(b):
                continue
            up = up and c > max(a, b)
            down = down and c < min(a, b)
        if chikou:
            if t < displacement:
                continue
            up = up and c > close[t - displacement]
            down = down and c < close[t - displacement]
        if up:
            out[t] = 1.0
        elif down:
            out[t] = -1.0
    return out


@njit(cache=True, nogil=True)
def _mean_reversion_kernel(close, rsi, mid, sd, k, oversold, overbought):  # pragma: no cover - compiled
    n = close.shape[0]
    out = np.zeros(n)
    pos = 0
    for t in range(n):
        if np.isnan(rsi[t]) or np.isnan(mid[t]) or np.isnan(sd[t]):
            pos = 0
            continue
        c = close[t]
        m = mid[t]
        if (pos == 1 and c >= m) or (pos == -1 and c <= m):  # exit at the middle band
            pos = 0
        if pos == 0:
            if c < m - k * sd[t] and rsi[t] < oversold:
                pos = 1
            elif c > m + k * sd[t] and rsi[t] > overbought:
                pos = -1
        out[t] = pos
    return out


@njit(cache=True, nogil=True)
def _breakout_kernel(close, hmax, lmin, xhmax, xlmin, atr_s, atr_l, expansion, stop_atr):  # pragma: no cover - compiled
    n = close.shape[0]
    out = np.zeros(n)
    pos = 0
    stop = np.nan
    for t in range(1, n):
        upper = hmax[t - 1]
        lower = lmin[t - 1]
        xu = xhmax[t - 1]
        xl = xlmin[t - 1]
        a_s = atr_s[t]
        a_l = atr_l[t]
        if np.isnan(upper) or np.isnan(lower) or np.isnan(xu) or np.isnan(xl) or np.isnan(a_s) or np.isnan(a_l):
            pos = 0
            continue
        c = close[t]
        if (pos == 1 and (c < xl or c <= stop)) or (pos == -1 and (c > xu or c >= stop)):  # exit channel / stop
            pos = 0
        if pos == 0 and a_l > 0.0 and a_s / a_l > expansion:
            if c > upper:
                pos = 1
                stop = c - stop_atr * a_s
            elif c < lower:
                pos = -1
                stop = c + stop_atr * a_s
        out[t] = pos
    return out


# -------------------------------------------------------------------------------------------------------- experts


class _Expert:
    SEARCH_SPACE: ClassVar[SearchSpace] = {}
    LINES: ClassVar[dict[str, tuple[str, ...]]] = {}  # window parameter → the line kinds it reads (with their inputs)
    DIRECTIONAL: ClassVar[bool] = True  # takes a view on price (False: market-neutral, as the carry)
    NAN_FREE: ClassVar[bool] = False  # its positions never hold NaN (it abstains with 0): no NaN pass needed

    @classmethod
    def from_params(cls, params: Mapping[str, Any], prefix: str = ""):
        """Build from a flat mapping (e.g. Optuna ``best_params``); keys are ``prefix + field``, missing = default."""
        kw = {f.name: params[prefix + f.name] for f in fields(cls) if prefix + f.name in params}
        return cls(**kw)

    @classmethod
    def suggest(cls, trial: Any, prefix: str = "", space: SearchSpace | None = None):
        """Sample every field of ``space`` (default ``SEARCH_SPACE``) from an Optuna trial (names ``prefix +
        field``)."""
        kw: dict[str, Any] = {}
        for name, (low, high, kind) in (cls.SEARCH_SPACE if space is None else space).items():
            if kind == "int":
                kw[name] = trial.suggest_int(prefix + name, int(low), int(high))
            elif kind == "float":
                kw[name] = trial.suggest_float(prefix + name, float(low), float(high))
            else:
                kw[name] = trial.suggest_categorical(prefix + name, [False, True])
        return cls(**kw)

    def _check_windows(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer")

    def positions(self, bars: BarArrays, cache: LineCache | None = None, stop: int | None = None) -> np.ndarray:
        """Target positions in [-1, 1] (NaN: abstain) for the first ``stop`` bars (default: all). Every rule is
        causal, so the result is the first ``stop`` values of the full run, bit for bit."""
        raise NotImplementedError


@dataclass(frozen=True)
class TrendExpert(_Expert):
    """Ichimoku trend follower (see the module docstring)."""

    NAN_FREE: ClassVar[bool] = True  # its kernel writes 0 (flat) where it abstains

    tenkan: int = 9
    kijun: int = 26
    senkou_b: int = 52
    displacement: int = 26
    cloud_filter: bool = True
    chikou: bool = False

    SEARCH_SPACE: ClassVar[SearchSpace] = {
        "tenkan": (5, 30, "int"),
        "kijun": (10, 80, "int"),
        "senkou_b": (30, 160, "int"),
        "displacement": (10, 60, "int"),
        "cloud_filter": (0, 1, "bool"),
        "chikou": (0, 1, "bool"),
    }
    LINES: ClassVar[dict[str, tuple[str, ...]]] = {
        p: ("midpoint", "high_max", "low_min") for p in ("tenkan", "kijun", "senkou_b")
    }

    def __post_init__(self) -> None:
        self._check_windows("tenkan", "kijun", "senkou_b", "displacement")

    def lines(self, bars: BarArrays, cache: LineCache | None = None) -> dict[str, np.ndarray]:
        """tenkan, kijun at t and the cloud at t: span A / B computed at t − displacement (NaN before)."""
        cache = LineCache() if cache is None else cache
        tenkan = cache.get(bars, "midpoint", self.tenkan)
        kijun = cache.get(bars, "midpoint", self.kijun)
        d = self.displacement
        span_a = np.full(len(bars), np.nan)
        span_b = np.full(len(bars), np.nan)
        if d < len(bars):
            span_a[d:] = ((tenkan + kijun) / 2.0)[:-d]
            span_b[d:] = cache.get(bars, "midpoint", self.senkou_b)[:-d]
        return {"tenkan": tenkan, "kijun": kijun, "span_a": span_a, "span_b": span_b}

    def positions(self, bars: BarArrays, cache: LineCache | None = None, stop: int | None = None) -> np.ndarray:
        cache = LineCache() if cache is None else cache
        s = slice(0, stop)
        return _trend_kernel(
            bars.close[s],
            cache.get(bars, "midpoint", self.tenkan)[s],
            cache.get(bars, "midpoint", self.kijun)[s],
            cache.get(bars, "midpoint", self.senkou_b)[s],
            int(self.displacement),
            bool(self.cloud_filter),
            bool(self.chikou),
        )


@dataclass(frozen=True)
class MeanReversionExpert(_Expert):
    """RSI + Bollinger mean reversion with an exit at the middle band (see the module docstring)."""

    NAN_FREE: ClassVar[bool] = True  # its kernel writes 0 (flat) where it abstains

    rsi_period: int = 14
    bb_window: int = 20
    bb_k: float = 2.0
    oversold: float = 30.0
    overbought: float = 70.0

    SEARCH_SPACE: ClassVar[SearchSpace] = {
        "rsi_period": (5, 50, "int"),
        "bb_window": (10, 100, "int"),
        "bb_k": (1.0, 3.5, "float"),
        "oversold": (10.0, 45.0, "float"),
        "overbought": (55.0, 90.0, "float"),
    }
    LINES: ClassVar[dict[str, tuple[str, ...]]] = {"rsi_period": ("rsi",), "bb_window": ("close_mean", "close_std")}

    def __post_init__(self) -> None:
        self._check_windows("rsi_period", "bb_window")
        if self.bb_window < 2 or self.bb_k <= 0:
            raise ValueError("bb_window must be >= 2 and bb_k > 0")
        if not 0 <= self.oversold < self.overbought <= 100:
            raise ValueError("need 0 <= oversold < overbought <= 100")

    def positions(self, bars: BarArrays, cache: LineCache | None = None, stop: int | None = None) -> np.ndarray:
        cache = LineCache() if cache is None else cache
        s = slice(0, stop)
        return _mean_reversion_kernel(
            bars.close[s],
            cache.get(bars, "rsi", self.rsi_period)[s],
            cache.get(bars, "close_mean", self.bb_window)[s],
            cache.get(bars, "close_std", self.bb_window)[s],
            float(self.bb_k),
            float(self.oversold),
            float(self.overbought),
        )


@dataclass(frozen=True)
class BreakoutExpert(_Expert):
    """Donchian breakout confirmed by ATR expansion, with a shorter exit channel and an ATR stop."""

    NAN_FREE: ClassVar[bool] = True  # its kernel writes 0 (flat) where it abstains

    window: int = 72
    exit_window: int = 24
    atr_short: int = 24
    atr_long: int = 168
    expansion: float = 1.1
    stop_atr: float = 4.0

    SEARCH_SPACE: ClassVar[SearchSpace] = {
        "window": (20, 500, "int"),
        "exit_window": (5, 250, "int"),
        "atr_short": (5, 72, "int"),
        "atr_long": (48, 720, "int"),
        "expansion": (1.0, 2.5, "float"),
        "stop_atr": (1.0, 10.0, "float"),
    }
    LINES: ClassVar[dict[str, tuple[str, ...]]] = {
        "window": ("high_max", "low_min"),
        "exit_window": ("high_max", "low_min"),
        "atr_short": ("atr",),
        "atr_long": ("atr",),
    }

    def __post_init__(self) -> None:
        self._check_windows("window", "exit_window", "atr_short", "atr_long")
        if self.stop_atr <= 0:
            raise ValueError("stop_atr must be > 0")

    def positions(self, bars: BarArrays, cache: LineCache | None = None, stop: int | None = None) -> np.ndarray:
        cache = LineCache() if cache is None else cache
        s = slice(0, stop)
        return _breakout_kernel(
            bars.close[s],
            cache.get(bars, "high_max", self.window)[s],
            cache.get(bars, "low_min", self.window)[s],
            cache.get(bars, "high_max", self.exit_window)[s],
            cache.get(bars, "low_min", self.exit_window)[s],
            cache.get(bars, "atr", self.atr_short)[s],
            cache.get(bars, "atr", self.atr_long)[s],
            float(self.expansion),
            float(self.stop_atr),
        )


@dataclass(frozen=True)
class CarryExpert(_Expert):
    """Funding carry: short the perp when smoothed funding is rich, long when it is negative enough."""

    DIRECTIONAL: ClassVar[bool] = False
    ema_span: int = 9
    threshold: float = 0.0001
    full_at: float = 0.0005

    SEARCH_SPACE: ClassVar[SearchSpace] = {
        "ema_span": (1, 90, "int"),
        "threshold": (0.0, 0.0005, "float"),
        "full_at": (0.0001, 0.003, "float"),
    }
    LINES: ClassVar[dict[str, tuple[str, ...]]] = {"ema_span": ("funding_ema",)}

    def __post_init__(self) -> None:
        self._check_windows("ema_span")
        if self.threshold < 0 or self.full_at <= 0:
            raise ValueError("threshold must be >= 0 and full_at > 0")

    def positions(self, bars: BarArrays, cache: LineCache | None = None, stop: int | None = None) -> np.ndarray:
        cache = LineCache() if cache is None else cache
        ema = cache.get(bars, "funding_ema", self.ema_span)[:stop]
        valid = np.isfinite(ema) & bars.funding_known[:stop]
        safe = np.where(valid, ema, 0.0)
        target = -np.clip(safe / self.full_at, -1.0, 1.0)
        return np.where(valid & (np.abs(safe) > self.threshold), target, 0.0) + 0.0  # + 0.0: no -0.0


REGISTRY: dict[str, type[_Expert]] = {
    "trend": TrendExpert,
    "mean_reversion": MeanReversionExpert,
    "breakout": BreakoutExpert,
    "carry": CarryExpert,
}
if tuple(REGISTRY) != EXPERT_NAMES:  # pragma: no cover - a definition error, caught at import
    raise RuntimeError(f"experts.REGISTRY {tuple(REGISTRY)} is not config.EXPERTS {EXPERT_NAMES}")
DIRECTIONAL: tuple[str, ...] = tuple(name for name, kind in REGISTRY.items() if kind.DIRECTIONAL)


@dataclass(frozen=True)
class ExpertConfigs:
    """One configuration per expert of :data:`REGISTRY`, in its order."""

    trend: TrendExpert = field(default_factory=TrendExpert)
    mean_reversion: MeanReversionExpert = field(default_factory=MeanReversionExpert)
    breakout: BreakoutExpert = field(default_factory=BreakoutExpert)
    carry: CarryExpert = field(default_factory=CarryExpert)

    def __post_init__(self) -> None:
        for name, kind in REGISTRY.items():
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"ExpertConfigs.{name} must be a {kind.__name__}")

    def experts(self) -> tuple[_Expert, ...]:
        return tuple(getattr(self, name) for name in REGISTRY)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ExpertConfigs:
        """From flat ``"<expert>.<field>"`` keys (as written by :meth:`suggest`)."""
        return cls(**{name: kind.from_params(params, prefix=f"{name}.") for name, kind in REGISTRY.items()})

    @classmethod
    def suggest(cls, trial: Any) -> ExpertConfigs:
        return cls(**{name: kind.suggest(trial, prefix=f"{name}.") for name, kind in REGISTRY.items()})


DEFAULT_CONFIGS = ExpertConfigs()


def _parameter(key: str, where: str) -> tuple[str, Any]:
    expert, _, name = key.partition(".")
    kind = REGISTRY.get(expert)
    params = {f.name: f for f in fields(kind)} if kind is not None else {}
    if name not in params:
        known = ", ".join(f"{e}.{f.name}" for e, k in REGISTRY.items() for f in fields(k))
        raise ValueError(f"{where} {key}: no such expert parameter (parameters: {known})")
    return expert, params[name]


def check_settings(settings: ExpertSettings, source: str = "settings") -> None:
    """Every ``[experts.defaults]`` / ``[experts.ranges]`` entry names a parameter of :data:`REGISTRY` with a value
    of its type (a range only for a searched int or float parameter, integer bounds for an int), and the defaults
    build valid experts; else a ``ValueError`` naming ``source`` and the key."""
    for key, value in settings.defaults:
        _, param = _parameter(key, f"{source}: [experts.defaults]")
        default = param.default
        ok = (
            isinstance(value, bool)
            if isinstance(default, bool)
            else not isinstance(value, bool)
            and (isinstance(value, int) if isinstance(default, int) else isinstance(value, int | float))
        )
        if not ok:
            raise ValueError(f"{source}: [experts.defaults] {key}: expected {type(default).__name__}, got {value!r}")
    for key, low, high in settings.ranges:
        expert, param = _parameter(key, f"{source}: [experts.ranges]")
        kind = REGISTRY[expert].SEARCH_SPACE.get(param.name, (0, 0, "fixed"))[2]
        if kind not in ("int", "float"):
            raise ValueError(f"{source}: [experts.ranges] {key}: not a searched int or float parameter ({kind})")
        if kind == "int" and (int(low) != low or int(high) != high):
            raise ValueError(f"{source}: [experts.ranges] {key}: an int parameter needs integer bounds")
    try:
        configured(settings, checked=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: [experts.defaults]: {err}") from None


def configured(settings: ExpertSettings | None = None, *, checked: bool = False) -> ExpertConfigs:
    """:data:`DEFAULT_CONFIGS` with the settings' ``[experts.defaults]`` applied (the same object without any)."""
    if settings is None or not settings.defaults:
        return DEFAULT_CONFIGS
    if not checked:
        check_settings(settings)
    flat = {
        f"{n}.{k}": v for n, c in zip(REGISTRY, DEFAULT_CONFIGS.experts(), strict=True) for k, v in asdict(c).items()
    }
    # a float parameter given as an int (``stop_atr = 3``) is the float it means
    flat.update({k: float(v) if isinstance(flat[k], float) else v for k, v in settings.defaults})
    return ExpertConfigs.from_params(flat)


def search_space(name: str, settings: ExpertSettings | None = None) -> SearchSpace:
    """Expert ``name``'s ``SEARCH_SPACE`` with the settings' ``[experts.ranges]`` applied."""
    space = dict(REGISTRY[name].SEARCH_SPACE)
    for key, low, high in settings.ranges if settings is not None else ():
        expert, _, param = key.partition(".")
        if expert == name:
            space[param] = (low, high, space[param][2])
    return space


def line_windows(settings: ExpertSettings | None = None) -> dict[str, range]:
    """Per line kind, the window range the experts' search spaces (``settings``' ranges applied) can ask for: the
    lines a seed shares with every other seed (:class:`btc_assets.line_store.SharedLines`)."""
    spans: dict[str, tuple[int, int]] = {}
    for name, kind in REGISTRY.items():
        space = search_space(name, settings)
        for param, kinds in kind.LINES.items():
            low, high, _ = space[param]
            for line in kinds:
                lo, hi = spans.get(line, (int(low), int(high)))
                spans[line] = (min(lo, int(low)), max(hi, int(high)))
    return {line: range(lo, hi + 1) for line, (lo, hi) in sorted(spans.items())}


def expert_positions(
    bars: BarArrays, configs: ExpertConfigs | Mapping[str, _Expert] = DEFAULT_CONFIGS, cache: LineCache | None = None
) -> np.ndarray:
    """Targets of all four experts, shape (n, 4), columns :data:`EXPERT_NAMES`; lines come from ``cache``
    (a module-level default cache when None, so repeated calls on the same bars reuse lines)."""
    if not isinstance(configs, ExpertConfigs):
        configs = ExpertConfigs(**dict(configs))
    cache = DEFAULT_CACHE if cache is None else cache
    out = np.empty((len(bars), len(EXPERT_NAMES)))
    for j, expert in enumerate(configs.experts()):
        out[:, j] = expert.positions(bars, cache)
    return out


DEFAULT_CACHE = LineCache()
