"""Stage 7, the evaluation (no Dagster here): the summary across seeds (``summary``), the P&L attribution
(``attribution``), the ablation (``ablation``) and the report (``report``).

The statistics they use, re-exported here, live in ``btc_assets.overfitting`` (a leaf module below both this stage
and ``btc_assets.wfa``, which computes each study's PBO where its selection happens): the per-period Sharpe-ratio
family (PSR, DSR, expected maximum SR, minimum track record length, effective number of trials), the probability of
backtest overfitting by CSCV, and Hansen's SPA / White's Reality Check against a buy-and-hold benchmark.
"""

from __future__ import annotations

from btc_assets.overfitting import (
    PBOResult,
    deflated_sharpe_ratio,
    effective_number_of_trials,
    expected_max_sharpe,
    minimum_track_record_length,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    reality_check,
    sharpe_ratio,
    spa_test,
)

__all__ = [
    "PBOResult",
    "deflated_sharpe_ratio",
    "effective_number_of_trials",
    "expected_max_sharpe",
    "minimum_track_record_length",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "reality_check",
    "sharpe_ratio",
    "spa_test",
]
