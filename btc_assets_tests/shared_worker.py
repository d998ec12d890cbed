"""One worker of a shared (fold, phase) study on PostgreSQL, in its own process (see test_postgres.py).

Usage: python shared_worker.py <settings JSON> <output JSON file>

Settings: ``url``, ``name``, ``n_trials``, ``sampler``, ``seed_parts``, ``delay`` (seconds added to every
evaluation, so workers overlap and kills land mid-trial), ``heartbeat``, ``grace``; optionally ``go`` (a file to
wait for before starting, so several workers start together), ``log`` (a file this worker appends the parameters
it starts evaluating to, one JSON line each, before the delay) and ``real`` with ``fold_position`` and ``phase``
(a folder of test_wfa-style inputs: the production objective of one (fold, phase) instead of the quadratic).
The output file gets the records (as dicts) and the parameters this worker evaluated, in order.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from btc_assets.config import PortfolioSettings, get_profile
from btc_assets.wfa.distributed import SharedStudies, open_shared_storage
from btc_assets.wfa.objective import TrialScores
from btc_assets.wfa.space import StrategyParams, phase_distributions, suggest_phase
from btc_assets.wfa.study import PhaseStudy

SETTINGS = get_profile("quick").wfa


def quadratic(flat: dict[str, Any]) -> TrialScores:
    """A cheap deterministic score of the parameters (a quadratic bowl; the validation score a different one)."""
    x = [float(v) for _, v in sorted(flat.items()) if isinstance(v, int | float)]
    fit = -sum((v - 0.3 * (i % 4)) ** 2 for i, v in enumerate(x)) / len(x)
    validation = -sum((v - 0.5) ** 2 for v in x) / len(x)
    return TrialScores(fit, validation, fit / 10.0, validation / 10.0)


def incumbent() -> dict[str, Any]:
    """Phase 0's default block, restricted to the searched parameters (what run_seed enqueues as trial 0)."""
    names = phase_distributions(SETTINGS)
    return {k: v for k, v in StrategyParams.default(PortfolioSettings()).phases[0].flat().items() if k in names}


def study_spec(options: dict[str, Any], name: str, evaluate: Any = quadratic) -> PhaseStudy:
    """The study both implementations (local and shared) run in the tests."""
    return PhaseStudy(
        name=name,
        n_trials=options["n_trials"],
        sampler=options["sampler"],
        n_startup_trials=options.get("n_startup_trials", 3),
        seed_parts=tuple(options["seed_parts"]),
        incumbent=options.get("incumbent") or incumbent(),
        suggest=lambda trial: suggest_phase(trial, SETTINGS),
        evaluate=evaluate,
        distributions=phase_distributions(SETTINGS),
    )


def real_objective(folder: Path, fold_position: int, phase: int):
    """The production objective of one (fold, phase): the evaluate run_seed builds, on the test inputs."""
    import numpy as np
    import pandas as pd

    from btc_assets import experts
    from btc_assets.config import EXPERTS
    from btc_assets.portfolio.tables import prepare_inputs
    from btc_assets.wfa.objective import FoldObjective, SignalCache
    from btc_assets.wfa.space import PhaseParams

    bars, vol, probs = (pd.read_parquet(folder / f"{n}.parquet") for n in ("bars", "volatility", "probs"))
    portfolio = get_profile("quick").portfolio
    no_signals = pd.DataFrame(np.zeros((len(bars), len(EXPERTS))), columns=list(EXPERTS))  # as run_seed does
    inputs = prepare_inputs(bars, vol, probs, no_signals, portfolio)
    refit = sorted(int(r) for r in probs["fold"].unique())[fold_position]
    objective = FoldObjective(
        inputs, probs, refit, SignalCache(experts.BarArrays.from_market_bars(bars)), portfolio, SETTINGS
    )
    base = StrategyParams.default(portfolio)
    objective.load(base)

    def evaluate(flat: dict[str, Any]) -> TrialScores:
        return objective.scores(base.with_phase(phase, PhaseParams.from_flat(flat)), phase)

    names = phase_distributions(SETTINGS)
    return evaluate, {k: v for k, v in base.phases[phase].flat().items() if k in names}


def main(settings: str, output: str) -> None:
    options = json.loads(settings)
    evaluated: list[dict[str, Any]] = []
    score = quadratic
    if options.get("real"):
        score, options["incumbent"] = real_objective(Path(options["real"]), options["fold_position"], options["phase"])

    def evaluate(flat: dict[str, Any]) -> TrialScores:
        evaluated.append(flat)
        if options.get("log"):
            with open(options["log"], "a") as handle:
                handle.write(json.dumps(flat) + "\n")
        time.sleep(options.get("delay", 0.0))
        return score(flat)

    storage = open_shared_storage(
        options["url"], heartbeat_interval=options.get("heartbeat", 1), grace_period=options.get("grace", 3)
    )
    if options.get("go"):
        Path(output + ".ready").write_text("ready")
        deadline = time.monotonic() + 120
        while not Path(options["go"]).exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go signal")
            time.sleep(0.01)
    records = SharedStudies(storage).run(
        study_spec(options, options["name"], evaluate), say=lambda m: print(m, flush=True)
    )
    Path(output).write_text(json.dumps({"records": [r.as_dict() for r in records], "evaluated": evaluated}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
