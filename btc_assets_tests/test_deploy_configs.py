"""The deployment files under deploy/ load and validate: each dagster.yaml against Dagster's instance schema and its
storage / run launcher against their own schemas, the Celery run config against the executor and the project's seed
job, the settings file through the project's own override path. No server is needed (see test_postgres.py for a
deploy/postgres instance opened on a real one)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import ConfigurableClassData, class_from_code_pointer

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def instance_config(name: str) -> dict:
    """deploy/<name>/dagster.yaml validated by Dagster's instance loader (the schema of dagster.yaml)."""
    config, custom_class = dagster_instance_config(str(DEPLOY / name), "dagster.yaml")
    assert custom_class is None
    return dict(config)


@pytest.mark.parametrize("name", ["postgres", "docker", "k8s"])
def test_instance_files_match_the_instance_schema(name: str) -> None:
    from dagster_postgres import DagsterPostgresStorage

    config = instance_config(name)
    storage = config["storage"]["postgres"]
    result = validate_config(DagsterPostgresStorage.config_type(), storage)  # dagster-postgres's own schema
    assert result.success, result.errors
    db = storage["postgres_db"]
    assert {db[k]["env"] for k in ("hostname", "username", "password", "db_name")} == set(PG_ENV)  # no credentials
    assert db["scheme"] == "postgresql+psycopg2"
    coordinator = config["run_coordinator"]
    assert class_from_code_pointer(coordinator["module"], coordinator["class"]).__name__ == "QueuedRunCoordinator"
    pools = config["concurrency"]["pools"]
    assert pools["default_limit"] >= 1 and "granularity" not in pools  # op granularity: the CLI's runs obey it too
    assert config["run_retries"]["enabled"] and config["run_monitoring"]["enabled"]


def test_docker_run_launcher_config() -> None:
    dagster_docker = pytest.importorskip("dagster_docker", reason="dagster-docker not installed")
    launcher = instance_config("docker")["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    result = validate_config(dagster_docker.DockerRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors


def test_docker_run_launcher_builds_from_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher as the instance builds it (env vars resolved; building it does not contact Docker)."""
    dagster_docker = pytest.importorskip("dagster_docker", reason="dagster-docker not installed")
    monkeypatch.setenv("BTC_ASSETS_IMAGE", "registry.example/btc-assets:1")
    launcher = instance_config("docker")["run_launcher"]
    built = ConfigurableClassData(launcher["module"], launcher["class"], yaml.safe_dump(launcher["config"])).rehydrate(
        dagster_docker.DockerRunLauncher
    )
    assert built.image == "registry.example/btc-assets:1" and built.networks == ["btc_assets"]
    assert "BTC_ASSETS_HOME=/data/btc_assets" in built.env_vars
    assert built.container_kwargs["volumes"] == ["/srv/btc_assets:/data/btc_assets"]


def test_k8s_run_launcher_config() -> None:
    dagster_k8s = pytest.importorskip("dagster_k8s", reason="dagster-k8s not installed")
    launcher = instance_config("k8s")["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = validate_config(dagster_k8s.K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert launcher["config"]["postgres_password_secret"] and launcher["config"]["instance_config_map"]


def test_celery_run_config_validates_against_the_executor_and_the_seed_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dagster_celery = pytest.importorskip("dagster_celery", reason="dagster-celery not installed")
    from dagster_celery.cli import get_config_value_from_yaml

    path = DEPLOY / "celery" / "run_config.yaml"
    worker_config = get_config_value_from_yaml(str(path))  # what `dagster-celery worker start -y <file>` reads
    result = validate_config(dagster_celery.celery_executor.config_schema.config_type, worker_config)
    assert result.success, result.errors
    assert worker_config["broker"] == {"env": "DAGSTER_CELERY_BROKER_URL"}

    # the whole run config, resolved for the project's own seed job with the Celery executor
    from btc_assets_tests.conftest import definitions

    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "pyamqp://guest@rabbitmq//")
    monkeypatch.setenv("DAGSTER_CELERY_BACKEND_URL", "redis://redis:6379/1")
    job = definitions(tmp_path).resolve_job_def("wfa_seeds_celery")
    assert job.executor_def is dagster_celery.celery_executor
    validated = dg.validate_run_config(job, yaml.safe_load(path.read_text()))
    celery = validated["execution"]["celery"]  # resolved config, keyed by the executor's name
    assert celery["broker"] == "pyamqp://guest@rabbitmq//" and celery["config_source"]["task_acks_late"] is True


def test_optuna_settings_file_through_the_project_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy

    from btc_assets.config import apply_overrides, get_profile
    from btc_assets.settings import resolve_settings
    from btc_assets.wfa.distributed import _with_installed_driver

    path = DEPLOY / "optuna.toml"
    with open(path, "rb") as handle:
        overrides = tomllib.load(handle)
    full = get_profile("full")
    profile = apply_overrides(full, overrides, str(path))
    assert profile.wfa.storage == overrides["wfa"]["storage"] and profile.wfa.sampler == full.wfa.sampler == "random"
    url = sqlalchemy.engine.make_url(profile.wfa.storage)
    assert url.drivername == "postgresql+psycopg2" and url.password is None  # libpq: PGPASSWORD / ~/.pgpass
    assert _with_installed_driver(profile.wfa.storage) == profile.wfa.storage
    machine = resolve_settings(tmp_path, "full", env={"BTC_ASSETS_CONFIG": str(path)})  # as a machine uses it
    assert machine.profile.wfa.storage == profile.wfa.storage
