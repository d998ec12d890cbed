"""Stage 4: the portfolio backtest (volatility-targeted mixture of experts) and its metrics (no Dagster here).

``engine`` holds the numba per-bar loop (:func:`run_portfolio`, :func:`backtest_score`) and its pandas reference;
``metrics`` the performance summary and buy-and-hold baselines on the same bars and costs.
"""

from __future__ import annotations

from btc_assets.portfolio.engine import (
    BAR_COLUMNS,
    N_PARAMS,
    PortfolioParams,
    Score,
    backtest_score,
    gating_weights,
    run_portfolio,
    run_portfolio_arrays,
    run_portfolio_reference,
)
from btc_assets.portfolio.metrics import buy_and_hold, portfolio_metrics, vol_targeted_buy_and_hold

__all__ = [
    "BAR_COLUMNS",
    "N_PARAMS",
    "PortfolioParams",
    "Score",
    "backtest_score",
    "buy_and_hold",
    "gating_weights",
    "portfolio_metrics",
    "run_portfolio",
    "run_portfolio_arrays",
    "run_portfolio_reference",
    "vol_targeted_buy_and_hold",
]
