"""The Dagster layer: definitions load, assets materialise into the warehouse, data versions drive staleness."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from btc_assets.defs import CHAIN_SELECTION, WFA_SELECTION, build_definitions
from btc_assets_tests.conftest import definitions, make_funding, make_ohlcv, use_shared_fits

REPO = Path(__file__).resolve().parents[1]


CHAIN = CHAIN_SELECTION


def stale_status(
    instance: dg.DagsterInstance, key: str, partition: str | None = None, *, defs: dg.Definitions
) -> StaleStatus:
    graph = defs.resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    return resolver.get_status(dg.AssetKey(key), partition)


def test_all_definitions_load(tmp_path: Path) -> None:
    defs = definitions(tmp_path)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"raw_ohlcv", "raw_funding", "market_bars"} <= keys
    for spec in defs.resolve_all_asset_specs():
        assert spec.description, f"{spec.key} needs a docstring"
        assert spec.group_name and spec.group_name != "default", spec.key
        assert spec.kinds, spec.key
        assert spec.code_version, spec.key
    assert defs.resolve_job_def("btc_study") is not None
    for job in ("btc_study", "wfa_seeds", "summarise_seeds", "ablation_runs", "ablation_study"):
        executor = defs.resolve_job_def(job).executor_def  # a UI-launched run's steps: forked from a preloaded server
        assert executor.name == "multiprocess_preloaded", job
    seeds = defs.resolve_job_def("wfa_seeds")
    assert seeds.partitions_def.get_partition_keys() == [f"seed_{i:02d}" for i in range(30)]
    for key in ("wfa_results", "wfa_folds", "wfa_trials"):
        spec = next(s for s in defs.resolve_all_asset_specs() if s.key == dg.AssetKey(key))
        assert spec.partitions_def is seeds.partitions_def  # defined once
    assert defs.resolve_assets_def("wfa_results").op.pool == "wfa"
    assert defs.resolve_job_def("ablation_study") is not None
    runs = defs.resolve_job_def("ablation_runs")
    assert set(runs.partitions_def.partition_dimension_names) == {"variant", "seed"}
    assert len(runs.partitions_def.get_partition_keys()) == 7 * 30
    assert defs.resolve_assets_def("ablation_oos").op.pool == "wfa"
    summary = defs.resolve_assets_def("wfa_summary")  # its seeds come through Dagster: lineage and staleness
    assert {k.to_user_string() for k in summary.dependency_keys} >= {"wfa_results", "wfa_folds", "wfa_trials"}


def test_dagster_cli_validates_workspace(tmp_path: Path) -> None:
    env = {"BTC_ASSETS_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


def test_materialize_demo_then_a_seed_then_staleness(tmp_path: Path, shared_fits: Path) -> None:
    """The chain on the demo market, one seed partition, then a code-version bump of volatility: exactly the
    assets and partitions downstream of it are stale (Dagster's own stale-status API)."""
    defs = definitions(use_shared_fits(tmp_path, shared_fits), source="demo")
    with dg.instance_for_test() as instance:
        result = dg.materialize(defs.assets, resources=defs.resources, instance=instance, selection=CHAIN)
        assert result.success
        bars = pd.read_parquet(tmp_path / "warehouse" / "market_bars" / "data.parquet")
        assert 50_000 < len(bars) < 56_000  # about 6 years of hours
        assert bars["missing"].sum() > 0  # the demo market has a few outages, kept visible
        meta = result.asset_materializations_for_node("market_bars")[0].metadata
        assert meta["missing_hours"].value == int(bars["missing"].sum())
        assert (tmp_path / "warehouse" / "catalog.duckdb").exists()
        check_volatility_and_regimes(tmp_path, result, n_bars=len(bars))

        seed = dg.materialize(
            defs.assets, resources=defs.resources, instance=instance, selection=WFA_SELECTION, partition_key="seed_00"
        )
        assert seed.success
        check_seed(tmp_path, seed, "seed_00")
        summary = dg.materialize(
            defs.assets, resources=defs.resources, instance=instance, selection=["wfa_summary", "latest_position"]
        )
        assert summary.success
        position = pd.read_parquet(tmp_path / "warehouse" / "latest_position" / "data.parquet").set_index("row")
        folds = pd.read_parquet(tmp_path / "warehouse" / "wfa_folds" / "partition=seed_00" / "data.parquet")
        assert position.loc["seed_00", "directional"] == folds["order_position"].iloc[-1]
        held = summary.asset_materializations_for_node("latest_position")[0].metadata
        assert isinstance(held["median_directional"], dg.FloatMetadataValue)
        assert held["median_directional"].value == position.loc["median", "directional"]
        assert held["for_bar"].value == str(position.loc["median", "timestamp"])
        table = pd.read_parquet(tmp_path / "warehouse" / "wfa_summary" / "data.parquet")
        assert list(table["row"]) == [
            "seed_00",
            "median",
            "p05",
            "p95",
            "buy_and_hold_spot",
            "buy_and_hold_perp",
            "vol_targeted_buy_and_hold",
        ]
        meta = summary.asset_materializations_for_node("wfa_summary")[0].metadata
        reported = meta["original_system_as_reported"]  # apart from the measured rows, as a table
        assert isinstance(reported, dg.TableMetadataValue)
        assert reported.records[0].data["row"] == "original_system"
        summary_table = meta["summary"]
        assert [r.data["row"] for r in summary_table.records] == list(table["row"])
        for name in ("median_sharpe", "median_cagr", "median_cost_drag", "spot_cagr", "pbo_walk_forward"):
            assert isinstance(meta[name], dg.FloatMetadataValue), name  # typed: the UI plots it over time
        assert meta["median_sharpe"].value == pytest.approx(float(table.set_index("row").loc["median", "sharpe"]))
        assert isinstance(meta["n_trials"], dg.IntMetadataValue)
        for key in ("seed_fan", "fold_returns", "regime_characteristics", "parameter_stability"):
            assert "data:image/png;base64," in meta[key].value
            assert (tmp_path / "reports" / f"{key}.png").stat().st_size > 10_000
        chain_keys = [k.to_user_string() for k in CHAIN.resolve(defs.resolve_asset_graph())]
        assert all(stale_status(instance, k, defs=defs) == StaleStatus.FRESH for k in chain_keys)
        assert stale_status(instance, "wfa_results", "seed_00", defs=defs) == StaleStatus.FRESH
        # the stale_study sensor (off by default) requests exactly what is stale or missing: seed_01 of the
        # profile's two seeds and the 14 configured ablation runs (7 variants × seeds 0, 1), not the fresh seed_00
        from btc_assets.defs.automation import wanted_partitions

        sensor = defs.get_repository_def().get_sensor_def("stale_study")
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
        ablation_runs = [("ablation_runs", k) for k in wanted_partitions(defs.resources["study"])["ablation_runs"]]
        assert len(ablation_runs) == 14
        requested = [(r.job_name, r.partition_key) for r in sensor_requests(instance, defs)]
        assert requested == [("wfa_seeds", "seed_01"), *ablation_runs]
        # with every wanted seed fresh (a profile of one seed, no ablation) the sensor asks for the summary, which is
        # unsynced (wfa_attribution was never materialised), and only for it
        requests = sensor_requests(instance, with_sensor(defs, defs.assets, n_seeds=1))
        assert [(r.job_name, r.partition_key) for r in requests] == [("summarise_seeds", None)]

        bumped = dg.Definitions(
            assets=[
                a.map_asset_specs(lambda s: s.replace_attributes(code_version="bumped"))
                if dg.AssetKey("volatility") in a.keys
                else a
                for a in defs.assets
            ],
            resources=defs.resources,
        )
        assert stale_status(instance, "volatility", defs=bumped) == StaleStatus.STALE
        again = dg.materialize(bumped.assets, resources=defs.resources, instance=instance, selection=["volatility"])
        assert again.success
        status = {k: stale_status(instance, k, defs=bumped) for k in chain_keys}
        downstream = {"regime_probabilities", "regime_phases", "moe_portfolio"}
        assert {k for k, v in status.items() if v == StaleStatus.STALE} == downstream, status
        assert {k for k, v in status.items() if v == StaleStatus.FRESH} == set(chain_keys) - downstream
        for key in ("wfa_results", "wfa_folds", "wfa_trials"):
            assert stale_status(instance, key, "seed_00", defs=bumped) == StaleStatus.STALE
            assert stale_status(instance, key, "seed_01", defs=bumped) == StaleStatus.MISSING
        # after the code change the sensor first brings the chain up to date (one run of the stale chain assets, and
        # nothing else that tick: no seed starts on inputs about to change) ...
        bumped_with_sensor = with_sensor(defs, bumped.assets)
        # (while a run of anything but the partition jobs is queued or in progress, it requests nothing: it looks
        # again at its next tick)
        running = dg.DagsterRun(job_name="btc_study", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED)
        instance.add_run(running)
        assert sensor_requests(instance, bumped_with_sensor) == []
        instance.delete_run(running.run_id)
        chain_first = sensor_requests(instance, bumped_with_sensor)
        assert [(r.job_name, {k.to_user_string() for k in r.asset_selection}) for r in chain_first] == [
            ("btc_study", downstream)
        ]
        assert chain_first[0].run_key == sensor_requests(instance, bumped_with_sensor)[0].run_key
        chain_run = dg.materialize(
            bumped.assets, resources=defs.resources, instance=instance, selection=sorted(downstream)
        )
        assert chain_run.success
        # ... then requests the now stale seed_00, with run keys that name the state (stable across ticks, so one
        # state is launched once)
        first = sensor_requests(instance, bumped_with_sensor)
        assert [(r.job_name, r.partition_key) for r in first][:2] == [
            ("wfa_seeds", "seed_00"),
            ("wfa_seeds", "seed_01"),
        ]
        keys = [r.run_key for r in first]
        assert len(set(keys)) == len(keys) == 16 and keys == [
            r.run_key for r in sensor_requests(instance, bumped_with_sensor)
        ]


def test_daily_update_rereads_the_raw_data_and_freshness_reads_the_newest_bar(tmp_path: Path) -> None:
    """The ``daily_update`` schedule (off by default) requests the raw assets of ``btc_study`` once a day; the
    freshness checks of the ingestion assets pass while the newest bar is younger than its limit and fail (WARN,
    the asset shows overdue in the UI) once it is older, whenever the file was last read."""
    from datetime import UTC, datetime

    from btc_assets.defs.ingestion import MAX_AGE

    now = pd.Timestamp.now(tz="UTC").floor("h")
    frames = {
        "recent": (
            make_ohlcv(72, start=str(now - pd.Timedelta(hours=72))),
            make_funding(str(now - pd.Timedelta(hours=64)), 8),
        ),
        "old": (make_ohlcv(72, start="2024-01-01"), make_funding("2024-01-01 08:00", 8)),
    }
    for name, (ohlcv, funding) in frames.items():
        ohlcv.to_parquet(tmp_path / f"{name}_ohlcv.parquet")
        funding.to_parquet(tmp_path / f"{name}_funding.parquet")
    raw = {"raw_ohlcv", "raw_funding", "raw_perp_ohlcv"}
    outcomes = {}
    for name in frames:
        home = tmp_path / name
        defs = definitions(
            home, ohlcv=str(tmp_path / f"{name}_ohlcv.parquet"), funding=str(tmp_path / f"{name}_funding.parquet")
        )
        schedule = defs.get_repository_def().get_schedule_def("daily_update")
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
        assert defs.get_repository_def().get_sensor_def("data_freshness").default_status.value == "STOPPED"
        with dg.instance_for_test() as instance:
            tick = datetime(2026, 12, 7, 2, tzinfo=UTC)
            context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
            (request,) = schedule.evaluate_tick(context).run_requests
            assert request.run_key == "daily_update:2026-12-07" and request.job_name in (None, "btc_study")
            assert {k.to_user_string() for k in request.asset_selection} == raw
            job = defs.resolve_job_def("btc_study")
            selection = [*request.asset_selection, dg.AssetKey("market_bars")]
            result = job.execute_in_process(instance=instance, asset_selection=selection, tags=request.tags)
            assert result.success  # an overdue check warns, it does not fail the run
            outcomes[name] = {e.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}
    assert set(outcomes["recent"]) == set(MAX_AGE) and all(outcomes["recent"].values()), outcomes
    # no perp file: no data is not overdue data; everything else is two years old
    assert outcomes["old"] == {"raw_ohlcv": False, "raw_funding": False, "market_bars": False, "raw_perp_ohlcv": True}


def sensor_requests(instance: dg.DagsterInstance, definitions: dg.Definitions) -> list:
    """The run requests of one tick of the ``stale_study`` sensor of ``definitions``."""
    sensor = definitions.get_repository_def().get_sensor_def("stale_study")
    context = dg.build_sensor_context(instance=instance, repository_def=definitions.get_repository_def())
    return list(sensor.evaluate_tick(context).run_requests)


def with_sensor(defs: dg.Definitions, assets: list, n_seeds: int | None = None) -> dg.Definitions:
    """``assets`` (e.g. with a bumped code version) with the project's jobs and ``stale_study`` sensor (for a
    profile of ``n_seeds`` seeds and no ablation runs, when given)."""
    from dataclasses import replace

    from btc_assets.config import AblationSettings
    from btc_assets.defs import JOBS
    from btc_assets.defs.automation import build_sensor

    settings = defs.resources["study"]
    if n_seeds is not None:
        profile = replace(settings.profile, n_seeds=n_seeds, ablation=AblationSettings(variants=()))
        settings = replace(settings, profile=profile)
    sensor = build_sensor(settings, JOBS)
    return dg.Definitions(assets=assets, resources=defs.resources, jobs=JOBS, sensors=[sensor])


def check_seed(home: Path, result: dg.ExecuteInProcessResult, key: str) -> None:
    """One seed partition: stitched out-of-sample bars, folds and every trial on disk, metadata for the UI."""
    oos = pd.read_parquet(home / "warehouse" / "wfa_results" / f"partition={key}" / "data.parquet")
    trials = pd.read_parquet(home / "warehouse" / "wfa_trials" / f"partition={key}" / "data.parquet")
    folds = pd.read_parquet(home / "warehouse" / "wfa_folds" / f"partition={key}" / "data.parquet")
    from btc_assets.config import get_profile

    quick = get_profile("quick").wfa
    assert len(folds) == quick.max_folds and len(trials) == quick.max_folds * 5 * quick.n_trials
    assert oos["fold"].nunique() == quick.max_folds and oos["fee_cost"].sum() > 0
    meta = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("walk_forward")}
    assert meta["wfa_results"]["seed"].value == key and meta["wfa_results"]["folds"].value == quick.max_folds
    assert "sharpe" in meta["wfa_folds"]["folds"].value
    assert (home / "checkpoints" / key / "progress.json").exists()


def check_volatility_and_regimes(home: Path, result: dg.ExecuteInProcessResult, n_bars: int) -> None:
    """Both issue-3 assets materialised with sane content and the metadata the UI shows."""
    vol = pd.read_parquet(home / "warehouse" / "volatility" / "data.parquet")
    assert len(vol) == n_bars and vol["sigma"].notna().mean() > 0.9
    assert {"rv_cc", "rv_parkinson", "rv_gk", "rv_yz", "sigma", "sigma_bar", "refit_id"} <= set(vol.columns)
    regime_mats = result.asset_materializations_for_node("regimes")  # the multi-asset node
    assert len(regime_mats) == 2
    meta = {m.asset_key.to_user_string(): m.metadata for m in regime_mats}
    losses = result.asset_materializations_for_node("volatility")[0].metadata["forecast_losses"].value
    assert losses["qlike"] < losses["qlike_baseline"]  # GARCH beats the rolling-window baseline
    probs = pd.read_parquet(home / "warehouse" / "regime_probabilities" / "data.parquet")
    p_cols = [f"p_{k}" for k in range(5)]
    assert set(probs["segment"]) == {"train", "validation", "purge", "test"}
    np.testing.assert_allclose(probs[p_cols].sum(axis=1), 1.0, atol=1e-9)
    phases = pd.read_parquet(home / "warehouse" / "regime_phases" / "data.parquet")
    assert phases.groupby("fold")["name"].apply(list).map(len).eq(5).all()
    # the Student-t HMM nests the Gaussian (ν → ∞): its likelihood is never below the Gaussian comparison's; its BIC
    # (5 more parameters) is lower on nearly every refit (on the real data all but the first, smallest window)
    assert (phases["nu"] > 2).all() and (phases["loglik"] >= phases["gaussian_loglik"]).all()
    assert (phases["bic"] <= phases["gaussian_bic"]).mean() >= 0.9
    assert "gaussian_bic" in meta["regime_probabilities"]["refit_summary"].value
    assert "nu" in meta["regime_phases"]["last_refit_phases"].value
    check_experts_and_portfolio(home, result, n_bars)


def check_experts_and_portfolio(home: Path, result: dg.ExecuteInProcessResult, n_bars: int) -> None:
    """The issue-4 assets: signals in [-1, 1]; the portfolio with costs, metrics and both charts in metadata."""
    signals = pd.read_parquet(home / "warehouse" / "expert_signals" / "data.parquet")
    assert len(signals) == n_bars
    values = signals[["trend", "mean_reversion", "breakout", "carry"]]
    assert values.abs().max().max() <= 1.0 and (values != 0).mean().min() > 0.01
    book = pd.read_parquet(home / "warehouse" / "moe_portfolio" / "data.parquet")
    assert len(book) == n_bars and (book["gross_exposure"] <= 2.0 + 1e-9).all()
    assert book["fee_cost"].sum() > 0 and book["funding_pnl"].abs().sum() > 0  # costs are always on
    meta = result.asset_materializations_for_node("moe_portfolio")[0].metadata
    for key in ("equity_drawdown", "regime_shaded_price"):
        assert meta[key].value.startswith("![") and "data:image/png;base64," in meta[key].value
        assert (home / "reports" / f"{'moe_' if key == 'equity_drawdown' else ''}{key}.png").stat().st_size > 10_000
    for row in ("strategy", "buy_and_hold_spot", "buy_and_hold_perp", "vol_targeted_buy_and_hold"):
        assert row in meta["metrics"].value
    assert "cost_drag" in meta["metrics"].value and "mean_monthly_return_arithmetic" in meta["metrics"].value


def test_materialize_real_files(tmp_path: Path, shared_data: Path) -> None:
    defs = definitions(
        tmp_path,
        source="files",
        ohlcv=str(shared_data / "btcusdt_1h.parquet"),
        funding=str(shared_data / "btcusdt_funding_8h.parquet"),
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(defs.assets, resources=defs.resources, instance=instance, selection=CHAIN)
        assert result.success
        seed = dg.materialize(
            defs.assets, resources=defs.resources, instance=instance, selection=WFA_SELECTION, partition_key="seed_07"
        )
        assert seed.success
    check_seed(tmp_path, seed, "seed_07")
    meta = result.asset_materializations_for_node("market_bars")[0].metadata
    assert meta["gaps"].value == 28 and meta["missing_hours"].value == 128
    assert "2018-02-08 01:00" in meta["largest_gaps"].value
    check_volatility_and_regimes(tmp_path, result, n_bars=76_671)
    phases = pd.read_parquet(tmp_path / "warehouse" / "regime_phases" / "data.parquet")
    assert phases["fold"].nunique() == 14  # one refit per fold of the default schedule


def test_bad_input_fails_the_run_with_file_row_rule(tmp_path: Path) -> None:
    frame = make_ohlcv(30)
    frame.loc[4, "close"] = -1.0
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    defs = definitions(tmp_path, source="files", ohlcv=str(bad))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            defs.assets, resources=defs.resources, instance=instance, raise_on_error=False, selection=["raw_ohlcv"]
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error.cause or failure.step_failure_data.error)
    assert str(bad) in message and "row 5" in message and "non-positive-price" in message


def test_content_hash_data_versions_drive_staleness(tmp_path: Path) -> None:
    """Unchanged input keeps downstream fresh when re-read; changed input makes it stale."""
    ohlcv_file, funding_file = tmp_path / "o.csv", tmp_path / "f.csv"
    make_ohlcv(72).to_csv(ohlcv_file, index=False)
    make_funding(n=8).to_csv(funding_file, index=False)
    defs = definitions(tmp_path, source="files", ohlcv=str(ohlcv_file), funding=str(funding_file))
    ingestion = dg.AssetSelection.groups("ingestion")
    with dg.instance_for_test() as instance:
        assert dg.materialize(defs.assets, resources=defs.resources, instance=instance, selection=ingestion).success
        assert stale_status(instance, "market_bars", defs=defs) == StaleStatus.FRESH

        assert dg.materialize(defs.assets, resources=defs.resources, instance=instance, selection=["raw_ohlcv"]).success
        assert stale_status(instance, "market_bars", defs=defs) == StaleStatus.FRESH, "same content, same data version"

        make_ohlcv(72, seed=1).to_csv(ohlcv_file, index=False)
        assert dg.materialize(defs.assets, resources=defs.resources, instance=instance, selection=["raw_ohlcv"]).success
        assert stale_status(instance, "market_bars", defs=defs) == StaleStatus.STALE
        assert stale_status(instance, "raw_funding", defs=defs) == StaleStatus.FRESH


@pytest.mark.parametrize("home_env", [True, False])
def test_resources_follow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home_env: bool) -> None:
    if home_env:
        monkeypatch.setenv("BTC_ASSETS_HOME", str(tmp_path / "envhome"))
        project = build_definitions(profile="quick").resources["project"]
        assert project.paths.home == tmp_path / "envhome"
    else:
        project = build_definitions(str(tmp_path / "explicit")).resources["project"]
        assert project.paths.home == tmp_path / "explicit"
