"""Volatility on the hourly grid: realized estimators and walk-forward GARCH forecasts (no Dagster here).

Conventions
* Bars are rows of the hourly UTC grid; a missing exchange hour is a row with NaN prices (NaN return).
* Every value at bar t uses bars up to and including t only (strictly trailing windows, filtered variances).
* ``sigma_bar`` is per bar (not annualised); annualised values are multiplied by sqrt(24 · 365) = sqrt(8760).

Realized volatility (:func:`realized_volatility`) uses rolling windows of ``window`` bars. GARCH forecasts
(:func:`garch_forecast`) re-estimate parameters with :mod:`arch` on a schedule of refit points, each time on data
strictly before the point, and filter the conditional variance bar by bar with fixed parameters in between
(:func:`garch_filter`, a numba kernel with the plain Python reference :func:`garch_filter_reference`).
:func:`forecast_losses` scores a variance forecast (QLIKE, MSE) against a rolling-variance baseline.
:func:`compute_volatility` puts it all together for the ``market_bars`` grid.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numba import njit

from btc_assets.fits import FitCache, fit_key

if TYPE_CHECKING:
    from btc_assets.config import VolatilitySettings
    from btc_assets.folds import FoldSchedule

BARS_PER_YEAR = 24 * 365
ANNUALISE = math.sqrt(BARS_PER_YEAR)
HOURS_PER_WEEK = 168
REALIZED_COLUMNS: tuple[str, ...] = ("rv_cc", "rv_parkinson", "rv_gk", "rv_yz")
GARCH_COLUMNS: tuple[str, ...] = ("sigma", "sigma_bar", "sigma_horizon", "refit_id", "refit_time")
_VOLS = {"garch": 0, "gjr": 1, "gjr-garch": 1}
# arch's distribution classes by name (arch is imported with the first fit, :func:`_fit_arch`)
_DISTS = {
    "normal": "Normal",
    "t": "StudentsT",
    "studentst": "StudentsT",
    "skewt": "SkewStudent",
    "skewstudent": "SkewStudent",
}
_BACKCAST_BARS = 75  # arch's backcast: 0.94-weighted mean of the first 75 squared residuals
_PERSISTENCE_CAP = 1.0 - 1e-6  # warm starts are pulled this far inside arch's stationarity constraint


# ----------------------------------------------------------------------------------------------- realized volatility


def realized_volatility(bars: pd.DataFrame, window: int = 24, *, min_periods: int | None = None) -> pd.DataFrame:
    """Annualised realized volatility of each bar's trailing ``window`` bars (rows t-window+1 .. t).

    With o, h, l, c the logs of open, high, low, close of bar i and n the number of valid terms in the window:

    * ``rv_cc`` close-to-close: sample variance (ddof 1) of r_i = c_i - c_{i-1}.
    * ``rv_parkinson``: mean of (h_i - l_i)² / (4 ln 2).
    * ``rv_gk`` Garman–Klass: mean of ½ (h_i - l_i)² - (2 ln 2 - 1) (c_i - o_i)².
    * ``rv_yz`` Yang–Zhang: σ²_o + k σ²_c + (1 - k) σ²_rs, where σ²_o is the sample variance of the "overnight"
      returns o_i - c_{i-1}, σ²_c that of the open-to-close returns c_i - o_i, σ²_rs the mean Rogers–Satchell term
      (h_i - c_i)(h_i - o_i) + (l_i - c_i)(l_i - o_i), and k = 0.34 / (1.34 + (n + 1) / (n - 1)). A bar enters only
      when all three terms are valid, so the three parts share the same n.

    Each value is sqrt(variance · 8760). Missing hours (NaN prices) are NaN terms; a bar whose previous bar is
    missing has no close-to-close or overnight term. A window needs ``min_periods`` valid terms (default
    ``max(2, window // 2)``), otherwise the value is NaN. The output has ``bars``' index.
    """
    if window < 2:
        raise ValueError("window must be at least 2 bars")
    min_periods = max(2, window // 2) if min_periods is None else min_periods
    if not 2 <= min_periods <= window:
        raise ValueError("min_periods must be between 2 and window")
    logs = {name: np.log(bars[name].to_numpy(dtype=np.float64)) for name in ("open", "high", "low", "close")}
    o, h, l, c = logs["open"], logs["high"], logs["low"], logs["close"]  # noqa: E741
    prev_c = np.r_[np.nan, c[:-1]]
    ret = c - prev_c
    hl2 = (h - l) ** 2
    co = c - o
    overnight = o - prev_c
    rs = (h - c) * (h - o) + (l - c) * (l - o)

    def roll(values: np.ndarray):
        return pd.Series(values).rolling(window, min_periods=min_periods)

    var_cc = roll(ret).var(ddof=1).to_numpy()
    var_pk = roll(hl2 / (4.0 * math.log(2.0))).mean().to_numpy()
    var_gk = roll(0.5 * hl2 - (2.0 * math.log(2.0) - 1.0) * co**2).mean().to_numpy()
    valid = np.isfinite(overnight) & np.isfinite(co) & np.isfinite(rs)
    n = roll(valid.astype(np.float64)).sum().to_numpy()
    var_o = roll(np.where(valid, overnight, np.nan)).var(ddof=1).to_numpy()
    var_c = roll(np.where(valid, co, np.nan)).var(ddof=1).to_numpy()
    var_rs = roll(np.where(valid, rs, np.nan)).mean().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 0.34 / (1.34 + (n + 1.0) / (n - 1.0))
    var_yz = var_o + k * var_c + (1.0 - k) * var_rs
    out = {
        name: np.sqrt(np.clip(var, 0.0, None) * BARS_PER_YEAR)
        for name, var in zip(REALIZED_COLUMNS, (var_cc, var_pk, var_gk, var_yz), strict=True)
    }
    return pd.DataFrame(out, index=bars.index)


# ------------------------------------------------------------------------------------------------- variance filter


def garch_filter_reference(
    eps: np.ndarray, h0: float, omega: float, alpha: float, gamma: float, beta: float
) -> np.ndarray:
    """Plain Python reference of :func:`garch_filter` (same arithmetic, same order of operations).

    ``h`` starts as ``h0`` (the variance of bar 0) and for each bar t the next bar's variance is
    h_{t+1} = ω + α ε_t² + γ ε_t² 1[ε_t < 0] + β h_t; a NaN ε_t ("no news", a missing bar) gives
    h_{t+1} = ω + α h_t + β h_t. Returns ``out[t] = h_{t+1}``.
    """
    out = []
    h = float(h0)
    for e in np.asarray(eps, dtype=np.float64).tolist():
        if math.isnan(e):
            h = omega + alpha * h + beta * h
        else:
            news = e * e
            h = omega + alpha * news + (gamma * news if e < 0.0 else 0.0) + beta * h
        out.append(h)
    return np.array(out, dtype=np.float64)


@njit(cache=True)
def garch_filter(
    eps: np.ndarray, h0: float, omega: float, alpha: float, gamma: float, beta: float
) -> np.ndarray:  # pragma: no cover - compiled
    """GARCH(1,1) / GJR-GARCH(1,1,1) variance filter with fixed parameters; ``out[t] = h_{t+1}``.

    h_{t+1} = ω + α ε_t² + γ ε_t² 1[ε_t < 0] + β h_t, and for a NaN ε_t (missing bar, no news; ε_t² replaced by
    h_t, no leverage term) h_{t+1} = ω + α h_t + β h_t. ``h0`` is the variance of bar 0.
    """
    n = eps.shape[0]
    out = np.empty(n)
    h = h0
    for t in range(n):
        e = eps[t]
        if np.isnan(e):
            h = omega + alpha * h + beta * h
        else:
            news = e * e
            lev = gamma * news if e < 0.0 else 0.0
            h = omega + alpha * news + lev + beta * h
        out[t] = h
    return out


def arch_backcast(resids: np.ndarray) -> float:
    """arch's starting value of the variance recursion: Σ w_i ε_i², w ∝ 0.94^i over the first 75 residuals."""
    tau = min(_BACKCAST_BARS, resids.shape[0])
    w = 0.94 ** np.arange(tau)
    w = w / w.sum()
    return float(np.sum(resids[:tau] ** 2 * w))


def initial_variance(backcast: float, omega: float, alpha: float, gamma: float, beta: float) -> float:
    """Variance of the first bar as arch computes it: ω + α·bc + γ·½·bc + β·bc."""
    return omega + alpha * backcast + gamma * 0.5 * backcast + beta * backcast


# ------------------------------------------------------------------------------------------------------ seasonality


def hour_of_week(index: pd.DatetimeIndex) -> np.ndarray:
    """0 = Monday 00:00 .. 167 = Sunday 23:00 in the index's time zone (UTC on our grid)."""
    return (index.day_of_week * 24 + index.hour).to_numpy(dtype=np.int64)


def seasonal_profile(returns: np.ndarray, how: np.ndarray) -> np.ndarray:
    """Hour-of-week scale s(k), k = 0..167, of return magnitude: s(k) ∝ mean |r| over bars of hour-of-week k.

    NaN returns are ignored; an hour of the week without data gets the overall mean. Normalised so that the mean
    of s² over the 168 hours is 1, so dividing returns by s leaves their overall scale about unchanged.
    """
    ok = np.isfinite(returns)
    size = np.abs(returns[ok])
    total = np.bincount(how[ok], weights=size, minlength=HOURS_PER_WEEK)
    count = np.bincount(how[ok], minlength=HOURS_PER_WEEK)
    level = np.where(count > 0, total / np.maximum(count, 1), size.mean())
    return level / math.sqrt(float(np.mean(level**2)))


# ------------------------------------------------------------------------------------------------- GARCH forecasts


def _as_timestamp(point: Any, tz: Any) -> pd.Timestamp:
    ts = pd.Timestamp(point)
    if ts.tz is None and tz is not None:
        return ts.tz_localize(tz)
    if ts.tz is not None and tz is None:
        raise ValueError(f"refit point {ts} is time-zone aware but the returns' index is naive")
    return ts


def refit_schedule(
    index: pd.DatetimeIndex,
    observed: np.ndarray,
    refit_every: str | None,
    refit_points: Sequence[Any],
    train_window: int | None,
    min_train: int,
) -> list[tuple]:
    """The refit points actually used, as ``(time, row, train_start_row)``, in time order.

    Candidates are the calendar points of the offset alias ``refit_every`` between the first and last bar (None
    or "" for none) plus ``refit_points``. A point r applies from row ``row`` = the first bar at or after r; its
    training rows are ``train_start_row .. row - 1`` (the last ``train_window`` bars before r, all of them when
    None). Points with fewer than ``min_train`` observed returns in their training rows, or after the last bar,
    are dropped; of points falling on the same row the earliest is kept.
    """
    if len(index) == 0:
        return []
    candidates = [_as_timestamp(p, index.tz) for p in refit_points]
    if refit_every:
        candidates += list(pd.date_range(index[0], index[-1], freq=refit_every, normalize=True))
    cum = np.r_[0, np.cumsum(observed)]
    chosen: dict[int, tuple] = {}
    for point in sorted(set(candidates)):
        if point > index[-1]:
            continue
        row = int(index.searchsorted(point, side="left"))
        start = 0 if train_window is None else max(0, row - train_window)
        if row == 0 or cum[row] - cum[start] < min_train or row in chosen:
            continue
        chosen[row] = (point, row, start)
    return [chosen[row] for row in sorted(chosen)]


@dataclass(frozen=True)
class ArchFit:
    """What :func:`garch_forecast` keeps of one arch fit (the parameters in arch's order, and its diagnostics)."""

    params: np.ndarray
    loglikelihood: float
    convergence_flag: int
    iterations: int
    warm: bool


def _cached_fit(z: np.ndarray, o: int, dist: str, start: np.ndarray | None, fits: FitCache) -> ArchFit:
    """:func:`_fit_arch` through the fit cache, keyed by all of its inputs."""
    key = fit_key("garch", z, o, dist, start)
    hit = fits.get(key)
    if hit is not None:
        return hit
    result, warm = _fit_arch(z, o, dist, start)
    fit = ArchFit(
        result.params.to_numpy(),
        float(result.loglikelihood),
        int(result.convergence_flag),
        int(result.optimization_result.nit),
        warm,
    )
    fits.put(key, fit)
    return fit


def _fit_arch(z: np.ndarray, o: int, dist: str, start: np.ndarray | None):
    """Fit ConstantMean + GARCH(1, o, 1) + ``dist`` on ``z``; warm start from ``start`` when given.

    Returns the arch result and whether the warm start was used (arch ignores starting values that violate its
    constraints, with a ``StartingValueWarning``; those are swallowed here and reported as a cold start). When
    a warm-started fit does not converge, a cold fit is tried too and the one with the higher likelihood kept.
    """
    # imported here, not with the module: arch brings scipy.stats, statsmodels and matplotlib (~1.2 s), which a
    # process that fits nothing (the CLI, a seed run, the UI's code server) need not load
    from arch import univariate
    from arch.utility.exceptions import StartingValueWarning

    distribution = getattr(univariate, _DISTS[dist])()
    model = univariate.ConstantMean(
        z, volatility=univariate.GARCH(p=1, o=o, q=1), distribution=distribution, rescale=None
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StartingValueWarning)
        result = model.fit(disp="off", show_warning=False, starting_values=start)
    warm = start is not None and not any(issubclass(w.category, StartingValueWarning) for w in caught)
    for w in caught:  # anything else (e.g. DataScaleWarning) is passed on
        if not issubclass(w.category, StartingValueWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if warm and result.convergence_flag != 0:
        with warnings.catch_warnings():
            cold = model.fit(disp="off", show_warning=False)
        if cold.loglikelihood > result.loglikelihood:
            result, warm = cold, False
    return result, warm


def _warm_start(prev: dict, ratio: float, o: int) -> np.ndarray:
    """Previous parameters in the new fit's units (z scaled by ``ratio``), pulled inside arch's constraints."""
    alpha, gamma, beta = prev["alpha"], prev["gamma"], prev["beta"]
    persistence = alpha + 0.5 * gamma + beta
    if persistence > _PERSISTENCE_CAP:
        shrink = _PERSISTENCE_CAP / persistence
        alpha, gamma, beta = alpha * shrink, gamma * shrink, beta * shrink
    values = [prev["mu_z"] * ratio, prev["omega"] * ratio**2, alpha] + ([gamma] if o else []) + [beta]
    return np.array(values + list(prev["dist_params"]), dtype=np.float64)


def horizon_variance(
    h_next: np.ndarray, how: np.ndarray, profile: np.ndarray, persistence: float, uncond: float, horizon: int
) -> np.ndarray:
    """Mean of s(how_{t+j})² · E_t[h_{t+j}] over j = 1 … ``horizon`` for each bar t (in the filter's units), from
    the one-step variance ``h_next[t]`` = h_{t+1}, the bar's hour of week ``how[t]``, the seasonal ``profile``
    (168 values) and the recursion's persistence ρ and unconditional variance h̄ (inf when ρ ≥ 1)."""
    j = np.arange(1, horizon + 1)
    s2 = profile[(np.arange(HOURS_PER_WEEK)[:, None] + j[None, :]) % HOURS_PER_WEEK] ** 2  # (168, H)
    if math.isfinite(uncond):
        decay = persistence ** (j - 1.0)
        level = s2.sum(axis=1)[how] * uncond
        return (level + (h_next - uncond) * (s2 @ decay)[how]) / horizon
    return h_next * s2.sum(axis=1)[how] / horizon


def garch_forecast(
    returns: pd.Series,
    refit_every: str | None = "MS",
    refit_points: Sequence[pd.Timestamp] = (),
    train_window: int | None = 17_520,
    min_train: int = 2_000,
    vol: str = "GARCH",
    dist: str = "t",
    seasonal: bool = True,
    annualise: bool = True,
    horizon: int = 24,
    fits: FitCache | None = None,
) -> pd.DataFrame:
    """Walk-forward GARCH(1,1) (``vol="GARCH"``) or GJR-GARCH(1,1,1) (``vol="GJR"``) volatility forecasts.

    ``returns``: hourly log returns on the regular hourly grid (DatetimeIndex, one row per hour, NaN on missing
    bars). ``dist``: ``"t"`` (Student's t), ``"skewt"`` (Hansen's skew t) or ``"normal"``.

    Refits happen at the points of :func:`refit_schedule` (calendar points of ``refit_every`` ∪ ``refit_points``
    with at least ``min_train`` observed returns in the training window). At refit point r, with training rows
    the last ``train_window`` bars strictly before r (None = all earlier bars):

    1. ``seasonal``: the hour-of-week profile s(·) of :func:`seasonal_profile` is estimated on the training rows;
       otherwise s ≡ 1. y_t = r_t / s(how_t).
    2. z = c·y with c = 1 / std(y) over the training rows (unit variance, so arch sees well-scaled data and never
       emits a ``DataScaleWarning``); arch fits ConstantMean + GARCH(1, o, 1) + dist on the observed z of the
       training rows, warm-started from the previous refit's parameters (rescaled to the new c).
    3. The variance state is rebuilt with the new parameters: ε_t = z_t - μ is filtered by :func:`garch_filter`
       from the first training row (initial variance from arch's backcast, as in the fit) through the training
       rows and on, bar by bar, up to the next refit. A NaN return is "no news".

    Rows t from r up to the next refit belong to this refit: ``sigma_bar[t] = s(how_{t+1}) · sqrt(h_{t+1}) / c``
    is the forecast of the volatility of bar t+1 given returns up to t (parameters from returns before r only).
    ``sigma_horizon[t]`` is the forecast of the mean variance over the next ``horizon`` bars t+1 … t+H, the
    volatility a position held that long is exposed to (per bar, square-rooted; annualised like ``sigma``):

        sigma_horizon_t² = (1/H) Σ_{j=1..H} s(how_{t+j})² · E_t[h_{t+j}] / c²,
        E_t[h_{t+j}] = h̄ + ρ^{j−1} (h_{t+1} − h̄),   ρ = α + γ/2 + β,   h̄ = ω / (1 − ρ)

    (the GARCH(1,1) / GJR multi-step forecast, as arch's analytic ``forecast(horizon=H)``; ρ ≥ 1: E_t[h] =
    h_{t+1}). Averaging the seasonal factor over the next H hours takes out the hour-of-day cycle that makes the
    next hour's forecast swing every day (0.37 at 03 UTC, 0.65 at 13 UTC on the real data).

    ``fits``: a :class:`btc_assets.fits.FitCache` of the arch fits keyed by their inputs (z, the starting values,
    the specification): a longer history refits only at its new refit points, bit-identically.

    Returns a frame indexed like ``returns`` with ``sigma`` (``sigma_bar`` · sqrt(8760) when ``annualise``),
    ``sigma_bar``, ``refit_id`` (-1 before the first refit, where the sigmas are NaN) and ``refit_time`` (the
    refit point r). ``attrs["refits"]`` holds one dict per refit (see :func:`garch_refits`), ``attrs["spec"]``
    the arguments.
    """
    vol_key, dist_key = vol.lower(), dist.lower()
    if vol_key not in _VOLS:
        raise ValueError(f"vol must be one of {sorted(_VOLS)}, not {vol!r}")
    if dist_key not in _DISTS:
        raise ValueError(f"dist must be one of {sorted(_DISTS)}, not {dist!r}")
    if train_window is not None and train_window < min_train:
        raise ValueError("train_window must be at least min_train bars")
    index = returns.index
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError("returns must be indexed by bar time (DatetimeIndex)")
    if len(index) > 1 and not (np.diff(index.asi8) == pd.Timedelta(hours=1) // pd.Timedelta(1, unit=index.unit)).all():
        raise ValueError("returns must be on the regular hourly grid (NaN on missing bars)")
    o = _VOLS[vol_key]
    r = returns.to_numpy(dtype=np.float64, na_value=np.nan)
    n = r.shape[0]
    observed = np.isfinite(r)
    how = hour_of_week(index)
    how_next = (how + 1) % HOURS_PER_WEEK
    schedule = refit_schedule(index, observed, refit_every, refit_points, train_window, min_train)

    if horizon < 1:
        raise ValueError("horizon must be at least 1 bar")
    sigma_bar = np.full(n, np.nan)
    sigma_horizon = np.full(n, np.nan)
    refit_id = np.full(n, -1, dtype=np.int64)
    refits: list[dict] = []
    prev: dict | None = None
    for k, (point, row, start) in enumerate(schedule):
        end = schedule[k + 1][1] if k + 1 < len(schedule) else n
        train = r[start:row]
        train_ok = observed[start:row]
        profile = seasonal_profile(train, how[start:row]) if seasonal else np.ones(HOURS_PER_WEEK)
        y = r[start:end] / profile[how[start:end]]
        y_train = y[: row - start][train_ok]
        scale = 1.0 / float(np.std(y_train))
        z_train = scale * y_train
        start_values = None if prev is None else _warm_start(prev, scale / prev["scale"], o)
        result = _cached_fit(z_train, o, dist_key, start_values, fits or FitCache(None))
        warm = result.warm
        p = result.params
        mu, omega, alpha = float(p[0]), float(p[1]), float(p[2])
        gamma = float(p[3]) if o else 0.0
        beta = float(p[3 + o])
        dist_params = [float(v) for v in p[4 + o :]]
        eps = scale * y - mu
        h0 = initial_variance(arch_backcast(z_train - z_train.mean()), omega, alpha, gamma, beta)
        h_next = garch_filter(eps, h0, omega, alpha, gamma, beta)
        rows = slice(row, end)
        sigma_bar[rows] = profile[how_next[rows]] * np.sqrt(h_next[row - start :]) / scale
        refit_id[rows] = k
        persistence = alpha + 0.5 * gamma + beta
        uncond = omega / (1.0 - persistence) if persistence < 1.0 else math.inf
        sigma_horizon[rows] = (
            np.sqrt(horizon_variance(h_next[row - start :], how[rows], profile, persistence, uncond, horizon)) / scale
        )
        loglik_returns = float(result.loglikelihood) + float(np.sum(np.log(scale / profile[how[start:row]][train_ok])))
        prev = {
            "refit_id": k,
            "refit_time": point,
            "train_start": index[start],
            "train_end": index[row - 1],
            "n_obs": int(train_ok.sum()),
            "scale": scale,
            "mu_z": mu,
            "mu": mu / scale,
            "omega": omega,
            "alpha": alpha,
            "gamma": gamma,
            "beta": beta,
            "persistence": persistence,
            "nu": dist_params[0] if dist_params else math.nan,
            "lambda": dist_params[1] if len(dist_params) > 1 else math.nan,
            "uncond_vol": math.sqrt(uncond * BARS_PER_YEAR) / scale if math.isfinite(uncond) else math.inf,
            "season_min": float(profile.min()),
            "season_max": float(profile.max()),
            "loglik": float(result.loglikelihood),
            "loglik_returns": loglik_returns,
            "converged": bool(result.convergence_flag == 0),
            "convergence_flag": int(result.convergence_flag),
            "iterations": int(result.iterations),
            "warm_start": warm,
            "dist_params": dist_params,
        }
        refits.append(prev)

    out = pd.DataFrame(
        {
            "sigma": sigma_bar * ANNUALISE if annualise else sigma_bar.copy(),
            "sigma_bar": sigma_bar,
            "sigma_horizon": sigma_horizon * ANNUALISE if annualise else sigma_horizon,
            "refit_id": refit_id,
        },
        index=index,
    )
    times = pd.DatetimeIndex([point for point, _, _ in schedule] + [pd.NaT], dtype=index.dtype)
    out["refit_time"] = times[refit_id]  # refit_id -1 picks the trailing NaT
    out.attrs["refits"] = [{key: v for key, v in d.items() if key != "dist_params"} for d in refits]
    out.attrs["spec"] = {
        "refit_every": refit_every,
        "train_window": train_window,
        "min_train": min_train,
        "vol": vol_key,
        "dist": dist_key,
        "seasonal": seasonal,
        "annualise": annualise,
        "horizon": int(horizon),
    }
    return out


def garch_refits(forecast: pd.DataFrame) -> pd.DataFrame:
    """One row per refit of a :func:`garch_forecast` frame (from its ``attrs["refits"]``).

    Columns: ``refit_id``, ``refit_time`` (the refit point r), ``train_start``/``train_end`` (first/last training
    bar, all before r), ``n_obs`` (observed returns fitted), ``scale`` (c: the fit saw z = c·r/s), ``mu`` (mean
    of r/s per bar), ``mu_z``, ``omega`` (in z units), ``alpha``, ``gamma`` (0 for GARCH), ``beta``,
    ``persistence`` (α + γ/2 + β), ``nu`` (degrees of freedom; arch's ``eta`` for skew t; NaN for normal),
    ``lambda`` (skew t asymmetry, else NaN), ``uncond_vol`` (annualised unconditional volatility of r/s),
    ``season_min``/``season_max`` (range of s), ``loglik`` (arch's log-likelihood of z), ``loglik_returns``
    (the same density expressed for the raw returns, comparable between seasonal and non-seasonal fits),
    ``converged`` / ``convergence_flag`` (SLSQP status, 0 = converged), ``iterations`` and ``warm_start``.
    """
    return pd.DataFrame(forecast.attrs.get("refits", []))


# ----------------------------------------------------------------------------------------------------------- losses


def _hac_tstat(d: np.ndarray, lags: int) -> float:
    """t statistic of mean(d) with a Newey–West (Bartlett) long-run variance."""
    n = d.shape[0]
    x = d - d.mean()
    lrv = float(x @ x) / n
    for lag in range(1, min(lags, n - 1) + 1):
        lrv += 2.0 * (1.0 - lag / (lags + 1)) * float(x[lag:] @ x[:-lag]) / n
    return float(d.mean() / math.sqrt(lrv / n)) if lrv > 0 else math.nan


def forecast_losses(sigma_bar: pd.Series, returns: pd.Series, baseline_window: int = 720, hac_lags: int = 168) -> dict:
    """QLIKE and MSE of the variance forecast h_{t+1} = sigma_bar_t² against the next bar's squared return.

    QLIKE per bar is L = log h + r²/h (the form r²/h - log(r²/h) - 1 is undefined for r = 0 and differs from
    this one only by a term that does not depend on h, so differences between forecasts are the same); lower is
    better and only differences are meaningful. MSE is the mean of (r² - h)² in the returns' units.

    The baseline forecasts h_{t+1} as the mean of r² over the trailing ``baseline_window`` bars up to t (at least
    half of them observed). Both are scored on the same bars: next return observed, both forecasts finite and
    positive. ``qlike_diff`` = QLIKE(forecast) - QLIKE(baseline) (negative: the forecast is better) with a
    Diebold–Mariano t statistic (Newey–West, ``hac_lags`` lags). ``sigma_bar`` and ``returns`` share one index.
    """
    if not sigma_bar.index.equals(returns.index):
        raise ValueError("sigma_bar and returns must share one index")
    r = returns.to_numpy(dtype=np.float64, na_value=np.nan)
    s = sigma_bar.to_numpy(dtype=np.float64, na_value=np.nan)
    h = np.r_[np.nan, s[:-1] ** 2]  # forecast for bar t made at t-1
    base = pd.Series(r**2).rolling(baseline_window, min_periods=baseline_window // 2).mean().to_numpy()
    hb = np.r_[np.nan, base[:-1]]
    ok = np.isfinite(r) & np.isfinite(h) & np.isfinite(hb) & (h > 0) & (hb > 0)
    r2, h, hb = r[ok] ** 2, h[ok], hb[ok]
    if r2.size == 0:
        raise ValueError("no bars where the forecast, the baseline and the next return are all available")
    q, qb = np.log(h) + r2 / h, np.log(hb) + r2 / hb
    m, mb = (r2 - h) ** 2, (r2 - hb) ** 2
    return {
        "n": int(r2.size),
        "qlike": float(q.mean()),
        "qlike_baseline": float(qb.mean()),
        "qlike_diff": float((q - qb).mean()),
        "qlike_dm_t": _hac_tstat(q - qb, hac_lags),
        "mse": float(m.mean()),
        "mse_baseline": float(mb.mean()),
        "mse_ratio": float(m.mean() / mb.mean()),
        "mse_dm_t": _hac_tstat(m - mb, hac_lags),
        "baseline_window": int(baseline_window),
    }


# ------------------------------------------------------------------------------------------------------- the table


def compute_volatility(
    bars: pd.DataFrame, schedule: FoldSchedule, settings: VolatilitySettings, fits: FitCache | None = None
) -> pd.DataFrame:
    """The volatility table for a ``market_bars`` grid (columns ``timestamp``, OHLC, ``missing``), row by row.

    ``log_return`` is the one-hour log return, NaN on a missing bar and on the first bar after a gap (whose move
    spans several hours and is no one-hour shock): GARCH treats both as no news. GARCH refits at the calendar
    points of ``settings.refit_every`` and at every fold start of ``schedule`` (:meth:`FoldSchedule.starts`: the
    start of a trailing piece too short to be a fold yet included, so that appending bars changes no earlier value).
    ``fits``: the cache of arch fits (:func:`garch_forecast`). Columns: ``timestamp``,
    ``log_return``, the :data:`REALIZED_COLUMNS` (window ``settings.realized_window``) and the
    :data:`GARCH_COLUMNS`; ``attrs`` as in :func:`garch_forecast`.
    """
    timestamps = pd.DatetimeIndex(bars["timestamp"])
    close = pd.Series(bars["close"].to_numpy(dtype=np.float64), index=timestamps)
    returns = np.log(close).diff()  # NaN on a missing bar and on the bar after it
    returns.iloc[0] = 0.0
    garch = garch_forecast(
        returns,
        refit_every=settings.refit_every,
        refit_points=schedule.starts_for(bars["timestamp"]),
        train_window=settings.train_window,
        vol=settings.vol,
        dist=settings.dist,
        seasonal=settings.seasonal,
        horizon=settings.horizon,
        fits=fits,
    )
    realized = realized_volatility(bars, window=settings.realized_window)
    out = pd.DataFrame({"timestamp": bars["timestamp"].to_numpy(), "log_return": returns.to_numpy()}, index=bars.index)
    for frame in (realized, garch):
        for column in frame.columns:
            out[column] = frame[column].to_numpy()
    out.attrs = dict(garch.attrs)
    return out
