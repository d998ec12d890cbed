"""Search quality of Optuna samplers at equal trials: does any sampler beat random search on validation scores?

The ``full`` profile runs random search, 300 trials per (fold, phase) study, on a budget of about 1.9 ms per trial
all-in. This benchmark asks whether another sampler, at the same 300 trials, finds better parameters, and what
it costs per trial on its own (a sampler much above ~0.5 ms/trial of overhead does not fit the budget).

What it measures (one core, the real 2017–2026 spot + funding + perp bars, GARCH forecasts and a
reduced-iteration regime fit, as ``bench_wfa.py`` and ``bench_engine.py`` build them):

* Studies: phase 1 (0-based) of the first, a middle and the last fold (``bench_wfa.py``'s three), from the
  default parameters, each run with ``--seeds`` seeds (0 … N−1), ``--trials`` trials each.
* Samplers, each on the same studies: ``random`` (``make_sampler("random")``: the ``full`` profile's
  ``BlockRandomSampler``), ``cmaes`` (``make_sampler("cmaes")``), ``qmc`` (Optuna's ``QMCSampler``, scrambled
  Sobol) and ``tpe`` (``make_sampler("tpe")``: multivariate, 20 start-up trials; on the first ``--tpe-seeds``
  seeds only, it costs ~20 ms/trial).
* Every sampler runs through the same loop, which mirrors ``LocalStudies.run``'s path for the model-based samplers:
  an in-memory Optuna study, the incumbent (the default phase block) enqueued as trial 0, then ask →
  ``suggest_phase`` → evaluate (``FoldObjective.scores`` on the fit and validation pieces) → tell. As in
  ``LocalStudies``, trial i of ``random``, ``cmaes`` and ``tpe`` is asked with a fresh sampler seeded by
  ``derive_seed(seed, fold, phase, i)``; ``qmc`` needs one sampler for the whole study (its Sobol point counter
  and scrambling are per sampler seed), seeded by ``derive_seed(seed, fold, phase)``. A short check first runs the
  ``LocalStudies`` samplers through ``LocalStudies.run`` itself (journal storage) and asserts the loop gives the
  same trials.
* Per (sampler, fold, seed): the winner's validation score (``select_winner`` with the ``full`` profile's
  ``select_top``), the best fit score (the objective), and the sampler's overhead in ms/trial = loop time minus
  evaluation time (Optuna's ask/tell and sampling; no journal writes, the same for every sampler).
* Per sampler: mean and standard error over (fold, seed) of the winner's validation score and of the best fit;
  the paired difference with random on the same (fold, seed) (mean, standard error, pairs better / tied); the
  overhead, and the overhead minus random's on the same studies: the sampler's own cost. The ask/tell loop itself
  costs about 1 ms/trial (random's overhead here: Optuna's trial machinery for 22 parameters), which production
  random search does not pay (``LocalStudies`` draws its blocks without an Optuna trial; both are timed with a no-op
  evaluation and printed as the "loop baseline"), so the budget applies to the sampler's own cost: at most
  :data:`BUDGET_MS` ms/trial over random's. A sampler run through ``LocalStudies``' mirror study would pay the loop
  too (the baseline's difference on top of its own cost). The verdict: does a sampler within the budget beat random
  on the winner's validation score by more than 2 standard errors of the paired difference?

Run: python3 benchmarks/bench_samplers.py [--trials 300] [--seeds 5] [--tpe-seeds 5] [--samplers random,qmc,cmaes,tpe]
     (needs ../shared/data; pins itself to core 1; about 4 minutes with the defaults, TPE half of it)
"""

from __future__ import annotations

import os

if __name__ == "__main__" and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {1})  # before numpy & co. start any thread: the whole process on core 1

import argparse
import math
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import scipy.stats.qmc  # noqa: F401  (imported here, not inside the first QMC study's timing)
from bench_wfa import warm_lines
from reference import describe, real_market_bars, reference_ms

from btc_assets import experts
from btc_assets.config import get_profile
from btc_assets.portfolio.tables import prepare_inputs
from btc_assets.regimes import compute_regimes
from btc_assets.volatility import compute_volatility
from btc_assets.wfa.journal import open_storage
from btc_assets.wfa.objective import FoldObjective, SignalCache, TrialScores
from btc_assets.wfa.samplers import derive_seed, make_sampler
from btc_assets.wfa.space import StrategyParams, incumbent_of, phase_distributions, suggest_phase, with_trial
from btc_assets.wfa.study import LocalStudies, PhaseStudy, TrialRecord, evaluated, select_winner

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message=".*balance properties of Sobol.*")

PHASE = 1  # 0-based phase index of the studies
BUDGET_MS = 0.5  # sampler overhead per trial that fits the full profile's ~1.9 ms/trial all-in
SAMPLERS = ("random", "qmc", "cmaes", "tpe")


@dataclass(frozen=True)
class Outcome:
    sampler: str
    fold: int
    seed: int
    winner: TrialRecord
    best_fit: float
    total_s: float
    eval_s: float
    trials: int

    @property
    def overhead_ms(self) -> float:
        return (self.total_s - self.eval_s) / self.trials * 1e3

    @property
    def eval_ms(self) -> float:
        return self.eval_s / self.trials * 1e3


def load_inputs() -> tuple[Any, pd.DataFrame, Any, Any]:
    """Bars, regime probabilities, engine inputs, signal cache: the real chain's (reduced regime fit)."""
    profile = get_profile("full")
    bars = real_market_bars()
    vol = compute_volatility(bars, profile.schedule, profile.volatility)
    fast_regimes = replace(profile.regimes, n_restarts=1, n_iter=15)
    probs = compute_regimes(bars, vol, profile.schedule, fast_regimes).probabilities
    no_signals = pd.DataFrame(np.zeros((len(bars), 4)), columns=["trend", "mean_reversion", "breakout", "carry"])
    inputs = prepare_inputs(bars, vol, probs, no_signals, profile.portfolio)
    signals = SignalCache(experts.BarArrays.from_market_bars(bars))  # shared by every study (as by a seed's folds)
    return bars, probs, inputs, signals


class Studies:
    """The (fold, seed) studies of phase :data:`PHASE` and the loop every sampler runs through."""

    def __init__(self, inputs: Any, probs: pd.DataFrame, signals: SignalCache, folds: list[int]) -> None:
        profile = get_profile("full")
        self.settings = profile.wfa
        self.portfolio = profile.portfolio
        self.dists = phase_distributions(self.settings)
        self.base = StrategyParams.default(self.portfolio, self.settings)
        self.incumbent = incumbent_of(self.base, PHASE, self.settings, self.portfolio)
        self.objectives = {}
        for fold in folds:
            objective = FoldObjective(inputs, probs, fold, signals, self.portfolio, self.settings)
            objective.load(self.base)  # the other phases' columns; each trial refreshes phase PHASE's
            self.objectives[fold] = objective

    def evaluator(self, fold: int, spent: list[float]) -> Any:
        """The study's ``evaluate`` (as ``run_seed``'s, without the test window), its time added to ``spent[0]``."""
        objective, base, settings = self.objectives[fold], self.base, self.settings

        def evaluate(flat: dict[str, Any]) -> Any:
            t0 = time.perf_counter()
            out = objective.scores(with_trial(base, PHASE, flat, settings), PHASE)
            spent[0] += time.perf_counter() - t0
            return out

        return evaluate

    def sampler_for(self, kind: str, seed: int, fold: int, i: int) -> optuna.samplers.BaseSampler:
        """Trial i's sampler, as ``LocalStudies`` makes it (a fresh one per trial)."""
        return make_sampler(kind, derive_seed(seed, fold, PHASE, i), self.settings.n_startup_trials, self.dists)

    def run(
        self, kind: str, fold: int, seed: int, trials: int, evaluate: Any = None
    ) -> tuple[list[TrialRecord], float, float]:
        """One study with sampler ``kind``: (records, total seconds, evaluation seconds)."""
        spent = [0.0]
        evaluate = evaluate or self.evaluator(fold, spent)
        records: list[TrialRecord] = []
        start = time.perf_counter()
        mirror = optuna.create_study(direction="maximize")
        if kind == "qmc":  # one sampler for the whole study
            mirror.sampler = optuna.samplers.QMCSampler(
                qmc_type="sobol", scramble=True, seed=derive_seed(seed, fold, PHASE)
            )
        for i in range(trials):
            if kind != "qmc":
                mirror.sampler = self.sampler_for(kind, seed, fold, i)
            if i == 0:
                mirror.enqueue_trial(self.incumbent, skip_if_exists=False)
            trial = mirror.ask()
            params = suggest_phase(trial, self.settings)
            dict(mirror.get_trials(deepcopy=False)[-1].system_attrs)  # as LocalStudies keeps the sampler's state
            fit, scores = evaluated(evaluate, params)
            trial.set_user_attr("index", i)
            trial.set_user_attr("scores", scores)
            mirror.tell(trial, fit)
            extra = {k: v for k, v in scores.items() if k not in ("fit", "validation")}
            records.append(TrialRecord(i, fit, scores["validation"], params, extra))
        return records, time.perf_counter() - start, spent[0]

    def outcome(self, kind: str, fold: int, seed: int, trials: int) -> Outcome:
        records, total, spent = self.run(kind, fold, seed, trials)
        winner = select_winner(records, self.settings.select_top)
        return Outcome(kind, fold, seed, winner, max(r.fit for r in records), total, spent, trials)

    def production(self, kind: str, fold: int, seed: int, trials: int, evaluate: Any = None) -> list[TrialRecord]:
        """The same study through ``LocalStudies.run`` on a journal file (the production path)."""
        spent = [0.0]
        with tempfile.TemporaryDirectory() as tmp:
            storage = open_storage(None, str(Path(tmp) / "optuna.journal"))
            study = PhaseStudy(
                name="bench",
                n_trials=trials,
                sampler=kind,
                n_startup_trials=self.settings.n_startup_trials,
                seed_parts=(seed, fold, PHASE),
                incumbent=self.incumbent,
                suggest=lambda t: suggest_phase(t, self.settings),
                evaluate=evaluate or self.evaluator(fold, spent),
                distributions=self.dists,
            )
            return LocalStudies(lambda name: storage).run(study, say=lambda m: None)


def loop_baseline(studies: Studies, fold: int, trials: int) -> tuple[float, float]:
    """ms/trial of random search with a no-op evaluation: through the bench loop, through ``LocalStudies.run``
    (best of 3 each)."""

    def noop(flat: dict[str, Any]) -> TrialScores:
        return TrialScores(0.0, 0.0, 0.0, 0.0)

    loop, production = math.inf, math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        studies.run("random", fold, 0, trials, evaluate=noop)
        loop = min(loop, time.perf_counter() - t0)
        t0 = time.perf_counter()
        studies.production("random", fold, 0, trials, evaluate=noop)
        production = min(production, time.perf_counter() - t0)
    return loop / trials * 1e3, production / trials * 1e3


def mean_se(x: list[float]) -> tuple[float, float]:
    a = np.asarray(x, dtype=float)
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else math.nan
    return float(a.mean()), se


def paired(outcomes: list[Outcome], kind: str, value: Any) -> tuple[float, float, int, int, int]:
    """Paired difference of ``value(outcome)`` between ``kind`` and random on the same (fold, seed): mean, standard
    error, pairs better, tied, pairs."""
    ref = {(o.fold, o.seed): value(o) for o in outcomes if o.sampler == "random"}
    diffs = [value(o) - ref[(o.fold, o.seed)] for o in outcomes if o.sampler == kind and (o.fold, o.seed) in ref]
    m, se = mean_se(diffs)
    return m, se, sum(d > 0 for d in diffs), sum(d == 0 for d in diffs), len(diffs)


def report(outcomes: list[Outcome], samplers: list[str], folds: list[int]) -> None:
    def val(o: Outcome) -> float:
        return o.winner.validation

    def fit(o: Outcome) -> float:
        return o.best_fit

    print()
    print(
        f"{'sampler':>7} {'studies':>7} | {'winner validation':>17} | {'best fit':>15} | "
        f"{'Δ validation vs random':>28} | {'Δ best fit vs random':>26} | {'overhead':>8} {'− random':>8} "
        f"{'eval':>8}"
    )
    print(
        f"{'':>7} {'':>7} | {'mean ± SE':>17} | {'mean ± SE':>15} | {'mean ± SE, better/ties/n':>28} | "
        f"{'mean ± SE, better/n':>26} | {'ms/trial':>8} {'ms/trial':>8} {'ms/trial':>8}"
    )
    summary = {}
    for kind in samplers:
        own = [o for o in outcomes if o.sampler == kind]
        if not own:
            continue
        v, v_se = mean_se([val(o) for o in own])
        f, f_se = mean_se([fit(o) for o in own])
        overhead = float(np.mean([o.overhead_ms for o in own]))
        eval_ms = float(np.mean([o.eval_ms for o in own]))
        own_ms = paired(outcomes, kind, lambda o: o.overhead_ms)[0]  # the sampler's cost beyond the loop's (random's)
        if kind == "random":
            dv = df = "(reference)"
        else:
            m, se, better, ties, n = paired(outcomes, kind, val)
            dv = f"{m:+.3f} ± {se:.3f}, {better}/{ties}/{n}"
            fm, fse, fbetter, _, fn = paired(outcomes, kind, fit)
            df = f"{fm:+.3f} ± {fse:.3f}, {fbetter}/{fn}"
            summary[kind] = (m, se, own_ms)
        print(
            f"{kind:>7} {len(own):>7} | {v:>8.3f} ± {v_se:.3f} | {f:>7.3f} ± {f_se:.3f} | {dv:>28} | {df:>26} | "
            f"{overhead:>8.2f} {own_ms:>+8.2f} {eval_ms:>8.2f}"
        )
    print()
    print("per fold, mean over seeds: winner validation / best fit")
    print(f"{'sampler':>7} | " + " | ".join(f"{'fold ' + str(fold):>15}" for fold in folds))
    for kind in samplers:
        cells = []
        for fold in folds:
            own = [o for o in outcomes if o.sampler == kind and o.fold == fold]
            cells.append(
                f"{np.mean([val(o) for o in own]):>7.3f} / {np.mean([fit(o) for o in own]):>5.3f}" if own else "—"
            )
        if any(c != "—" for c in cells):
            print(f"{kind:>7} | " + " | ".join(f"{c:>15}" for c in cells))
    within = {k: s for k, s in summary.items() if s[2] <= BUDGET_MS}
    outside = {k: s for k, s in summary.items() if s[2] > BUDGET_MS}
    winners = [k for k, (m, se, _) in within.items() if m > 2 * se]
    any_budget = [k for k, (m, se, _) in summary.items() if m > 2 * se]

    def said(items: dict[str, tuple[float, float, float]]) -> str:
        return ", ".join(f"{k} Δ {m:+.3f} ± {se:.3f} at {o:+.2f} ms/trial" for k, (m, se, o) in items.items()) or "none"

    print()
    print(
        "overhead: loop time − evaluation time per trial (Optuna ask/tell + sampler; no journal writes); "
        "− random: minus random's on the same studies (the sampler's own cost beyond the ask/tell loop)"
    )
    print(
        f"verdict: {'YES: ' + ', '.join(winners) if winners else 'NO'}: "
        f"{'a sampler' if winners else 'no sampler'} within the budget (≤ {BUDGET_MS} ms/trial over random's "
        f"overhead) beats random on the winner's validation score by more than 2 SE of the paired difference "
        f"(within: {said(within)}; outside: {said(outside)}); regardless of the budget: "
        f"{', '.join(any_budget) or 'none'} does"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=300, help="trials per study (the full profile's 300)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per fold (0 … N−1)")
    parser.add_argument("--tpe-seeds", type=int, default=5, help="seeds per fold for tpe (the first N of --seeds)")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--check-trials", type=int, default=40, help="trials of the LocalStudies check (0: none)")
    args = parser.parse_args()
    samplers = args.samplers.split(",")
    unknown = set(samplers) - set(SAMPLERS)
    if unknown or "random" not in samplers:
        raise SystemExit(f"--samplers: a subset of {', '.join(SAMPLERS)} including random; got {args.samplers}")
    wall = time.perf_counter()
    pinned = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    before = reference_ms()
    print(f"{describe(before)}; pinned to core(s) {pinned}; optuna {optuna.__version__}")

    t0 = time.perf_counter()
    bars, probs, inputs, signals = load_inputs()
    refits = sorted(int(r) for r in probs["fold"].unique())
    folds = [refits[0], refits[len(refits) // 2], refits[-1]]
    chain_s = time.perf_counter() - t0
    warm_s = warm_lines(signals)
    studies = Studies(inputs, probs, signals, folds)
    train_bars = {
        f: int(probs[probs["fold"] == f]["segment"].isin(["train", "validation"]).sum()) for f in refits
    }  # as bench_wfa
    print(
        f"bars {len(bars):,}; folds {len(refits)}; inputs {chain_s:.0f} s (GARCH, regimes n_restarts=1 n_iter=15), "
        f"line warm-up {warm_s:.0f} s"
    )
    tpe_seeds = min(args.tpe_seeds, args.seeds) if "tpe" in samplers else 0
    plan = [
        (fold, seed, kind)
        for fold in folds
        for seed in range(args.seeds)
        for kind in samplers
        if kind != "tpe" or seed < tpe_seeds
    ]
    print(
        f"run: phase {PHASE} (0-based) of folds {', '.join(f'{f} ({train_bars[f]:,} training bars)' for f in folds)}; "
        f"{args.trials} trials per study; seeds 0–{args.seeds - 1} for {', '.join(k for k in samplers if k != 'tpe')}"
        + (f", seeds 0–{tpe_seeds - 1} for tpe" if tpe_seeds else "")
        + f"; {len(plan)} studies, {len(plan) * args.trials:,} trials; select_top {studies.settings.select_top}, "
        f"n_startup_trials {studies.settings.n_startup_trials}; budget {BUDGET_MS} ms/trial of sampler overhead"
    )

    if args.check_trials:  # the loop = LocalStudies for its samplers (also warms every sampler's imports up)
        t0 = time.perf_counter()
        for kind in samplers:
            mine, _, _ = studies.run(kind, folds[0], 0, args.check_trials)
            if kind == "qmc":
                continue
            theirs = studies.production(kind, folds[0], 0, args.check_trials)
            same = [(a.params, a.fit, a.validation) for a in mine] == [(b.params, b.fit, b.validation) for b in theirs]
            if not same:
                raise SystemExit(f"check: the bench loop and LocalStudies.run differ for {kind}")
        print(
            f"check: the bench loop gives LocalStudies.run's {args.check_trials} trials for "
            f"{', '.join(k for k in samplers if k != 'qmc')} (fold {folds[0]}, seed 0) "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    # what the loop itself costs: random search through it and through LocalStudies, with a no-op evaluation
    loop_ms, production_ms = loop_baseline(studies, folds[0], args.trials)
    print(
        f"loop baseline, random, no-op evaluation, {args.trials} trials: bench loop {loop_ms:.2f} ms/trial, "
        f"LocalStudies.run {production_ms:.2f} ms/trial (its direct draws, journal writes included)"
    )

    outcomes: list[Outcome] = []
    print()
    print("per study: winner validation / best fit / overhead ms/trial")
    for fold in folds:
        for seed in range(args.seeds):
            cells = []
            for kind in samplers:
                if (fold, seed, kind) not in plan:
                    continue
                o = studies.outcome(kind, fold, seed, args.trials)
                outcomes.append(o)
                cells.append(f"{kind} {o.winner.validation:+.3f} / {o.best_fit:.3f} / {o.overhead_ms:.2f}")
            print(f"fold {fold:2d} seed {seed}: " + "; ".join(cells), flush=True)

    report(outcomes, samplers, folds)
    after = reference_ms()
    print(
        f"{describe(min(before, after))} (before {before:.2f}, after {after:.2f}); "
        f"wall time {(time.perf_counter() - wall) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
