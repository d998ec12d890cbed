"""Walk-forward optimisation speed on the real 2017–2026 hourly BTC data, and the projected wall time of ``full``.

What it measures (one core, the real chain's inputs: GARCH forecasts and a reduced-iteration regime fit):

* For each sampler (``tpe`` multivariate, ``cmaes``, ``random``): one (fold, phase) study of ``--trials`` trials
  (default 300, as in ``full``) on the first, a middle and the last fold, through the production code path
  (``LocalStudies`` on the journal storage), the folds sharing one signal/line cache as in a seed run.
  Per trial: total time, split into evaluation (expert signals + two engine runs) and the rest (Optuna sampling
  and bookkeeping, batched journal writes); the journal writes are timed separately by a micro-benchmark.
* Rolling lines are computed once per seed for every window the search space allows (timed, "line warm-up"), so
  the folds are measured warm, as they run in a seed after its first minutes.
* Projection of the ``full`` profile (30 seeds × 5 phases × 300 trials × every fold): ms/trial is fitted as a
  straight line in the fold's training bars over the three measured folds, summed over all folds, times 5 phases
  plus the line warm-up, times 30 seeds, divided by the cores (seeds run in parallel, one per core).
  Out-of-sample runs, checkpoints and start-up are not included (seconds per seed).

Run: python3 benchmarks/bench_wfa.py [--trials 300] [--samplers tpe,cmaes,random]   (needs ../shared/data)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from reference import real_market_bars

from btc_assets import experts
from btc_assets.config import get_profile
from btc_assets.portfolio.tables import prepare_inputs
from btc_assets.regimes import compute_regimes
from btc_assets.volatility import compute_volatility
from btc_assets.wfa.journal import Completed, open_storage
from btc_assets.wfa.objective import FoldObjective, SignalCache
from btc_assets.wfa.space import PhaseParams, StrategyParams, phase_distributions, suggest_phase
from btc_assets.wfa.study import BATCH_TRIALS, LocalStudies, PhaseStudy, write_trials


def journal_write_ms(n: int = 300) -> float:
    """Writing completed trials as a study does: batches of ``BATCH_TRIALS``, one compressed journal frame each."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(None, str(Path(tmp) / "j.journal"))
        study = optuna.create_study(storage=storage, direction="maximize")
        settings = get_profile("full").wfa
        dists = phase_distributions(settings)
        params = suggest_phase(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask(), settings)
        start = time.perf_counter()
        pending = []
        for i in range(n):
            now = datetime.now(UTC)
            pending.append(
                Completed(params, 0.0, {"index": i, "scores": {"fit": 0.0, "validation": 0.0}}, {}, now, now)
            )
            if len(pending) == BATCH_TRIALS or i == n - 1:
                write_trials(storage, study._study_id, dists, pending)
        return (time.perf_counter() - start) / n * 1e3


def warm_lines(signals: SignalCache) -> float:
    """Compute every rolling line the search space can ask for (once per seed in a real run); returns seconds."""
    windows = {  # the experts' SEARCH_SPACE ranges, per line kind they use
        "midpoint": range(5, 161),
        "high_max": range(5, 501),
        "low_min": range(5, 501),
        "rsi": range(5, 51),
        "close_mean": range(10, 101),
        "close_std": range(10, 101),
        "atr": range(5, 721),
    }
    start = time.perf_counter()
    for kind, span in windows.items():
        for w in span:
            signals.lines.get(signals.bars, kind, w)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--samplers", default="tpe,cmaes,random")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    profile = get_profile("full")
    settings = profile.wfa
    bars = real_market_bars(perp=False)
    vol = compute_volatility(bars, profile.schedule, profile.volatility)
    fast_regimes = replace(profile.regimes, n_restarts=1, n_iter=15)
    probs = compute_regimes(bars, vol, profile.schedule, fast_regimes).probabilities
    n_signals = pd.DataFrame(np.zeros((len(bars), 4)), columns=["trend", "mean_reversion", "breakout", "carry"])
    inputs = prepare_inputs(bars, vol, probs, n_signals, profile.portfolio)
    refits = sorted(int(r) for r in probs["fold"].unique())
    measured = [refits[0], refits[len(refits) // 2], refits[-1]]
    train_bars = {r: int((probs[(probs["fold"] == r)]["segment"].isin(["train", "validation"])).sum()) for r in refits}
    write_ms = journal_write_ms()
    print(
        f"bars {len(bars):,}; folds {len(refits)}; trials per study {args.trials}; "
        f"journal writes {write_ms:.2f} ms/trial (batches of {BATCH_TRIALS}, one compressed frame each)"
    )

    for sampler in args.samplers.split(","):
        per_fold: dict[int, float] = {}
        signals = SignalCache(experts.BarArrays.from_market_bars(bars))  # as in a seed run: shared by its folds
        warm_s = warm_lines(signals)
        for refit in measured:
            objective = FoldObjective(inputs, probs, refit, signals, profile.portfolio, settings)
            base = StrategyParams.default(profile.portfolio)
            objective.load(base)
            spent = {"eval": 0.0}

            def evaluate(
                flat: dict, objective: FoldObjective = objective, base: StrategyParams = base, spent: dict = spent
            ) -> tuple:
                t0 = time.perf_counter()
                out = objective.scores(base.with_phase(1, PhaseParams.from_flat(flat)), 1)
                spent["eval"] += time.perf_counter() - t0
                return out

            with tempfile.TemporaryDirectory() as tmp:
                storage = open_storage(None, str(Path(tmp) / "optuna.journal"))
                start = time.perf_counter()
                study = PhaseStudy(
                    name="bench",
                    n_trials=args.trials,
                    sampler=sampler,
                    n_startup_trials=settings.n_startup_trials,
                    seed_parts=(0, refit, 1),
                    incumbent=base.phases[1].flat(),
                    suggest=lambda t: suggest_phase(t, settings),
                    evaluate=evaluate,
                    distributions=phase_distributions(settings),
                )
                LocalStudies(lambda name, storage=storage: storage).run(study, say=lambda m: None)
                total = time.perf_counter() - start
            ms = total / args.trials * 1e3
            ev = spent["eval"] / args.trials * 1e3
            per_fold[refit] = ms
            print(
                f"{sampler:>6} fold {refit:2d} ({train_bars[refit]:6,} training bars): {ms:6.2f} ms/trial = "
                f"evaluation {ev:5.2f} + Optuna/sampler {ms - ev - write_ms:5.2f} + journal {write_ms:4.2f}"
            )
        x = np.array([train_bars[r] for r in measured], dtype=float)
        y = np.array([per_fold[r] for r in measured])
        slope, intercept = np.polyfit(x, y, 1)
        per_seed_s = sum(intercept + slope * train_bars[r] for r in refits) * 5 * settings.n_trials / 1e3 + warm_s
        cores = os.cpu_count() or 1  # the machine's cores (this process is pinned to one)
        wall = per_seed_s * 30 / cores
        trials = len(refits) * 5 * settings.n_trials * 30
        print(f"{sampler:>6} line warm-up (once per seed): {warm_s:.1f} s, {len(signals.lines)} lines")
        print(
            f"{sampler:>6} full profile projection: {trials:,} trials, {per_seed_s / 60:.1f} min per seed, "
            f"{wall / 60:.1f} min wall on {cores} cores (target < 10 min); "
            f"mean {per_seed_s * 1e3 / (trials / 30):.2f} ms/trial"
        )


if __name__ == "__main__":
    main()
