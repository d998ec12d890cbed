"""Stage 4: the portfolio backtest (volatility-targeted mixture of experts) and its metrics (no Dagster here).

``engine`` holds the per-bar backtest (:func:`run_portfolio`, :func:`backtest_score`, :func:`backtest_scores` for
several books in one pass: the parameters, the inputs object :class:`BookInputs`, the carried state and the
wrappers), ``_kernel`` its numba kernels, ``reference`` the pandas reference the tests hold them to and ``layout``
the column layouts of their arrays (:class:`Param`, :class:`Bar`, :class:`State`);
``metrics`` the performance summary and the buy-and-hold references on the same bars (spot, perp, vol-targeted);
``horizon`` the daily-horizon volatility that sets the vol-targeted reference's leverage.
"""

from __future__ import annotations

from btc_assets.portfolio._kernel import gating_weights
from btc_assets.portfolio.engine import (
    BookInputs,
    PortfolioParams,
    Score,
    backtest_returns,
    backtest_score,
    backtest_scores,
    new_state,
    run_portfolio,
    run_portfolio_arrays,
)
from btc_assets.portfolio.horizon import horizon_sigma
from btc_assets.portfolio.layout import BAR_COLUMNS, N_PARAMS, Bar, Param, State
from btc_assets.portfolio.metrics import (
    REFERENCES,
    buy_and_hold_perp,
    buy_and_hold_spot,
    portfolio_metrics,
    reference_runs,
    vol_targeted_buy_and_hold,
)
from btc_assets.portfolio.reference import run_portfolio_reference

__all__ = [
    "BAR_COLUMNS",
    "N_PARAMS",
    "REFERENCES",
    "Bar",
    "BookInputs",
    "Param",
    "PortfolioParams",
    "Score",
    "State",
    "backtest_returns",
    "backtest_score",
    "backtest_scores",
    "buy_and_hold_perp",
    "buy_and_hold_spot",
    "gating_weights",
    "horizon_sigma",
    "new_state",
    "portfolio_metrics",
    "reference_runs",
    "run_portfolio",
    "run_portfolio_arrays",
    "run_portfolio_reference",
    "vol_targeted_buy_and_hold",
]
