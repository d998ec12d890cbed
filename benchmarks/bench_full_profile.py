"""Wall time of the ``full`` profile on the real 2017–2026 hourly BTC data, measured on a subset of seeds and projected.

Method: in a fresh ``BTC_ASSETS_HOME``, ``btc-assets run --profile full --seeds 0`` materialises the chain and
seed 0 (the chain's time is read from its Dagster run). Then ``btc-assets run --profile full --seeds 1-K`` runs K
more seeds exactly as the study does (one process and one Dagster run per seed, ``--jobs`` = cores at a time) and
its wall time is measured. Each seed does the same work (every fold, 5 phases, 300 trials, PBO, out-of-sample
run), so the 30-seed study takes about ceil(30 / cores) rounds of one seed per core::

    projected = chain + (wall of the K seeds) / ceil(K / cores) × ceil(30 / cores)

K defaults to the number of cores (one round). Everything a user waits for is included: process start-up, data
loading, Dagster runs and event logging, checkpoints, PBO, the summary. Target (issue 5): under 30 minutes.

Run: python3 benchmarks/bench_full_profile.py [--seeds K]   (needs ../shared/data; takes a few minutes)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reference import describe, reference_ms

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXE = shutil.which("btc-assets") or str(Path(sys.executable).parent / "btc-assets")


def run(home: Path, seeds: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BTC_ASSETS_", "DAGSTER_"))}
    env["BTC_ASSETS_HOME"] = str(home)
    start = time.perf_counter()
    done = subprocess.run(
        [
            EXE,
            "run",
            "--profile",
            "full",
            "--seeds",
            seeds,
            "--log-level",
            "WARNING",
            "--ohlcv",
            str(DATA / "btcusdt_1h.parquet"),
            "--funding",
            str(DATA / "btcusdt_funding_8h.parquet"),
            "--perp",
            str(DATA / "btcusdt_perp_1h.parquet"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - start


def chain_seconds(home: Path) -> float:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "btc_study"]
        stats = [instance.get_run_stats(r.run_id) for r in runs]
    return sum(s.end_time - s.start_time for s in stats if s.end_time and s.start_time)


def trials_per_seed(home: Path) -> int:
    """Trials one seed ran: the rows of seed 0's ``wfa_trials`` partition."""
    import pandas as pd

    return len(pd.read_parquet(home / "warehouse" / "wfa_trials" / "partition=seed_00" / "data.parquet"))


def main() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=cores, help="seeds to time after seed 0 (default: cores)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary BTC_ASSETS_HOME")
    parser.add_argument("--home", help="the BTC_ASSETS_HOME to use and keep (default: a new temporary folder)")
    args = parser.parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bench-full-"))
    before = reference_ms()
    try:
        first = run(home, "0")
        chain = chain_seconds(home)
        wall = run(home, f"1-{args.seeds}")
        rounds = math.ceil(args.seeds / cores)
        projected = chain + wall / rounds * math.ceil(30 / cores)
        print(f"cores {cores}; chain {chain:.0f} s; seed 0 with the chain {first:.0f} s")
        print(
            f"{args.seeds} seed(s), {cores} at a time: {wall:.0f} s wall ({wall / rounds:.0f} s per round of {cores})"
        )
        print(f"full profile, 30 seeds, projected: {projected / 60:.1f} min (target < 30 min)")
        trials = trials_per_seed(home)
        per_trial = wall / rounds * cores / trials * 1e3  # core-milliseconds per trial, all-in
        print(
            f"{trials} trials per seed: {per_trial:.2f} core-ms per trial all-in (start-up, PBO, out-of-sample "
            "run and summary included)"
        )
        after = reference_ms()
        print(
            f"{describe(min(before, after))} (before {before:.2f}, after {after:.2f}); "
            f"a trial = {per_trial / min(before, after):.2f}× the reference"
        )
    finally:
        if args.keep or args.home:  # a home the user named is never deleted
            print(f"home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
