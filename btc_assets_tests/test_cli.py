"""The ``btc-assets`` command line, run as a user runs it (a subprocess with its own environment)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from btc_assets.ingestion.demo import DemoMarketSpec, generate_demo_market
from btc_assets.wfa.checkpoint import read_json
from btc_assets_tests.conftest import make_funding, make_ohlcv, use_shared_fits

EXE = shutil.which("btc-assets") or str(Path(sys.executable).parent / "btc-assets")
# the ablation through the CLI: the first and a side variant, and one step whose reference is skipped
# (gating_only against vol_targeting, mixture_soft and student_t_hmm not configured); every variant's own
# step is tested in test_ablation.py
CLI_VARIANTS = ("original", "vol_targeting", "gating_only")


def cli(*args: str, home: Path, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BTC_ASSETS_", "DAGSTER_"))}
    clean.update(env)
    clean["BTC_ASSETS_HOME"] = str(home)
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, env=clean, cwd=cwd)


def test_ingest_accepts_good_and_rejects_bad(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    frame = make_ohlcv(30).drop(index=[7, 8]).reset_index(drop=True)
    frame.to_csv(good, index=False)
    broken = frame.copy()
    broken.loc[9, "high"] = broken.loc[9, "low"] * 0.5
    broken.to_csv(bad, index=False)

    ok = cli("ingest", str(good), home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "1 gap(s) / 2 missing hour(s)" in ok.stdout

    rejected = cli("ingest", str(good), str(bad), home=tmp_path)
    assert rejected.returncode == 2
    assert f"{bad}: row 10: rule 'ohlc-inconsistent'" in rejected.stderr


def test_run_keeps_history_in_persistent_instance(tmp_path: Path, shared_fits: Path) -> None:
    """``run`` materialises the chain, then the profile's seeds, two at once in separate processes (one run per
    seed on the same SQLite instance: no storage lock); running it again skips what is done. Then other data (three
    years of the demo market, the other tests' scenario market), with the instance's pool limit lowered to 1: the
    seeds' checkpoints start fresh and say so, and two seed runs never optimise at the same time (``run`` launches
    no more seeds at once than the pool allows; Dagster's own slot claims can race on SQLite); the ablation and the
    report on the same home and data; a killed seed worker."""
    home = use_shared_fits(tmp_path / "home", shared_fits)
    (home / "config.toml").write_text(f"[ablation]\nvariants = {json.dumps(list(CLI_VARIANTS))}\n")
    first = cli("run", "--profile", "quick", "--jobs", "2", home=home, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "materialising" in first.stderr and "optimising 2 seed(s), 2 at a time" in first.stderr
    assert "seed_00: done, 60 trials run now, 0 from checkpoint" in first.stderr and "seed_01: done" in first.stderr
    instance_yaml = home / "dagster" / "dagster.yaml"
    assert "concurrency:\n  pools:\n    default_limit:" in instance_yaml.read_text()
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
        assert instance.get_latest_materialization_event(dg.AssetKey("wfa_summary")) is not None
        seeds = [r for r in runs if r.job_name == "wfa_seeds"]
        assert sorted(r.tags["dagster/partition"] for r in seeds) == ["seed_00", "seed_01"]
        assert all(r.is_success for r in runs)
        stats = [instance.get_run_stats(r.run_id) for r in seeds]
        assert max(s.start_time for s in stats) < min(s.end_time for s in stats), "the two seeds did not overlap"

    again = cli("run", "--profile", "quick", home=home, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "up to date" in again.stderr and "2 seed(s) already done and up to date, skipped" in again.stderr
    assert "the summary is up to date" in again.stderr and "summarise_seeds" not in again.stderr  # not rerun
    status = cli("status", home=home)
    lines = status.stdout.splitlines()
    assert status.returncode == 0 and len(lines) == 30 and "seed_29  not started" in lines
    assert lines[0].startswith("seed_00  done     fold 2/2  phase 5/5  trial 6/6  (60/60 trials)")

    other = generate_demo_market(DemoMarketSpec(years=3.0))  # the quick profile's 2 folds
    other.ohlcv.to_parquet(tmp_path / "other_ohlcv.parquet")
    other.funding.to_parquet(tmp_path / "other_funding.parquet")
    instance_yaml.write_text("telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        n_runs_before = len(instance.get_runs())
    second = cli(
        "run",
        "--jobs",
        "2",
        "--ohlcv",
        str(tmp_path / "other_ohlcv.parquet"),
        "--funding",
        str(tmp_path / "other_funding.parquet"),
        home=home,
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "different data" in second.stderr  # the seeds' checkpoints were made from the demo market
    assert "the instance's pool 'wfa' allows 1 seed(s) at once: --jobs 2 lowered to 1" in second.stderr
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
        # per command: the raw re-read, the chain when unsynced, the seeds not done, the summary when unsynced (not
        # on the run that found everything done)
        assert sorted(r.job_name for r in runs) == ["btc_study"] * 5 + ["summarise_seeds"] * 2 + ["wfa_seeds"] * 4
        steps = []
        for run in runs[: len(runs) - n_runs_before]:  # newest first: the second data's runs
            if run.job_name != "wfa_seeds":
                continue
            records = instance.get_records_for_run(
                run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
            ).records
            times = {r.event_log_entry.dagster_event.event_type_value: r.event_log_entry.timestamp for r in records}
            steps.append((times["STEP_START"], times["STEP_SUCCESS"]))
    assert len(steps) == 2
    earlier, later = sorted(steps)
    assert earlier[1] <= later[0], f"the two seeds optimised at once despite the pool limit: {steps}"
    out = cli("sql", "SELECT count(*) AS n, count_if(missing) AS gaps FROM market_bars", "--format", "csv", home=home)
    assert out.returncode == 0, out.stderr
    bars = pd.date_range(other.ohlcv["timestamp"].iloc[0], other.ohlcv["timestamp"].iloc[-1], freq="h")
    assert out.stdout.splitlines() == ["n,gaps", f"{len(bars)},{len(bars) - len(other.ohlcv)}"]
    data = ["--ohlcv", str(tmp_path / "other_ohlcv.parquet"), "--funding", str(tmp_path / "other_funding.parquet")]
    check_ablation(home, tmp_path, data)
    report = cli("report", home=home)
    assert report.returncode == 0, report.stderr
    page = Path(report.stdout.strip()).read_text()
    assert page.count("data:image/png;base64,") == 8 and "Not materialised yet" not in page  # every chart
    assert "Where the out-of-sample P&amp;L comes from" in page  # the attribution (wfa_attribution)
    assert "src='http" not in page and "<script" not in page  # opens offline
    assert "original_system" in page and "spa_consistent" in page and "p_month_at_target" in page
    assert "Original system, as reported" in page and "buy_and_hold_spot" in page
    check_worker_killed(home, tmp_path, data)


def check_worker_killed(home: Path, cwd: Path, data: list[str]) -> None:
    """``run`` with one job slot: one worker process runs the seeds in turn. Killed (SIGKILL) right after it
    finished seed_02, it takes only the seed it had started with it: seed_04 runs in a fresh worker, the command
    names seed_03 as failed, and running it again completes seed_03 alone. A worker given an unknown partition
    key reports it failed and goes on with the next key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BTC_ASSETS_", "DAGSTER_"))}
    env["BTC_ASSETS_HOME"] = str(home)
    argv = [EXE, "run", "--seeds", "2-4", "--jobs", "1", *data]
    workers: set[int] = set()
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd) as proc:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if line.startswith(("seed_02: done", "seed_04: done")):
                workers |= set(_workers(home))
            if line.startswith("seed_02: done"):
                (pid,) = _workers(home)
                os.kill(pid, signal.SIGKILL)
    text = "".join(seen)
    assert proc.returncode == 1, text[-3000:]
    assert "seed_04: done" in text and "seed_03: done" not in text, text[-3000:]
    assert "FAILED seeds: seed_03; run the same command again to resume them" in text
    assert len(workers) == 2, workers  # the killed worker and its replacement
    again = cli("run", "--seeds", "2-4", *data, home=home, cwd=cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 seed(s) already done and up to date, skipped: seed_02, seed_04" in again.stderr
    assert "seed_03: done" in again.stderr
    assert "the summary is up to date" not in again.stderr and "summarise_seeds" in again.stderr  # a new seed
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BTC_ASSETS_", "DAGSTER_"))}
    worker = subprocess.run(
        [sys.executable, "-m", "btc_assets", "--home", str(home), "seed"],
        input="seed_99\nseed_02\n",
        capture_output=True,
        text=True,
        timeout=300,
        env=clean,
    )
    assert worker.returncode == 1 and "FAILED seed_99" in worker.stderr and "seed_02: done" in worker.stderr


def _workers(home: Path) -> list[int]:
    """Pids of the seed worker processes of ``btc-assets run`` on ``home``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"seed" in argv and b"--report-fd" in argv and str(home).encode() in argv:
            pids.append(int(entry.name))
    return pids


def check_ablation(home: Path, cwd: Path, data: list[str]) -> None:
    """``btc-assets ablation`` on the quick profile and ``data``: the configured variants on seeds 0 and 1, one
    Dagster run per (variant, seed) partition of ``ablation_runs`` (one at a time: the instance's pool allows 1),
    intervals and paired tests, the chart; a second run finds every partition up to date, launches none and gives the
    same table. Each command re-reads the raw data (a ``btc_study`` run); the Gaussian regimes and the table are one
    ``ablation_study`` run each, once."""
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        n_runs_before = len(instance.get_runs())
    first = cli("ablation", "--profile", "quick", *data, home=home, cwd=cwd)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "up to date" in first.stderr and "p_daily_bootstrap" in first.stdout
    table = pd.read_parquet(home / "warehouse" / "ablation" / "data.parquet")
    per_seed = pd.read_parquet(home / "warehouse" / "ablation_seeds" / "data.parquet")
    n_runs = 2 * len(CLI_VARIANTS)
    assert list(table["variant"]) == list(CLI_VARIANTS) and (table["n_seeds"] == 2).all()
    assert len(per_seed) == n_runs and per_seed["sharpe"].notna().all()
    assert per_seed.groupby("seed")["sharpe"].nunique().eq(len(CLI_VARIANTS)).all()  # the variants really differ
    # each step against its reference: the one before it, or the nearest configured one up the chain
    assert list(table["versus"].iloc[1:]) == ["original", "vol_targeting"]
    for column in ("sharpe_lo", "sharpe_hi", "d_sharpe", "p_sharpe_t", "p_sharpe_wilcoxon", "p_daily_bootstrap"):
        assert table[column].iloc[1:].notna().all(), column
    assert (home / "reports" / "ablation.png").stat().st_size > 10_000
    records = sorted((home / "checkpoints" / "ablation" / "original" / "seed_00" / "phases").glob("*.json.gz"))
    assert len(records) == 10
    for path in records:  # the original design searches Ichimoku's parameters only
        assert all(name.startswith("trend.") for name in read_json(path)["params"])
    records = sorted((home / "checkpoints" / "ablation" / "gating_only" / "seed_00" / "phases").glob("*.json.gz"))
    assert len(records) == 10
    for path in records:  # gating_only searches the gates and the vol-target multiple only (trials stored as columns)
        assert set(read_json(path)["trials"]["params"]) == {
            "gate.trend",
            "gate.mean_reversion",
            "gate.breakout",
            "gate.carry",
            "risk_scale",
        }
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("ablation"))
        meta = event.asset_materialization.metadata
        assert "data:image/png;base64," in meta["ablation_chart"].value
        assert "p_sharpe_t" in [c.name for c in meta["table"].schema.columns]  # table metadata, typed columns
        assert [r.data["variant"] for r in meta["table"].records] == list(CLI_VARIANTS)
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "ablation_runs"]
        partitions = sorted(r.tags["dagster/partition"] for r in runs)
        assert partitions == sorted(f"seed_0{s}|{v}" for v in CLI_VARIANTS for s in (0, 1))
        assert all(r.is_success for r in runs)
    again = cli("ablation", "--profile", "quick", *data, home=home, cwd=cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{n_runs} run(s) already done and up to date, skipped" in again.stderr
    assert "the ablation table is up to date" in again.stderr and again.stdout == first.stdout  # read, not rerun
    pd.testing.assert_frame_equal(pd.read_parquet(home / "warehouse" / "ablation" / "data.parquet"), table)
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        new = sorted(r.job_name for r in instance.get_runs()[: len(instance.get_runs()) - n_runs_before])
    assert new == ["ablation_runs"] * n_runs + ["ablation_study"] * 2 + ["btc_study"] * 2, new


def _perp_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Spot, funding and perp CSVs; the perp starts 6 h after spot with a flat zero-volume placeholder bar."""
    spot, funding, perp = tmp_path / "o.csv", tmp_path / "f.csv", tmp_path / "p.csv"
    make_ohlcv(72).to_csv(spot, index=False)
    make_funding(n=8).to_csv(funding, index=False)
    bars = make_ohlcv(66, start="2024-01-01 06:00", seed=9)
    bars.loc[0, ["open", "high", "low", "close"]] = 10_000.0
    bars.loc[0, "volume"] = 0.0
    bars.to_csv(perp, index=False)
    return spot, funding, perp


@pytest.mark.parametrize("command", ["run", "ablation", "ui"])
def test_perp_option_reaches_the_assets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """``--perp`` is resolved as ``--ohlcv`` / ``--funding`` are (an absolute path) into the settings, and the
    definitions' ``market_source`` resource carries it: ``raw_perp_ohlcv`` flags the placeholder, ``market_bars``
    prices the perp from the file. A ``market_source.perp`` given explicitly takes precedence. The CLI writes
    nothing into its own environment."""
    from btc_assets.cli import build_parser, settings_of
    from btc_assets.defs import build_definitions
    from btc_assets.defs.resources import MarketSource

    spot, funding, perp = _perp_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = dict(os.environ)
    args = build_parser().parse_args(
        [
            "--home",
            str(tmp_path / "home"),
            command,
            "--ohlcv",
            spot.name,
            "--funding",
            funding.name,
            "--perp",
            perp.name,
        ]
    )
    settings = settings_of(args)
    assert dict(os.environ) == before
    assert (settings.source.perp, settings.source.ohlcv) == (str(perp), str(spot))
    defs = build_definitions(settings=settings)
    source = defs.resources["market_source"].settings()
    assert (source.source, source.perp) == ("files", str(perp)) and f"perp={perp}" in source.describe()
    if command != "run":
        return
    ingestion = dg.AssetSelection.groups("ingestion")
    with dg.instance_for_test() as instance:
        result = dg.materialize(defs.assets, resources=defs.resources, instance=instance, selection=ingestion)
        assert result.success
        raw = result.asset_materializations_for_node("raw_perp_ohlcv")[0].metadata
        assert raw["flagged_bars"].value == 1 and "perp-placeholder" in raw["repairs"].value
        meta = result.asset_materializations_for_node("market_bars")[0].metadata
        assert meta["perp_bars_known"].value == 65 and meta["first_perp_bar"].value == "2024-01-01 07:00:00+00:00"
        bars = pd.read_parquet(tmp_path / "home" / "warehouse" / "market_bars" / "data.parquet")
        assert bars["perp_close"].iloc[:7].isna().all() and bars["perp_close"].iloc[7:].notna().all()
        expected = pd.read_csv(perp)["close"].to_numpy()[1:]
        assert (bars["perp_close"].iloc[7:].to_numpy() == expected).all()

        other = tmp_path / "other_perp.csv"
        make_ohlcv(72, seed=11).to_csv(other, index=False)
        resources = {
            **defs.resources,
            "market_source": MarketSource(ohlcv=str(spot), funding=str(funding), perp=str(other)),
        }
        assert dg.materialize(defs.assets, resources=resources, instance=instance, selection=ingestion).success
        bars = pd.read_parquet(tmp_path / "home" / "warehouse" / "market_bars" / "data.parquet")
        assert (bars["perp_close"].to_numpy() == pd.read_csv(other)["close"].to_numpy()).all()


def test_bad_user_file_fails_run_with_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.5,3\nnot-a-time,1,2,0.5,1.5,3\n"
    )
    done = cli("run", "--ohlcv", str(bad), home=tmp_path / "home")
    assert done.returncode == 1
    assert f"{bad}: row 2: rule 'timestamp-parse'" in done.stderr


def test_bad_perp_file_fails_run_with_clear_error(tmp_path: Path) -> None:
    spot, funding, perp = _perp_files(tmp_path)
    bars = pd.read_csv(perp)
    bars.loc[11, "high"] = bars.loc[11, "low"] * 0.5
    bars.to_csv(perp, index=False)
    done = cli("run", "--ohlcv", str(spot), "--funding", str(funding), "--perp", str(perp), home=tmp_path / "home")
    assert done.returncode == 1
    assert f"{perp}: row 12: rule 'ohlc-inconsistent'" in done.stderr


@pytest.mark.parametrize("query", ["SELECT 1"])
def test_sql_on_empty_warehouse_says_so(tmp_path: Path, query: str) -> None:
    done = cli("sql", query, home=tmp_path)
    assert done.returncode == 1 and "empty" in done.stderr
