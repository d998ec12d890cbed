"""The whole study on a market with no structure must say "no skill".

The market is the project's structureless synthetic market (``DemoMarketSpec(structureless=True)``: a martingale
log price with Student-t shocks, GARCH clustering and intraday seasonality, i.i.d. zero-mean funding). The chain
(volatility, Student-t HMM regimes) and the walk-forward optimisation run on it as on real data; the summary's
selection statistics must then find nothing: both PBOs near 0.5, the DSRs low, the SPA not significant.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from btc_assets.config import get_profile
from btc_assets.evaluation.summary import summarise
from btc_assets.folds import FoldSchedule
from btc_assets.ingestion import build_market_bars
from btc_assets.ingestion.demo import DemoMarketSpec, generate_demo_market
from btc_assets.regimes import compute_regimes
from btc_assets.volatility import compute_volatility
from btc_assets.wfa import run_seed

pytestmark = pytest.mark.slow

SCHEDULE = FoldSchedule(warmup="365D", test="91D", validation="120D")
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def null_study(tmp_path_factory: pytest.TempPathFactory):
    market = generate_demo_market(DemoMarketSpec(years=3.0, structureless=True, seed=7))
    bars = build_market_bars(market.ohlcv, market.funding).bars
    profile = get_profile("quick")
    vol = compute_volatility(bars, SCHEDULE, profile.volatility)
    regimes = compute_regimes(bars, vol, SCHEDULE, replace(profile.regimes, n_restarts=1, n_iter=20))
    settings = replace(
        profile.wfa,
        n_trials=16,
        n_startup_trials=16,
        sampler="random",
        max_folds=5,
        select_top=3,
        progress_every=0.0,
        pbo_trials=16,
    )
    checkpoints = tmp_path_factory.mktemp("null_checkpoints")
    results = {
        f"seed_{s:02d}": run_seed(
            s,
            f"seed_{s:02d}",
            bars,
            vol,
            regimes.probabilities,
            settings=settings,
            portfolio=profile.portfolio,
            schedule=SCHEDULE,
            checkpoints=str(checkpoints),
            say=lambda m: None,
        )
        for s in SEEDS
    }
    return summarise(
        {k: r.oos for k, r in results.items()}, {k: r.trials for k, r in results.items()}, bars, vol, profile.portfolio
    )


def test_null_market_says_no_skill(null_study) -> None:
    o = null_study.overfitting
    seeds = null_study.table.set_index("row").loc[[f"seed_{s:02d}" for s in SEEDS]]
    studies = len(SEEDS) * 5 * 5
    assert o["pbo_walk_forward_studies"] == studies
    # the walk-forward selection is a coin flip out of sample (75 studies: standard error about 0.06)
    assert 0.3 <= o["pbo_walk_forward"] <= 0.7, o
    assert abs(o["pbo_walk_forward_logit"]) < 0.6, o
    assert o["pbo_walk_forward_sharpe_studies"] == studies  # ranked by the plain out-of-sample Sharpe ratio
    assert 0.3 <= o["pbo_walk_forward_sharpe"] <= 0.7, o
    assert abs(o["pbo_walk_forward_sharpe_logit"]) < 0.6, o
    # per-study CSCV over trials not selected by score: about one half too
    assert 0.3 <= o["median_study_pbo"] <= 0.7, o
    # the winners' training Sharpe ratios, deflated by their own studies, are not significant: about the test's
    # 5 % size, and a median near one half (measured: 1.3 % and 0.47)
    assert o["share_studies_dsr_above_95"] <= 0.1, o
    assert 0.25 <= o["median_study_dsr"] <= 0.75, o
    # out of sample, nothing is significant after deflating by the designs compared, nor against spot
    assert (seeds["dsr"] < 0.95).all(), seeds["dsr"]
    assert o["spa_consistent"] > 0.05 and o["reality_check"] > 0.05, o
