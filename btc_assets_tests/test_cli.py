"""The ``btc-assets`` command line, run as a user runs it (a subprocess with its own environment)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from btc_assets_tests.conftest import make_ohlcv

EXE = shutil.which("btc-assets") or str(Path(sys.executable).parent / "btc-assets")


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


def test_run_keeps_history_in_persistent_instance(tmp_path: Path, shared_data: Path) -> None:
    home = tmp_path / "home"
    first = cli("run", "--profile", "quick", home=home, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "materialised" in first.stderr and "demo" in first.stderr
    second = cli("run", "--ohlcv", str(shared_data / "btcusdt_1h.parquet"),
                 "--funding", str(shared_data / "btcusdt_funding_8h.parquet"), home=home, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (home / "dagster" / "dagster.yaml").exists()
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.job_name == "btc_study" for r in runs)
        assert instance.get_latest_materialization_event(dg.AssetKey("market_bars")) is not None
    out = cli("sql", "SELECT count(*) AS n, count_if(missing) AS gaps FROM market_bars", "--format", "csv",
              home=home)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["n,gaps", "76671,128"]


def test_bad_user_file_fails_run_with_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n"
                   "not-a-time,1,2,0.5,1.5,3\n")
    done = cli("run", "--ohlcv", str(bad), home=tmp_path / "home")
    assert done.returncode == 1
    assert f"{bad}: row 2: rule 'timestamp-parse'" in done.stderr


@pytest.mark.parametrize("query", ["SELECT 1"])
def test_sql_on_empty_warehouse_says_so(tmp_path: Path, query: str) -> None:
    done = cli("sql", query, home=tmp_path)
    assert done.returncode == 1 and "empty" in done.stderr
