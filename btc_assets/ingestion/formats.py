"""Readers for the supported OHLCV and funding file layouts, returning canonical frames.

Supported layouts (detected from the columns, CSV with or without header, Parquet, Feather, or a ``.zip`` holding
one CSV as the Binance archive ships them):

OHLCV
* Binance public-data klines: 12 columns ``open_time, open, high, low, close, volume, close_time, quote_volume,
  count, taker_buy_volume, taker_buy_quote_volume, ignore`` (spot files have no header, futures files do). Epoch
  timestamps in ms, or in µs for Binance's 2025+ spot files; the unit is detected per file.
* Plain ``timestamp, open, high, low, close, volume`` (timestamp as ISO text, epoch s/ms/µs/ns, or a datetime
  column; ``date``, ``datetime``, ``time`` and ``open_time`` are accepted as the timestamp's name). freqtrade's
  feather files (``date, open, high, low, close, volume``) are this layout.

Funding
* Binance public-data funding: ``calc_time, funding_interval_hours, last_funding_rate``.
* Plain ``timestamp, funding_rate`` (extra columns such as ``mark_price`` are ignored; ``fundingTime`` /
  ``fundingRate`` as Binance's REST API names them are accepted).

Naive datetimes are taken as UTC. Nothing here writes to the input file.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from btc_assets.ingestion.schema import FUNDING_COLUMNS, OHLCV_COLUMNS, TS_DTYPE
from btc_assets.ingestion.validation import DataValidationError

Kind = Literal["ohlcv", "funding"]

BINANCE_KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
BINANCE_FUNDING_COLUMNS = ("calc_time", "funding_interval_hours", "last_funding_rate")
TIMESTAMP_ALIASES = ("timestamp", "date", "datetime", "time", "open_time")
FUNDING_TS_ALIASES = ("timestamp", "calc_time", "fundingtime", "funding_time", "date", "time")
FUNDING_RATE_ALIASES = ("funding_rate", "last_funding_rate", "fundingrate")

# Epoch magnitude ranges per unit; they do not overlap for dates between 1973 and 2286.
_UNIT_BOUNDS = (("s", 1e8, 1e11), ("ms", 1e11, 1e14), ("us", 1e14, 1e17), ("ns", 1e17, 1e20))


@dataclass(frozen=True)
class RawTable:
    """A file's table as read, before canonicalisation; ``name`` is what errors call the file."""

    name: str
    frame: pd.DataFrame
    has_header: bool


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv_bytes(data: bytes, name: str) -> RawTable:
    if not data.strip():
        raise DataValidationError(name, None, "empty-file", "the file is empty")
    first = data.lstrip().split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    first_field = first.split(",")[0].strip().strip('"')
    has_header = not _looks_numeric(first_field) and not _is_iso_like(first_field)
    frame = pd.read_csv(io.BytesIO(data), header=0 if has_header else None, dtype=str, skipinitialspace=True)
    if not has_header:
        frame.columns = [f"c{i}" for i in range(frame.shape[1])]
    return RawTable(name, frame, has_header)


def _is_iso_like(text: str) -> bool:
    return len(text) >= 10 and text[:4].isdigit() and text[4] == "-"


def read_table(path: str | Path) -> RawTable:
    """Read a CSV / zipped CSV / Parquet / Feather file into a raw frame (no interpretation yet)."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise DataValidationError(name, None, "file-missing", "no such file")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if path.stat().st_size == 0:
        raise DataValidationError(name, None, "empty-file", "the file is empty (0 bytes)")
    if suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if m.lower().endswith(".csv")]
            if len(members) != 1:
                raise DataValidationError(name, None, "columns", f"expected one CSV inside the zip, found {members}")
            return _read_csv_bytes(zf.read(members[0]), f"{name}!{members[0]}")
    if suffix in (".parquet", ".pq"):
        return RawTable(name, pd.read_parquet(path), True)
    if suffix in (".feather", ".ftr"):
        return RawTable(name, pd.read_feather(path), True)
    if suffix in (".csv", ".txt", ".csv.gz"):
        data = path.read_bytes()
        if suffix == ".csv.gz":
            import gzip

            data = gzip.decompress(data)
        return _read_csv_bytes(data, name)
    raise DataValidationError(name, None, "columns", f"unsupported file type '{suffix}' (csv, zip, parquet, feather)")


def _lower_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={c: str(c).strip().lower() for c in frame.columns})


def parse_timestamps(col: pd.Series, name: str, rows: np.ndarray) -> pd.Series:
    """Parse a timestamp column (datetime, epoch numbers in s/ms/µs/ns, or ISO text) to ``datetime64[ms, UTC]``.

    Epoch units are detected from the magnitude of each value; a file whose values mix units is rejected
    (rule ``timestamp-units``).
    """
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(col.dtype):
        ts = pd.to_datetime(col, utc=True)
        bad = np.flatnonzero(ts.isna().to_numpy())
        if bad.size:
            raise DataValidationError(name, int(rows[bad[0]]), "timestamp-parse", "missing timestamp")
        return ts.astype(TS_DTYPE).reset_index(drop=True)
    text = col.astype("string").str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all():
        values = numeric.to_numpy(dtype="float64")
        units = np.full(values.shape, "", dtype=object)
        for unit, lo, hi in _UNIT_BOUNDS:
            units[(np.abs(values) >= lo) & (np.abs(values) < hi)] = unit
        unknown = np.flatnonzero(units == "")
        if unknown.size:
            raise DataValidationError(
                name, int(rows[unknown[0]]), "timestamp-parse", f"epoch value {text.iloc[unknown[0]]!r} fits no unit"
            )
        mixed = np.flatnonzero(units != units[0])
        if mixed.size:
            i = mixed[0]
            raise DataValidationError(
                name,
                int(rows[i]),
                "timestamp-units",
                f"epoch value {text.iloc[i]} is in {units[i]} but the file starts in {units[0]} "
                f"(row {int(rows[0])}); one file must use one unit",
            )
        ints = numeric.to_numpy(dtype="int64")
        ts = pd.to_datetime(ints, unit=units[0], utc=True)
        return pd.Series(ts, dtype=TS_DTYPE).astype(TS_DTYPE)
    ts = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = np.flatnonzero(ts.isna().to_numpy())
    if bad.size:
        raise DataValidationError(
            name, int(rows[bad[0]]), "timestamp-parse", f"cannot parse timestamp {col.iloc[bad[0]]!r}"
        )
    return pd.Series(ts).astype(TS_DTYPE).reset_index(drop=True)


def _numbers(frame: pd.DataFrame, columns: dict[str, str], name: str, rows: np.ndarray) -> dict[str, pd.Series]:
    """Convert source columns to float64; a non-empty, non-numeric cell is rule ``value-parse``."""
    out: dict[str, pd.Series] = {}
    for target, source in columns.items():
        raw = frame[source]
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna().to_numpy() & raw.notna().to_numpy()
        if raw.dtype == object or isinstance(raw.dtype, pd.StringDtype):
            bad &= raw.astype("string").str.strip().fillna("").ne("").to_numpy()
        where = np.flatnonzero(bad)
        if where.size:
            raise DataValidationError(
                name, int(rows[where[0]]), "value-parse", f"{source} = {raw.iloc[where[0]]!r} is not a number"
            )
        out[target] = values.astype("float64").reset_index(drop=True)
    return out


def detect_kind(table: RawTable) -> Kind:
    """Tell an OHLCV table from a funding table by its columns."""
    cols = {str(c).strip().lower() for c in _lower_columns(table.frame).columns}
    if not table.has_header:
        return "ohlcv" if table.frame.shape[1] >= 6 else "funding"
    if cols & set(FUNDING_RATE_ALIASES):
        return "funding"
    return "ohlcv"


def canonical_ohlcv(table: RawTable) -> tuple[pd.DataFrame, np.ndarray]:
    """Interpret a raw table as OHLCV; returns the canonical frame and each row's 1-based source row."""
    name = table.name
    frame = table.frame.reset_index(drop=True)
    rows = np.arange(1, len(frame) + 1)
    if frame.empty:
        raise DataValidationError(name, None, "empty-file", "no data rows")
    if not table.has_header:
        if frame.shape[1] == len(BINANCE_KLINE_COLUMNS):
            frame.columns = list(BINANCE_KLINE_COLUMNS)
        elif frame.shape[1] == len(OHLCV_COLUMNS):
            frame.columns = list(OHLCV_COLUMNS)
        else:
            raise DataValidationError(
                name,
                None,
                "columns",
                f"{frame.shape[1]} columns without a header; expected 12 (Binance klines) or 6 "
                "(timestamp, open, high, low, close, volume)",
            )
    frame = _lower_columns(frame)
    ts_col = next((c for c in TIMESTAMP_ALIASES if c in frame.columns), None)
    missing = [c for c in OHLCV_COLUMNS[1:] if c not in frame.columns]
    if ts_col is None or missing:
        raise DataValidationError(
            name,
            None,
            "columns",
            f"columns {list(frame.columns)} match no OHLCV layout: need a timestamp column "
            f"({'/'.join(TIMESTAMP_ALIASES)}) and {', '.join(OHLCV_COLUMNS[1:])}"
            + (f" (missing: {', '.join(missing)})" if missing else ""),
        )
    ts = parse_timestamps(frame[ts_col], name, rows)
    values = _numbers(frame, {c: c for c in OHLCV_COLUMNS[1:]}, name, rows)
    out = pd.DataFrame({"timestamp": ts, **values})
    return out[list(OHLCV_COLUMNS)], rows


def canonical_funding(table: RawTable) -> tuple[pd.DataFrame, np.ndarray]:
    """Interpret a raw table as funding; returns the canonical frame and each row's 1-based source row."""
    name = table.name
    frame = table.frame.reset_index(drop=True)
    rows = np.arange(1, len(frame) + 1)
    if frame.empty:
        raise DataValidationError(name, None, "empty-file", "no data rows")
    if not table.has_header:
        if frame.shape[1] == 3:
            frame.columns = list(BINANCE_FUNDING_COLUMNS)
        elif frame.shape[1] == 2:
            frame.columns = list(FUNDING_COLUMNS)
        else:
            raise DataValidationError(name, None, "columns", f"{frame.shape[1]} columns without a header")
    frame = _lower_columns(frame)
    ts_col = next((c for c in FUNDING_TS_ALIASES if c in frame.columns), None)
    rate_col = next((c for c in FUNDING_RATE_ALIASES if c in frame.columns), None)
    if ts_col is None or rate_col is None:
        raise DataValidationError(
            name,
            None,
            "columns",
            f"columns {list(frame.columns)} match no funding layout: expected calc_time, funding_interval_hours, "
            "last_funding_rate or timestamp, funding_rate",
        )
    ts = parse_timestamps(frame[ts_col], name, rows)
    values = _numbers(frame, {"funding_rate": rate_col}, name, rows)
    return pd.DataFrame({"timestamp": ts, **values}), rows
