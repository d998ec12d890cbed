"""Warehouse storage: atomic Parquet files per asset and partition, DuckDB views over them.

Layout under ``warehouse/``: ``<asset>/data.parquet`` for an unpartitioned asset and
``<asset>/partition=<key>/data.parquet`` for a partitioned one (hive style, so DuckDB adds a ``partition``
column). Writers only ever write Parquet (temp file + rename, so a reader or a crash never sees half a file).
DuckDB never holds a write lock across runs: queries run in an in-memory DuckDB whose views read the Parquet
files, and ``catalog.duckdb`` (the same views, for external tools) is rebuilt in a temp file and renamed into
place; readers open it read-only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from btc_assets.atomic import atomic_path

CATALOG = "catalog.duckdb"
_SAFE = re.compile(r"^[A-Za-z0-9_.=-]+$")


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` atomically (:func:`btc_assets.atomic.atomic_path`: temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = frame.copy(deep=False)
    frame.attrs = {}  # in-memory annotations (e.g. fit diagnostics) are not part of the stored data
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pq.write_table(table, handle, compression="zstd")
    return path


class Warehouse:
    """The Parquet warehouse under one folder and its DuckDB query layer."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, asset: str, partition: str | None = None) -> Path:
        """Where one asset (partition) lives."""
        for part in (asset, partition):
            if part is not None and not _SAFE.match(part):
                raise ValueError(f"unsafe name for a warehouse path: {part!r}")
        folder = self.root / asset
        if partition is not None:
            folder = folder / f"partition={partition}"
        return folder / "data.parquet"

    def write(self, frame: pd.DataFrame, asset: str, partition: str | None = None) -> Path:
        return atomic_write_parquet(frame, self.path_for(asset, partition))

    def read(self, asset: str, partition: str | None = None) -> pd.DataFrame:
        path = self.path_for(asset, partition)
        if not path.exists():
            raise FileNotFoundError(f"{asset}{'/' + partition if partition else ''} is not materialised: {path}")
        return pd.read_parquet(path)

    def partitions(self, asset: str) -> list[str]:
        """The partition keys of ``asset`` that have data, sorted."""
        folder = self.root / asset
        if not folder.exists():
            return []
        return sorted(p.parent.name.removeprefix("partition=") for p in folder.glob("partition=*/data.parquet"))

    def tables(self) -> dict[str, str]:
        """Asset name → the ``read_parquet`` expression over its files, for every asset with data."""
        out: dict[str, str] = {}
        if not self.root.exists():
            return out
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and _SAFE.match(p.name)):
            if (folder / "data.parquet").exists():
                out[folder.name] = f"read_parquet('{(folder / 'data.parquet').as_posix()}')"
            elif any(folder.glob("partition=*/data.parquet")):
                glob = (folder / "partition=*" / "data.parquet").as_posix()
                out[folder.name] = f"read_parquet('{glob}', hive_partitioning = true)"
        return out

    def _define_views(self, con: duckdb.DuckDBPyConnection) -> None:
        for name, source in self.tables().items():
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM {source}')

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB with one view per asset: nothing on disk is locked."""
        con = duckdb.connect(":memory:")
        try:
            self._define_views(con)
            yield con
        finally:
            con.close()

    def query(self, sql: str) -> pd.DataFrame:
        """Run one SQL statement against the warehouse views."""
        with self.connect() as con:
            cursor = con.execute(sql)
            wide = [d[0] for d in cursor.description if str(d[1]) in ("HUGEINT", "UHUGEINT")]
            frame = cursor.df()
        # DuckDB's 128-bit integers (sum, count_if) arrive as float64; give users integers back
        for column in wide:
            if frame[column].dropna().mod(1).eq(0).all():
                frame[column] = frame[column].astype("Int64")
        return frame

    def refresh_catalog(self) -> Path:
        """Rebuild ``catalog.duckdb`` (views only) in a temp file and rename it into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / CATALOG
        with atomic_path(target) as tmp:
            try:
                con = duckdb.connect(str(tmp))
                try:
                    self._define_views(con)
                    con.execute("CHECKPOINT")
                finally:
                    con.close()
            finally:
                Path(f"{tmp}.wal").unlink(missing_ok=True)
        return target

    def open_catalog(self) -> duckdb.DuckDBPyConnection:
        """Open the catalog read-only (what external readers should do too)."""
        return duckdb.connect(str(self.root / CATALOG), read_only=True)
