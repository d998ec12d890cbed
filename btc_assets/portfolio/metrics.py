"""Performance summary of an hourly backtest, and the buy-and-hold references on the same bars.

Conventions: returns are simple per-bar (hourly) returns on equity, equity starts at ``initial_equity`` (1) before
the first bar, a year is 8760 bars (24 · 365, as in :mod:`btc_assets.volatility`), a month 1/12 of that year, the
risk-free rate is 0. Calendar months are UTC.

Costs charged (by the engine, :mod:`btc_assets.portfolio.engine`), each leg at its own venue: perp fees on the
directional leg and the carry's perp leg, spot fees on the carry's spot leg, slippage on every leg traded,
funding on perp positions and borrowing on a short spot leg.

References (:func:`reference_runs`, rows :data:`REFERENCES`), all on the same bars as the strategy:

* ``buy_and_hold_spot``: 1× long *spot* BTC, priced on spot, from the open of bar 1 (the engine's first fill) to
  the end. One entry fee at the spot fee (``spot_fee_bps``) plus the base slippage, no funding, never traded
  again. The headline reference.
* ``buy_and_hold_perp``: the same as a 1× long perpetual, priced on the perp's bars (spot before the listing):
  perp fee and slippage on the entry, funding paid every settlement (an assumed rate where the history is
  unknown, see :mod:`btc_assets.portfolio.tables`).
* ``vol_targeted_buy_and_hold``: a long perp at leverage min(L_max, vol_target / σ), σ the strategy's own
  leverage volatility (``PortfolioSettings.vol_forecast``: by default a one-day-half-life EWMA of the next-hour
  forecast's variance), with the strategy's rebalance policy, lag, fees, slippage and funding; no drawdown
  throttle, no ruin stop. (Leverage from the next hour's σ̂ swings with the hour-of-week seasonality and turns the
  book over ~843× a year.)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from btc_assets.portfolio.engine import BookInputs, PortfolioParams, run_portfolio

BARS_PER_YEAR = 24 * 365
REFERENCES: tuple[str, ...] = ("buy_and_hold_spot", "buy_and_hold_perp", "vol_targeted_buy_and_hold")


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True."""
    if not mask.any():
        return 0
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return int((edges[1::2] - edges[::2]).max())


def calendar_month_returns(returns: pd.Series, complete_only: bool = True) -> pd.Series:
    """Compounded return of each UTC calendar month of an hourly return series (DatetimeIndex), indexed by
    (year, month). With ``complete_only`` only complete months count: those whose first hour (day 1, 00:00) and
    last hour (the last day, 23:00) are both in the series; a partial first or last month is left out."""
    if not isinstance(returns.index, pd.DatetimeIndex):
        raise ValueError("calendar months need a DatetimeIndex")
    idx = returns.index.tz_convert("UTC") if returns.index.tz is not None else returns.index
    keys = [idx.year.rename("year"), idx.month.rename("month")]
    monthly = (1.0 + returns.astype(float)).groupby(keys).prod() - 1.0
    if not complete_only or monthly.empty:
        return monthly
    stamps = pd.Series(idx, index=idx)
    first = stamps.groupby(keys).min()
    last = stamps.groupby(keys).max()
    start = pd.DatetimeIndex([pd.Timestamp(year=y, month=m, day=1, tz=idx.tz) for y, m in monthly.index])
    last_hour = start + pd.offsets.MonthBegin(1) - pd.Timedelta(hours=1)
    complete = (first.to_numpy() == start.to_numpy()) & (last.to_numpy() == last_hour.to_numpy())
    return monthly[complete]


def bar_costs(frame: pd.DataFrame) -> np.ndarray:
    """Costs paid per bar by a :func:`run_portfolio` frame, in fractions of equity: fees + slippage + borrowing +
    funding paid (max(−funding_pnl, 0): funding received is income, not a negative cost; no ``funding_pnl``
    column: none)."""
    costs = (frame["fee_cost"] + frame["slippage_cost"]).to_numpy(dtype=float)
    if "borrow_cost" in frame:
        costs = costs + frame["borrow_cost"].to_numpy(dtype=float)
    if "funding_pnl" in frame:
        costs = costs + np.maximum(-frame["funding_pnl"].to_numpy(dtype=float), 0.0)
    return costs


def portfolio_metrics(
    returns,
    equity,
    turnover,
    costs,
    ruin_floor: float = 0.5,
    *,
    exposure=None,
    initial_equity: float = 1.0,
    bars_per_year: int = BARS_PER_YEAR,
) -> dict[str, float]:
    """Summary statistics of one run. ``costs``: everything paid per bar in fractions of equity (for an engine
    frame :func:`bar_costs`: fees + slippage + borrowing + funding paid).

    * ``cagr``: (equity_end / initial)^(1/years) − 1 with years = bars / 8760.
    * ``monthly_return`` (the headline monthly figure): the compounded monthly rate (1 + cagr)^(1/12) − 1, a month
      being 1/12 of a 365-day year (730 bars). It compounds to the final equity over the whole run.
    * ``mean_monthly_return_arithmetic``: the arithmetic mean, over *complete* UTC calendar months only
      (:func:`calendar_month_returns`), of each month's compounded return; needs a DatetimeIndex on ``returns``
      (NaN otherwise, and NaN with no complete month). Not a growth rate: it overstates compounded growth.
    * ``ann_vol`` = std(r, ddof 1)·√8760; ``sharpe`` = mean(r)/std(r)·√8760; ``sortino`` = mean(r)·8760 /
      (√mean(min(r, 0)²)·√8760); ``calmar`` = cagr / max_drawdown.
    * ``max_drawdown`` from the equity path including the initial equity.
    * ``tuw_longest_days``: the longest stretch of bars with equity below its running peak, in days (bars / 24);
      ``tuw_share``: the share of bars under water.
    * ``turnover_annual`` = Σ turnover / years (equity traded per year).
    * ``cost_total`` = Σ costs; ``cost_drag`` = Σ costs / years: the costs paid per year in fractions of equity
      (0.02 = 2 % of equity a year), each bar's cost a fraction of that bar's equity.
    * ``cost_share_of_gross`` = Σ costs / gross P&L with gross P&L = Σ r + Σ costs (the sum of the per-bar
      returns before costs); NaN when the gross P&L is not positive (no gross profit to share). Above 1 when the
      costs exceed the gross profit (the run lost money after costs).
    * ``hit_rate``: share of bars with r > 0 among bars with a position (``exposure`` ≠ 0, e.g. gross exposure;
      without ``exposure``: among bars with r ≠ 0).
    * ``survival``: 1.0 if equity never went below ``ruin_floor`` · initial, else 0.0.
    """
    r_series = returns if isinstance(returns, pd.Series) else pd.Series(np.asarray(returns, dtype=float))
    r = r_series.to_numpy(dtype=float)
    eq = np.asarray(equity, dtype=float)
    n = r.size
    if eq.shape != (n,):
        raise ValueError("returns and equity must have the same length")
    years = n / bars_per_year
    nan = math.nan
    final = eq[-1] if n else initial_equity
    growth = final / initial_equity
    cagr = growth ** (1.0 / years) - 1.0 if years > 0 and growth > 0 else (-1.0 if years > 0 else nan)
    monthly_rate = (1.0 + cagr) ** (1.0 / 12.0) - 1.0 if years > 0 else nan

    if isinstance(r_series.index, pd.DatetimeIndex) and n:
        months = calendar_month_returns(r_series, complete_only=True)
        mean_monthly = float(months.mean()) if len(months) else nan
    else:
        mean_monthly = nan

    std = float(np.std(r, ddof=1)) if n > 1 else nan
    mean = float(np.mean(r)) if n else nan
    ann_vol = std * math.sqrt(bars_per_year)
    sharpe = mean / std * math.sqrt(bars_per_year) if std and std > 0 else nan
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) if n else nan
    sortino = mean * bars_per_year / (downside * math.sqrt(bars_per_year)) if downside and downside > 0 else nan

    path = np.concatenate(([initial_equity], eq))
    peak = np.maximum.accumulate(path)
    dd = 1.0 - path / peak
    max_dd = float(dd.max())
    under = (path < peak)[1:]
    calmar = cagr / max_dd if max_dd > 0 else nan

    active = np.asarray(exposure, dtype=float) != 0.0 if exposure is not None else r != 0.0
    hit = float(np.mean(r[active] > 0.0)) if active.any() else nan
    turn = float(np.sum(turnover))
    cost = float(np.sum(costs))
    gross = float(np.sum(r)) + cost
    return {
        "n_bars": float(n),
        "years": years,
        "final_equity": float(final),
        "total_return": float(growth - 1.0),
        "cagr": float(cagr),
        "monthly_return": float(monthly_rate),
        "mean_monthly_return_arithmetic": mean_monthly,
        "ann_vol": ann_vol,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": calmar,
        "max_drawdown": max_dd,
        "tuw_longest_days": _longest_run(under) / 24.0,
        "tuw_share": float(under.mean()) if n else nan,
        "turnover_annual": turn / years if years > 0 else nan,
        "cost_total": cost,
        "cost_drag": cost / years if years > 0 else nan,
        "cost_share_of_gross": cost / gross if gross > 0 else nan,
        "hit_rate": hit,
        "survival": float(bool(np.all(eq >= ruin_floor * initial_equity))),
    }


def frame_metrics(frame: pd.DataFrame, ruin_floor: float = 0.5) -> dict[str, float]:
    """:func:`portfolio_metrics` of one run in the engine's columns (a :func:`run_portfolio` frame, a stored
    ``wfa_results`` / ``ablation_oos`` book, a slice of either), the one metrics function of the project. The equity
    path is the frame's own, ∏(1 + ``bar_return``) from 1 before its first bar, so a slice is measured from its
    start; costs: :func:`bar_costs`. Time comes from a ``timestamp`` column, else the frame's index (the
    calendar-month figure is NaN without a DatetimeIndex)."""
    index = pd.DatetimeIndex(frame["timestamp"]) if "timestamp" in frame else frame.index
    returns = pd.Series(frame["bar_return"].to_numpy(), index=index)
    return portfolio_metrics(
        returns,
        np.cumprod(1.0 + returns.to_numpy()),
        frame["turnover"].to_numpy(),
        bar_costs(frame),
        ruin_floor,
        exposure=frame["gross_exposure"].to_numpy() if "gross_exposure" in frame else None,
    )


def _single_expert(
    open_, close, tradable, funding, sigma_hat, params: PortfolioParams, index, pay_funding: bool, slip_sigma=None
):
    n = np.asarray(close).shape[0]
    fund = np.asarray(funding, dtype=float) if pay_funding else np.zeros(n)
    book = BookInputs.from_arrays(
        open_, close, tradable, fund, np.ones((n, 1)), np.ones((n, 1)), sigma_hat, slip_sigma=slip_sigma
    )
    return run_portfolio(book, np.ones((1, 1)), params, -1, index=index, expert_names=["long"])


def _held(params: PortfolioParams | None, **changes) -> PortfolioParams:
    """1× long, never rebalanced: no vol targeting, no throttle, no band, no ruin stop."""
    base = params or PortfolioParams()
    return dataclasses.replace(
        base,
        vol_targeting=False,
        lev_max=1.0,
        dd_max=0.0,
        band=0.0,
        band_rel=0.0,
        decision_hours=1.0,
        hard_switch=False,
        ruin_floor=0.0,
        **changes,
    )


def buy_and_hold_spot(
    spot_open, spot_close, tradable, params: PortfolioParams | None = None, *, index=None, fee_bps: float | None = None
) -> pd.DataFrame:
    """Spot BTC held 1× from the open of bar 1 (the first fill the engine allows) to the end, as a
    :func:`run_portfolio` frame on the *spot* prices: one entry at ``fee_bps`` (default: the spot fee of
    ``params``) plus the base slippage of ``params``, no funding, no borrowing, no exit (marked to market). A
    position of 1× equity is held unchanged, so equity follows the price (up to the engine's gap + intraday sum,
    ~1e-5 per bar)."""
    n = np.asarray(spot_close).shape[0]
    base = params or PortfolioParams()
    fee = base.spot_fee_bps if fee_bps is None else float(fee_bps)
    p = _held(params, perp_fee_bps=fee, slip_vol_coef=0.0)  # the engine's directional leg is spot here
    return _single_expert(spot_open, spot_close, tradable, np.zeros(n), np.full(n, np.nan), p, index, False)


def buy_and_hold_perp(
    open_, close, tradable, funding, params: PortfolioParams | None = None, *, index=None
) -> pd.DataFrame:
    """A 1× long perpetual (on the perp's prices) from the open of bar 1 to the end, as a :func:`run_portfolio`
    frame: the perp fee and base slippage of ``params`` on the entry (no vol-proportional slippage: no sigma is
    used), funding paid every settlement; no vol targeting, no throttle, no ruin stop."""
    n = np.asarray(close).shape[0]
    return _single_expert(open_, close, tradable, funding, np.full(n, np.nan), _held(params), index, True)


def vol_targeted_buy_and_hold(
    open_, close, tradable, funding, sigma_lev, params: PortfolioParams | None = None, *, index=None, slip_sigma=None
) -> pd.DataFrame:
    """A long perp at min(lev_max, vol_target / sigma_lev_t) with the engine's execution lag, the rebalance policy,
    fees, slippage and funding of ``params``; no throttle, no ruin stop, no position while sigma_lev is unknown.
    ``sigma_lev``: the annualised volatility that sets the leverage, the strategy's own (:func:`reference_runs`);
    ``slip_sigma`` the one of the vol-proportional slippage (default ``sigma_lev``)."""
    base = params or PortfolioParams()
    p = dataclasses.replace(base, vol_targeting=True, dd_max=0.0, hard_switch=False, ruin_floor=0.0)
    return _single_expert(open_, close, tradable, funding, sigma_lev, p, index, True, slip_sigma)


def reference_runs(
    prices, sigma_lev, slip_sigma, params: PortfolioParams | None = None, *, index=None
) -> dict[str, pd.DataFrame]:
    """The three references (:data:`REFERENCES`, module docstring) on the bars of ``prices`` (a
    :class:`btc_assets.portfolio.tables.Prices` over the window to measure; each reference starts flat at its first
    bar). ``sigma_lev``: the strategy's leverage volatility on those bars (causal, known from the first bar on);
    ``slip_sigma``: the slippage volatility. ``index``: the timestamps of the bars."""
    p = prices
    return {
        "buy_and_hold_spot": buy_and_hold_spot(p.spot_open, p.spot_close, p.tradable, params, index=index),
        "buy_and_hold_perp": buy_and_hold_perp(p.open_, p.close, p.tradable, p.funding, params, index=index),
        "vol_targeted_buy_and_hold": vol_targeted_buy_and_hold(
            p.open_, p.close, p.tradable, p.funding, sigma_lev, params, index=index, slip_sigma=slip_sigma
        ),
    }
