"""Performance summary of an hourly backtest and buy-and-hold baselines on the same bars and costs.

Conventions: returns are simple per-bar (hourly) returns on equity, equity starts at ``initial_equity`` (1) before
the first bar, a year is 8760 bars (24 · 365, as in :mod:`btc_assets.volatility`), the risk-free rate is 0.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from btc_assets.portfolio.engine import PortfolioParams, run_portfolio

BARS_PER_YEAR = 24 * 365


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True."""
    if not mask.any():
        return 0
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return int((edges[1::2] - edges[::2]).max())


def portfolio_metrics(returns, equity, turnover, costs, ruin_floor: float = 0.5, *, exposure=None,
                      initial_equity: float = 1.0, bars_per_year: int = BARS_PER_YEAR) -> dict[str, float]:
    """Summary statistics of one run.

    * ``cagr``: (equity_end / initial)^(1/years) − 1 with years = bars / 8760.
    * ``mean_monthly_return``: mean over calendar months (UTC) of the compounded return within each month; needs a
      DatetimeIndex on ``returns`` (NaN otherwise). Partial first/last months count as they are.
    * ``ann_vol`` = std(r, ddof 1)·√8760; ``sharpe`` = mean(r)/std(r)·√8760; ``sortino`` = mean(r)·8760 /
      (√mean(min(r, 0)²)·√8760); ``calmar`` = cagr / max_drawdown.
    * ``max_drawdown`` from the equity path including the initial equity.
    * ``tuw_longest_days``: the longest stretch of bars with equity below its running peak, in days (bars / 24);
      ``tuw_share``: the share of bars under water.
    * ``turnover_annual`` = Σ turnover / years; ``cost_total`` = Σ costs, ``cost_annual`` = Σ costs / years.
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

    if isinstance(r_series.index, pd.DatetimeIndex) and n:
        idx = r_series.index
        monthly = (1.0 + r_series).groupby([idx.year, idx.month]).prod() - 1.0
        mean_monthly = float(monthly.mean())
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
    return {
        "n_bars": float(n),
        "years": years,
        "final_equity": float(final),
        "total_return": float(growth - 1.0),
        "cagr": float(cagr),
        "mean_monthly_return": mean_monthly,
        "ann_vol": ann_vol,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": calmar,
        "max_drawdown": max_dd,
        "tuw_longest_days": _longest_run(under) / 24.0,
        "tuw_share": float(under.mean()) if n else nan,
        "turnover_annual": turn / years if years > 0 else nan,
        "cost_total": cost,
        "cost_annual": cost / years if years > 0 else nan,
        "hit_rate": hit,
        "survival": float(bool(np.all(eq >= ruin_floor * initial_equity))),
    }


def frame_metrics(frame: pd.DataFrame, ruin_floor: float = 0.5) -> dict[str, float]:
    """:func:`portfolio_metrics` of a :func:`run_portfolio` frame."""
    return portfolio_metrics(frame["bar_return"], frame["equity"].to_numpy(), frame["turnover"].to_numpy(),
                             (frame["fee_cost"] + frame["slippage_cost"]).to_numpy(), ruin_floor,
                             exposure=frame["gross_exposure"].to_numpy())


def _single_expert(open_, close, tradable, funding, sigma_hat, params: PortfolioParams, index, pay_funding: bool):
    n = np.asarray(close).shape[0]
    fund = np.asarray(funding, dtype=float) if pay_funding else np.zeros(n)
    return run_portfolio(open_, close, tradable, fund, np.ones((n, 1)), np.ones((n, 1)), np.ones((1, 1)),
                         sigma_hat, params, -1, index=index, expert_names=["long"])


def buy_and_hold(open_, close, tradable, funding, params: PortfolioParams | None = None, *, index=None,
                 pay_funding: bool = True) -> pd.DataFrame:
    """Long 1× equity from the open of bar 1 (the first fill the engine allows) to the end, as a
    :func:`run_portfolio` frame. Fees and base slippage come from ``params`` (no vol-proportional slippage: no
    sigma is used); no vol targeting, no throttle, no ruin stop. Held as a perp (funding paid) unless
    ``pay_funding`` is False (spot)."""
    base = params or PortfolioParams()
    p = dataclasses.replace(base, vol_targeting=False, lev_max=1.0, dd_max=0.0, band=0.0, hard_switch=False,
                            ruin_floor=0.0)
    n = np.asarray(close).shape[0]
    return _single_expert(open_, close, tradable, funding, np.full(n, np.nan), p, index, pay_funding)


def vol_targeted_buy_and_hold(open_, close, tradable, funding, sigma_hat, params: PortfolioParams | None = None, *,
                              index=None, pay_funding: bool = True) -> pd.DataFrame:
    """Long vol_target / sigma_hat_t (capped at lev_max) with the engine's execution lag, band and costs from
    ``params``; no throttle, no ruin stop, no position while sigma_hat is unknown."""
    base = params or PortfolioParams()
    p = dataclasses.replace(base, vol_targeting=True, dd_max=0.0, hard_switch=False, ruin_floor=0.0)
    return _single_expert(open_, close, tradable, funding, sigma_hat, p, index, pay_funding)
