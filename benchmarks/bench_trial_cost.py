"""Where a trial's time goes: one seed of the ``full`` profile run in this process on one core, its CPU split by part.

Issue 16 asks for ≤ 1.9 ms per trial all-in. This benchmark shows what one trial costs, part by part, so that a
figure above the target says exactly what costs the time:

* the seed is run twice with the production code (``run_seed``: every fold, 5 phases, 300 trials a study, the
  studies' PBO, the out-of-sample run, checkpoints on a journal in a temporary folder), first without a profiler
  (its CPU time is the total), then under ``cProfile``;
* the compiled kernels' own time comes from the profiled run (a call into numba costs the profiler one entry, so
  those times are not inflated): the engine (books run side by side, ``FoldObjective.scores_many``) on the PBO
  trials' fit piece with each bar's return kept and its continuation over the validation piece, the engine on the
  other trials' fit piece and every trial's validation and test pieces, the experts' kernels, and the mixing of a
  phase's column (and the NaN-to-0 pass of each new expert signal);
* everything else (Python: parameter objects, the objective's bookkeeping, sampling, journal writes, PBO,
  out-of-sample run, start-up of the seed) is the unprofiled total minus the kernels; the profiled split of that
  rest is printed too, as shares (the profiler inflates Python).

The engine's time is also given per bar run (the pieces' bars summed over every call), to compare with
``bench_engine.py``'s whole-history backtest and its memory-bandwidth floor. The inputs are the real chain's
(GARCH forecasts, a reduced-iteration regime fit as in ``bench_wfa.py``: the same bars and folds, the cost of a
trial does not depend on the regime fit's iterations), the rolling lines memory-mapped from a line store built in
the temporary folder first (as a seed process reads them).

Run: python3 benchmarks/bench_trial_cost.py [--seed 0]   (needs ../shared/data; about 5 minutes)
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from reference import describe, real_market_bars, reference_ms

from btc_assets.config import get_profile
from btc_assets.regimes import compute_regimes
from btc_assets.volatility import compute_volatility
from btc_assets.wfa import run_seed

# compiled kernels: (file, function) → part
KERNELS = {
    ("_kernel.py", "_simulate_returns"): "engine, the PBO trials' fit piece and continuation (returns)",
    ("_kernel.py", "_simulate_score"): "engine, the other trials' fit piece, all validation and test",
    ("experts.py", "_trend_kernel"): "experts' kernels (trend, mean reversion, breakout)",
    ("experts.py", "_mean_reversion_kernel"): "experts' kernels (trend, mean reversion, breakout)",
    ("experts.py", "_breakout_kernel"): "experts' kernels (trend, mean reversion, breakout)",
    ("objective.py", "mix_into"): "mixing a phase's column, NaN to 0 of new signals",
    ("objective.py", "nan_to_zero"): "mixing a phase's column, NaN to 0 of new signals",
}
# the Python rest, by cumulative time of these functions (profiled, so only their shares are meaningful)
REST = {
    ("samplers.py", "derive_seed"): "sampling (seeds and blocks)",
    ("samplers.py", "random_block"): "sampling (seeds and blocks)",
    ("study.py", "write_trials"): "journal writes",
    ("overfitting.py", "study_cscv"): "PBO (CSCV of each study)",
    ("run.py", "_out_of_sample"): "out-of-sample run",
    ("space.py", "with_trial"): "parameter objects (with_trial)",
}


def seed_run(seed: int, bars, vol, probs, home: Path, profile, profiler: cProfile.Profile | None):
    """``run_seed`` of ``seed`` with a fresh checkpoint folder; returns (CPU seconds, result)."""
    checkpoints = home / f"checkpoints-{time.monotonic_ns()}"
    cpu = time.process_time()
    if profiler is not None:
        profiler.enable()
    result = run_seed(
        seed,
        f"seed_{seed:02d}",
        bars,
        vol,
        probs,
        settings=profile.wfa,
        portfolio=profile.portfolio,
        schedule=profile.schedule,
        checkpoints=str(checkpoints),
        say=lambda m: None,
        expert_settings=profile.experts,
        lines=str(home / "lines"),
    )
    if profiler is not None:
        profiler.disable()
    return time.process_time() - cpu, result


def by_part(stats: pstats.Stats, table: dict[tuple[str, str], str], cumulative: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    for (path, _, name), (_, _, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        part = table.get((Path(path).name, name))
        if part is not None:
            out[part] = out.get(part, 0.0) + (cumtime if cumulative else tottime)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    profile = get_profile("full")
    bars = real_market_bars()
    vol = compute_volatility(bars, profile.schedule, profile.volatility)
    fast_regimes = replace(profile.regimes, n_restarts=1, n_iter=15)
    probs = compute_regimes(bars, vol, profile.schedule, fast_regimes).probabilities
    before = reference_ms()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        seed_run(args.seed, bars, vol, probs, home, replace(profile, wfa=replace(profile.wfa, n_trials=2)), None)
        total, result = seed_run(args.seed, bars, vol, probs, home, profile, None)
        profiler = cProfile.Profile()
        profiled, _ = seed_run(args.seed, bars, vol, probs, home, profile, profiler)
    after = reference_ms()
    stats = pstats.Stats(profiler)
    n = result.trials_run
    kernels = by_part(stats, KERNELS, cumulative=False)
    rest = by_part(stats, REST, cumulative=True)
    trials = result.trials
    studies = trials.groupby(["fold", "phase"]).first()
    test_bars = {int(r.fold): (r.test_end - r.test_start) / pd.Timedelta(hours=1) for r in result.folds.itertuples()}
    pbo_trials = min(profile.wfa.pbo_trials, profile.wfa.n_trials)
    fit_bars = float((studies["fit_bars"] * profile.wfa.n_trials).sum())
    val_bars = float((studies["validation_bars"] * (profile.wfa.n_trials + pbo_trials)).sum())
    tst_bars = float(sum(test_bars[int(f)] * profile.wfa.n_trials for f, _ in studies.index))
    engine = sum(t for part, t in kernels.items() if part.startswith("engine"))
    compiled = sum(kernels.values())
    print(
        f"seed {args.seed}, full profile: {len(studies)} studies × {profile.wfa.n_trials} trials = {n:,} trials, one "
        f"core; {total:.1f} s CPU = {total / n * 1e3:.2f} ms per trial (profiled run: {profiled:.1f} s)"
    )
    for part in dict.fromkeys(KERNELS.values()):
        print(f"  {part:<58} {kernels.get(part, 0.0) / n * 1e3:5.2f} ms/trial")
    bars_run = fit_bars + val_bars + tst_bars
    print(
        f"  {'compiled kernels together':<58} {compiled / n * 1e3:5.2f} ms/trial "
        f"({compiled / total:.0%} of the CPU; target for everything: 1.9)"
    )
    print(
        f"  {'everything else (Python, storage, PBO, start-up)':<58} {(total - compiled) / n * 1e3:5.2f} ms/trial; "
        "profiled shares of it: "
        + ", ".join(f"{part} {t / max(profiled - compiled, 1e-9):.0%}" for part, t in sorted(rest.items()))
    )
    print(
        f"engine: {bars_run / n:,.0f} bars run per trial on average (fit {fit_bars / n:,.0f}, validation with PBO "
        f"continuations {val_bars / n:,.0f}, test {tst_bars / n:,.0f}); {engine / bars_run * 1e9:.1f} ns per bar"
    )
    print(f"{describe(min(before, after))} (before {before:.2f}, after {after:.2f})")


if __name__ == "__main__":
    main()
