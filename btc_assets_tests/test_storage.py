"""Warehouse storage: atomic Parquet writes, DuckDB views, no lock shared between runs."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import duckdb
import pandas as pd
import pandas.testing as pdt
import pytest

from btc_assets.storage import Warehouse, atomic_write_parquet
from btc_assets_tests.conftest import make_ohlcv


def test_roundtrip_and_layout(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    frame = make_ohlcv(10)
    wh.write(frame, "raw_ohlcv")
    wh.write(frame.assign(seed=0), "wfa_results", "seed_00")
    wh.write(frame.assign(seed=1), "wfa_results", "seed_01")
    assert (tmp_path / "raw_ohlcv" / "data.parquet").exists()
    assert (tmp_path / "wfa_results" / "partition=seed_01" / "data.parquet").exists()
    pdt.assert_frame_equal(wh.read("raw_ohlcv"), frame)
    counts = wh.query("SELECT partition, count(*) n FROM wfa_results GROUP BY 1 ORDER BY 1")
    assert counts.to_dict("list") == {"partition": ["seed_00", "seed_01"], "n": [10, 10]}
    assert not list(tmp_path.rglob("*.tmp")), "no temp file may be left behind"


def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a" / "data.parquet"
    old = make_ohlcv(5)
    atomic_write_parquet(old, path)

    import pyarrow.parquet as pq

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError):
        atomic_write_parquet(make_ohlcv(50), path)
    pdt.assert_frame_equal(pd.read_parquet(path), old)
    assert not list(path.parent.glob("*.tmp"))


def test_unsafe_names_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Warehouse(tmp_path).path_for("../etc", None)


def test_catalog_is_read_only_for_readers(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path)
    wh.write(make_ohlcv(7), "raw_ohlcv")
    wh.refresh_catalog()
    with wh.open_catalog() as con:
        assert con.execute("SELECT count(*) FROM raw_ohlcv").fetchone() == (7,)
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE x (a INT)")
        # a writer replaces the catalog while a reader holds it open: no lock, no error
        wh.write(make_ohlcv(9), "raw_ohlcv")
        wh.refresh_catalog()
    with wh.open_catalog() as con:
        assert con.execute("SELECT count(*) FROM raw_ohlcv").fetchone() == (9,)


def _writer(root: str, seed: int) -> None:
    wh = Warehouse(root)
    for i in range(15):
        wh.write(make_ohlcv(20 + i, seed=seed).assign(seed=seed), "wfa_results", f"seed_{seed:02d}")
        wh.refresh_catalog()


def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    """Several processes write partitions and refresh the catalog while this one queries: nobody blocks."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), s)) for s in range(3)]
    for p in procs:
        p.start()
    wh = Warehouse(tmp_path)
    seen = 0
    while any(p.is_alive() for p in procs):
        if wh.tables():
            seen = max(seen, len(wh.query("SELECT DISTINCT partition FROM wfa_results")))
    for p in procs:
        p.join()
        assert p.exitcode == 0
    final = wh.query("SELECT partition, count(*) n FROM wfa_results GROUP BY 1 ORDER BY 1")
    assert final["n"].tolist() == [34, 34, 34]
    with wh.open_catalog() as con:
        assert con.execute("SELECT count(DISTINCT partition) FROM wfa_results").fetchone() == (3,)
