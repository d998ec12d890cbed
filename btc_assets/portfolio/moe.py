"""From the chain's tables to the engine's arrays, and the mixture-of-experts run with its references.

Inputs on the hourly grid:
* prices: ``open``/``close`` with missing hours forward-filled (a missing hour is not tradable: no fill on it);
* funding: the settled rate where the funding history is known. Where it is not (before a perpetual existed, or
  before the file starts) an assumed base rate (``PortfolioSettings.assumed_funding`` per 8 h, at 00/08/16 UTC)
  is charged, so a directional book never trades for free;
* regime probabilities: the *out-of-sample* stitched series (each bar from the refit that tests it); before the
  first test window they are unknown and the portfolio stays flat;
* ``sigma_hat``: the GARCH forecast of the next bar's volatility.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from btc_assets.config import EXPERTS, PortfolioSettings
from btc_assets.portfolio.engine import PortfolioParams, run_portfolio
from btc_assets.portfolio.metrics import frame_metrics, reference_runs, spot_fee_of
from btc_assets.regimes.walkforward import out_of_sample


@dataclass(frozen=True)
class EngineInputs:
    """The engine's arrays for one study, aligned on the hourly grid."""

    index: pd.DatetimeIndex
    open_: np.ndarray
    close: np.ndarray
    tradable: np.ndarray
    funding: np.ndarray
    experts: np.ndarray
    probs: np.ndarray
    sigma_hat: np.ndarray

    @property
    def first_known(self) -> int:
        """First bar with known regime probabilities (the start of the out-of-sample period)."""
        known = np.isfinite(self.probs).all(axis=1)
        return int(np.argmax(known)) if known.any() else len(known)


def engine_params(settings: PortfolioSettings) -> PortfolioParams:
    return PortfolioParams(
        vol_target=settings.vol_target, lev_max=settings.lev_max, vol_targeting=settings.vol_targeting,
        dd_max=settings.dd_max, k_min=settings.k_min, rearm=settings.rearm, band=settings.band,
        fee_bps=settings.fee_bps, slip_bps=settings.slip_bps, slip_vol_coef=settings.slip_vol_coef,
        hard_switch=settings.hard_switch, ruin_floor=settings.ruin_floor,
    )


def funding_with_assumption(bars: pd.DataFrame, assumed: float) -> np.ndarray:
    """Settled funding per bar; the assumed base rate on 8-hourly settlement bars where the history is unknown."""
    rate = bars["funding_rate"].to_numpy(dtype=np.float64).copy()
    closes_at = pd.DatetimeIndex(bars["timestamp"]) + pd.Timedelta(hours=1)
    settles = np.asarray(closes_at.hour % 8 == 0) & (closes_at.minute == 0)
    unknown = ~bars["funding_known"].to_numpy(dtype=bool)
    rate[unknown & settles] = assumed
    return rate


def price_arrays(bars: pd.DataFrame, settings: PortfolioSettings) -> tuple[np.ndarray, ...]:
    """(open_, close, tradable, funding) on the grid of ``bars``: missing hours forward-filled and not tradable,
    the funding with the assumed base rate where the history is unknown."""
    close = bars["close"].ffill().to_numpy(dtype=np.float64)
    open_ = bars["open"].to_numpy(dtype=np.float64)
    open_ = np.where(np.isfinite(open_), open_, close)
    return (open_, close, ~bars["missing"].to_numpy(dtype=bool),
            funding_with_assumption(bars, settings.assumed_funding))


def prepare_inputs(bars: pd.DataFrame, volatility: pd.DataFrame, regime_probabilities: pd.DataFrame,
                   signals: pd.DataFrame, settings: PortfolioSettings) -> EngineInputs:
    """Align the chain's tables on the grid of ``bars``."""
    index = pd.DatetimeIndex(bars["timestamp"])
    open_, close, tradable, funding = price_arrays(bars, settings)
    oos = out_of_sample(regime_probabilities).set_index("timestamp")
    k = len(settings.gating)
    probs = oos.reindex(index)[[f"p_{j}" for j in range(k)]].to_numpy(dtype=np.float64)
    return EngineInputs(
        index=index, open_=open_, close=close, tradable=tradable, funding=funding,
        experts=np.ascontiguousarray(signals[list(EXPERTS)].to_numpy(dtype=np.float64)),
        probs=np.ascontiguousarray(probs), sigma_hat=volatility["sigma"].to_numpy(dtype=np.float64),
    )


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
    args = (inputs.open_, inputs.close, inputs.tradable, inputs.funding)
    frame = run_portfolio(*args, inputs.experts, inputs.probs, gating, inputs.sigma_hat, params,
                          EXPERTS.index("carry"), index=inputs.index, expert_names=EXPERTS)
    start = inputs.first_known
    window = slice(start, None)
    refs = reference_runs(*args, inputs.sigma_hat, params, window=window, index=inputs.index[window],
                          spot_fee_bps=spot_fee_of(settings))
    strategy = frame.iloc[window].copy()
    strategy["equity"] = strategy["equity"] / frame["equity"].iloc[start - 1] if start > 0 else strategy["equity"]
    metrics = pd.DataFrame({
        "strategy": frame_metrics(strategy, settings.ruin_floor),
        **{name: frame_metrics(ref, settings.ruin_floor) for name, ref in refs.items()},
    }).T
    return PortfolioRun(frame, refs, metrics, start)
