"""Deterministic synthetic BTC-like market: the project's embedded default data source.

**This data is synthetic.** Nothing here was observed on an exchange: every price, volume and funding
rate is produced by a seeded random model defined in this file. It exists so that the whole pipeline
(ingestion, validation, features, regime models, backtests) runs end to end when the user has no data of
their own, and so that tests have a market whose hidden regime is known exactly.

Model (hourly, about six years by default):

* A hidden Markov chain over :data:`DEMO_REGIMES` with sticky states (mean durations of days to weeks;
  crashes last hours to a few days). Each regime has its own drift and volatility level: ``calm`` (low
  vol), ``trend_up`` / ``trend_down`` (drift +/-, moderate vol), ``chop`` (mean-reverting around the
  level at which it began, moderate vol), ``crash`` (large negative drift, very high vol).
* Heavy tails: Student-t innovations (5 degrees of freedom) scaled to unit variance.
* Volatility clustering: a GARCH(1,1) multiplier on the regime volatility.
* Seasonality of volatility: higher in EU and US trading hours, lower in the Asian night and at weekends.
* A log-price band: a soft restoring drift outside a BTC-like price range and a hard reflection further
  out, so six years never blow up. Each hourly shock is soft-capped at 15 % in log terms.
* OHLC: ``open`` equals the previous hour's close (a continuous market); high and low add a
  Brownian-bridge-like excursion that scales with that bar's volatility. Volume is log-normal and rises
  with ``|return|`` and in busy hours.
* Funding every ``funding_interval_hours`` (00/08/16 UTC by default): around 0.0001 per interval, pushed
  up in ``trend_up`` and down in ``trend_down`` / ``crash``, plus a term in the trailing-interval return
  and AR(1) noise, clipped to +/-0.003.
* ``n_outages`` short gaps (1-6 h) at seeded positions: those hours are absent from ``ohlcv`` (as real
  exchange outages are) while ``regimes`` still covers every generated hour.
* The perpetual's own bars (``perp``), listed ``perp_listing_days`` after the spot market starts (the real
  BTCUSDT perp was listed two years after spot): ``perp = spot x (1 + basis_t)`` on close, high and low, each bar
  opening at the previous perp close. The basis is a mean-reverting AR(1) (coefficient 0.95, Student-t shocks, a
  stationary std of about 3 bps) around a small regime-dependent premium (richer in ``trend_up``, a discount in
  ``crash``) with wider shocks in ``crash``; clipped to +/-1 %. Perp volume is a few times spot volume. The
  perp has the spot outages' gaps too. It comes from a random stream of its own, so adding it left ``ohlcv``,
  ``funding`` and ``regimes`` bit-identical to what they were before.

``DemoMarketSpec(structureless=True)`` is the null market for calibrating the statistics: the same heavy tails,
GARCH clustering, seasonality, bars, volumes and outages, but no drift, no regime-dependent volatility, no chop
mean reversion, no price band, and funding and perp basis that are i.i.d. zero-mean noise, so no rule has an edge
in expectation (a martingale price: log drift −σ²/2, so a simple return has mean zero; the i.i.d. basis, a few
bps, is undone the next hour on average, far below any trading cost). The study must say "no skill" on it.

The same :class:`DemoMarketSpec` always gives bit-identical frames (exp and log come from the C library, not from
numpy's CPU-specific code paths); a different seed gives a different market. Independent random streams are used
for each part, so e.g. changing ``n_outages`` does not change the price path.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numba import njit

from btc_assets.ingestion.schema import FUNDING_COLUMNS, OHLCV_COLUMNS, TS_DTYPE, empty_ohlcv

DEMO_REGIMES: tuple[str, ...] = ("calm", "trend_up", "trend_down", "chop", "crash")

_CHOP = DEMO_REGIMES.index("chop")
_HOUR_MS = 3_600_000

# Mean duration of each regime in hours (geometric, i.e. a sticky hourly Markov chain).
_MEAN_DURATION_H = np.array([240.0, 168.0, 120.0, 144.0, 18.0])
# Where a regime goes when it ends (rows: from, columns: to; the diagonal is zero).
_EXIT_PROBS = np.array(
    [
        # calm  up    down  chop  crash
        [0.00, 0.40, 0.20, 0.34, 0.06],  # calm
        [0.35, 0.00, 0.12, 0.43, 0.10],  # trend_up
        [0.30, 0.20, 0.00, 0.35, 0.15],  # trend_down
        [0.38, 0.34, 0.22, 0.00, 0.06],  # chop
        [0.25, 0.10, 0.25, 0.40, 0.00],  # crash
    ]
)
_DRIFT = np.array([0.00004, 0.0007, -0.0006, 0.0, -0.006])  # log return per hour
_VOL = np.array([0.0035, 0.0065, 0.0075, 0.0060, 0.0180])  # hourly volatility before GARCH/seasonality
_CHOP_KAPPA = 0.03  # per-hour pull towards the level at which chop began
_T_DOF = 5.0
_GARCH_A, _GARCH_B = 0.06, 0.91
_SHOCK_CAP = 0.15
_LOG_BAND_SOFT = (math.log(2_500.0), math.log(120_000.0))
_LOG_BAND_HARD = (math.log(1_200.0), math.log(250_000.0))
_BAND_KAPPA = 0.002

_FUNDING_BASE = 0.0001
_FUNDING_LOADING = np.array([0.0, 0.00025, -0.0002, 0.0, -0.0006])  # per interval, by regime
_FUNDING_RETURN_BETA = 0.01  # rate per unit of trailing-interval log return
_FUNDING_AR, _FUNDING_NOISE = 0.7, 0.00006
_FUNDING_CLIP = 0.003

_BASIS_PREMIUM = np.array([0.00005, 0.0002, -0.0001, 0.0, -0.0004])  # mean perp basis by regime (fraction)
_BASIS_AR = 0.95  # per hour
_BASIS_NOISE = 0.0001  # shock std per hour: stationary std 1e-4 / sqrt(1 - 0.95^2) = 3.2 bps
_BASIS_NOISE_SCALE = np.array([1.0, 1.2, 1.5, 1.0, 4.0])  # by regime: crashes dislocate the basis
_BASIS_IID_STD = 0.0003  # structureless: i.i.d. basis with this std
_BASIS_T_DOF = 4.0
_BASIS_CLIP = 0.01
_PERP_VOLUME_RATIO = 3.0  # perp volume / spot volume on average


@dataclass(frozen=True)
class DemoMarketSpec:
    """Parameters of the synthetic market; equal specs give bit-identical output."""

    seed: int = 20240501
    years: float = 6.0
    start: str = "2019-01-01"
    start_price: float = 3800.0
    funding_interval_hours: int = 8
    n_outages: int = 4  # a few hours with no bar at all, as real exchanges have (kept as absent rows)
    structureless: bool = False  # the null market (module docstring): nothing to predict
    perp_listing_days: float = 270.0  # the perpetual's first bar, this long after the first spot bar


@dataclass(frozen=True)
class DemoMarket:
    """The generated market: canonical OHLCV and funding frames plus the true hourly regime, and the perpetual's
    own canonical OHLCV bars (``perp``, from its listing on)."""

    ohlcv: pd.DataFrame
    funding: pd.DataFrame
    regimes: pd.Series
    perp: pd.DataFrame = field(default_factory=empty_ohlcv)


def demo_transition_matrix() -> np.ndarray:
    """The true hourly transition matrix of the hidden regime chain (rows: from, ordered as DEMO_REGIMES)."""
    stay = 1.0 - 1.0 / _MEAN_DURATION_H
    return np.diag(stay) + (1.0 - stay)[:, None] * _EXIT_PROBS


def _sample_regimes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Hourly regime codes from the sticky chain, sampled episode by episode (starts in calm)."""
    out = np.empty(n, dtype=np.int64)
    t, k = 0, 0
    while t < n:
        d = int(rng.geometric(1.0 / _MEAN_DURATION_H[k]))
        out[t : t + d] = k
        t += d
        k = int(rng.choice(len(DEMO_REGIMES), p=_EXIT_PROBS[k]))
    return out


def _libm(f, x: np.ndarray) -> np.ndarray:
    """``f`` (a :mod:`math` function) element by element: the C library's result whatever the CPU. numpy's own
    float64 ``exp`` / ``log`` take other code paths on CPUs with AVX-512, whose last bits differ, so the default
    market would not be the same series on every machine."""
    x = np.asarray(x, dtype=np.float64)
    return np.fromiter(map(f, x.ravel().tolist()), dtype=np.float64, count=x.size).reshape(x.shape)


def _vol_seasonality(hours: np.ndarray) -> np.ndarray:
    """Volatility multiplier by hour of day and weekday (mean one over a week)."""
    hod = np.arange(24.0)
    day = (
        1.0
        + 0.35 * _libm(math.exp, -0.5 * ((hod - 14.5) / 2.5) ** 2)  # US session
        + 0.15 * _libm(math.exp, -0.5 * ((hod - 8.0) / 1.5) ** 2)  # EU open
        - 0.12 * _libm(math.exp, -0.5 * ((hod - 3.0) / 2.5) ** 2)  # Asian night
    )
    week = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.72, 0.72])  # Monday..Sunday
    profile = (week[:, None] * day[None, :]).ravel()  # 168 hours starting Monday 00:00 UTC
    profile /= profile.mean()
    hour_of_week = (hours + 72) % 168  # epoch hour 0 is Thursday 00:00 UTC
    return profile[hour_of_week]


@njit(cache=True)
def _simulate_log_path(
    x0: float,
    regime: np.ndarray,
    drift: np.ndarray,
    base_vol: np.ndarray,
    season: np.ndarray,
    z: np.ndarray,
    garch_a: float,
    garch_b: float,
    chop_code: int,
    chop_kappa: float,
    band_soft: tuple[float, float],
    band_hard: tuple[float, float],
    band_kappa: float,
    shock_cap: float,
    martingale: bool = False,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Log close after each hour and each hour's volatility (GARCH x regime x seasonality). ``martingale``: the
    log drift is −s²/2 on top, so that the simple return of the hour has mean ≈ 0 (the price is a martingale)."""
    n = regime.shape[0]
    xs = np.empty(n)
    sig = np.empty(n)
    x = x0
    g = 1.0
    level = x0
    prev = -1
    w = 1.0 - garch_a - garch_b
    for t in range(n):
        k = regime[t]
        if t > 0:
            g = w + (garch_a * z[t - 1] * z[t - 1] + garch_b) * g
        if k == chop_code and prev != chop_code:
            level = x
        prev = k
        s = base_vol[k] * season[t] * np.sqrt(g)
        mu = drift[k]
        if martingale:
            mu -= 0.5 * s * s
        if k == chop_code:
            mu -= chop_kappa * (x - level)
        if x < band_soft[0]:
            mu += band_kappa * (band_soft[0] - x)
        elif x > band_soft[1]:
            mu -= band_kappa * (x - band_soft[1])
        xn = x + mu + shock_cap * np.tanh(s * z[t] / shock_cap)
        if xn > band_hard[1]:
            xn = 2.0 * band_hard[1] - xn
        elif xn < band_hard[0]:
            xn = 2.0 * band_hard[0] - xn
        xs[t] = xn
        sig[t] = s
        x = xn
    return xs, sig


def _outage_hours(n: int, n_outages: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of missing hours: one 1-6 h gap in each of ``n_outages`` equal slices, away from the ends."""
    if n_outages <= 0:
        return np.empty(0, dtype=np.int64)
    lo, hi = 48, n - 48
    if hi - lo < 12 * n_outages:
        raise ValueError("series too short for the requested number of outages")
    edges = np.linspace(lo, hi, n_outages + 1).astype(np.int64)
    gaps = []
    for a, b in itertools.pairwise(edges):
        length = int(rng.integers(1, 7))
        first = int(rng.integers(a + 1, b - length))
        gaps.append(np.arange(first, first + length))
    return np.concatenate(gaps)


def _hour_grid(spec: DemoMarketSpec) -> tuple[np.ndarray, int]:
    """Epoch hours of every generated bar and the bar count."""
    start = pd.Timestamp(spec.start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    first = int(start.ceil("h").value // (_HOUR_MS * 1_000_000))
    n = round(spec.years * 365.25 * 24)
    return first + np.arange(n, dtype=np.int64), n


def _timestamps(epoch_hours: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex((epoch_hours * _HOUR_MS).astype("datetime64[ms]"), name="timestamp").tz_localize("UTC")


def _check_spec(spec: DemoMarketSpec) -> None:
    if spec.years <= 0 or spec.start_price <= 0:
        raise ValueError("years and start_price must be positive")
    if spec.funding_interval_hours <= 0 or 24 % spec.funding_interval_hours:
        raise ValueError("funding_interval_hours must be a positive divisor of 24")
    if spec.n_outages < 0:
        raise ValueError("n_outages must be >= 0")
    if spec.perp_listing_days < 0:
        raise ValueError("perp_listing_days must be >= 0")


def generate_demo_market(spec: DemoMarketSpec = DemoMarketSpec()) -> DemoMarket:
    """Generate the synthetic market described in the module docstring (deterministic in ``spec``)."""
    _check_spec(spec)
    hours, n = _hour_grid(spec)
    # spawn(7)'s first six children are spawn(6)'s: the perp's stream (added later) changes none of the others
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(7)]
    rng_regime, rng_shock, rng_bar, rng_volume, rng_funding, rng_outage, rng_perp = streams

    regime = _sample_regimes(n, rng_regime)
    season = _vol_seasonality(hours)
    z = rng_shock.standard_t(_T_DOF, size=n) / np.sqrt(_T_DOF / (_T_DOF - 2.0))
    z = np.clip(z, -12.0, 12.0)
    x0 = math.log(spec.start_price)
    if spec.structureless:  # one volatility level, no drift, no mean reversion, no band
        inf = float("inf")
        drift, vol, chop, band_soft, band_hard, band_kappa = (
            np.zeros(len(DEMO_REGIMES)),
            np.full(len(DEMO_REGIMES), 0.006),
            -1,
            (-inf, inf),
            (-inf, inf),
            0.0,
        )
    else:
        drift, vol, chop, band_soft, band_hard, band_kappa = (
            _DRIFT,
            _VOL,
            _CHOP,
            _LOG_BAND_SOFT,
            _LOG_BAND_HARD,
            _BAND_KAPPA,
        )
    xs, sig = _simulate_log_path(
        x0, regime, drift, vol, season, z, _GARCH_A, _GARCH_B, chop, _CHOP_KAPPA,
        band_soft, band_hard, band_kappa, _SHOCK_CAP, spec.structureless,
    )  # fmt: skip
    x_open = np.concatenate(([x0], xs[:-1]))
    ret = xs - x_open

    open_ = _libm(math.exp, x_open)
    open_[0] = spec.start_price  # exact, not exp(log(start_price))
    close = _libm(math.exp, xs)
    up, down = rng_bar.standard_exponential((2, n))
    high = np.maximum(open_, close) * _libm(math.exp, sig * np.sqrt(0.5 * up))
    low = np.minimum(open_, close) * _libm(math.exp, -sig * np.sqrt(0.5 * down))
    log_volume = (
        math.log(4_000.0)
        + 0.6 * _libm(math.log, season)
        + 0.5 * _libm(math.log1p, np.abs(ret) / 0.005)
        + 0.3 * rng_volume.standard_normal(n)
    )
    volume = _libm(math.exp, log_volume)

    ts = _timestamps(hours)
    keep = np.ones(n, dtype=bool)
    keep[_outage_hours(n, spec.n_outages, rng_outage)] = False
    ohlcv = pd.DataFrame(
        {"timestamp": ts[keep], "open": open_[keep], "high": high[keep], "low": low[keep],
         "close": close[keep], "volume": volume[keep]}
    )  # fmt: skip
    ohlcv["timestamp"] = ohlcv["timestamp"].astype(TS_DTYPE)
    ohlcv = ohlcv[list(OHLCV_COLUMNS)].reset_index(drop=True)

    funding = _funding(hours, regime, ret, spec.funding_interval_hours, rng_funding, spec.structureless)
    regimes = pd.Series(pd.Categorical.from_codes(regime, categories=list(DEMO_REGIMES)), index=ts, name="regime")
    listed = np.arange(n) >= round(spec.perp_listing_days * 24)
    perp = _perp_bars(
        ts[keep & listed], open_, high, low, close, volume, regime, rng_perp, spec.structureless, keep & listed
    )
    return DemoMarket(ohlcv=ohlcv, funding=funding, regimes=regimes, perp=perp)


def _perp_basis(regime: np.ndarray, rng: np.random.Generator, structureless: bool) -> tuple[np.ndarray, float]:
    """The hourly perp basis (perp / spot - 1 at each close) and the basis before the first hour."""
    n = regime.shape[0]
    shocks = rng.standard_t(_BASIS_T_DOF, size=n) / np.sqrt(_BASIS_T_DOF / (_BASIS_T_DOF - 2.0))
    shocks = np.clip(shocks, -10.0, 10.0)
    if structureless:
        return np.clip(_BASIS_IID_STD * shocks, -_BASIS_CLIP, _BASIS_CLIP), 0.0
    premium = _BASIS_PREMIUM[regime]
    drive = (1.0 - _BASIS_AR) * premium + _BASIS_NOISE * _BASIS_NOISE_SCALE[regime] * shocks
    basis = np.empty(n)
    state = float(premium[0])
    for t in range(n):
        state = _BASIS_AR * state + drive[t]
        basis[t] = state
    return np.clip(basis, -_BASIS_CLIP, _BASIS_CLIP), float(premium[0])


def _perp_bars(
    ts: pd.DatetimeIndex,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    regime: np.ndarray,
    rng: np.random.Generator,
    structureless: bool,
    keep: np.ndarray,
) -> pd.DataFrame:
    """The perp's canonical OHLCV on the hours in ``keep`` (listed and not an outage); the random draws do not
    depend on ``keep``."""
    n = close.shape[0]
    basis, before = _perp_basis(regime, rng, structureless)
    noise = rng.standard_normal(n)
    perp_close = close * (1.0 + basis)
    perp_open = open_ * (1.0 + np.concatenate(([before], basis[:-1])))  # = the previous hour's perp close
    perp_high = np.maximum(np.maximum(perp_open, perp_close), high * (1.0 + basis))
    perp_low = np.minimum(np.minimum(perp_open, perp_close), low * (1.0 + basis))
    perp_volume = volume * _PERP_VOLUME_RATIO * _libm(math.exp, 0.25 * noise - 0.5 * 0.25**2)
    frame = pd.DataFrame(
        {"timestamp": ts, "open": perp_open[keep], "high": perp_high[keep], "low": perp_low[keep],
         "close": perp_close[keep], "volume": perp_volume[keep]}
    )  # fmt: skip
    frame["timestamp"] = frame["timestamp"].astype(TS_DTYPE)
    return frame[list(OHLCV_COLUMNS)].reset_index(drop=True)


def _funding(
    hours: np.ndarray,
    regime: np.ndarray,
    ret: np.ndarray,
    interval: int,
    rng: np.random.Generator,
    structureless: bool = False,
) -> pd.DataFrame:
    """Funding settled at each interval boundary from the regimes and returns of the interval before it
    (``structureless``: i.i.d. zero-mean noise only)."""
    n = hours.shape[0]
    # settlement at epoch hour T covers bars T-interval .. T-1, all of which must have been generated
    settle_idx = np.flatnonzero((hours % interval == 0) & (np.arange(n) >= interval))
    if hours[-1] % interval == interval - 1:  # boundary right after the last bar
        settle_idx = np.append(settle_idx, n)
    window = settle_idx[:, None] - interval + np.arange(interval)[None, :]
    trailing = ret[window].sum(axis=1)
    loading = _FUNDING_LOADING[regime[window]].mean(axis=1)
    shocks = rng.standard_normal(settle_idx.shape[0]) * _FUNDING_NOISE
    noise = np.empty_like(shocks)
    state = 0.0
    ar = 0.0 if structureless else _FUNDING_AR
    for i, e in enumerate(shocks):
        state = ar * state + e
        noise[i] = state
    rate = noise if structureless else _FUNDING_BASE + loading + _FUNDING_RETURN_BETA * trailing + noise
    rate = np.clip(rate, -_FUNDING_CLIP, _FUNDING_CLIP)
    settle_hours = np.where(settle_idx < n, hours[np.minimum(settle_idx, n - 1)], hours[-1] + 1)
    frame = pd.DataFrame({"timestamp": _timestamps(settle_hours), "funding_rate": rate.astype(np.float64)})
    frame["timestamp"] = frame["timestamp"].astype(TS_DTYPE)
    return frame[list(FUNDING_COLUMNS)].reset_index(drop=True)
