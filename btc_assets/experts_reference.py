"""The experts' rules as slow, obviously-correct pure-Python loops: the references that
``btc_assets_tests/test_experts.py`` holds the numba kernels of :mod:`btc_assets.experts` to, bar for bar (as
``arch`` keeps ``recursions_python.py`` beside its compiled recursions). Never used by the pipeline itself."""

from __future__ import annotations

import math

import numpy as np

from btc_assets import experts as ex


def _mid(high: list[float], low: list[float], n: int, t: int) -> float | None:
    if t < n - 1:
        return None
    return (max(high[t - n + 1 : t + 1]) + min(low[t - n + 1 : t + 1])) / 2.0


def _wilder(values: list[float | None], period: int) -> list[float | None]:
    """ewm(alpha=1/period, adjust=False, min_periods=period) over values (None = not yet observed)."""
    a = 1.0 / period
    out: list[float | None] = []
    y, nobs = 0.0, 0
    for v in values:
        if v is None:
            out.append(None)
            continue
        y = v if nobs == 0 else ((1.0 - a) * y + a * v) / ((1.0 - a) + a)
        nobs += 1
        out.append(y if nobs >= period else None)
    return out


def trend_reference(b: ex.BarArrays, e: ex.TrendExpert) -> np.ndarray:
    h, lo, c = b.high.tolist(), b.low.tolist(), b.close.tolist()
    d = e.displacement
    out = []
    for t in range(len(c)):
        tk, kj = _mid(h, lo, e.tenkan, t), _mid(h, lo, e.kijun, t)
        pos = 0.0
        if tk is not None and kj is not None:
            long_ok, short_ok = tk > kj, tk < kj
            ok = True
            if e.cloud_filter:
                s = t - d
                tk_s = _mid(h, lo, e.tenkan, s) if s >= 0 else None
                kj_s = _mid(h, lo, e.kijun, s) if s >= 0 else None
                sb = _mid(h, lo, e.senkou_b, s) if s >= 0 else None
                if tk_s is None or kj_s is None or sb is None:
                    ok = False
                else:
                    sa = (tk_s + kj_s) / 2.0
                    long_ok = long_ok and c[t] > max(sa, sb)
                    short_ok = short_ok and c[t] < min(sa, sb)
            if e.chikou:
                if t < d:
                    ok = False
                else:
                    long_ok = long_ok and c[t] > c[t - d]
                    short_ok = short_ok and c[t] < c[t - d]
            if ok:
                pos = 1.0 if long_ok else (-1.0 if short_ok else 0.0)
        out.append(pos)
    return np.array(out)


def mean_reversion_reference(b: ex.BarArrays, e: ex.MeanReversionExpert) -> np.ndarray:
    c = b.close.tolist()
    n, w = len(c), e.bb_window
    gains = [None] + [max(c[t] - c[t - 1], 0.0) for t in range(1, n)]
    losses = [None] + [max(c[t - 1] - c[t], 0.0) for t in range(1, n)]
    ag, al = _wilder(gains, e.rsi_period), _wilder(losses, e.rsi_period)
    out, pos = [], 0
    for t in range(n):
        if ag[t] is None or t < w - 1:
            pos = 0
            out.append(0.0)
            continue
        rsi = 50.0 if ag[t] + al[t] == 0 else 100.0 * ag[t] / (ag[t] + al[t])
        win = c[t - w + 1 : t + 1]
        mid = math.fsum(win) / w
        sd = math.sqrt(math.fsum((v - mid) ** 2 for v in win) / w)
        if (pos == 1 and c[t] >= mid) or (pos == -1 and c[t] <= mid):
            pos = 0
        if pos == 0:
            if c[t] < mid - e.bb_k * sd and rsi < e.oversold:
                pos = 1
            elif c[t] > mid + e.bb_k * sd and rsi > e.overbought:
                pos = -1
        out.append(float(pos))
    return np.array(out)


def breakout_reference(b: ex.BarArrays, e: ex.BreakoutExpert) -> np.ndarray:
    h, lo, c = b.high.tolist(), b.low.tolist(), b.close.tolist()
    n = len(c)
    tr = [h[0] - lo[0]] + [max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])) for t in range(1, n)]
    atr_s, atr_l = _wilder(tr, e.atr_short), _wilder(tr, e.atr_long)
    out, pos, stop = [0.0], 0, 0.0
    for t in range(1, n):
        if t < max(e.window, e.exit_window) or atr_s[t] is None or atr_l[t] is None:
            pos = 0
            out.append(0.0)
            continue
        upper, lower = max(h[t - e.window : t]), min(lo[t - e.window : t])
        x_upper, x_lower = max(h[t - e.exit_window : t]), min(lo[t - e.exit_window : t])
        if pos == 1 and (c[t] < x_lower or c[t] <= stop):
            pos = 0
        if pos == -1 and (c[t] > x_upper or c[t] >= stop):
            pos = 0
        if pos == 0 and atr_l[t] > 0 and atr_s[t] / atr_l[t] > e.expansion:
            if c[t] > upper:
                pos, stop = 1, c[t] - e.stop_atr * atr_s[t]
            elif c[t] < lower:
                pos, stop = -1, c[t] + e.stop_atr * atr_s[t]
        out.append(float(pos))
    return np.array(out)


def carry_reference(b: ex.BarArrays, e: ex.CarryExpert) -> np.ndarray:
    a = 2.0 / (e.ema_span + 1.0)
    out, ema, count = [], 0.0, 0
    for t in range(len(b)):
        r = float(b.funding[t])
        if not math.isnan(r):
            ema = r if count == 0 else ((1.0 - a) * ema + a * r) / ((1.0 - a) + a)
            count += 1
        if count >= e.ema_span and b.funding_known[t] and abs(ema) > e.threshold:
            out.append(-max(-1.0, min(1.0, ema / e.full_at)))
        else:
            out.append(0.0)
    return np.array(out)


REFERENCES = {
    ex.TrendExpert: trend_reference,
    ex.MeanReversionExpert: mean_reversion_reference,
    ex.BreakoutExpert: breakout_reference,
    ex.CarryExpert: carry_reference,
}
