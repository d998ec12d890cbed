"""The seeds on a real distributed engine: the ``wfa_seeds_celery`` job through dagster-celery, RabbitMQ on
127.0.0.1:5672 as the broker, two Celery worker processes started here, the Dagster instance and the Optuna storage
on the PostgreSQL server. Both workers take a seed; one is killed with SIGKILL in the middle of its seed; RabbitMQ
delivers the task again, the other worker resumes the seed from its checkpoint, and the result equals an
uninterrupted run. Skipped when RabbitMQ, PostgreSQL or dagster-celery is not there."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from btc_assets.ingestion.demo import DemoMarketSpec, generate_demo_market
from btc_assets.wfa.study import BATCH_TRIALS
from btc_assets_tests.conftest import use_shared_fits
from btc_assets_tests.test_faults import N_TRIALS, TOTAL, _assert_equal_to_uninterrupted, _progress
from btc_assets_tests.test_postgres import _admin, _drop, _instance_yaml, _url, server  # noqa: F401 (fixture)

pytest.importorskip("dagster_celery", reason="dagster-celery not installed (pip install -e '.[celery]')")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def rabbitmq() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=3):
            pass
    except OSError as err:
        pytest.skip(f"RabbitMQ not reachable at 127.0.0.1:5672: {err}")


@pytest.fixture
def databases(server: None) -> Iterator[tuple[str, str]]:  # noqa: F811 (the imported fixture)
    """Two new databases: the Dagster instance's and the Optuna storage's (both use an ``alembic_version`` table)."""
    names = (f"btc_assets_{uuid.uuid4().hex}", f"btc_assets_{uuid.uuid4().hex}")
    with closing(_admin()) as conn, conn.cursor() as cur:
        for name in names:
            cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield names
    finally:
        for name in names:
            _drop(name)


def _delete_queue(queue: str) -> None:
    """Remove this test's queue from the broker (Celery declares it durable)."""
    import kombu

    with kombu.Connection(BROKER, connect_timeout=5) as connection:
        connection.default_channel.queue_delete(queue)


def _wait(what: str, condition, timeout: float, procs: list[subprocess.Popen]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None and proc.returncode != 0:
                out = proc.stdout.read()[-4000:] if proc.stdout else ""
                raise AssertionError(f"{proc.args} exited with {proc.returncode} while waiting for {what}:\n{out}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_seeds_on_two_celery_workers_survive_a_killed_worker(
    rabbitmq: None, databases: tuple[str, str], tmp_path: Path, shared_fits: Path
) -> None:
    import dagster as dg

    dagster_db, optuna_db = databases
    home = use_shared_fits(tmp_path / "home", shared_fits)
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(_instance_yaml(dagster_db))
    (home / "config.toml").write_text(
        f'[wfa]\nn_trials = {N_TRIALS}\nprogress_every = 0.0\nstorage = "{_url(optuna_db)}"\n'
    )
    market = generate_demo_market(DemoMarketSpec(years=3.0))  # the quick profile's 2 folds
    market.ohlcv.to_parquet(tmp_path / "ohlcv.parquet")
    market.funding.to_parquet(tmp_path / "funding.parquet")
    queue = f"btc_assets_{uuid.uuid4().hex[:12]}"  # this test's own queue: nothing else's tasks, nor ours elsewhere
    run_config = yaml.safe_load((REPO / "deploy" / "celery" / "run_config.yaml").read_text())
    run_config["execution"]["config"]["config_source"]["task_default_queue"] = queue
    config_path = tmp_path / "run_config.yaml"
    config_path.write_text(yaml.safe_dump(run_config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BTC_ASSETS_", "DAGSTER_"))}
    env.update(
        BTC_ASSETS_HOME=str(home),
        BTC_ASSETS_PROFILE="quick",
        BTC_ASSETS_OHLCV=str(tmp_path / "ohlcv.parquet"),
        BTC_ASSETS_FUNDING=str(tmp_path / "funding.parquet"),
        DAGSTER_HOME=str(home / "dagster"),
        DAGSTER_CELERY_BROKER_URL=BROKER,
        DAGSTER_CELERY_BACKEND_URL="rpc://",
    )
    execute = [str(BIN / "dagster"), "job", "execute", "-m", "btc_assets.defs", "-a", "defs"]
    chain = subprocess.run([*execute, "-j", "btc_study"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert chain.returncode == 0, chain.stdout[-3000:] + chain.stderr[-3000:]

    # the pool's row, made before two runs claim it at once (on a fresh PostgreSQL instance Dagster 1.13 creates it
    # on the first claim, and two first claims at once collide on its unique key: seen here)
    pool = subprocess.run(
        [str(BIN / "dagster"), "instance", "concurrency", "set", "wfa", "2"], env=env, capture_output=True, text=True
    )
    assert pool.returncode == 0, pool.stdout + pool.stderr

    procs: list[subprocess.Popen] = []
    workers: dict[str, subprocess.Popen] = {}
    try:
        for name in ("w1", "w2"):
            log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (the worker writes it until it stops)
            workers[name] = subprocess.Popen(
                [
                    str(BIN / "dagster-celery"),
                    "worker",
                    "start",
                    "-A",
                    "dagster_celery.app",
                    "-y",
                    str(config_path),
                    "-q",
                    queue,
                    "-n",
                    f"{name}@%h",
                    "-l",
                    "INFO",
                ],
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the worker, celery and its pool child
            )
            procs.append(workers[name])
        runs = {}
        for seed in ("seed_00", "seed_01"):
            runs[seed] = subprocess.Popen(
                [
                    *execute,
                    "-j",
                    "wfa_seeds_celery",
                    "-c",
                    str(config_path),
                    "--tags",
                    json.dumps({"dagster/partition": seed}),
                ],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            procs.append(runs[seed])

        def both_running() -> dict[str, int] | None:
            progress = {seed: _progress(home, seed) for seed in runs}
            if all(p and p["trials_done"] >= 5 and p["state"] == "running" for p in progress.values()):
                return {seed: int(p["pid"]) for seed, p in progress.items()}
            return None

        pids = _wait("both seeds to be optimising", both_running, 300, procs)
        groups = {os.getpgid(pid) for pid in pids.values()}
        assert groups == {w.pid for w in workers.values()}, "both workers take a seed"
        victim = next(name for name, w in workers.items() if w.pid == os.getpgid(pids["seed_00"]))
        done_before_kill = _progress(home, "seed_00")["trials_done"]
        total = TOTAL
        assert done_before_kill < total, "seed_00 finished before it could be killed: raise N_TRIALS"
        os.killpg(workers[victim].pid, signal.SIGKILL)  # the worker and its pool child, mid-seed
        workers[victim].wait(timeout=30)

        outputs = {}
        for seed, proc in runs.items():
            outputs[seed], _ = proc.communicate(timeout=900)
            assert proc.returncode == 0, outputs[seed][-4000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                if proc in workers.values():
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL) if proc in workers.values() else proc.kill()
        _delete_queue(queue)

    survivor = next(name for name in workers if name != victim)
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        seed_runs = {r.tags["dagster/partition"]: r for r in instance.get_runs() if r.job_name == "wfa_seeds_celery"}
        assert set(seed_runs) == {"seed_00", "seed_01"} and all(r.is_success for r in seed_runs.values())
        executed_by = {}
        for seed, run in seed_runs.items():
            records = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            executed_by[seed] = [
                str(r.dagster_event.engine_event_data.metadata["Celery worker"].value)
                for r in records
                if "in celery worker" in (r.dagster_event.message or "")
            ]
        # the killed worker's task was delivered again and the seed finished on the other worker
        assert [w.split("@")[0] for w in executed_by["seed_00"]] == [victim, survivor], executed_by
        assert [w.split("@")[0] for w in executed_by["seed_01"]] == [survivor], executed_by
        metas = {
            r.asset_materialization.partition: r.asset_materialization.metadata
            for r in instance.fetch_materializations(dg.AssetKey("wfa_results"), limit=10).records
        }
    resumed = metas["seed_00"]
    now, before = resumed["trials_run_now"].value, resumed["trials_from_checkpoint"].value
    # the trials that were durable at the kill come from the checkpoint: every finished study, and the written
    # batches of the study cut off (a batch in progress is lost and run again, to the same result)
    durable = done_before_kill - done_before_kill % N_TRIALS
    durable += (done_before_kill % N_TRIALS) // BATCH_TRIALS * BATCH_TRIALS
    assert now + before == total and before >= durable, resumed

    _assert_equal_to_uninterrupted(home, ["seed_00"], tmp_path / "reference")
