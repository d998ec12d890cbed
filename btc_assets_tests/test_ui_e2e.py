"""End to end through the Dagster UI: ``btc-assets ui`` driven with the GraphQL calls the web app makes, then a
browser on its pages.

One ``dagster dev`` (webserver, daemon, code server) on a temporary ``BTC_ASSETS_HOME``, quick profile, on three
years of the demo market (the quick profile's 2 folds, as the Celery, PostgreSQL and fault tests), in stages
chained as module fixtures (each test asserts one stage; a failed stage fails the ones after it):

1. the chain (job ``btc_study``) from the job's Materialize button;
2. a backfill of 2 of the 30 seed partitions of the ``walk_forward`` multi-asset, as the partitions dialog
   launches it;
3. a portfolio-only change in ``config.toml`` + "Reload definitions": exactly the portfolio and the seed partitions
   are stale; "Materialize unsynced" and the ``stale_study`` sensor (turned on, then off, as its toggle does)
   rematerialise exactly those;
4. a seed killed mid-way (SIGKILL of the step process, found by its pid in the run's events) and relaunched as
   "failed and missing": it resumes from its checkpoint and ends bit-identical to an uninterrupted run;
5. Playwright + Chromium: the asset graph, the partitions page (2 materialised) and a chart in the metadata.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from btc_assets.config import N_SEEDS, get_profile, seed_key
from btc_assets.ingestion.demo import DemoMarketSpec, generate_demo_market
from btc_assets.storage import Warehouse
from btc_assets_tests.conftest import use_shared_fits
from btc_assets_tests.test_ui import free_port
from btc_assets_tests.ui_support import DONE_RUN, DagsterUI, is_descendant

pytestmark = pytest.mark.slow

SEEDS = [seed_key(i) for i in range(N_SEEDS)]
# the seeds this test materialises, the quick profile's (2 make every point; the partitions are still all 30)
RUN_SEEDS = SEEDS[: get_profile("quick").n_seeds]
RAW_TO_EXPERTS = [
    "raw_ohlcv",
    "raw_funding",
    "market_bars",
    "volatility",
    "regime_probabilities",
    "regime_phases",
    "expert_signals",
]
WALK_FORWARD = ["wfa_results", "wfa_folds", "wfa_trials"]  # one multi-asset: never materialised apart
PORTFOLIO_CHANGE = "[portfolio]\nband = 0.3\n\n[ablation]\nseeds = []\n"  # stage 3: no ablation runs wanted
N_TRIALS_SLOW = 80  # per (fold, phase) in step 4: slow enough to interrupt a seed between phases
CHROMIUM = "/usr/bin/chromium"


@dataclass
class Studio:
    """The running UI and what the tests learned from it."""

    ui: DagsterUI
    home: Path
    done: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)


def _say(message: str, started: float) -> None:
    print(f"[ui-e2e {time.monotonic() - started:6.1f} s] {message}", flush=True)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, shared_fits: Path) -> Iterator[Studio]:
    """``btc-assets ui --port <free port>`` on a fresh home (quick profile, three years of the demo market as its
    files), loaded and answering GraphQL."""
    root = tmp_path_factory.mktemp("ui_e2e")
    home = use_shared_fits(root / "home", shared_fits)
    market = generate_demo_market(DemoMarketSpec(years=3.0))
    market.ohlcv.to_parquet(root / "ohlcv.parquet")
    market.funding.to_parquet(root / "funding.parquet")
    files = {"BTC_ASSETS_OHLCV": str(root / "ohlcv.parquet"), "BTC_ASSETS_FUNDING": str(root / "funding.parquet")}
    ui = DagsterUI(home, free_port(), root / "dagster-dev.log", BTC_ASSETS_PROFILE="quick", **files)
    try:
        ui.wait_until_loaded(timeout=240)
        yield Studio(ui, home)
    finally:
        ui.stop()


def _write_config(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)


def _reload_and_wait_for_version(ui: DagsterUI, asset: str, old_version: str) -> None:
    """Reload definitions; the new settings must show in ``asset``'s code version."""
    ui.reload_location()
    version = ui.asset_nodes([asset])[asset]["opVersion"]
    assert version != old_version, f"{asset}'s code version did not change after the reload ({version})"


@pytest.fixture(scope="module")
def chain(studio: Studio) -> dict[str, Any]:
    """Stage 1, the chain: the btc_study job page's "Materialize all" (its assets, launched as one run of the job).
    Returns the asset nodes as the UI listed them before."""
    ui = studio.ui
    nodes = ui.asset_nodes()
    assert {*RAW_TO_EXPERTS, "moe_portfolio", *WALK_FORWARD} <= set(nodes), sorted(nodes)
    assert nodes["wfa_results"]["partitionKeys"] == SEEDS
    names = sorted(name for name, node in nodes.items() if "btc_study" in node["jobNames"])
    assert {*RAW_TO_EXPERTS, "moe_portfolio"} <= set(names), names
    run_id = ui.launch_run("btc_study", names)
    ui.wait_run(run_id, timeout=420)
    _say(f"chain materialised by run {run_id}", studio.started)
    return {"nodes": nodes, "names": names}


@pytest.fixture(scope="module")
def backfill(studio: Studio, chain: dict[str, Any]) -> str:
    """Stage 2, a backfill of the first seed partitions: wfa_results' Materialize → partitions dialog → one asset
    backfill; the multi-asset's other outputs come along (assetNodeAdditionalRequiredKeys), as the UI adds them."""
    ui = studio.ui
    kind, backfill_id = ui.materialize(["wfa_results"], RUN_SEEDS)
    assert kind == "backfill"

    def its_runs() -> list[dict[str, Any]] | None:
        runs = ui.runs_tagged("dagster/backfill", backfill_id)
        return runs if len(runs) == len(RUN_SEEDS) else None

    # its runs, as the backfill page lists them; the backfill itself is marked done by the daemon's next pass (every
    # 30 s), checked in stage 3 (portfolio_change) so that the test does not sit out that pass here
    for run in ui.wait_for(f"backfill {backfill_id} to launch its runs", its_runs, 300):
        ui.wait_run(run["runId"], timeout=900)
    _say(f"backfill {backfill_id}: its {len(RUN_SEEDS)} seed runs done", studio.started)
    return backfill_id


@pytest.fixture(scope="module")
def portfolio_change(studio: Studio, chain: dict[str, Any], backfill: str) -> dict[str, Any]:
    """Stage 3, a portfolio-only change in ``config.toml`` + "Reload definitions", then what is unsynced
    rematerialised ("Materialize unsynced" lists the unpartitioned stale assets; the stale seed partitions are
    launched by the ``stale_study`` sensor, turned on in Automation and off again once it has launched them).
    Returns what the UI showed and what was rematerialised. (No ablation partitions are configured here, so the
    sensor has only the seeds to launch.)"""
    ui, home, nodes = studio.ui, studio.home, chain["nodes"]
    before = ui.latest_materializations()
    _write_config(home, PORTFOLIO_CHANGE)
    _reload_and_wait_for_version(ui, "moe_portfolio", nodes["moe_portfolio"]["opVersion"])
    seen = {
        "chain": ui.stale_status(RAW_TO_EXPERTS),
        "portfolio": ui.stale_status(["moe_portfolio"]),
        "seeds": ui.stale_by_partition(WALK_FORWARD),
    }
    # Dagster 1.13 reports a partitioned asset FRESH at asset level, so the dialog lists only moe_portfolio
    unsynced = ui.unsynced([*RAW_TO_EXPERTS, "moe_portfolio", *WALK_FORWARD])
    _say(f"the 'Materialize unsynced' dialog lists {unsynced}", studio.started)
    launched = [ui.materialize([n for n in unsynced if not nodes[n]["isPartitioned"]])]
    # the user waits for it, then turns the sensor on: its first tick launches the stale seeds (with a run of the
    # chain in flight it would wait for its next tick, a minimum interval of 60 s later)
    ui.wait_launched(*launched[0], timeout=900)
    ui.wait_backfill(backfill, timeout=120)  # stage 2's backfill, marked done by the daemon meanwhile
    stale_seeds = sorted(p for p, s in ui.stale_by_partition(["wfa_results"])["wfa_results"].items() if s == "STALE")
    sensor = ui.start_sensor("stale_study")
    try:

        def launched_by_sensor() -> list[dict[str, Any]] | None:
            runs = ui.runs_tagged("dagster/sensor_name", "stale_study")
            return runs if len(runs) >= len(stale_seeds) else None

        sensor_runs = ui.wait_for("the stale_study sensor to launch the stale seeds", launched_by_sensor, 240)
        time.sleep(5.0)  # one tick requests every stale partition at once: let its other launches (if any) land
        sensor_runs = ui.runs_tagged("dagster/sensor_name", "stale_study")
    finally:
        ui.stop_sensor(sensor)
    launched += [("run", r["runId"]) for r in sensor_runs]
    for kind, launched_id in launched:
        ui.wait_launched(kind, launched_id, timeout=900)
    after = ui.latest_materializations()
    return {
        "seen": seen,
        "unsynced": unsynced,
        "stale_seeds": stale_seeds,
        "launched": [k for k, _ in launched],
        "sensor_launched": sorted((r["tags"].get("dagster/partition"), r["pipelineName"]) for r in sensor_runs),
        "changed": {key for key, value in after.items() if before.get(key) != value},
        "statuses": ui.stale_status(ui.asset_nodes()),
        "after": ui.stale_by_partition(WALK_FORWARD),
    }


def test_chain_from_the_job_page(studio: Studio, chain: dict[str, Any]) -> None:
    assert set(studio.ui.stale_status(chain["names"]).values()) == {"FRESH"}


def test_backfill_of_the_seed_partitions(studio: Studio, backfill: str) -> None:
    status = studio.ui.partition_status(WALK_FORWARD)
    for name in WALK_FORWARD:
        assert status[name]["stats"]["numMaterialized"] == len(RUN_SEEDS), (name, status[name])
        assert sorted(status[name]["materializedPartitions"]) == RUN_SEEDS, (name, status[name])
    warehouse = Warehouse(studio.home / "warehouse")
    missing = [s for s in RUN_SEEDS if not warehouse.path_for("wfa_results", s).exists()]
    assert not missing, f"no results file for {missing} under {warehouse.root}"


def test_a_portfolio_change_reruns_exactly_the_portfolio_and_the_seeds(portfolio_change: dict[str, Any]) -> None:
    seen = portfolio_change["seen"]
    assert seen["chain"] == dict.fromkeys(RAW_TO_EXPERTS, "FRESH")
    assert seen["portfolio"] == {"moe_portfolio": "STALE"}
    for name in WALK_FORWARD:
        materialised = {p: s for p, s in seen["seeds"][name].items() if p in RUN_SEEDS}
        assert materialised == dict.fromkeys(RUN_SEEDS, "STALE"), (name, seen["seeds"][name])
    unsynced = portfolio_change["unsynced"]
    assert "moe_portfolio" in unsynced and not set(unsynced) & set(RAW_TO_EXPERTS), unsynced
    assert portfolio_change["stale_seeds"] == RUN_SEEDS and portfolio_change["launched"] == ["run"] * (
        1 + len(RUN_SEEDS)
    )
    # the sensor launched exactly the stale seeds, one wfa_seeds run each
    assert portfolio_change["sensor_launched"] == [(seed, "wfa_seeds") for seed in RUN_SEEDS], portfolio_change
    expected = {("moe_portfolio", None), *((name, seed) for name in WALK_FORWARD for seed in RUN_SEEDS)}
    changed = portfolio_change["changed"]
    assert changed == expected, (
        f"unexpected: {sorted(changed - expected, key=str)}; not rematerialised: {sorted(expected - changed, key=str)}"
    )
    assert "STALE" not in portfolio_change["statuses"].values(), portfolio_change["statuses"]
    for name, partitions in portfolio_change["after"].items():
        assert {partitions[p] for p in RUN_SEEDS} == {"FRESH"}, (name, partitions)


def test_a_killed_seed_resumes_bit_identical(studio: Studio, portfolio_change: dict[str, Any], tmp_path: Path) -> None:
    """Stage 4: a slower study (the seeds become stale; only seed_00 runs here), its step process SIGKILLed between
    phases, relaunched as "failed and missing": it resumes from its checkpoint and equals an uninterrupted run."""
    ui, home, started = studio.ui, studio.home, studio.started
    warehouse = Warehouse(home / "warehouse")
    _write_config(home, f"{PORTFOLIO_CHANGE}\n[wfa]\nn_trials = {N_TRIALS_SLOW}\n")
    _reload_and_wait_for_version(ui, "wfa_results", ui.asset_nodes(["wfa_results"])["wfa_results"]["opVersion"])
    stale = ui.stale_by_partition(["wfa_results"])["wfa_results"]
    assert {stale[p] for p in RUN_SEEDS} == {"STALE"}, stale

    # the uninterrupted reference, computed here (in a thread, while the UI runs) from the warehouse's inputs and
    # the profile as the definitions see it (config.toml applied), with its own checkpoint folder
    from btc_assets.settings import resolve_settings
    from btc_assets.wfa import run_seed

    profile = resolve_settings(home, "quick", env={}).profile
    assert profile.portfolio.band == 0.3 and profile.wfa.n_trials == N_TRIALS_SLOW
    inputs = [warehouse.read(name) for name in ("market_bars", "volatility", "regime_probabilities")]
    reference_pool = ThreadPoolExecutor(max_workers=1)
    reference = reference_pool.submit(
        run_seed,
        0,
        "seed_00",
        *inputs,
        settings=profile.wfa,
        portfolio=profile.portfolio,
        schedule=profile.schedule,
        checkpoints=str(tmp_path / "reference_checkpoints"),
        say=lambda _m: None,
    )

    try:
        interrupted, killed_after = _interrupt_seed_00(ui, home, started)
        # "Backfill only failed and missing partitions" among the seeds this test runs: seed_00 failed; the others
        # are materialised (stale, not missing), so only seed_00 is selected. With one partition the dialog
        # launches one run ("Launch 1 run") instead of a backfill.
        failed_or_missing = sorted(
            set().union(
                *(
                    set(s["failedPartitions"]) | set(s["unmaterializedPartitions"])
                    for s in ui.partition_status(WALK_FORWARD).values()
                )
            )
        )
        assert [p for p in failed_or_missing if p in RUN_SEEDS] == ["seed_00"], failed_or_missing
        kind, resumed_run = ui.materialize(["wfa_results"], ["seed_00"])
        assert kind == "run"
        ui.wait_run(resumed_run, timeout=600)
        meta = ui.materialization_metadata("wfa_results", "seed_00")
        assert meta["run_id"] == resumed_run, meta
        total = N_TRIALS_SLOW * 5 * 2  # trials per (fold, phase) × phases × folds (quick: 2 folds, K = 5)
        assert meta["resumed"] is True, meta
        assert 0 < meta["trials_run_now"] <= total - N_TRIALS_SLOW * killed_after, (meta, killed_after)
        _say(
            f"run {interrupted} killed after {killed_after} phases; run {resumed_run} resumed and ran "
            f"{meta['trials_run_now']} of {total} trials",
            started,
        )
        uninterrupted = reference.result(timeout=900)
    finally:
        reference_pool.shutdown(wait=True, cancel_futures=True)
    assert uninterrupted.trials_run == total and not uninterrupted.resumed
    # the same Parquet round trip on both sides, then bit for bit
    Warehouse(tmp_path / "reference").write(uninterrupted.oos, "wfa_results", "seed_00")
    pd.testing.assert_frame_equal(
        warehouse.read("wfa_results", "seed_00"),
        Warehouse(tmp_path / "reference").read("wfa_results", "seed_00"),
        check_exact=True,
    )
    _say("the resumed seed_00 equals an uninterrupted run exactly", started)
    studio.done.add("study")


def _interrupt_seed_00(ui: DagsterUI, home: Path, started: float) -> tuple[str, int]:
    """Launch seed_00 (partitions dialog, one partition), SIGKILL its step process once at least 2 (fold, phase)
    records of the new checkpoint exist; the run must end FAILURE. Returns (run id, records at the kill)."""
    checkpoint = home / "checkpoints" / "seed_00"
    old_fingerprint = _read_json(checkpoint / "fingerprint.json")
    kind, run_id = ui.materialize(["wfa_results"], ["seed_00"])
    assert kind == "run"
    deadline, step_pid, records = time.monotonic() + 600, None, 0
    while True:
        status = ui.run_status(run_id)
        if status in DONE_RUN:
            raise ui.fail(f"run {run_id} ended {status} before it could be interrupted ({records} phase records)")
        if time.monotonic() > deadline:
            raise ui.fail(f"run {run_id}: no 2 phase records within 600 s (step pid {step_pid}, {records} records)")
        if step_pid is None:
            step_pid = next(
                (
                    e["pid"]
                    for e in ui.run_events(run_id)
                    if e["__typename"] == "LogsCapturedEvent" and "walk_forward" in (e["stepKeys"] or [])
                ),
                None,
            )
        progress = _read_json(checkpoint / "progress.json") or {}
        fresh = _read_json(checkpoint / "fingerprint.json") not in (None, old_fingerprint)
        records = len(list((checkpoint / "phases").glob("fold*_phase*.json.gz"))) if fresh else 0
        if step_pid is not None and progress.get("pid") == step_pid and records >= 2:
            break
        time.sleep(0.25)
    # only a process of our own dagster dev: the step worker under its run worker
    assert is_descendant(step_pid, ui.proc.pid), f"pid {step_pid} is not under dagster dev ({ui.proc.pid})"
    os.kill(step_pid, signal.SIGKILL)
    records = len(list((checkpoint / "phases").glob("fold*_phase*.json.gz")))
    _say(f"SIGKILLed the step process {step_pid} of run {run_id} with {records} phase records", started)
    try:
        status = ui.wait_run(run_id, timeout=120, expect=None)
    except AssertionError:  # no run monitoring in dagster dev: a run whose worker died may stay STARTED
        ui.terminate(run_id, "MARK_AS_CANCELED_IMMEDIATELY")
        status = ui.wait_run(run_id, timeout=60, expect=None)
    assert status in ("FAILURE", "CANCELED"), f"run {run_id} ended {status} after the kill"
    return run_id, records


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_ui_pages_in_a_browser(studio: Studio, tmp_path: Path) -> None:
    """The asset graph, wfa_results' partitions (2 materialised) and a chart from moe_portfolio's metadata."""
    assert "study" in studio.done, "the stages before it did not all pass against this UI"
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (the browser part only)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (the browser part only)")
    shots = Path(os.environ.get("BTC_ASSETS_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    ui = studio.ui
    groups: dict[str, list[str]] = {}
    for name, node in ui.asset_nodes().items():
        groups.setdefault(node["groupName"], []).append(name)
    assert {*RAW_TO_EXPERTS, "moe_portfolio", *WALK_FORWARD} <= {n for names in groups.values() for n in names}
    graph_url = f"{ui.url}/asset-groups?expanded=" + ",".join(f"global@global:{g}" for g in sorted(groups))
    saved = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.set_default_timeout(60_000)
            context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
            page = context.new_page()

            # every asset drawn as a node on its own group's graph (a group page links other groups' assets by
            # name, never its own); the global lineage is wider than a screen and nodes off screen are not rendered,
            # so it is a picture only
            for group, names in sorted(groups.items()):
                page.goto(
                    f"{ui.url}/locations/{ui.repository}@{ui.location}/asset-groups/{group}", wait_until="networkidle"
                )
                for name in names:
                    expect(page.get_by_text(name, exact=True).first).to_be_visible()
                saved.append(_shot(page, shots / f"asset_group_{group}.png"))
            page.set_viewport_size({"width": 1800, "height": 2600})
            page.goto(graph_url, wait_until="networkidle")
            saved.append(_shot(page, shots / "asset_graph.png"))

            page.set_viewport_size({"width": 1600, "height": 1000})
            page.goto(f"{ui.url}/assets/wfa_results?view=partitions", wait_until="networkidle")
            expect(page.get_by_text(f"{N_SEEDS} Partitions Selected")).to_be_visible()
            expect(page.get_by_text(f"Materialized ({len(RUN_SEEDS)})")).to_be_visible()
            expect(page.get_by_text("Failed (0)")).to_be_visible()
            expect(page.get_by_text(f"Missing ({N_SEEDS - len(RUN_SEEDS)})")).to_be_visible()
            expect(page.get_by_text("seed_29", exact=True).first).to_be_visible()
            saved.append(_shot(page, shots / "wfa_results_partitions.png"))

            page.goto(f"{ui.url}/assets/moe_portfolio?view=events", wait_until="networkidle")
            page.locator("tr", has_text="equity_drawdown").get_by_text("[Show Markdown]").click()
            chart = page.get_by_role("dialog").locator("img[src^='data:image/png']").first
            expect(chart).to_be_visible()
            size = chart.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
            assert size[0] and size[1] > 300 and size[2] > 200, f"the chart did not decode: {size}"
            saved.append(_shot(page, shots / "moe_portfolio_equity_drawdown.png"))
        finally:
            browser.close()
    for path in saved:
        print(f"screenshot: {path}", flush=True)


def _shot(page: Any, path: Path) -> Path:
    page.wait_for_load_state("networkidle")
    time.sleep(1.0)  # let the graph / dialog finish drawing
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path
