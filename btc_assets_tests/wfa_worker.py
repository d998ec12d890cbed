"""Runs one seed's walk-forward optimisation in its own process (the kill test SIGKILLs it and starts it again).

Usage: python wfa_worker.py <inputs dir> <checkpoints dir> <output dir> <settings JSON>
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from btc_assets.config import get_profile
from btc_assets.folds import FoldSchedule
from btc_assets.wfa import run_seed


def slow_trials(seconds: float) -> None:
    """Make every trial evaluation take ``seconds`` longer (results unchanged), so that a kill at a random moment
    almost surely lands in the middle of a trial."""
    from btc_assets.wfa.objective import FoldObjective

    scores, scores_many = FoldObjective.scores, FoldObjective.scores_many

    def slowed(self, *args, **kwargs):
        time.sleep(seconds)
        return scores(self, *args, **kwargs)

    def slowed_many(self, trials, *args, **kwargs):
        time.sleep(seconds * len(trials))
        return scores_many(self, trials, *args, **kwargs)

    FoldObjective.scores = slowed  # type: ignore[method-assign]
    FoldObjective.scores_many = slowed_many  # type: ignore[method-assign]


def main(inputs: str, checkpoints: str, output: str, settings: str) -> None:
    if os.environ.get("WFA_WORKER_TRIAL_DELAY"):
        slow_trials(float(os.environ["WFA_WORKER_TRIAL_DELAY"]))
    if os.environ.get("WFA_WORKER_BATCH"):  # trials per storage write: small, so kills land mid-batch
        import btc_assets.wfa.study

        btc_assets.wfa.study.BATCH_TRIALS = int(os.environ["WFA_WORKER_BATCH"])
    source = Path(inputs)
    bars, vol, probs = (pd.read_parquet(source / f"{name}.parquet") for name in ("bars", "volatility", "probs"))
    profile = get_profile("quick")
    options = json.loads(settings)
    result = run_seed(
        options.pop("seed"),
        options.pop("seed_key"),
        bars,
        vol,
        probs,
        settings=replace(profile.wfa, **options),
        portfolio=profile.portfolio,
        schedule=FoldSchedule(**json.loads((source / "schedule.json").read_text())),
        checkpoints=checkpoints,
        say=lambda m: print(m, flush=True),
    )
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    result.oos.to_parquet(out / "oos.parquet")
    result.trials.to_parquet(out / "trials.parquet")
    result.folds.to_parquet(out / "folds.parquet")
    print(f"trials_run={result.trials_run}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
