"""Faults a long study meets: its PostgreSQL server restarted mid-study, its disk full mid-checkpoint. Each time the
seeds in flight retry or fail with a message that says what happened, nothing done is lost, and the run
relaunched ends equal to an uninterrupted one.

The PostgreSQL server here is a private one the test starts (``initdb`` + ``pg_ctl`` of the machine's PostgreSQL,
on a free port), so restarting it disturbs no other test; the full disk is a 64 MiB tmpfs mounted as
``BTC_ASSETS_HOME``. Each test is skipped when the machine cannot do that (no PostgreSQL binaries, not root)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pytest

from btc_assets.ingestion.demo import DemoMarketSpec, generate_demo_market
from btc_assets.wfa.checkpoint import read_json
from btc_assets_tests.conftest import use_shared_fits

pytestmark = pytest.mark.slow

N_TRIALS = 16  # per (fold, phase): 2 folds × 5 phases × 16 = 160 trials a seed
TOTAL = 2 * 5 * N_TRIALS
EXE = shutil.which("btc-assets") or str(Path(sys.executable).parent / "btc-assets")


@dataclass
class Server:
    port: int
    restart: Callable[[], None]

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"


@pytest.fixture
def private_server() -> Iterator[Server]:
    """A PostgreSQL server of this test's own, on a free port, trust authentication; removed afterwards."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
    bin_dir = Path(binaries[-1]).parent
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="btc_assets_pg_"))
    if as_postgres:
        shutil.chown(root, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"

    def pg_ctl(*args: str) -> None:
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        command = [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log")]
        subprocess.run([*command, "-w", *args], check=True, capture_output=True, timeout=120)

    try:
        init = [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        subprocess.run(init, check=True, capture_output=True, timeout=120)
        pg_ctl("start")

        def restart(down: float = 3.0) -> None:  # every connection dropped, then no server for ``down`` seconds
            pg_ctl("stop", "-m", "fast")
            time.sleep(down)
            pg_ctl("start")

        yield Server(port, restart)
    finally:
        if data.exists():
            subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=120)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def _progress(home: Path, seed: str) -> dict | None:
    try:
        return json.loads((home / "checkpoints" / seed / "progress.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _wait_optimising(home: Path, seeds: list[str], proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = [_progress(home, s) for s in seeds]
        if all(p and p["state"] == "running" and 5 <= p["trials_done"] < TOTAL - 40 for p in progress):
            return
        if proc.poll() is not None:
            out = proc.stdout.read()[-6000:] if proc.stdout else ""
            raise AssertionError(f"btc-assets run ended ({proc.returncode}) before the seeds were optimising:\n{out}")
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the seeds to optimise")


def _market_files(folder: Path) -> list[str]:
    market = generate_demo_market(DemoMarketSpec(years=3.0))  # the quick profile's 2 folds
    market.ohlcv.to_parquet(folder / "ohlcv.parquet")
    market.funding.to_parquet(folder / "funding.parquet")
    return ["--ohlcv", str(folder / "ohlcv.parquet"), "--funding", str(folder / "funding.parquet")]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BTC_ASSETS_", "DAGSTER_"))}


def _run_with_fault(
    home: Path, folder: Path, seeds: list[str], fault: Callable[[], object]
) -> tuple[list[str], subprocess.Popen, str, object]:
    """``btc-assets run`` of ``seeds`` (one process each) on 3 years of the demo market; ``fault()`` once every seed
    is optimising. Returns the command, its finished process, its output and what ``fault`` returned."""
    n = len(seeds)
    command = [EXE, "--home", str(home), "run", "--profile", "quick", "--seeds", f"0-{n - 1}", "--jobs", str(n),
               *_market_files(folder)]  # fmt: skip
    proc = subprocess.Popen(command, cwd=folder, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    try:
        _wait_optimising(home, seeds, proc)
        done = fault()
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    return command, proc, out, done


def _assert_equal_to_uninterrupted(home: Path, seeds: list[str], checkpoints: Path) -> None:
    """Each seed's stored results equal a run of the same seed in this process, uninterrupted, on a journal file."""
    from btc_assets.config import get_profile, seed_from_key
    from btc_assets.wfa import run_seed

    warehouse = home / "warehouse"
    frames = [pd.read_parquet(warehouse / n / "data.parquet") for n in ("market_bars", "volatility")]
    frames.append(pd.read_parquet(warehouse / "regime_probabilities" / "data.parquet"))
    profile = get_profile("quick")
    for seed in seeds:
        reference = run_seed(
            seed_from_key(seed),
            seed,
            *frames,
            settings=replace(profile.wfa, n_trials=N_TRIALS, progress_every=0.0),
            portfolio=profile.portfolio,
            schedule=profile.schedule,
            checkpoints=str(checkpoints),
            say=lambda _m: None,
        )
        assert reference.trials_run == TOTAL
        expected = {"wfa_results": reference.oos, "wfa_folds": reference.folds, "wfa_trials": reference.trials}
        for name, frame in expected.items():
            stored = pd.read_parquet(warehouse / name / f"partition={seed}" / "data.parquet")
            pd.testing.assert_frame_equal(stored, frame, check_exact=True)


def test_postgres_restarted_mid_study(private_server: Server, tmp_path: Path, shared_fits: Path) -> None:
    """Two seeds optimising with the Dagster instance and the Optuna storage on PostgreSQL; the server restarts
    (``pg_ctl stop -m fast``: every connection dropped; 3 s later ``pg_ctl start``) while both optimise. The seeds
    resume their studies once the server is back, saying so (or, had it stayed away, fail naming the storage); the
    command, run again, has nothing left to do; the seeds equal uninterrupted runs."""
    psycopg2 = pytest.importorskip("psycopg2")
    from btc_assets_tests.test_postgres import _instance_yaml

    with closing(psycopg2.connect(host="127.0.0.1", port=private_server.port, user="postgres", dbname="postgres")) as c:
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute("CREATE DATABASE dagster")
            cur.execute("CREATE DATABASE optuna")
    home = use_shared_fits(tmp_path / "home", shared_fits)
    (home / "dagster").mkdir(parents=True)
    instance = _instance_yaml("dagster").replace("port: 5432", f"port: {private_server.port}")
    (home / "dagster" / "dagster.yaml").write_text(instance)
    storage = private_server.url("optuna")
    (home / "config.toml").write_text(f'[wfa]\nn_trials = {N_TRIALS}\nprogress_every = 0.0\nstorage = "{storage}"\n')
    command, proc, out, _ = _run_with_fault(home, tmp_path, ["seed_00", "seed_01"], private_server.restart)
    lost = [line for line in out.splitlines() if "lost the Optuna storage" in line]
    if proc.returncode == 0:  # the seeds rode it out: a study that lost the storage said so, where and what it did
        # (a seed busy elsewhere while the server was away, e.g. writing to the instance, whose own storage retries
        # its connections, may not have noticed: run_study's retries are tested in test_wfa.py)
        assert all("resuming in" in line and f":{private_server.port}/optuna" in line for line in lost), out
        assert "seed_00: done" in out and "seed_01: done" in out
    else:  # a seed failed: the command names it and says how to resume
        assert "FAILED" in out and "run the same command again to resume" in out, out[-4000:]
    again = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    if proc.returncode == 0:
        assert "2 seed(s) already done and up to date, skipped" in again.stderr
    _assert_equal_to_uninterrupted(home, ["seed_00"], tmp_path / "reference")  # seed_01's is the same mechanism


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 64 MiB tmpfs, mounted for this test (root only) and unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = Path(tempfile.mkdtemp(prefix="btc_assets_disk_"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def _fill(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass
    return filler


def test_disk_full_during_a_checkpoint_write(small_disk: Path, tmp_path: Path, shared_fits: Path) -> None:
    """``BTC_ASSETS_HOME`` on a 64 MiB tmpfs that fills up while a seed optimises: the seed fails with an error that
    names the file it could not write; no checkpoint or Parquet file is torn (every phase record and progress file
    parses, no temp file is left, every Parquet file reads); once space is freed, the same command resumes the seed
    and its result equals an uninterrupted run."""
    home = use_shared_fits(small_disk / "home", shared_fits)
    (home / "config.toml").write_text(f"[wfa]\nn_trials = {N_TRIALS}\nprogress_every = 0.0\n")
    command, proc, out, filler = _run_with_fault(home, tmp_path, ["seed_00"], lambda: _fill(small_disk))
    assert proc.returncode != 0, out[-4000:]
    full = [line for line in out.splitlines() if line.startswith("seed_00: FAILED") and "No space left" in line]
    assert full and str(home) in full[0] and "free the space and run again" in full[0], out[-6000:]
    assert "FAILED seeds: seed_00; run the same command again to resume them" in out

    for record in [*(home / "checkpoints").rglob("*.json"), *(home / "checkpoints").rglob("*.json.gz")]:
        read_json(record)  # whole, or absent: never torn
    assert not [p for p in home.rglob("*.tmp")], "a temp file of an atomic write was left behind"
    for parquet in (home / "warehouse").rglob("*.parquet"):
        pd.read_parquet(parquet)

    filler.unlink()
    again = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    resumed = [line for line in again.stderr.splitlines() if "seed_00: done" in line]
    # what was durable before the disk filled is resumed (trials are written in batches: the batch that hit the full
    # disk is run again)
    assert resumed and "seed_00: resuming from the checkpoint" in again.stderr, again.stderr[-4000:]
    _assert_equal_to_uninterrupted(home, ["seed_00"], tmp_path / "reference")
