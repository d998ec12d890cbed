"""Wall time of the ``full`` profile on the real 2017–2026 hourly BTC data, measured on a subset of seeds and projected.

Method: in a fresh ``BTC_ASSETS_HOME``, ``btc-assets run --profile full --seeds 0`` materialises the chain and
seed 0 (the chain's time is read from its Dagster run). Then ``btc-assets run --profile full --seeds 1-K`` runs K
more seeds exactly as the study does (one process and one Dagster run per seed, ``--jobs`` = cores at a time) and
its wall time is measured. Each seed does the same work (every fold, 5 phases, 300 trials, PBO, out-of-sample
run), so the 30-seed study takes about ceil(30 / cores) rounds of one seed per core::

    projected = chain + once + (seeds' wall) / ceil(K / cores) × ceil(30 / cores) + summary × 30 / (K + 1)

The seeds' wall runs from the command's "optimising … seed(s)" line to the last seed's "done" line (every seed
process's start-up, data loading, Dagster run and event logging, checkpoints, PBO and out-of-sample run); ``once``
is the rest of the command bar the summary (its start-up and the chain's freshness check), paid once by a 30-seed
``btc-assets run``; the summary (``summarise_seeds``, over the K + 1 seeds then materialised) is scaled up to 30
seeds as if it grew in proportion (an upper bound: part of it does not grow). K defaults to the number of cores
(one round). Everything a user waits for is included. Target (issue 16): under 10 minutes on 2
cores, i.e. at most 1.9 core-ms per trial all-in; printed beside the reference workload measured in the same run.

Also printed, for the K seeds run together (issue 16's other targets):

* memory, sampled every 0.2 s from ``/proc/<pid>/smaps_rollup`` of every process of the run: the largest resident
  set (RSS) of a seed process (a ``btc-assets seed`` worker) and its anonymous part (heap and stacks: what one more
  seed process adds; the rest of its RSS is file pages: libraries and the part of the memory-mapped rolling lines
  ``<home>/lines`` it holds mapped, at most ``[wfa] lines_resident_mb``, all of it from the one copy in the page
  cache), the largest RSS of any process (and which), and the peak of the proportional sets summed over all
  processes (PSS: shared pages counted once);
* each seed's checkpoint (bytes on disk, apparent size) and the time to replay a finished seed's whole journal
  through Optuna (every (fold, phase) study's journal file opened and its trials loaded).

Run: python3 benchmarks/bench_full_profile.py [--seeds K] [--lines-resident-mb MB]   (needs ../shared/data; takes a
few minutes)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from reference import describe, reference_ms

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXE = shutil.which("btc-assets") or str(Path(sys.executable).parent / "btc-assets")


def run(home: Path, seeds: str) -> tuple[float, float]:
    """``btc-assets run`` of ``seeds``: (wall seconds of the command, seconds from its "optimising" line to the last
    seed's "done" line; 0 when it launched no seed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BTC_ASSETS_", "DAGSTER_"))}
    env["BTC_ASSETS_HOME"] = str(home)
    argv = [EXE, "run", "--profile", "full", "--seeds", seeds, "--log-level", "WARNING"]
    argv += ["--ohlcv", str(DATA / "btcusdt_1h.parquet"), "--funding", str(DATA / "btcusdt_funding_8h.parquet")]
    argv += ["--perp", str(DATA / "btcusdt_perp_1h.parquet")]
    start = time.perf_counter()
    first = last = None
    tail: list[str] = []
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter()
            tail = [*tail[-39:], line]
            if line.startswith("optimising "):
                first = now
            elif first is not None and ": done" in line:
                last = now
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("".join(tail))
    return wall, (last - first) if first is not None and last is not None else 0.0


def job_seconds(home: Path, job: str, last: bool = False) -> float:
    """Seconds of the runs of ``job`` in the instance (all of them, or only the latest)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == job]  # newest first
        stats = [instance.get_run_stats(r.run_id) for r in (runs[:1] if last else runs)]
    return sum(s.end_time - s.start_time for s in stats if s.end_time and s.start_time)


def trials_per_seed(home: Path) -> int:
    """Trials one seed ran: the rows of seed 0's ``wfa_trials`` partition."""
    import pandas as pd

    return len(pd.read_parquet(home / "warehouse" / "wfa_trials" / "partition=seed_00" / "data.parquet"))


class MemorySampler(threading.Thread):
    """Samples the memory of every process whose environment holds ``BTC_ASSETS_HOME=<home>`` until stopped."""

    def __init__(self, home: Path, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.tag = f"BTC_ASSETS_HOME={home}".encode()
        self.every = every
        self.stop = threading.Event()
        self.peak_rss: dict[int, int] = {}  # kB
        self.peak_anon: dict[int, int] = {}
        self.peak_pss_sum = 0
        self.command: dict[int, list[str]] = {}  # pid → its command line

    def is_seed(self, pid: int) -> bool:
        """A seed worker (``btc-assets … seed``: runs seeds, one after the other)."""
        return "seed" in self.command.get(pid, [])[3:]

    def run(self) -> None:
        while not self.stop.is_set():
            pss_sum = 0
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
                try:
                    if self.tag not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                        continue
                    if pid not in self.command:
                        self.command[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
                    fields = {
                        line.split(":")[0]: int(line.split()[1])
                        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
                    }
                except OSError:
                    continue
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), fields.get("Rss", 0))
                self.peak_anon[pid] = max(self.peak_anon.get(pid, 0), fields.get("Anonymous", 0))
                pss_sum += fields.get("Pss", 0)
            self.peak_pss_sum = max(self.peak_pss_sum, pss_sum)
            self.stop.wait(self.every)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def journal_replay_seconds(seed_dir: Path) -> tuple[float, float, int]:
    """Open every study journal of a finished seed through Optuna and load its trials: (seconds for all, seconds for
    the slowest single study, trials)."""
    import optuna

    from btc_assets.wfa.journal import open_storage

    total, slowest, n = 0.0, 0.0, 0
    for path in sorted((seed_dir / "journal").glob("*.journal")):
        start = time.perf_counter()
        storage = open_storage(None, str(path))
        for study in storage.get_all_studies():
            done = (optuna.trial.TrialState.COMPLETE,)
            n += len(storage.get_all_trials(study._study_id, deepcopy=False, states=done))
        spent = time.perf_counter() - start
        total, slowest = total + spent, max(slowest, spent)
    return total, slowest, n


def resume_seconds(home: Path, seed: int) -> float:
    """``run_seed`` of a finished seed on its checkpoint, in this process, from the warehouse's inputs (what a
    re-materialisation of the partition does after Dagster and the data are loaded). The definitions are built
    first, as a seed worker builds them before its run: they compute the code versions (the source digests the
    seed's checkpoint fingerprint reuses), so that is start-up, not resume."""
    import pandas as pd

    from btc_assets.config import Paths, get_profile
    from btc_assets.defs import build_definitions
    from btc_assets.wfa import run_seed

    build_definitions(str(home), "full")
    paths = Paths.at(home)
    frames = [pd.read_parquet(paths.warehouse / n / "data.parquet") for n in ("market_bars", "volatility")]
    probs = pd.read_parquet(paths.warehouse / "regime_probabilities" / "data.parquet")
    profile = get_profile("full")
    start = time.perf_counter()
    result = run_seed(
        seed,
        f"seed_{seed:02d}",
        *frames,
        probs,
        settings=profile.wfa,
        portfolio=profile.portfolio,
        schedule=profile.schedule,
        checkpoints=str(paths.checkpoints),
        say=lambda m: None,
        expert_settings=profile.experts,
        lines=str(paths.lines),
    )
    spent = time.perf_counter() - start
    if result.trials_run:
        raise SystemExit(f"seed {seed} was not finished: {result.trials_run} trials run on resume")
    return spent


def main() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=cores, help="seeds to time after seed 0 (default: cores)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary BTC_ASSETS_HOME")
    parser.add_argument("--home", help="the BTC_ASSETS_HOME to use and keep (default: a new temporary folder)")
    parser.add_argument(
        "--lines-resident-mb", type=int, help="[wfa] lines_resident_mb for the run (written to <home>/config.toml)"
    )
    args = parser.parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bench-full-"))
    if args.lines_resident_mb is not None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(f"[wfa]\nlines_resident_mb = {args.lines_resident_mb}\n")
    before = reference_ms()
    try:
        first, _ = run(home, "0")
        chain = job_seconds(home, "btc_study")
        sampler = MemorySampler(home)
        sampler.start()
        try:
            command, wall = run(home, f"1-{args.seeds}")
        finally:
            sampler.stop.set()
            sampler.join()
        rounds = math.ceil(args.seeds / cores)
        summary = job_seconds(home, "summarise_seeds", last=True)
        once = command - wall - summary
        summary_30 = summary * 30 / (args.seeds + 1)
        projected = chain + once + wall / rounds * math.ceil(30 / cores) + summary_30
        print(f"cores {cores}; chain {chain:.0f} s; seed 0 with the chain {first:.0f} s")
        print(
            f"{args.seeds} seed(s), {cores} at a time: {wall:.0f} s wall ({wall / rounds:.0f} s per round of {cores});"
            f" the command {command:.0f} s: once {once:.0f} s, summary of {args.seeds + 1} seeds {summary:.1f} s"
        )
        print(
            f"full profile, 30 seeds, projected: {projected / 60:.1f} min (target < 10 min): chain {chain:.0f} s + "
            f"once {once:.0f} s + {math.ceil(30 / cores)} rounds × {wall / rounds:.0f} s + summary ≤ {summary_30:.0f} s"
        )
        seeds = [pid for pid in sampler.peak_rss if sampler.is_seed(pid)]
        top = max(seeds, key=sampler.peak_rss.get) if seeds else None
        if top is not None:
            lines = folder_bytes(home / "lines") if (home / "lines").exists() else 0
            other = max(sampler.peak_rss, key=sampler.peak_rss.get)
            argv = [a for a in sampler.command[other][1:] if a and str(home) not in a and a != "--home"]
            what = " ".join(Path(a).name if a.startswith("/") else a for a in argv)[:60]
            print(
                f"memory: largest seed process RSS {sampler.peak_rss[top] / 2**20:.2f} GB (target ≤ 1 GB per seed), "
                f"of which anonymous {sampler.peak_anon[top] / 2**20:.2f} GB; largest of any process "
                f"{sampler.peak_rss[other] / 2**20:.2f} GB ({what}), largest anonymous "
                f"{max(sampler.peak_anon.values()) / 2**20:.2f} GB; all {len(sampler.peak_rss)} processes together "
                f"(sum of PSS) peak {sampler.peak_pss_sum / 2**20:.2f} GB; shared memory-mapped lines "
                f"{lines / 2**30:.2f} GB, one copy per machine (in the page cache, mapped by each process as it reads "
                "them: [wfa] lines_resident_mb)"
            )
        sizes = [folder_bytes(home / "checkpoints" / f"seed_{i:02d}") for i in range(1, args.seeds + 1)]
        replay, slowest, replayed = journal_replay_seconds(home / "checkpoints" / "seed_01")
        resume = resume_seconds(home, 1)
        print(
            f"checkpoints: {max(sizes) / 1e6:.1f} MB per seed at most (target ≤ 10 MB). Resume (target < 2 s): "
            f"seed_01 finished resumes in {resume:.2f} s (run_seed on its checkpoint: phase records, no journal "
            f"opened); a killed seed replays only the study it continues (slowest study journal of seed_01: "
            f"{slowest:.2f} s); all of seed_01's journals ({replayed:,} trials) through Optuna: {replay:.2f} s"
        )
        trials = trials_per_seed(home)
        # core-milliseconds per trial, all-in: a round keeps every core busy with one seed of `trials` trials
        per_trial = wall / rounds / trials * 1e3
        with_chain = projected * cores / (30 * trials) * 1e3  # the whole projected study's core-ms per trial
        print(
            f"{trials} trials per seed: {per_trial:.2f} core-ms per trial in the seeds (process start-up, data, PBO, "
            f"out-of-sample run included); {with_chain:.2f} all-in (the whole projected study: chain, start-up and "
            f"summary too; target ≤ 1.9)"
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
