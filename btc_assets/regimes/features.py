"""Causal regime features: every value at bar t uses bars up to t only.

* ``ret_24``  trailing 24-hour log return.
* ``log_vol`` log of the GARCH forecast of annualised volatility (``btc_assets.volatility``).
* ``trend``   trend strength: the trailing 168-hour log return in units of its forecast standard deviation,
  ``sum(r[t-167..t]) / (sigma_bar_t * sqrt(168))``.
* ``lfp``     spectral low-frequency power, the share of power at periods of at least ``min_period`` hours in a
  Hann-windowed periodogram of the last ``window`` hourly returns (the original system's trend-phase marker:
  trending markets put their return variance at long periods, choppy ones at short periods).

Missing exchange hours: the price is carried over the gap for feature purposes only, so a missing bar has a zero
return and the first bar after the gap carries the whole move across it. Features are *not* standardised here;
the walk-forward fit standardises them with its training window's statistics only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

FEATURES: tuple[str, ...] = ("ret_24", "log_vol", "trend", "lfp")
_CHUNK = 8192


def hourly_log_returns(close: pd.Series) -> pd.Series:
    """Log returns on the hourly grid, zero on missing bars (price carried over the gap)."""
    return np.log(close.ffill()).diff().fillna(0.0)


def low_frequency_power(returns: np.ndarray, window: int = 256, min_period: int = 48) -> np.ndarray:
    """Share of periodogram power at periods >= ``min_period`` bars over trailing windows of ``window`` bars.

    Frequencies k = 1 .. window/2 (the mean, k = 0, is excluded); period = window / k. The first ``window - 1``
    values are NaN. Computed in fixed chunks aligned to the start of the series, so a value never depends on
    later bars (bit-for-bit).
    """
    if window < 8 or window % 2:
        raise ValueError("window must be an even number >= 8")
    n = len(returns)
    out = np.full(n, np.nan)
    if n < window:
        return out
    taper = np.hanning(window)
    k = np.arange(1, window // 2 + 1)
    low = (window / k) >= min_period
    if not low.any():
        raise ValueError(f"min_period {min_period} is longer than the window {window}")
    views = sliding_window_view(np.asarray(returns, dtype=np.float64), window)
    for start in range(0, len(views), _CHUNK):
        block = views[start : start + _CHUNK] * taper
        power = np.abs(np.fft.rfft(block, axis=1)[:, 1:]) ** 2
        total = power.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[window - 1 + start : window - 1 + start + len(block)] = np.where(
                total > 0, power[:, low].sum(axis=1) / total, np.nan
            )
    return out


def regime_features(
    bars: pd.DataFrame, sigma: pd.Series, sigma_bar: pd.Series, lfp_window: int = 256, lfp_min_period: int = 48
) -> pd.DataFrame:
    """The feature matrix on the hourly grid (index = bar open time); NaN where a feature is still warming up.

    ``sigma`` / ``sigma_bar`` are the GARCH forecasts (annualised / per bar) aligned with ``bars``.
    """
    close = pd.Series(bars["close"].to_numpy(), index=pd.DatetimeIndex(bars["timestamp"]))
    r = hourly_log_returns(close)
    sigma = pd.Series(np.asarray(sigma, dtype=float), index=close.index)
    sigma_bar = pd.Series(np.asarray(sigma_bar, dtype=float), index=close.index)
    out = pd.DataFrame(index=close.index)
    out["ret_24"] = r.rolling(24, min_periods=24).sum()
    out["log_vol"] = np.log(sigma.where(sigma > 0))
    out["trend"] = r.rolling(168, min_periods=168).sum() / (sigma_bar.where(sigma_bar > 0) * np.sqrt(168))
    out["lfp"] = low_frequency_power(r.to_numpy(), lfp_window, lfp_min_period)
    return out[list(FEATURES)]
