"""From the chain's tables to the engine's arrays, and the mixture-of-experts run with its references.

Inputs on the hourly grid:
* prices: the directional leg (and the carry's perp leg) is a perpetual, priced on the perp's own bars
  (``perp_open``/``perp_close`` of ``market_bars``) from its first known bar on; before the perp traded (or
  without perp bars) on spot, as a hypothetical perp at zero basis, and so again after the perp's last bar if its
  file ends before spot's. The listing is then one jump of the basis level, a few bps. The carry's spot leg is
  priced on spot. Missing hours are forward-filled and not tradable (a spot hour missing, or a perp hour missing
  while the perp trades): no fill on them;
* funding: the settled rate where the funding history is known. Where it is not (before a perpetual existed, or
  before the file starts) an assumed base rate (``PortfolioSettings.assumed_funding`` per 8 h, at 00/08/16 UTC)
  is charged, so a directional book never trades for free;
* regime probabilities: the *out-of-sample* stitched series (each bar from the refit that tests it); before the
  first test window they are unknown and the portfolio stays flat;
* ``sigma_hat`` (leverage): the volatility over the holding horizon, ``PortfolioSettings.vol_forecast``
  (:func:`leverage_sigma`); ``slip_sigma`` (slippage): the GARCH forecast of the next hour, seasonal factor
  included.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from btc_assets.config import EXPERTS, VOL_FORECASTS, PortfolioSettings
from btc_assets.folds import out_of_sample
from btc_assets.portfolio.engine import BookInputs, PortfolioParams, run_portfolio
from btc_assets.portfolio.horizon import horizon_sigma
from btc_assets.portfolio.metrics import frame_metrics, reference_runs


@dataclass(frozen=True)
class Prices:
    """The market arrays of the engine on one grid (:func:`price_arrays`)."""

    open_: np.ndarray  # the perp (directional leg, carry's perp leg)
    close: np.ndarray
    spot_open: np.ndarray  # spot (the carry's spot leg, the spot reference)
    spot_close: np.ndarray
    tradable: np.ndarray
    funding: np.ndarray
    perp_from: int  # first bar priced on the perp's own bars (len: never)

    def window(self, rows: slice) -> Prices:
        return Prices(
            *(getattr(self, f.name)[rows] for f in dataclasses.fields(self)[:-1]),
            max(0, self.perp_from - (rows.start or 0)),
        )


@dataclass(frozen=True)
class EngineInputs:
    """The engine's inputs for one study: the hourly grid and its per-bar arrays (``book``, one row per bar)."""

    index: pd.DatetimeIndex
    book: BookInputs

    @property
    def first_known(self) -> int:
        """First bar with known regime probabilities (the start of the out-of-sample period)."""
        known = np.isfinite(self.book.probs).all(axis=1)
        return int(np.argmax(known)) if known.any() else len(known)


def engine_params(settings: PortfolioSettings) -> PortfolioParams:
    """The engine's parameters for ``settings`` (fees resolved: taker, or maker with ``maker``)."""
    if settings.decision_hours < 1 or settings.band_rel < 0 or settings.borrow_rate < 0:
        raise ValueError("[portfolio] decision_hours must be >= 1, band_rel and borrow_rate >= 0")
    perp_fee, spot_fee = settings.fees_bps
    return PortfolioParams(
        vol_target=settings.vol_target,
        lev_max=settings.lev_max,
        vol_targeting=settings.vol_targeting,
        dd_max=settings.dd_max,
        k_min=settings.k_min,
        rearm=settings.rearm,
        band=settings.band,
        perp_fee_bps=perp_fee,
        slip_bps=settings.slip_bps,
        slip_vol_coef=settings.slip_vol_coef,
        hard_switch=settings.hard_switch,
        ruin_floor=settings.ruin_floor,
        spot_fee_bps=spot_fee,
        borrow_rate=settings.borrow_rate,
        band_rel=settings.band_rel,
        decision_hours=float(settings.decision_hours),
    )


def funding_with_assumption(bars: pd.DataFrame, assumed: float) -> np.ndarray:
    """Settled funding per bar; the assumed base rate on 8-hourly settlement bars where the history is unknown."""
    rate = bars["funding_rate"].to_numpy(dtype=np.float64).copy()
    closes_at = pd.DatetimeIndex(bars["timestamp"]) + pd.Timedelta(hours=1)
    settles = np.asarray(closes_at.hour % 8 == 0) & (closes_at.minute == 0)
    unknown = ~bars["funding_known"].to_numpy(dtype=bool)
    rate[unknown & settles] = assumed
    return rate


def _filled(open_: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Close forward-filled, a missing open read as that close (a flat, untradable bar)."""
    close = pd.Series(close).ffill().to_numpy(dtype=np.float64)
    return np.where(np.isfinite(open_), open_, close), close


def price_arrays(bars: pd.DataFrame, settings: PortfolioSettings) -> Prices:
    """The engine's market arrays on the grid of ``bars`` (module docstring): the perp from its first known bar
    (spot before), spot, tradable, and the funding with the assumed base rate where the history is unknown."""
    spot_open, spot_close = _filled(bars["open"].to_numpy(dtype=np.float64), bars["close"].to_numpy(dtype=np.float64))
    tradable = ~bars["missing"].to_numpy(dtype=bool)
    open_, close = spot_open.copy(), spot_close.copy()
    n = len(bars)
    perp_from = n
    if "perp_close" in bars:
        p_open = bars["perp_open"].to_numpy(dtype=np.float64)
        p_close = bars["perp_close"].to_numpy(dtype=np.float64)
        known = np.isfinite(p_open) & np.isfinite(p_close)
        if known.any():
            perp_from = int(np.argmax(known))
            perp_to = n - int(np.argmax(known[::-1]))  # after the last perp bar: spot again, as before the listing
            po, pc = _filled(p_open[perp_from:perp_to], p_close[perp_from:perp_to])
            open_[perp_from:perp_to], close[perp_from:perp_to] = po, pc
            tradable[perp_from:perp_to] &= known[perp_from:perp_to]
    return Prices(
        open_,
        close,
        spot_open,
        spot_close,
        tradable,
        funding_with_assumption(bars, settings.assumed_funding),
        perp_from,
    )


def leverage_sigma(volatility: pd.DataFrame, settings: PortfolioSettings) -> np.ndarray:
    """The annualised volatility that sets the leverage (``settings.vol_forecast``): ``horizon`` the GARCH mean
    variance over the next hours (``sigma_horizon``), ``ewma`` :func:`horizon_sigma` of the next-hour forecast,
    ``next_hour`` the next-hour forecast ``sigma`` itself."""
    if settings.vol_forecast not in VOL_FORECASTS:
        raise ValueError(f"vol_forecast must be one of {', '.join(VOL_FORECASTS)}, not {settings.vol_forecast!r}")
    sigma = volatility["sigma"].to_numpy(dtype=np.float64)
    if settings.vol_forecast == "horizon":
        return volatility["sigma_horizon"].to_numpy(dtype=np.float64)
    if settings.vol_forecast == "ewma":
        return horizon_sigma(sigma)
    return sigma


def prepare_inputs(
    bars: pd.DataFrame,
    volatility: pd.DataFrame,
    regime_probabilities: pd.DataFrame,
    signals: pd.DataFrame,
    settings: PortfolioSettings,
) -> EngineInputs:
    """Align the chain's tables on the grid of ``bars`` (converted and checked: :meth:`BookInputs.from_arrays`)."""
    index = pd.DatetimeIndex(bars["timestamp"])
    prices = price_arrays(bars, settings)
    oos = out_of_sample(regime_probabilities).set_index("timestamp")
    k = len(settings.gating)
    probs = oos.reindex(index)[[f"p_{j}" for j in range(k)]].to_numpy(dtype=np.float64)
    book = BookInputs.from_arrays(
        prices.open_,
        prices.close,
        prices.tradable,
        prices.funding,
        signals[list(EXPERTS)].to_numpy(dtype=np.float64),
        probs,
        leverage_sigma(volatility, settings),
        spot_open=prices.spot_open,
        spot_close=prices.spot_close,
        slip_sigma=volatility["sigma"].to_numpy(dtype=np.float64),
    )
    return EngineInputs(index, book)


@dataclass(frozen=True)
class PortfolioRun:
    """The mixture-of-experts run, its references on the same bars and costs, and the metrics table."""

    frame: pd.DataFrame
    references: dict[str, pd.DataFrame]  # metrics.REFERENCES: buy_and_hold_spot, buy_and_hold_perp, vol_targeted_…
    metrics: pd.DataFrame  # rows: strategy, then the references (out-of-sample period)
    first_known: int


def compute_portfolio(inputs: EngineInputs, settings: PortfolioSettings) -> PortfolioRun:
    """Run the mixture of experts over the whole grid; metrics over the out-of-sample period only."""
    params = engine_params(settings)
    gating = np.asarray(settings.gating, dtype=np.float64)
    book = inputs.book
    frame = run_portfolio(book, gating, params, EXPERTS.index("carry"), index=inputs.index, expert_names=EXPERTS)
    start = inputs.first_known
    window = slice(start, None)
    prices = Prices(book.open_, book.close, book.spot_open, book.spot_close, book.tradable, book.funding, 0)
    refs = reference_runs(
        prices.window(window), book.sigma_hat[window], book.slip_sigma[window], params, index=inputs.index[window]
    )
    strategy = frame.iloc[window].copy()
    strategy["equity"] = strategy["equity"] / frame["equity"].iloc[start - 1] if start > 0 else strategy["equity"]
    metrics = pd.DataFrame(
        {
            "strategy": frame_metrics(strategy, settings.ruin_floor),
            **{name: frame_metrics(ref, settings.ruin_floor) for name, ref in refs.items()},
        }
    ).T
    return PortfolioRun(frame, refs, metrics, start)
