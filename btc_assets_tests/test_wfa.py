"""Walk-forward optimisation: parameter blocks, objective, resumable studies, checkpoints and the kill test."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from btc_assets.config import EXPERTS, PortfolioSettings, get_profile
from btc_assets.folds import FoldSchedule
from btc_assets.wfa import StrategyParams, read_progress, run_seed
from btc_assets.wfa.checkpoint import read_json
from btc_assets.wfa.journal import open_storage
from btc_assets.wfa.objective import score_of
from btc_assets.wfa.samplers import (
    derive_seed,
    derive_seed_reference,
    make_sampler,
    random_block,
    random_block_reference,
)
from btc_assets.wfa.space import PhaseParams, normalise_row, phase_distributions, suggest_phase
from btc_assets.wfa.study import TrialRecord, select_winner
from btc_assets_tests.conftest import write_wfa_inputs

WORKER = Path(__file__).with_name("wfa_worker.py")
SCHEDULE = FoldSchedule(warmup="365D", test="91D")
TINY = {"n_trials": 4, "n_startup_trials": 2, "max_folds": 2, "select_top": 2, "progress_every": 0.0}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared_fits: Path) -> Path:
    """Three years of the demo market with its volatility and regime refits (8 folds of 91 days)."""
    return write_wfa_inputs(tmp_path_factory.mktemp("wfa_inputs"), SCHEDULE.warmup, SCHEDULE.test, shared_fits)


def load(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return tuple(pd.read_parquet(folder / f"{n}.parquet") for n in ("bars", "volatility", "probs"))  # type: ignore


def run(folder: Path, checkpoints: Path, seed: int = 3, messages: list[str] | None = None, frames=None, **overrides):
    bars, vol, probs = load(folder) if frames is None else frames
    profile = get_profile("quick")
    settings = replace(profile.wfa, **{**TINY, **overrides})
    say = messages.append if messages is not None else (lambda m: None)
    return run_seed(
        seed,
        f"seed_{seed:02d}",
        bars,
        vol,
        probs,
        settings=settings,
        portfolio=profile.portfolio,
        schedule=SCHEDULE,
        checkpoints=str(checkpoints),
        say=say,
    )


# ------------------------------------------------------------------------------------------------- parameter blocks


def test_gating_rows_on_the_simplex_and_matrix_layout() -> None:
    assert normalise_row(np.array([0.0, 0.0, 0.0, 0.0])) == (0.25, 0.25, 0.25, 0.25)
    row = normalise_row(np.array([0.2, 0.6, 0.0, 0.2]))
    assert sum(row) == pytest.approx(1.0) and row[1] == pytest.approx(0.6)
    params = StrategyParams.default(PortfolioSettings())
    params = params.with_phase(2, replace(params.phases[2], risk_scale=1.5))
    g = params.gating_matrix()
    assert g.shape == (5, 6)
    assert g[2, 2] == 1.5 and g[2, 0] == 0.0 and g[0, 0] == 1.0
    np.testing.assert_array_equal(g[:, -1], [p.gating[EXPERTS.index("carry")] for p in params.phases])
    assert StrategyParams.from_json(json.loads(json.dumps(params.to_json()))) == params


def test_suggested_phase_round_trips_and_matches_the_distributions() -> None:
    settings = get_profile("quick").wfa
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    flat = suggest_phase(trial, settings)
    assert flat == trial.params
    assert set(flat) == set(phase_distributions(settings))
    phase = PhaseParams.from_flat(flat)
    assert sum(phase.gating) == pytest.approx(1.0)
    assert PhaseParams.from_flat(phase.flat()) == phase


def test_seeds_differ_per_fold_phase_and_trial() -> None:
    seeds = {derive_seed(s, f, k, i) for s in range(3) for f in range(3) for k in range(5) for i in range(5)}
    assert len(seeds) == 3 * 3 * 5 * 5
    assert derive_seed(1, 2, 3, 4) == derive_seed(1, 2, 3, 4)


def test_fast_seeds_and_blocks_equal_numpys_bit_for_bit() -> None:
    """``derive_seed`` (SeedSequence's hash in Python integers) and ``random_block`` (the Mersenne Twister's outputs
    decoded as ``RandomState`` decodes them) give exactly their references' values, types included: on the search
    space, and on ranges that exercise the masked rejection (just above a power of two), the full 32-bit range,
    one-value ranges and choices, wide floats, and a 64-bit range (the reference's own path)."""
    rnd = random.Random(0)
    for _ in range(5000):
        words = [0, 1, 2**32 - 1, rnd.randrange(2**32), rnd.randrange(100)]
        parts = [rnd.choice(words) for _ in range(rnd.randrange(1, 7))]
        assert derive_seed(*parts) == derive_seed_reference(*parts), parts
    assert derive_seed(2**40, 3) == derive_seed_reference(2**40, 3)  # a part of two words: the reference's path
    D = optuna.distributions
    odd = {
        "one": D.IntDistribution(0, 0),
        "pow2": D.IntDistribution(3, 2**31 + 3),
        "full": D.IntDistribution(-5, 2**32 - 6),
        "small": D.IntDistribution(0, 2**20 + 1),
        "single": D.CategoricalDistribution((1,)),
        "seven": D.CategoricalDistribution(tuple("abcdefg")),
        "wide": D.FloatDistribution(-1e9, 3.5),
    }
    spaces = [phase_distributions(get_profile("full").wfa), odd, {"big": D.IntDistribution(0, 2**40)}]
    for space in spaces:
        for seed in [*range(1500), 2**32 - 1]:
            fast, plain = random_block(space, seed), random_block_reference(space, seed)
            assert fast == plain and [type(v) for v in fast.values()] == [type(v) for v in plain.values()], seed


def test_block_random_sampler_draws_uniformly_inside_the_space() -> None:
    """The ``random`` sampler draws the whole block at once: every value inside its range, integers and booleans
    uniform, floats uniform (mean and spread of a uniform), the same draws for the same seed."""
    settings = get_profile("full").wfa
    space = phase_distributions(settings)

    def draws(seed: int, n: int) -> list[dict]:
        study = optuna.create_study(sampler=make_sampler("random", seed, 0, space))
        out = []
        for _ in range(n):
            trial = study.ask()
            out.append(suggest_phase(trial, settings))
            study.tell(trial, 0.0)
        return out

    sample = pd.DataFrame(draws(1, 3000))
    assert pd.DataFrame(draws(1, 50)).equals(sample.head(50)) and not pd.DataFrame(draws(2, 50)).equals(sample.head(50))
    for name, d in space.items():
        values = sample[name]
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            assert abs(values.astype(float).mean() - 0.5) < 0.05, name
            continue
        assert values.min() >= d.low and values.max() <= d.high, name
        width = d.high - d.low
        assert abs(values.mean() - (d.low + d.high) / 2) < 0.05 * width, name
        if isinstance(d, optuna.distributions.IntDistribution):
            assert values.min() == d.low and values.max() == d.high, name  # both ends reachable
        else:
            assert abs(values.std() - width / np.sqrt(12)) < 0.05 * width, name


def test_winner_is_best_validation_among_top_fit() -> None:
    records = [
        TrialRecord(0, 1.0, 0.1, {}),
        TrialRecord(1, 0.9, 0.5, {}),
        TrialRecord(2, 0.2, 9.0, {}),
        TrialRecord(3, 1.0, 0.1, {}),
    ]
    assert select_winner(records, 2).index == 0  # trials 0 and 3 tie on fit: the earlier is ranked first
    assert select_winner(records, 3).index == 1  # trial 2's validation is out of reach: its fit is not top 3
    assert select_winner(records, 1).index == 0


def test_score_penalises_turnover_and_drawdown_and_ruin() -> None:
    from btc_assets.portfolio.engine import Score

    settings = get_profile("quick").wfa
    flat = Score(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert score_of(flat, 1000, settings, 0.5) == 0.0
    good = Score(0.1, 0.1, 0.01, 0.0, 0.05, 0.0, 0.0)
    busy = good._replace(turnover=100.0)
    deep = good._replace(max_drawdown=0.3)
    assert score_of(busy, 1000, settings, 0.5) < score_of(good, 1000, settings, 0.5)
    assert score_of(deep, 1000, settings, 0.5) < score_of(good, 1000, settings, 0.5)
    assert score_of(good._replace(log_growth=float("-inf")), 1000, settings, 0.5) == -10.0


def test_cost_budget_is_a_steep_hinge_on_costs_per_year() -> None:
    """Within the budget costs do not enter the score (they are already in the returns); beyond it the score falls
    by cost_budget_penalty per unit of annual cost, so a cheaper book over budget still beats a dearer one."""
    from btc_assets.portfolio.engine import Score

    settings = replace(get_profile("quick").wfa, cost_budget=0.02, cost_budget_penalty=100.0)
    n = 8760  # one year of bars: Score.costs is then the annual cost
    base = Score(0.1, 0.1, 0.01, 0.0, 0.05, 0.0, 0.0)
    at_budget = score_of(base._replace(costs=0.02), n, settings, 0.5)
    assert at_budget == score_of(base, n, settings, 0.5)
    over = score_of(base._replace(costs=0.03), n, settings, 0.5)
    assert over == pytest.approx(at_budget - 1.0)  # 1 %/yr over budget: −1 Sharpe
    assert score_of(base._replace(costs=0.025), n, settings, 0.5) > over
    unlimited = replace(settings, cost_budget=float("inf"))
    assert score_of(base._replace(costs=0.5), n, unlimited, 0.5) == score_of(base, n, unlimited, 0.5)


# --------------------------------------------------------------------------------------------------- seed runs


def test_seed_runs_out_of_sample_and_resumes_without_rerunning(inputs: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    first = run(inputs, tmp_path, messages=messages)
    assert first.trials_run == 2 * 5 * 4 and not first.resumed
    assert "no checkpoint; starting fresh" in messages[0]
    # stitched out of sample: two consecutive test windows, costs on, equity compounding across folds
    oos = first.oos
    assert list(oos["fold"].unique()) == [6, 7]
    assert oos["timestamp"].is_monotonic_increasing and oos["timestamp"].diff().dropna().eq(pd.Timedelta("1h")).all()
    assert oos["fee_cost"].sum() > 0
    np.testing.assert_allclose(oos["equity"], np.cumprod(1 + oos["bar_return"]), rtol=1e-12)
    trials = first.trials
    assert len(trials) == 40 and trials.groupby(["fold", "phase"])["winner"].sum().eq(1).all()
    assert {"fit", "validation", "fit_sharpe", "validation_sharpe", "study_pbo", "study_rho"} <= set(trials.columns)
    assert trials["study_rho"].between(0, 1).all()
    assert trials.groupby(["fold", "phase"])["study_pbo"].nunique().eq(1).all()
    assert trials["study_pbo"].between(0, 1).all()
    assert np.isfinite(trials[["fit_sharpe", "validation_sharpe"]].to_numpy()).all()
    # the objective is the annualised Sharpe minus penalties: never above it
    assert (trials["fit"] <= trials["fit_sharpe"] * np.sqrt(8760) + 1e-9).all()
    # trial 0 of every phase is the incumbent: the winner's training score is never below it... (fit of trial 0)
    best = trials.groupby(["fold", "phase"])["fit"].max()
    incumbent = trials[trials["trial"] == 0].set_index(["fold", "phase"])["fit"]
    assert (best >= incumbent).all()
    progress = read_progress(tmp_path)["seed_03"]
    assert progress["state"] == "done" and progress["trials_done"] == 40

    messages.clear()
    again = run(inputs, tmp_path, messages=messages)
    assert again.trials_run == 0 and again.resumed
    assert "resuming from the checkpoint" in messages[0]
    pd.testing.assert_frame_equal(again.oos, first.oos, check_exact=True)
    pd.testing.assert_frame_equal(again.trials, first.trials, check_exact=True)


def test_a_fold_resumed_after_its_first_phases_equals_an_uninterrupted_run(inputs: Path, tmp_path: Path) -> None:
    """A resume that finds a fold's first phases recorded and runs its later studies afresh (their records and
    journals gone, as after a crash between phases) gives exactly the uninterrupted results: each later study sees
    the recorded winners in the other phases' columns, though a recorded phase loads no column."""
    first = run(inputs, tmp_path)
    fold = int(first.trials["fold"].max())
    seed_dir = tmp_path / "seed_03"
    for k in (2, 3, 4):
        (seed_dir / "phases" / f"fold{fold:02d}_phase{k}.json.gz").unlink()
        (journal,) = (seed_dir / "journal").glob(f"*-fold{fold:02d}-phase{k}-*.journal")
        journal.unlink()
    again = run(inputs, tmp_path)
    assert again.trials_run == 3 * 4 and again.resumed
    pd.testing.assert_frame_equal(again.trials, first.trials, check_exact=True)
    pd.testing.assert_frame_equal(again.oos, first.oos, check_exact=True)


def test_out_of_sample_is_one_account_equal_to_one_reference_run(inputs: Path, tmp_path: Path) -> None:
    """The stitched test windows are one book: they equal one reference run over the concatenated test windows
    with each fold's parameters (per-bar gating and expert columns), and no fold restarts flat at equity 1."""
    from btc_assets.experts import BarArrays
    from btc_assets.portfolio.engine import BookInputs
    from btc_assets.portfolio.layout import BAR_COLUMNS
    from btc_assets.portfolio.reference import run_portfolio_reference
    from btc_assets.portfolio.tables import prepare_inputs
    from btc_assets.wfa.objective import FoldObjective, SignalCache
    from btc_assets.wfa.run import _no_signals

    result = run(inputs, tmp_path, max_folds=3)
    bars, vol, probs = load(inputs)
    profile = get_profile("quick")
    settings = replace(profile.wfa, **{**TINY, "max_folds": 3})
    engine_inputs = prepare_inputs(bars, vol, probs, _no_signals(len(bars)), profile.portfolio)
    signals = SignalCache(BarArrays.from_market_bars(bars))
    pieces = []
    for row in result.folds.itertuples():
        objective = FoldObjective(engine_inputs, probs, int(row.fold), signals, profile.portfolio, settings)
        params = StrategyParams.from_json(json.loads(row.params))
        gating = objective.load(params)
        test = objective.pieces["test"]
        book = objective.book.rows(test.start, test.stop)
        pieces.append((book._replace(experts=book.experts.copy()), np.repeat(gating[None], test.n, axis=0)))
    joined = BookInputs(*(np.concatenate(arrays) for arrays in zip(*(book for book, _ in pieces), strict=True)))
    per_bar = np.concatenate([g for _, g in pieces])
    reference = run_portfolio_reference(joined, per_bar, objective.params, joined.n_experts - 1)
    oos = result.oos
    assert len(oos) == len(reference)
    np.testing.assert_allclose(
        oos[list(BAR_COLUMNS)].to_numpy(), reference[list(BAR_COLUMNS)].to_numpy(), rtol=0, atol=1e-9, equal_nan=True
    )
    # at each boundary the position is carried (or traded there and charged), never silently flat at equity 1
    for fold in oos["fold"].unique()[1:]:
        at = int(np.flatnonzero(oos["fold"].to_numpy() == fold)[0])
        before, first = oos.iloc[at - 1], oos.iloc[at]
        assert first["equity"] == pytest.approx(before["equity"] * (1 + first["bar_return"]), rel=1e-12)
        if first["turnover"] == 0:
            assert first["position"] == before["target_position"] or first["position"] == before["position"]
        else:
            assert first["fee_cost"] + first["slippage_cost"] > 0
    assert result.folds["equity_start"].iloc[1:].ne(1.0).all()
    held = oos["position"].abs().gt(0).groupby(oos["fold"]).first()
    assert held.iloc[1:].any(), "no fold starts with a carried position: the test proves nothing"


def test_changed_config_or_earlier_data_starts_fresh_and_says_so(inputs: Path, tmp_path: Path) -> None:
    """A changed setting moves the seed's checkpoint aside, and so does a changed bar in the first fold's warm-up
    (other data, not more of the same); a changed bar after it re-optimises exactly the studies that read it (here:
    fold 7's), and a bar only in the last test window re-optimises nothing: that fold's trials are re-scored."""
    first = run(inputs, tmp_path)
    messages: list[str] = []
    changed = run(inputs, tmp_path, messages=messages, turnover_penalty=0.01)
    assert changed.trials_run == 40 and not changed.resumed
    assert "different config" in messages[0] and "starting fresh" in messages[0]
    assert len(list(tmp_path.glob("seed_03.stale-*"))) == 1

    bars, vol, probs = load(inputs)
    late = bars.copy()
    late.loc[len(bars) - 24 * 10, "close"] *= 1.01  # in fold 7's test window only
    messages.clear()
    again = run(inputs, tmp_path, messages=messages, frames=(late, vol, probs), turnover_penalty=0.01)
    assert again.trials_run == 0 and again.trials_from_checkpoint == 40 and again.studies_retested == 5
    assert not any("afresh" in m for m in messages) and "0 trials run now, 40 from the checkpoint" in messages[-1]

    fold_7 = probs[probs["fold"] == 7]
    train_end = fold_7.loc[fold_7["segment"] == "validation", "timestamp"].max()
    middle = bars.copy()
    middle.loc[int(np.flatnonzero(bars["timestamp"] == train_end)[0]) - 24, "close"] *= 1.01  # read by fold 7 only
    messages.clear()
    partly = run(inputs, tmp_path, messages=messages, frames=(middle, vol, probs), turnover_penalty=0.01)
    assert partly.trials_run == 20 and partly.trials_from_checkpoint == 20
    stale = [m for m in messages if "optimising afresh" in m]
    assert len(stale) == 5 and all("fold 7" in m and "different data before" in m for m in stale), messages
    assert len(list(tmp_path.glob("seed_03.stale-*"))) == 1  # the seed's own checkpoint stays

    early = bars.copy()
    early.loc[100, "close"] *= 1.01  # in the warm-up every study reads: other data, not more of the same
    messages.clear()
    fresh = run(inputs, tmp_path, messages=messages, frames=(early, vol, probs), turnover_penalty=0.01)
    assert fresh.trials_run == 40 and fresh.trials_from_checkpoint == 0
    assert "different data" in messages[0] and "starting fresh" in messages[0]
    assert len(list(tmp_path.glob("seed_03.stale-*"))) == 2
    assert first.trials_run == 40


def test_changed_code_starts_fresh(inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fingerprint's code part is the source digest of the optimiser and all it imports (experts, engine,
    glue; ``btc_assets.versions``): an edit there (here simulated) never resumes an old checkpoint."""
    from btc_assets.wfa import run as wfa_run

    first = run(inputs, tmp_path, max_folds=1)
    assert first.fingerprint.code == wfa_run.code_digest()
    monkeypatch.setattr(wfa_run, "code_digest", lambda: "edited")
    messages: list[str] = []
    again = run(inputs, tmp_path, messages=messages, max_folds=1)
    assert "different code" in messages[0] and again.trials_run == 20


def test_seeds_make_different_choices(inputs: Path, tmp_path: Path) -> None:
    a = run(inputs, tmp_path / "a", seed=1)
    b = run(inputs, tmp_path / "b", seed=2)
    late = a.trials["trial"] > 0
    assert not a.trials.loc[late, "params"].equals(b.trials.loc[late, "params"])
    assert (a.trials.loc[~late, "params"].to_numpy() == b.trials.loc[~late, "params"].to_numpy())[:1].all()


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_gating_only_seed_searches_the_gates_and_risk_scale_only(inputs: Path, tmp_path: Path, sampler: str) -> None:
    """``search_experts = False`` (the ablation's ``gating_only``): every trial of every study, in the trials frame
    and in the checkpoint records, varies ``gate.*`` and ``risk_scale`` only, and every fold's final parameters keep
    the experts' class defaults."""
    from btc_assets import experts

    result = run(inputs, tmp_path, search_experts=False, sampler=sampler)
    searched = {f"gate.{e}" for e in EXPERTS} | {"risk_scale"}
    params = pd.DataFrame([json.loads(p) for p in result.trials["params"]])
    assert set(params.columns) == searched and len(params) == 40
    assert (params.nunique() > 30).all()  # they do vary
    records = sorted((tmp_path / "seed_03" / "phases").glob("*.json.gz"))
    assert len(records) == 2 * 5
    for path in records:
        record = read_json(path)
        assert set(record["params"]) == searched and set(record["trials"]["params"]) == searched  # stored as columns
    defaults = (experts.TrendExpert(), experts.MeanReversionExpert(), experts.BreakoutExpert())
    for text in result.folds["params"]:
        for phase in StrategyParams.from_json(json.loads(text)).phases:
            assert (phase.trend, phase.mean_reversion, phase.breakout) == defaults


def test_searched_rebalance_policy_is_global_and_used_out_of_sample(inputs: Path, tmp_path: Path) -> None:
    """``search_policy``: every study also draws ``policy.band_rel`` / ``policy.decision_hours`` in their ranges;
    each fold's final parameters carry one policy (the last phase's winner's, chained from phase to phase), and
    the out-of-sample book trades by it: no two fills closer than its decision interval unless going flat or cut
    by the throttle."""
    result = run(
        inputs, tmp_path, search_policy=True, max_band_rel=0.8, max_decision_hours=30, sampler="random", n_trials=6
    )
    params = pd.DataFrame([json.loads(p) for p in result.trials["params"]])
    assert params["policy.band_rel"].between(0.0, 0.8).all() and params["policy.band_rel"].nunique() > 10
    assert params["policy.decision_hours"].between(1, 30).all() and params["policy.decision_hours"].nunique() > 5
    folds = [StrategyParams.from_json(json.loads(t)) for t in result.folds["params"]]
    assert all(f.policy is not None for f in folds)
    oos = result.oos
    for fold, policy in zip(result.folds["fold"], (f.policy for f in folds), strict=True):
        book = oos[oos["fold"] == fold].reset_index(drop=True)
        position, throttle = book["position"].to_numpy(), book["throttle"].to_numpy()
        at = np.flatnonzero(np.diff(position) != 0) + 1  # the directional leg's fills (its own clock)
        early = at[1:][np.diff(at) < policy.decision_hours]
        for t in early:  # allowed early: going flat or a throttle cut since that leg's previous fill
            prev = at[at < t][-1]
            assert position[t] == 0.0 or throttle[t - 1] < throttle[prev - 1], (fold, t)
    # the default: no policy searched, none stored
    plain = run(inputs, tmp_path / "plain")
    assert all(StrategyParams.from_json(json.loads(t)).policy is None for t in plain.folds["params"])
    assert not any(k.startswith("policy.") for p in plain.trials["params"] for k in json.loads(p))


def test_rdb_storage_by_configuration(inputs: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run(inputs, tmp_path / "ck", storage=url, max_folds=1)
    storage = open_storage(url, "")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert len(names) == 5 and all(n.startswith("seed_03-") for n in names)
    assert result.trials_run == 20


# ------------------------------------------------------------------------------------------------------ kill test


def _worker(
    inputs: Path, checkpoints: Path, out: Path, settings: dict, delay: float = 0.0, batch: int = 0
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": str(random.randrange(1 << 16))}  # nothing may depend on hashing
    if delay:
        env["WFA_WORKER_TRIAL_DELAY"] = str(delay)  # trials dominate the run time: kills land mid-trial
    if batch:
        env["WFA_WORKER_BATCH"] = str(batch)
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(inputs), str(checkpoints), str(out), json.dumps(settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _journal_bytes(checkpoints: Path) -> int:
    return sum(p.stat().st_size for p in (checkpoints / "seed_05" / "journal").glob("*.journal"))


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(inputs: Path, tmp_path: Path, sampler: str) -> None:
    """SIGKILL one seed at several random moments (mid-trial, mid-batch, mid-write); each time resume; the final
    results equal an uninterrupted run of the same seed exactly, and no trial is stored twice. ``tpe`` asks a
    mirror study trial by trial; ``random`` (the full profile's) evaluates a storage batch's trials side by side."""
    settings = {
        "seed": 5, "seed_key": "seed_05", **TINY, "n_trials": 10, "n_startup_trials": 3, "max_folds": 2,
        "sampler": sampler,
    }  # fmt: skip
    clean = _worker(inputs, tmp_path / "clean", tmp_path / "clean_out", settings)
    out, _ = clean.communicate(timeout=300)
    assert clean.returncode == 0, out

    rng = random.Random(20261124)
    kills = 0
    for _attempt in range(12):
        before = _journal_bytes(tmp_path / "killed")
        proc = _worker(inputs, tmp_path / "killed", tmp_path / "killed_out", settings, delay=0.05, batch=3)
        deadline = time.monotonic() + 120
        while _journal_bytes(tmp_path / "killed") <= before and proc.poll() is None:
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if kills == 4:
            break
    assert kills >= 3, "the run finished before it could be killed three times"
    final = _worker(inputs, tmp_path / "killed", tmp_path / "killed_out", settings)
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out

    for name in ("trials", "oos", "folds"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "killed_out" / f"{name}.parquet"),
            pd.read_parquet(tmp_path / "clean_out" / f"{name}.parquet"),
            check_exact=True,
        )
    # every study's journal holds its 10 trials once each: a batch cut off by a kill was never written, and run again
    states = []
    for path in sorted((tmp_path / "killed" / "seed_05" / "journal").glob("*.journal")):
        storage = open_storage(None, str(path))
        (summary,) = optuna.get_all_study_summaries(storage)
        trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
        assert sorted(t.user_attrs["index"] for t in trials) == list(range(10))
        states += [t.state for t in trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * (2 * 5 * 10)


# ----------------------------------------------------------------------------------------------------- summary


def test_latest_position_is_the_order_the_book_fills_next(inputs: Path, tmp_path: Path) -> None:
    """Each fold's recorded orders are what the book holds at the next fold's first bar (decided at the close,
    filled at the next open), so the last fold's are the position to hold now; the BTC amounts are capital × units
    at the last perp close, and the statistics are across the seeds."""
    from btc_assets.evaluation.position import latest_positions
    from btc_assets.portfolio.tables import price_arrays

    results = {f"seed_{s:02d}": run(inputs, tmp_path, seed=s) for s in (1, 2)}
    bars, _, probs = load(inputs)
    for r in results.values():
        oos, folds = r.oos, r.folds
        first_bars = oos.groupby("fold")["position"].first()
        first_carry = oos.groupby("fold")["carry_position"].first()
        nonzero = 0
        for f, next_f in zip(folds["fold"].iloc[:-1], folds["fold"].iloc[1:], strict=True):
            row = folds.set_index("fold").loc[f]
            assert row["order_position"] == first_bars[next_f] and row["order_carry"] == first_carry[next_f]
            nonzero += row["order_position"] != 0.0
        assert nonzero, "every fold ended flat: the test proves nothing"
    portfolio = get_profile("quick").portfolio
    table = latest_positions(
        {k: r.oos for k, r in results.items()}, {k: r.folds for k, r in results.items()}, bars, probs, portfolio, 1e5
    ).set_index("row")
    assert list(table.index) == ["seed_01", "seed_02", "median", "p05", "p95", "std"]
    last_bar = pd.Timestamp(bars["timestamp"].iloc[-1])
    close = price_arrays(bars, portfolio).close[-1]
    for key, r in results.items():
        row, last = table.loc[key], r.folds.iloc[-1]
        # the bar after the book's last one; the schedule may leave a short tail of the data untested (stale)
        book_end = pd.Timestamp(r.oos["timestamp"].iloc[-1]) + pd.Timedelta(hours=1)
        assert row["timestamp"] == book_end
        assert row["stale_hours"] == (last_bar + pd.Timedelta(hours=1) - book_end) / pd.Timedelta(hours=1)
        assert row["directional"] == last["order_position"] and row["carry"] == last["order_carry"]
        assert row["directional_btc"] == pytest.approx(1e5 * last["order_position"] / close)
        assert row["leverage"] == r.oos["leverage"].iloc[-1]
        assert sum(row[c] for c in table.columns if c.startswith("p_")) == pytest.approx(1.0)
    assert table.loc["median", "directional"] == pytest.approx(table.loc[["seed_01", "seed_02"], "directional"].mean())
    cut = {k: r.oos.iloc[:-5] for k, r in results.items()}  # a book that ends early is flagged as stale
    folds_cut = {
        k: r.folds.assign(
            test_end=r.folds["test_end"].where(
                r.folds.index < len(r.folds) - 1, cut[k]["timestamp"].iloc[-1] + pd.Timedelta(hours=1)
            )
        )
        for k, r in results.items()
    }
    later = latest_positions(cut, folds_cut, bars, probs, portfolio, 1e5).set_index("row")
    rows = ["seed_01", "seed_02", "median"]
    assert (later.loc[rows, "stale_hours"] == table.loc[rows, "stale_hours"] + 5).all()
    with pytest.raises(ValueError, match="seed_01: its wfa_folds has no order_position"):
        old = {k: f.drop(columns=["order_position", "order_carry"]) for k, f in folds_cut.items()}
        latest_positions(cut, old, bars, probs, portfolio, 1e5)
    with pytest.raises(ValueError, match="capital must be positive"):
        latest_positions(cut, folds_cut, bars, probs, portfolio, 0.0)


def test_summary_across_seeds(inputs: Path, tmp_path: Path) -> None:
    from btc_assets.evaluation.summary import ORIGINAL_SYSTEM_REPORTED, TARGET_MONTHLY, summarise
    from btc_assets.portfolio.metrics import REFERENCES, calendar_month_returns

    results = {f"seed_{s:02d}": run(inputs, tmp_path, seed=s) for s in (1, 2, 3)}
    bars, vol, _ = load(inputs)
    summary = summarise(
        {k: r.oos for k, r in results.items()},
        {k: r.trials for k, r in results.items()},
        bars,
        vol,
        get_profile("quick").portfolio,
    )
    table = summary.table.set_index("row")
    assert list(table.index[:3]) == ["seed_01", "seed_02", "seed_03"]
    seeds = table.loc[["seed_01", "seed_02", "seed_03"]]
    assert table.loc["median", "sharpe"] == pytest.approx(seeds["sharpe"].median())
    assert table.loc["p05", "max_drawdown"] <= table.loc["p95", "max_drawdown"]
    assert table.loc["median", "survival"] == pytest.approx(seeds["survival"].mean())
    # the selection statistics, each where its selection happened (btc_assets.overfitting)
    from btc_assets.overfitting import (
        design_deflated_sharpe_ratio,
        probabilistic_sharpe_ratio,
        quantile_with_inf,
        walk_forward_pbo,
    )

    o = summary.overfitting
    assert o["n_trials"] == 3 * 40 and o["n_studies"] == 3 * 2 * 5
    studies = pd.concat([r.trials.assign(seed=k) for k, r in results.items()]).drop_duplicates(
        ["seed", "fold", "phase"]
    )
    n_eff = o["n_effective_trials"]  # informative: Σ over studies of ρ̄ + (1 − ρ̄)·N
    assert 3 * 2 * 5 <= n_eff <= 3 * 40
    assert n_eff == pytest.approx(float((studies["study_rho"] + (1 - studies["study_rho"]) * 4).sum()))
    # out of sample: PSR against 0 and against spot buy-and-hold's Sharpe; DSR deflated by the designs compared
    r1 = results["seed_01"].oos["bar_return"].to_numpy()
    assert o["n_designs"] == 7 and (seeds["dsr"] <= seeds["psr"] + 1e-12).all()  # the ablation's variants
    assert seeds.loc["seed_01", "dsr"] == pytest.approx(design_deflated_sharpe_ratio(r1, 7))
    assert seeds.loc["seed_01", "psr_vs_spot"] == pytest.approx(
        probabilistic_sharpe_ratio(r1, o["spot_sharpe_per_bar"])
    )
    assert table.loc["buy_and_hold_spot", "psr_vs_spot"] == pytest.approx(0.5)
    # per-study DSR of each study's winner on its fit piece, with the study's own N and V; raw N deflates more
    assert o["studies_with_dsr"] == 3 * 2 * 5 and 0.0 <= o["median_study_dsr"] <= 1.0
    assert (seeds["study_dsr_raw_n_median"] <= seeds["study_dsr_median"] + 1e-12).all()
    assert (seeds["study_dsr_raw_n_mean"] <= seeds["study_dsr_mean"] + 1e-12).all()
    # PBO: per-study CSCV over trials not chosen by score (averaged per seed), and of the walk-forward selection
    assert o["studies_with_pbo"] == 3 * 2 * 5 and 0.0 <= o["median_study_pbo"] <= 1.0
    one = results["seed_01"].trials
    assert seeds.loc["seed_01", "pbo"] == pytest.approx(one.drop_duplicates(["fold", "phase"])["study_pbo"].mean())
    wf = walk_forward_pbo(one)
    assert wf.n_studies == 2 * 5 and seeds.loc["seed_01", "pbo_walk_forward"] == pytest.approx(wf.pbo)
    assert seeds.loc["seed_01", "pbo_walk_forward_logit"] == pytest.approx(wf.mean_logit)
    assert o["pbo_walk_forward_studies"] == 3 * 2 * 5 and 0.0 <= o["pbo_walk_forward"] <= 1.0
    every = pd.concat([r.trials.assign(seed=k) for k, r in results.items()], ignore_index=True)
    by_sharpe = walk_forward_pbo(every, score="test_sharpe")
    assert o["pbo_walk_forward_sharpe"] == pytest.approx(by_sharpe.pbo)
    assert seeds.loc["seed_01", "pbo_walk_forward_sharpe_logit"] == pytest.approx(
        by_sharpe.studies.query("seed == 'seed_01'")["logit"].mean()
    )
    # SPA / Reality Check: one design (the seed-averaged daily returns) against spot buy-and-hold
    assert o["spa_candidates"] == 1
    assert 0.0 <= o["spa_lower"] <= o["spa_consistent"] <= o["spa_upper"] <= 1.0 and 0.0 <= o["reality_check"] <= 1.0
    assert o["spa_upper"] == o["reality_check"]  # one candidate: studentising is a rescaling
    assert o["days"] == pytest.approx(len(results["seed_01"].oos) / 24, abs=1)
    # the minimum track record length's dispersion counts the seeds that never become significant (inf)
    for row, q in (("median", 0.5), ("p05", 0.05), ("p95", 0.95)):
        assert table.loc[row, "min_track_record_days"] == quantile_with_inf(seeds["min_track_record_days"], q)
    # the references run on exactly the seeds' out-of-sample bars
    oos = results["seed_01"].oos
    assert list(table.index[-3:]) == list(REFERENCES)  # measured rows only: the original system is apart
    for name in ("buy_and_hold_spot", "buy_and_hold_perp"):
        assert np.isfinite(table.loc[name, "monthly_return"]) and table.loc[name, "turnover_annual"] < 5
    assert table.loc["buy_and_hold_spot", "cost_drag"] < table.loc["buy_and_hold_perp", "cost_drag"]  # no funding
    assert table.loc["seed_01", "monthly_return"] == pytest.approx((1 + table.loc["seed_01", "cagr"]) ** (1 / 12) - 1)
    reported = summary.original_reported.set_index("row")
    assert reported.loc["original_system", "return_per_month"] == ORIGINAL_SYSTEM_REPORTED["return_per_month"]
    # the target counts complete calendar months only; p_seed_at_target uses the compounded monthly return
    months = calendar_month_returns(oos.set_index("timestamp")["bar_return"])
    everything = calendar_month_returns(oos.set_index("timestamp")["bar_return"], complete_only=False)
    assert 0 < len(months) < len(everything)  # the test windows start and end mid-month
    assert summary.target["target_monthly"] == TARGET_MONTHLY
    pooled = summary.monthly["return"]
    assert summary.target["p_month_at_target"] == pytest.approx(float((pooled >= TARGET_MONTHLY).mean()))
    assert len(summary.monthly) == 3 * len(months) == summary.target["complete_months"]
    at_target = float((seeds["monthly_return"] >= TARGET_MONTHLY).mean())
    assert summary.target["p_seed_at_target"] == pytest.approx(at_target)


def test_sampler_from_the_environment_enters_the_profile(tmp_path: Path) -> None:
    from btc_assets.settings import resolve_settings

    assert get_profile("full").wfa.sampler == "random" and get_profile("quick").wfa.sampler == "tpe"
    env = {"BTC_ASSETS_SAMPLER": "cmaes"}
    for name in ("full", "quick"):
        assert resolve_settings(tmp_path, name, env=env).profile.wfa.sampler == "cmaes"
    with pytest.raises(ValueError, match="unknown sampler 'grid'"):
        resolve_settings(tmp_path, "quick", env={"BTC_ASSETS_SAMPLER": "grid"})


def test_walk_forward_is_causal(inputs: Path, tmp_path: Path) -> None:
    """Perturbing the bars (prices, funding) and forecasts after fold 6's test window leaves every trial of fold 6
    and its out-of-sample bars bit-identical."""
    bars, vol, probs = load(inputs)
    profile = get_profile("quick")
    settings = replace(profile.wfa, **TINY)

    def go(b: pd.DataFrame, v: pd.DataFrame, home: Path):
        return run_seed(
            3,
            "seed_03",
            b,
            v,
            probs,
            settings=settings,
            portfolio=profile.portfolio,
            schedule=SCHEDULE,
            checkpoints=str(home),
            say=lambda m: None,
        )

    clean = go(bars, vol, tmp_path / "clean")
    end = clean.oos.loc[clean.oos["fold"] == 6, "timestamp"].max()
    later = bars["timestamp"] > end
    rng = np.random.default_rng(0)
    shaken = bars.copy()
    noise = np.exp(rng.normal(0, 0.05, later.sum()))
    for column in ("open", "high", "low", "close"):
        shaken.loc[later, column] = shaken.loc[later, column] * noise
    shaken.loc[later, "funding_rate"] = shaken.loc[later, "funding_rate"] * -3.0
    shaken_vol = vol.copy()
    shaken_vol.loc[later.to_numpy(), "sigma"] = shaken_vol.loc[later.to_numpy(), "sigma"] * 2.0
    perturbed = go(shaken, shaken_vol, tmp_path / "perturbed")

    fold6 = clean.trials["fold"] == 6
    pd.testing.assert_frame_equal(perturbed.trials[fold6], clean.trials[fold6], check_exact=True)
    in6 = clean.oos["fold"] == 6
    pd.testing.assert_frame_equal(perturbed.oos[in6], clean.oos[in6], check_exact=True)
    assert not perturbed.oos[~in6]["bar_return"].equals(clean.oos[~in6]["bar_return"])  # the perturbation bites


def test_a_lost_database_connection_is_retried_then_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_study`` resumes a study whose RDB connection was lost (the server restarted), saying so; when the
    server stays away it fails naming the storage and how to resume; any other error passes through at once."""
    import sqlalchemy.exc

    from btc_assets.wfa import run as wfa_run

    lost = sqlalchemy.exc.OperationalError("INSERT …", {}, Exception("server closed the connection unexpectedly"))
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = lost
    monkeypatch.setattr(wfa_run.time, "sleep", lambda _s: None)
    settings = replace(get_profile("quick").wfa, storage="postgresql+psycopg2://user:secret@db:5432/optuna")

    class Flaky:
        def __init__(self, failures: int, error: Exception) -> None:
            self.failures, self.error, self.calls = failures, error, 0

        def run(self, study, *, on_trial=None, say=print):
            self.calls += 1
            if self.calls <= self.failures:
                raise self.error
            return ["records"]

    messages: list[str] = []
    flaky = Flaky(2, wrapped)
    assert wfa_run.run_study(flaky, None, None, messages.append, "seed_00: fold 3 phase 1", settings) == ["records"]
    assert flaky.calls == 3 and len(messages) == 2
    assert messages[0] == (
        "seed_00: fold 3 phase 1: lost the Optuna storage postgresql+psycopg2://user:***@db:5432/optuna "
        "(server closed the connection unexpectedly); resuming in 1 s (attempt 1)"
    )
    down = Flaky(99, wrapped)
    with pytest.raises(wfa_run.StorageUnavailable, match=r"unreachable .* run the same command again to resume"):
        wfa_run.run_study(down, None, None, messages.append, "seed_00: fold 3 phase 1", settings)
    assert down.calls == len(wfa_run.STORAGE_RETRY_WAITS) + 1
    bad = Flaky(1, ValueError("not a connection problem"))
    with pytest.raises(ValueError, match="not a connection problem"):
        wfa_run.run_study(bad, None, None, messages.append, "seed_00: fold 3 phase 1", settings)
    assert bad.calls == 1


def test_objective_kernels_equal_their_plain_references() -> None:
    """The compiled helpers of the fold objective against their plain versions, bit for bit."""
    from btc_assets.wfa.objective import mix_into, mix_reference, nan_to_zero, nan_to_zero_reference

    rng = np.random.default_rng(5)
    x = rng.normal(size=1000)
    x[rng.random(1000) < 0.2] = np.nan
    compiled, plain = x.copy(), x.copy()
    nan_to_zero(compiled)
    nan_to_zero_reference(plain)
    assert compiled.tobytes() == plain.tobytes() and not np.isnan(compiled).any()
    signals = [rng.normal(size=1200) for _ in range(3)]
    weights = [0.2, 0.5, 0.3]
    columns = np.zeros((1000, 4))
    mix_into(columns, 2, 150, weights[0], signals[0], weights[1], signals[1], weights[2], signals[2])
    assert columns[:, 2].tobytes() == mix_reference(1000, 150, weights, signals).tobytes()
    assert not columns[:, [0, 1, 3]].any()


def test_a_seed_runs_with_one_blas_thread() -> None:
    """``run_seed`` caps every BLAS / OpenMP pool loaded when it is called (numpy's and scipy's OpenBLAS, OpenMP)
    at one thread and gives them back afterwards: seeds run one per core, side by side."""
    import scipy.linalg  # noqa: F401  (its own OpenBLAS, loaded after btc_assets.wfa.run)
    from threadpoolctl import threadpool_info, threadpool_limits

    from btc_assets.wfa.run import one_thread

    @one_thread
    def inside() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info()]

    with threadpool_limits(limits=2):
        assert inside() and set(inside()) == {1}
        assert {pool["num_threads"] for pool in threadpool_info()} == {2}
    assert run_seed.__wrapped__ is not None  # run_seed is the capped one


def last_fold_objective(inputs: Path, **overrides: object):
    """(settings, the last fold's objective, the default parameters, the phase search space) of the quick profile
    with the ``TINY`` settings and ``overrides``, on the test inputs."""
    from btc_assets.experts import BarArrays
    from btc_assets.portfolio.tables import prepare_inputs
    from btc_assets.wfa.objective import FoldObjective, SignalCache
    from btc_assets.wfa.run import _no_signals

    bars, vol, probs = load(inputs)
    profile = get_profile("quick")
    settings = replace(profile.wfa, **{**TINY, **overrides})
    engine_inputs = prepare_inputs(bars, vol, probs, _no_signals(len(bars)), profile.portfolio)
    objective = FoldObjective(
        engine_inputs,
        probs,
        int(probs["fold"].max()),
        SignalCache(BarArrays.from_market_bars(bars)),
        profile.portfolio,
        settings,
    )
    base = StrategyParams.default(profile.portfolio, settings, profile.experts)
    return settings, objective, base, phase_distributions(settings, profile.experts)


def test_books_scored_side_by_side_equal_each_book_alone(inputs: Path) -> None:
    """``scores_many`` (the random search's path: up to ``BOOKS_PER_PASS`` books per pass over the bars, each with
    its own phase column, gating and policy) gives every trial exactly what ``scores`` with ``test`` gives it alone,
    and the kept trials exactly ``training_returns``; the loaded columns are left as they were."""
    from btc_assets.wfa.objective import BOOKS_PER_PASS
    from btc_assets.wfa.space import with_trial

    profile = get_profile("quick")
    settings, objective, base, space = last_fold_objective(inputs, search_policy=True)
    n = BOOKS_PER_PASS + 5  # two passes, the second one short
    for k in (0, 3):
        trials = [
            with_trial(base, k, random_block(space, derive_seed(4, k, i)), settings, profile.experts) for i in range(n)
        ]
        keep = [i % 3 == 1 for i in range(n)]
        objective.load(base)
        loaded = objective.columns.copy()
        together, kept = objective.scores_many(trials, k, keep)
        assert objective.columns.tobytes() == loaded.tobytes()
        moved = 0
        for i, params in enumerate(trials):
            objective.load(base)
            alone = objective.scores(params, k, test=True)
            assert together[i] == alone and all(type(v) is float for v in together[i]), (k, i)
            if keep[i]:
                returns = objective.training_returns(params, k)
                assert (
                    kept[i].index.equals(returns.index) and kept[i].to_numpy().tobytes() == returns.to_numpy().tobytes()
                )
                moved += bool(np.abs(returns.to_numpy()).sum() > 0)
            else:
                assert kept[i] is None
        assert moved and len({t.fit for t in together}) > n // 2, "the trials hardly differ: the test proves nothing"
        assert len({p.policy for p in trials}) == n


def test_random_search_side_by_side_equals_trial_by_trial(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random-search seed whose studies score each storage batch's trials side by side (``evaluate_many``) has
    exactly the trials, folds and out-of-sample book of the same seed scored one trial at a time (``evaluate``
    and ``after_trial``), the PBO of every study included."""
    import btc_assets.wfa.run as run_module
    from btc_assets.wfa.study import PhaseStudy

    options = {"sampler": "random", "n_trials": 12, "pbo_trials": 5, "search_policy": True}
    together = run(inputs, tmp_path / "together", **options)
    monkeypatch.setattr(run_module, "PhaseStudy", lambda **kw: PhaseStudy(**{**kw, "evaluate_many": None}))
    alone = run(inputs, tmp_path / "alone", **options)
    assert together.trials_run == alone.trials_run == 2 * 5 * 12
    for name in ("trials", "folds", "oos"):
        pd.testing.assert_frame_equal(getattr(together, name), getattr(alone, name), check_exact=True)
    assert together.trials["study_pbo"].notna().any()


def test_training_returns_continue_the_fit_run_bit_for_bit(inputs: Path) -> None:
    """Right after ``scores`` of a trial, ``training_returns`` continues that fit run's account over the validation
    piece instead of running the whole training window again: the same returns to the last bit as one run over the
    training window; after anything else (``load``, a test-window refresh, another trial) it runs the window."""
    from btc_assets.portfolio.engine import backtest_returns
    from btc_assets.wfa.space import with_trial

    profile = get_profile("quick")
    settings, objective, base, space = last_fold_objective(inputs)
    fit, val = objective.pieces["fit"], objective.pieces["validation"]

    def one_run(params: StrategyParams, k: int) -> np.ndarray:
        objective.load(params)
        book = objective.book.rows(fit.start, val.stop)
        engine = objective.engine_params(params)
        return backtest_returns(book, params.gating_matrix(), engine, objective.columns.shape[1] - 1, check=False)[0]

    calls = []
    real = backtest_returns

    def counting(book, *args, **kwargs):
        calls.append(len(book.close))
        return real(book, *args, **kwargs)

    import btc_assets.wfa.objective as objective_module

    moved = 0
    for i in range(6):
        k = i % 5
        objective.load(base)
        params = with_trial(base, k, random_block(space, derive_seed(9, k, i)), settings, profile.experts)
        objective.scores(params, k, test=True)
        objective_module.backtest_returns, calls[:] = counting, []
        try:
            if i % 2:  # the test-window refresh leaves column k stale elsewhere: no continuation
                objective.test_scores(params, k)
            if i == 4:  # another phase's column refreshed (to the same values): no continuation either
                objective._set_phase_column((k + 1) % 5, params.phases[(k + 1) % 5])
            fused = objective.training_returns(params, k).to_numpy()
        finally:
            objective_module.backtest_returns = real
        assert calls == ([fit.n + val.n] if i % 2 or i == 4 else [val.n]), calls
        whole = one_run(params, k)
        assert fused.tobytes() == whole.tobytes()
        moved += bool(np.abs(whole[: fit.n]).sum() > 0)
    assert moved, "no trial traded on the fit piece: the test proves nothing"
