"""Against the real PostgreSQL server on 127.0.0.1:5432 (trust auth, user postgres): shared (fold, phase) studies with
several worker processes (btc_assets.wfa.distributed), and the Dagster instance on PostgreSQL.

Every test gets a database of its own (``btc_assets_<uuid>``), dropped afterwards. Skipped when the server cannot be
reached.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest

from btc_assets.ingestion.demo import DemoMarketSpec, generate_demo_market
from btc_assets_tests import shared_worker
from btc_assets_tests.conftest import (
    use_shared_fits,
    write_wfa_inputs,  # the worker's evaluation and study arguments, shared with the tests
)

psycopg2 = pytest.importorskip("psycopg2")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "shared_worker.py"
SERVER = "dbname=test user=postgres host=127.0.0.1 port=5432"


def _admin() -> Any:
    conn = psycopg2.connect(SERVER, connect_timeout=3)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def server() -> None:
    try:
        _admin().close()
    except psycopg2.OperationalError as err:
        pytest.skip(f"PostgreSQL server not reachable at 127.0.0.1:5432 as postgres/test: {err}".strip())


def _drop(name: str) -> None:
    with closing(_admin()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_db(server: None) -> Iterator[str]:
    """A new empty database's name; dropped (with any connection left to it) afterwards."""
    name = f"btc_assets_{uuid.uuid4().hex}"
    with closing(_admin()) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _drop(name)


def _url(db: str) -> str:
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"


@contextmanager
def _processes() -> Iterator[list[subprocess.Popen]]:
    """Processes started in the block are killed (by their own pid) if still running when it ends."""
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _worker(procs: list[subprocess.Popen], settings: dict[str, Any], out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(settings), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    procs.append(proc)
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def _go(outs: list[Path], go: Path, procs: list[subprocess.Popen]) -> None:
    """Wait until every worker is ready (imports done, storage open), then let them all start at once."""
    deadline = time.monotonic() + 120
    while not all(Path(f"{o}.ready").exists() for o in outs):
        assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs if p.poll() is not None]
        assert time.monotonic() < deadline, "workers not ready"
        time.sleep(0.05)
    go.write_text("go")


def _study_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def _reference(tmp_path: Path, options: dict[str, Any], evaluate: Any = shared_worker.quadratic) -> list[dict]:
    """The records of the single-writer study (LocalStudies on a journal file), as the workers write them."""
    from btc_assets.wfa.journal import open_storage
    from btc_assets.wfa.study import LocalStudies

    journal = tmp_path / f"reference-{uuid.uuid4().hex[:6]}.journal"
    records = LocalStudies(lambda name: open_storage(None, str(journal))).run(
        shared_worker.study_spec(options, "reference", evaluate), say=lambda m: None
    )
    return json.loads(json.dumps([r.as_dict() for r in records]))


def _assert_exact(trials: list[optuna.trial.FrozenTrial], n: int) -> dict[int, optuna.trial.FrozenTrial]:
    """Exactly n COMPLETE trials, indices 0..n-1 each once; nothing left WAITING or RUNNING."""
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["index"] for t in complete) == list(range(n))
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)]
    return {t.user_attrs["index"]: t for t in complete}


# ------------------------------------------------------------------------------------------- shared phase studies


@pytest.mark.parametrize("sampler", ["random", "tpe", "cmaes"])
def test_one_shared_worker_gives_the_records_of_local_studies(fresh_db: str, tmp_path: Path, sampler: str) -> None:
    """One worker alone on PostgreSQL makes exactly the choices of LocalStudies, for every sampler; called again
    it runs nothing and returns the same records; index 0 is the incumbent."""
    from btc_assets.wfa.distributed import SharedStudies, open_shared_storage

    options = {"n_trials": 10, "sampler": sampler, "seed_parts": [4, 6, 1]}
    storage = open_shared_storage(_url(fresh_db), heartbeat_interval=1, grace_period=3)
    evaluated: list[dict] = []

    def evaluate(flat: dict) -> Any:
        evaluated.append(flat)
        return shared_worker.quadratic(flat)

    try:
        studies = SharedStudies(storage)
        first = studies.run(shared_worker.study_spec(options, "s", evaluate), say=lambda m: None)
        again = studies.run(shared_worker.study_spec(options, "s", evaluate), say=lambda m: None)
    finally:
        storage.engine.dispose()
    assert len(evaluated) == 10 and again == first
    assert [r.as_dict() for r in first] == _reference(tmp_path, options)
    assert first[0].params == shared_worker.incumbent()
    _assert_exact(_study_trials(_url(fresh_db), "s"), 10)


def test_storage_and_slot_creation_are_race_free(fresh_db: str) -> None:
    """Four workers (threads, each with its own storage and study object) open a fresh database and reconcile a new
    study at the same moment: no error (plain RDBStorage(url) x 4 at once fails here with duplicate-key errors from
    CREATE TABLE) and exactly one slot per index, index 0 carrying the incumbent."""
    import threading

    from btc_assets.wfa.distributed import SLOT_ATTR, _reconcile, open_shared_storage

    url, n, k = _url(fresh_db), 20, 4
    barrier = threading.Barrier(k)
    errors: list[BaseException] = []
    storages: list[optuna.storages.RDBStorage] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            storage = open_shared_storage(url, heartbeat_interval=1, grace_period=3)
            storages.append(storage)
            study = optuna.create_study(study_name="race", storage=storage, direction="maximize", load_if_exists=True)
            _reconcile(storage, study, n, shared_worker.incumbent(), say=lambda m: None)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(k)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        for s in storages:
            s.engine.dispose()
    assert not errors
    trials = _study_trials(url, "race")
    assert all(t.state == optuna.trial.TrialState.WAITING and t.system_attrs[SLOT_ATTR] for t in trials)
    assert sorted(t.user_attrs["index"] for t in trials) == list(range(n))
    assert (
        next(t for t in trials if t.user_attrs["index"] == 0).system_attrs["fixed_params"] == shared_worker.incumbent()
    )


def test_claimed_slot_whose_worker_never_beat_again_is_rerun(fresh_db: str, tmp_path: Path) -> None:
    """A worker that dies right after its claim (its only heartbeat the one before the claim), and a zombie that
    LocalStudies left RUNNING (no heartbeat at all): both indices are re-queued and run once."""
    from btc_assets.wfa.distributed import SharedStudies, _claim, _reconcile, open_shared_storage

    options = {"n_trials": 8, "sampler": "random", "seed_parts": [1, 1, 4]}
    spec = shared_worker.study_spec(options, "s")
    storage = open_shared_storage(_url(fresh_db), heartbeat_interval=1, grace_period=2)
    messages: list[str] = []
    try:
        study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
        _reconcile(storage, study, 8, spec.incumbent, say=lambda m: None)
        slot = next(t for t in study.get_trials() if t.user_attrs["index"] == 3)
        assert _claim(storage, slot) and not _claim(storage, slot)  # the second claim of a slot loses
        zombie = optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, user_attrs={"index": 5}, params={}, distributions={}
        )
        storage.create_new_trial(study._study_id, zombie)
        started = time.monotonic()
        records = SharedStudies(storage).run(spec, say=messages.append)
        waited = time.monotonic() - started
    finally:
        storage.engine.dispose()
    assert [r.as_dict() for r in records] == _reference(tmp_path, options)
    trials = _study_trials(_url(fresh_db), "s")
    _assert_exact(trials, 8)
    failed = sorted(t.user_attrs["index"] for t in trials if t.state == optuna.trial.TrialState.FAIL)
    assert failed == [3, 5]
    assert any("without a heartbeat" in m for m in messages) and any("re-queued index(es) 3" in m for m in messages)
    assert 2 <= waited < 20  # index 3 waited for the grace period


def test_two_workers_share_one_study_exactly(fresh_db: str, tmp_path: Path) -> None:
    """Two processes start on the same (fold, phase) study at the same moment (fresh database: both create the
    schema and the study at once): both run trials, exactly n complete with indices 0..n-1 once each, both return
    the same records, and (random search) those of a single-writer LocalStudies run with the same seed parts."""
    n = 16
    options = {
        "url": _url(fresh_db),
        "name": "seed_00-abc-fold06-phase2",
        "n_trials": n,
        "sampler": "random",
        "seed_parts": [0, 6, 2],
        "delay": 0.15,
        "heartbeat": 1,
        "grace": 3,
        "go": str(tmp_path / "go"),
    }
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    with _processes() as procs:
        workers = [_worker(procs, options, out) for out in outs]
        _go(outs, tmp_path / "go", procs)
        logs = [_finish(w) for w in workers]
    a, b = (json.loads(o.read_text()) for o in outs)
    assert a["evaluated"] and b["evaluated"], logs  # both did trials
    assert len(a["evaluated"]) + len(b["evaluated"]) == n  # none twice
    assert a["records"] == b["records"]
    assert [r["trial"] for r in a["records"]] == list(range(n))
    by_index = _assert_exact(_study_trials(options["url"], options["name"]), n)
    assert len(by_index) == n
    assert sorted(json.dumps(p, sort_keys=True) for p in a["evaluated"] + b["evaluated"]) == sorted(
        json.dumps(r["params"], sort_keys=True) for r in a["records"]
    )
    assert a["records"] == _reference(tmp_path, options)


def test_killed_worker_slot_is_completed_by_the_survivor(fresh_db: str, tmp_path: Path) -> None:
    """Worker A is SIGKILLed in the middle of a trial while B goes on: B declares A's trial dead after the grace
    period (no heartbeat), re-queues its index and runs it; the count stays exact and the records equal the
    single-writer run's."""
    n = 16
    base = {
        "url": _url(fresh_db),
        "name": "kill",
        "n_trials": n,
        "sampler": "random",
        "seed_parts": [9, 3, 0],
        "heartbeat": 1,
        "grace": 2,
        "go": str(tmp_path / "go"),
    }
    log_a = tmp_path / "a.log"
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    with _processes() as procs:
        a = _worker(procs, {**base, "delay": 1.0, "log": str(log_a)}, outs[0])
        b = _worker(procs, {**base, "delay": 0.3}, outs[1])
        _go(outs, tmp_path / "go", procs)
        deadline = time.monotonic() + 60
        while not log_a.exists() or len(log_a.read_text().splitlines()) < 2:  # A has started its second trial
            assert a.poll() is None and time.monotonic() < deadline, "A did not start a second trial"
            time.sleep(0.01)
        time.sleep(0.2)  # 0.2 s into a 1 s evaluation
        started = time.monotonic()
        a.send_signal(signal.SIGKILL)
        a.wait()
        log_b = _finish(b)
        recovered_in = time.monotonic() - started
    assert a.returncode == -signal.SIGKILL
    killed = json.loads(log_a.read_text().splitlines()[-1])  # what A was evaluating when it died
    result = json.loads(outs[1].read_text())
    trials = _study_trials(base["url"], "kill")
    by_index = _assert_exact(trials, n)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1, log_b
    index = failed[0].user_attrs["index"]
    assert failed[0].params == killed == by_index[index].params  # random search: the same parameters again
    assert killed in result["evaluated"]  # ... evaluated by the survivor
    assert "re-queued index(es)" in log_b
    assert [r["trial"] for r in result["records"]] == list(range(n))
    assert result["records"] == _reference(tmp_path, base)
    assert recovered_in < 30


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory: pytest.TempPathFactory, shared_fits: Path) -> Path:
    """Three years of the demo market with its volatility and regime refits (as test_wfa's module fixture)."""
    return write_wfa_inputs(tmp_path_factory.mktemp("shared_inputs"), fits=shared_fits)


@pytest.mark.slow
def test_two_workers_optimise_one_seed_together(fresh_db: str, tmp_path: Path, demo_inputs: Path) -> None:
    """Two processes run the same seed (run_seed, ``[wfa] shared = true``, one PostgreSQL storage, one checkpoint
    folder): both finish with identical results, every (fold, phase) study holds exactly n trials, each index once,
    both did part of the work, and (random search) the result equals a single process on a journal file."""
    wfa_worker = HERE / "wfa_worker.py"
    n = 8
    settings = {
        "seed": 4,
        "seed_key": "seed_04",
        "n_trials": n,
        "n_startup_trials": 3,
        "max_folds": 2,
        "select_top": 2,
        "progress_every": 0.0,
        "sampler": "random",
    }
    shared = {**settings, "storage": _url(fresh_db), "shared": True}
    env = {**os.environ, "WFA_WORKER_TRIAL_DELAY": "0.05"}
    with _processes() as procs:
        for name in ("a", "b"):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(wfa_worker),
                        str(demo_inputs),
                        str(tmp_path / "ckpt"),
                        str(tmp_path / name),
                        json.dumps(shared),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=env,
                )
            )
        logs = [_finish(p, timeout=600) for p in procs]
    runs = [int(log.rsplit("trials_run=", 1)[1].split()[0]) for log in logs]
    assert all(r > 0 for r in runs), logs  # both workers evaluated trials
    studies = optuna.get_all_study_summaries(optuna.storages.RDBStorage(_url(fresh_db)))
    assert len(studies) == 2 * 5
    for summary in studies:
        _assert_exact(_study_trials(_url(fresh_db), summary.study_name), n)
    alone = subprocess.run(
        [
            sys.executable,
            str(wfa_worker),
            str(demo_inputs),
            str(tmp_path / "alone_ckpt"),
            str(tmp_path / "alone"),
            json.dumps(settings),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert alone.returncode == 0, alone.stdout + alone.stderr
    for name in ("oos", "trials", "folds"):
        a, b = (pd.read_parquet(tmp_path / w / f"{name}.parquet") for w in ("a", "b"))
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        pd.testing.assert_frame_equal(a, pd.read_parquet(tmp_path / "alone" / f"{name}.parquet"), check_exact=True)


# ---------------------------------------------------------------------------------------- Dagster on PostgreSQL


def _instance_yaml(db: str) -> str:
    """The instance configuration the CLI writes (DAGSTER_YAML), plus the storage on PostgreSQL."""
    from btc_assets.cli import DAGSTER_YAML

    return (
        DAGSTER_YAML.format(pool_limit=2)
        + f"""\
storage:
  postgres:
    postgres_db:
      hostname: 127.0.0.1
      username: postgres
      password: ""
      db_name: {db}
      port: 5432
      scheme: postgresql+psycopg2  # SQLAlchemy 2.1's default driver for postgresql:// is psycopg 3 (not installed)
"""
    )


@pytest.mark.slow
def test_seed_partition_materialised_in_a_dagster_instance_on_postgres(
    fresh_db: str, tmp_path: Path, shared_fits: Path
) -> None:
    """`btc-assets --home H run --profile quick --seeds 0` (on 3 years of the demo market) with
    H/dagster/dagster.yaml storing the instance in PostgreSQL: the runs succeed and seed_00's materialisation is in
    the database (through the instance and in the tables themselves); nothing is stored in SQLite."""
    import dagster as dg

    home = use_shared_fits(tmp_path / "home", shared_fits)
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(_instance_yaml(fresh_db))
    market = generate_demo_market(DemoMarketSpec(years=3.0))  # the quick profile's 2 folds, less to compute
    market.ohlcv.to_parquet(tmp_path / "ohlcv.parquet")
    market.funding.to_parquet(tmp_path / "funding.parquet")
    files = ["--ohlcv", str(tmp_path / "ohlcv.parquet"), "--funding", str(tmp_path / "funding.parquet")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BTC_ASSETS_", "DAGSTER_"))}
    with _processes() as procs:
        command = [shutil.which("btc-assets")] if shutil.which("btc-assets") else [sys.executable, "-m", "btc_assets"]
        proc = subprocess.Popen(
            [*command, "--home", str(home), "run", "--profile", "quick", "--seeds", "0", "--jobs", "1", *files],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        out = _finish(proc, timeout=600)
    assert "seed_00: done" in out, out

    old_home = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    try:
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            runs = instance.get_runs()
            assert {r.job_name for r in runs} >= {"btc_study", "wfa_seeds", "summarise_seeds"}
            assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.job_name, r.status) for r in runs]
            event = instance.get_latest_materialization_event(dg.AssetKey("wfa_results"))
            assert event is not None and event.dagster_event.partition == "seed_00"
            seed_run = next(r for r in runs if r.job_name == "wfa_seeds")
            assert seed_run.tags.get("dagster/partition") == "seed_00" and event.run_id == seed_run.run_id
            assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
    finally:
        if old_home is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = old_home

    with closing(psycopg2.connect(f"dbname={fresh_db} user=postgres host=127.0.0.1")) as conn, conn.cursor() as cur:
        cur.execute("SELECT pipeline_name, status FROM runs")
        rows = cur.fetchall()
        assert ("wfa_seeds", "SUCCESS") in rows and all(status == "SUCCESS" for _, status in rows)
        cur.execute(
            "SELECT run_id FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
            "AND asset_key = %s AND partition = 'seed_00'",
            ('["wfa_results"]',),
        )
        assert [r[0] for r in cur.fetchall()] == [seed_run.run_id]
        cur.execute('SELECT concurrency_key, "limit" FROM concurrency_limits')
        assert ("wfa", 2) in cur.fetchall()  # the seed run claimed its slot in the "wfa" pool of this database
    assert not list((home / "dagster").rglob("*.db"))  # no SQLite run or event storage


def test_deploy_postgres_instance_opens_on_the_server(
    fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/postgres/dagster.yaml, with its credentials from the environment, opens an instance on the server that
    stores runs there (copied to a temporary DAGSTER_HOME: local artefacts and compute logs go beside it)."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    for key, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": fresh_db,
    }.items():
        monkeypatch.setenv(key, value)
    shutil.copy(REPO / "deploy" / "postgres" / "dagster.yaml", tmp_path / "dagster.yaml")

    @dg.asset
    def probe() -> None:
        pass

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert instance.get_concurrency_config().pool_config.default_pool_limit is not None
    with closing(psycopg2.connect(f"dbname={fresh_db} user=postgres host=127.0.0.1")) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, status FROM runs")
        assert cur.fetchall() == [(result.run_id, "SUCCESS")]


def test_the_wfa_pool_exists_before_seeds_claim_it(fresh_db: str, tmp_path: Path) -> None:
    """``btc-assets run`` creates the pool's row before it launches seeds (two first claims at once on a fresh
    PostgreSQL instance collide on its key in Dagster 1.13); doing it again, or with the row there, is harmless."""
    import dagster as dg

    from btc_assets.cli import ensure_pool, pool_limit

    (tmp_path / "dagster.yaml").write_text(_instance_yaml(fresh_db))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert not [p for p in instance.event_log_storage.get_pool_limits() if p.name == "wfa"]
        ensure_pool(instance, "wfa")
        ensure_pool(instance, "wfa")
        (row,) = [p for p in instance.event_log_storage.get_pool_limits() if p.name == "wfa"]
        assert row.limit == 2 and row.from_default and pool_limit(instance, "wfa") == 2
