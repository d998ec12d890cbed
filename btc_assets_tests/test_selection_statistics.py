"""The selection statistics where the selection happened, on a market without structure and with planted skill.

The market is a GARCH(1,1) random walk with Student-t innovations (heavy tails, volatility clustering) and an
observable AR(1) signal x. Without structure the returns ignore x; with planted skill r_t loads on x_{t−1}, so the
strategies that trade on x have a real edge that persists out of sample. Each study is a family of strategies:
random moving-average crossovers (random windows, random orientation) and signal followers (sign(x + noise)). The
"search" is the project's own rule (:func:`btc_assets.wfa.study.select_winner`: the best validation score among
the best fit scores), and every trial is also run on a test window the selection never saw, as in the walk-forward.

On the structureless market every statistic must say "no skill" (PBO ≈ 0.5, DSR rarely significant); with the
planted skill it must find it. Each null test also shows the biased alternative it replaces failing on the same
data (so the test can fail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from btc_assets.evaluation.ablation import design_snooping
from btc_assets.overfitting import (
    design_deflated_sharpe_ratio,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_ratio,
    study_cscv,
    study_deflated_sharpe,
    walk_forward_pbo,
)
from btc_assets.wfa.study import TrialRecord, select_winner

WEEK = 24 * 7
FIT, VALIDATION, TEST = 48 * WEEK, 16 * WEEK, 12 * WEEK  # bars: fit + validation = the 64-week training window
N_TRIALS, N_FOLLOW = 200, 40  # trials per study, of which signal followers
SELECT_TOP = 5


def garch_t_market(
    rng: np.random.Generator,
    n_bars: int,
    n_markets: int,
    *,
    loading: float,
    nu: float = 5.0,
    alpha: float = 0.08,
    beta: float = 0.90,
    vol: float = 0.006,
    phi: float = 0.9,
) -> tuple[np.ndarray, np.ndarray]:
    """(returns, signal), each n_bars × n_markets: r_t = σ_t·(loading·x_{t−1} + sqrt(1 − loading²)·z_t), z Student-t
    with unit variance, σ²_t = ω + α·r²_{t−1} + β·σ²_{t−1} (unconditional σ = ``vol``), x a unit-variance AR(1)."""
    omega = vol**2 * (1.0 - alpha - beta)
    z = rng.standard_t(nu, size=(n_bars, n_markets)) * math.sqrt((nu - 2.0) / nu)
    e = rng.standard_normal((n_bars, n_markets))
    x = np.empty((n_bars, n_markets))
    r = np.empty((n_bars, n_markets))
    var = np.full(n_markets, vol**2)
    x_prev = rng.standard_normal(n_markets)
    r_prev = np.zeros(n_markets)
    for t in range(n_bars):
        var = omega + alpha * r_prev**2 + beta * var
        r[t] = np.sqrt(var) * (loading * x_prev + math.sqrt(1.0 - loading**2) * z[t])
        x[t] = phi * x_prev + math.sqrt(1.0 - phi**2) * e[t]
        x_prev, r_prev = x[t], r[t]
    return r, x


def strategy_returns(rng: np.random.Generator, r: np.ndarray, x: np.ndarray, n_follow: int) -> np.ndarray:
    """T × N per-bar returns of the study's strategies (``N_TRIALS − n_follow`` moving-average crossovers, then
    ``n_follow`` signal followers); each position is decided on the bar before (causal)."""
    n, n_ma = r.size, N_TRIALS - n_follow
    c = np.concatenate([[0.0], np.cumsum(np.cumsum(r))])  # cumulative sum of the log price
    fast = rng.integers(5, 100, n_ma)
    slow = (fast * rng.uniform(2.0, 8.0, n_ma)).astype(int)
    t = np.arange(n)

    def moving_average(w: np.ndarray) -> np.ndarray:  # NaN until the window is full
        start = t[None, :] + 1 - w[:, None]
        return np.where(start >= 0, (c[t + 1][None, :] - c[np.maximum(start, 0)]) / w[:, None], np.nan)

    orientation = rng.choice([-1.0, 1.0], n_ma)[:, None]
    crossovers = orientation * np.nan_to_num(np.sign(moving_average(fast) - moving_average(slow)))
    followers = np.sign(x[None, :] + rng.uniform(0.0, 0.5, (n_follow, 1)) * rng.standard_normal((n_follow, n)))
    positions = np.vstack([crossovers, followers]).T
    held = np.vstack([np.zeros((1, positions.shape[1])), positions[:-1]])  # decided at the previous bar's close
    return held * r[:, None]


def per_bar_sharpe(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return np.where(sd > 0, x.mean(axis=0) / np.where(sd > 0, sd, 1.0), 0.0)


@dataclass
class Studies:
    trials: pd.DataFrame  # one row per trial: the walk-forward trials frame's columns
    cscv: list[float]  # per study: CSCV PBO over a random subset (study_cscv), the new convention
    cscv_top: list[float]  # per study: CSCV PBO over the best trials by the training score, the old one
    winner_fit_psr: list[float]  # per study: the plain PSR of the selected trial on its fit piece


def run_studies(n_studies: int, loading: float, seed: int, n_follow: int = N_FOLLOW) -> Studies:
    rng = np.random.default_rng(seed)
    n_bars = FIT + VALIDATION + TEST
    r, x = garch_t_market(rng, n_bars, n_studies, loading=loading)
    index = pd.date_range("2021-01-04", periods=n_bars, freq="h")
    rows, cscv, cscv_top, psr = [], [], [], []
    for s in range(n_studies):
        returns = strategy_returns(rng, r[:, s], x[:, s], n_follow)
        fit, val = returns[:FIT], returns[FIT : FIT + VALIDATION]
        train, test = returns[: FIT + VALIDATION], returns[FIT + VALIDATION :]
        fit_sr, val_sr, test_sr = per_bar_sharpe(fit), per_bar_sharpe(val), per_bar_sharpe(test)
        records = [TrialRecord(i, float(fit_sr[i]), float(val_sr[i]), {}) for i in range(returns.shape[1])]
        winner = select_winner(records, SELECT_TOP).index
        psr.append(probabilistic_sharpe_ratio(fit[:, winner]))

        def returns_of(i: int, train: np.ndarray = train) -> pd.Series:
            return pd.Series(train[:, i], index=index[: FIT + VALIDATION])

        result = study_cscv(range(returns.shape[1]), returns_of, n_trials=50, n_blocks=12, seed=(seed, s))
        cscv.append(result["pbo"])
        top = np.argsort(-per_bar_sharpe(train), kind="stable")[:50]  # the old convention: best by the score
        weekly = np.add.reduceat(train[:, top], np.arange(0, FIT + VALIDATION, WEEK))
        cscv_top.append(probability_of_backtest_overfitting(weekly, n_blocks=12).pbo)
        n = returns.shape[1]
        rows.append(
            pd.DataFrame(
                {
                    "fold": s,
                    "phase": 0,
                    "trial": np.arange(n),
                    "fit": fit_sr,
                    "validation": val_sr,
                    "fit_sharpe": fit_sr,
                    "validation_sharpe": val_sr,
                    "test": test_sr,
                    "test_sharpe": test_sr,
                    "winner": np.arange(n) == winner,
                    "study_rho": result["rho"],
                    "fit_bars": float(FIT),
                }
            )
        )
    return Studies(pd.concat(rows, ignore_index=True), cscv, cscv_top, psr)


@pytest.fixture(scope="module")
def null() -> Studies:
    return run_studies(60, loading=0.0, seed=11)


@pytest.fixture(scope="module")
def planted() -> Studies:
    """A fifth of the trials (the signal followers) have a real edge, per-bar SR ≈ 0.06."""
    return run_studies(20, loading=0.08, seed=12)


@pytest.fixture(scope="module")
def planted_few() -> Studies:
    """Four trials in 200 have a real edge, per-bar SR ≈ 0.09 (a search that found a narrow good region)."""
    return run_studies(20, loading=0.12, seed=13, n_follow=4)


# -------------------------------------------------------------------------------------------------------- PBO


def test_per_study_cscv_pbo_says_no_skill_on_noise_and_the_old_convention_does_not(null: Studies) -> None:
    mean = float(np.mean(null.cscv))
    assert 0.35 < mean < 0.65, mean
    # the best 50 trials by the same training score, the convention replaced: biased upwards by construction
    assert float(np.mean(null.cscv_top)) > 0.7
    assert float(np.mean(null.cscv_top)) > mean + 0.15


def test_per_study_cscv_pbo_is_low_with_planted_skill(planted: Studies) -> None:
    assert float(np.mean(planted.cscv)) < 0.2


def test_walk_forward_pbo_says_no_skill_on_noise(null: Studies) -> None:
    wf = walk_forward_pbo(null.trials)
    assert wf.n_studies == 60 and len(wf.studies) == 60
    assert 0.35 < wf.pbo < 0.65, wf.pbo
    assert abs(wf.mean_logit) < 0.4
    # ranking by the score the selection used (in sample) instead: the selected trial is always near the top
    assert walk_forward_pbo(null.trials, score="fit").pbo == 0.0


def test_walk_forward_pbo_is_low_with_planted_skill(planted: Studies) -> None:
    wf = walk_forward_pbo(planted.trials)
    assert wf.pbo < 0.2 and wf.mean_logit > 1.0


# -------------------------------------------------------------------------------------------------------- DSR


def test_per_study_dsr_says_no_skill_on_noise_where_the_plain_psr_does_not(null: Studies) -> None:
    dsr = study_deflated_sharpe(null.trials)
    assert len(dsr) == 60 and dsr["n_trials"].eq(N_TRIALS).all() and dsr["n_bars"].eq(FIT).all()
    assert (dsr["n_effective"] <= dsr["n_trials"]).all() and (dsr["dsr_raw_n"] <= dsr["dsr"] + 1e-12).all()
    assert float((dsr["dsr"] > 0.95).mean()) <= 0.1
    assert float((dsr["dsr_raw_n"] > 0.95).mean()) <= 0.1
    # undeflated, the selected trial looks significant in most studies: the test can fail
    assert float((np.array(null.winner_fit_psr) > 0.95).mean()) > 0.5


def test_per_study_dsr_finds_planted_skill(planted_few: Studies, planted: Studies) -> None:
    dsr = study_deflated_sharpe(planted_few.trials)
    assert float(dsr["dsr_raw_n"].median()) > 0.95 and float((dsr["dsr"] > 0.95).mean()) > 0.8
    # Known limit of the DSR with the study's own cross-sectional variance: when a large share of the trials
    # share the skill, V measures real dispersion, not noise, and E[max SR] = sqrt(V)·z(N) grows with the skill
    # itself, so the deflation is very conservative (it says "not significant" although the edge is real). The
    # PBO above does find this skill.
    broad = study_deflated_sharpe(planted.trials)
    assert float(broad["dsr"].median()) < 0.95 < float(np.median(planted.winner_fit_psr))


def test_design_dsr_controls_the_choice_among_designs() -> None:
    # Six designs, one out-of-sample year each on the same noise market; the best by Sharpe ratio is reported.
    rng = np.random.default_rng(21)
    n_designs, n_bars, reps = 6, 8760, 200
    r, _ = garch_t_market(rng, n_bars, reps, loading=0.0)
    dsr, psr = [], []
    for k in range(reps):
        designs = np.sign(rng.standard_normal((n_bars // 24 + 1, n_designs))).repeat(24, axis=0)[:n_bars]
        returns = designs * r[:, k : k + 1]
        best = returns[:, int(np.argmax(per_bar_sharpe(returns)))]
        dsr.append(design_deflated_sharpe_ratio(best, n_designs))
        psr.append(probabilistic_sharpe_ratio(best))
    assert float(np.mean(np.array(dsr) > 0.95)) <= 0.08  # at most about the 5 % size (independent designs)
    assert float(np.mean(np.array(psr) > 0.95)) > 0.15  # 1 − 0.95^6 ≈ 26 % (normal) without the deflation
    assert design_deflated_sharpe_ratio(best, 1) == pytest.approx(probabilistic_sharpe_ratio(best))
    # planted: a design with a real edge stays significant after the deflation
    rp, xp = garch_t_market(rng, n_bars, 1, loading=0.08)
    skilled = np.r_[0.0, np.sign(xp[:-1, 0]) * rp[1:, 0]]  # trades on the signal of the bar before
    assert sharpe_ratio(skilled) > 0.02
    assert design_deflated_sharpe_ratio(skilled, n_designs) > 0.99


# -------------------------------------------------------------------------------------------------- SPA by design


def daily_frame(hourly: np.ndarray, start: str = "2024-01-01") -> pd.DataFrame:
    return pd.DataFrame({"timestamp": pd.date_range(start, periods=hourly.size, freq="h"), "bar_return": hourly})


def test_design_snooping_spa_no_skill_and_planted() -> None:
    from btc_assets.config import AblationSettings, get_profile

    variants = ("original", "vol_targeting", "student_t_hmm", "mixture_soft", "hard_switch")
    seeds = (0, 1, 2)
    profile = get_profile("quick")
    profile = profile.__class__(**{**profile.__dict__, "ablation": AblationSettings(seeds=seeds, variants=variants)})
    n_bars = 24 * 365
    rng = np.random.default_rng(5)
    rejections = []
    for rep in range(12):
        r, x = garch_t_market(rng, n_bars, 1, loading=0.0)
        market = r[:, 0]
        results = {
            (v, s): daily_frame(np.sign(rng.standard_normal(n_bars)) * 0.5 * market + 0.5 * market)
            for v in variants
            for s in seeds
        }  # half exposure plus noise trading: no edge over spot
        out = design_snooping(results, daily_frame(market), profile, reps=300, seed=rep)
        assert out["n_candidates"] == 5 and out["candidates"] == list(variants) and out["days"] == 365
        assert 0.0 <= out["spa_lower"] <= out["spa_consistent"] <= out["spa_upper"] <= 1.0
        rejections.append(out["spa_consistent"] < 0.05)
    assert float(np.mean(rejections)) <= 0.25  # the null: rarely rejected
    # planted: one design follows the signal (a real edge over spot), the others do not
    r, x = garch_t_market(rng, n_bars, 1, loading=0.08)
    market, signal = r[:, 0], np.r_[0.0, np.sign(x[:-1, 0])]
    results = {(v, s): daily_frame(market if v != "mixture_soft" else signal * market) for v in variants for s in seeds}
    out = design_snooping(results, daily_frame(market), profile, reps=300, seed=0)
    assert out["spa_consistent"] < 0.01 and out["reality_check"] < 0.01
    assert max(out["excess_vs_benchmark_ann"], key=out["excess_vs_benchmark_ann"].get) == "mixture_soft"
