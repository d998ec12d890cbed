"""Volatility over a daily horizon, for leverage decisions (numpy and numba only: no engine import, reusable anywhere).

The GARCH forecast ``sigma_hat_t`` (:mod:`btc_assets.volatility`) is the volatility of the *next hour*: it carries
the hour-of-week seasonal profile and reacts to every hourly shock, so leverage = target / sigma_hat swings within
each day (0.77 → 1.35 on the real data) and the 0.2 rebalancing band cannot hold it: a vol-targeted book on it turns
over ~843× a year. A book rebalanced on a daily horizon wants the variance level of the next day instead.

Convention (causal): the daily-horizon variance v_t, known at the close of bar t, is an exponentially weighted
mean of the one-step forecast variances sigma_hat_s², s ≤ t, with a half-life of ``halflife`` bars (24 = one
day):

    v_t = v_{t-1} + a·(sigma_hat_t² − v_{t-1}),   a = 1 − 2^(−1/halflife),   v = the first valid sigma_hat² at start,

a bar whose sigma_hat is not valid (NaN, ≤ 0) leaves v unchanged. ``horizon_sigma`` = √v_t, NaN until ``warmup``
(default ``halflife``) valid forecasts have entered. Units are those of ``sigma_hat`` (annualised in, annualised
out). With a one-day half-life the intraday seasonal swing is damped to about a tenth of its amplitude.

Why this one: on the real BTCUSDT data, over the warm-up years before the first out-of-sample bar (2017-08 →
2019-08, so the choice looks at no out-of-sample bar), it forecasts the realized variance of the next 24 hours
better than the alternatives tried: QLIKE −8.493 against −8.327 for the one-step sigma_hat², −8.412 for the
trailing 24-bar mean of sigma_hat², −8.484 for the trailing 72-bar mean and −8.462 / −8.497 / −8.483 for
half-lives of 12 / 36 / 72 bars.
"""

from __future__ import annotations

import numpy as np
from numba import njit

DAILY_BARS = 24  # hourly bars per day: the default half-life


@njit(cache=True, nogil=True)
def ewm_recursion(x: np.ndarray, a: float, z0: float) -> np.ndarray:  # pragma: no cover - compiled
    """y_k = a·x_k + (1 − a)·y_{k−1}, with (1 − a)·y_{−1} = ``z0``: the operations of
    ``scipy.signal.lfilter([a], [1, a − 1], x, zi=[z0])`` (its transposed direct form, order 1) in their order, so
    the result is lfilter's bit for bit (the reference the tests hold it to); without loading scipy.signal."""
    out = np.empty(x.shape[0])
    z = z0
    c = a - 1.0
    for k in range(x.shape[0]):
        y = z + a * x[k]
        out[k] = y
        z = x[k] * 0.0 - y * c
    return out


def horizon_sigma(sigma_hat, halflife: float = DAILY_BARS, warmup: int | None = None) -> np.ndarray:
    """√ of the exponentially weighted mean of ``sigma_hat``² with half-life ``halflife`` bars (module
    docstring); NaN before ``warmup`` (default ``halflife``, at least 1) valid (finite, positive) values."""
    s = np.asarray(sigma_hat, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError("sigma_hat must be one-dimensional")
    if not halflife > 0:
        raise ValueError("halflife must be positive")
    need = max(1, int(np.ceil(halflife))) if warmup is None else int(warmup)
    if need < 1:
        raise ValueError("warmup must be at least 1")
    valid = np.isfinite(s) & (s > 0.0)
    out = np.full(s.size, np.nan)
    if not valid.any():
        return out
    x = s[valid] ** 2
    a = 1.0 - 2.0 ** (-1.0 / halflife)
    # y_k = a·x_k + (1 − a)·y_{k−1} over the valid bars, y_{−1} = x_0 (a sequential recursion: causal)
    v = ewm_recursion(x, a, (1.0 - a) * x[0])
    count = np.cumsum(valid)
    pos = count - 1  # the last valid bar at or before each bar (−1: none yet)
    ok = count >= need
    out[ok] = np.sqrt(v[pos[ok]])
    return out
