"""Load, validate and combine user files into one canonical OHLCV or funding frame.

Each file is read and validated on its own (so an error names that file and its row). Several files are then
combined in time order; a timestamp present in two files with identical values is kept once (rule
``duplicate-exact`` across files, a repair), with different values it is rejected (``duplicate-conflict``). The
jump rule is applied once more over the combined series, because a bad splice only shows at the seam.

A perpetual's bars (:func:`load_perp_ohlcv`) go through this same OHLCV loader and its rules, plus the ``perp-*``
rules that leave the listing placeholder and no-trade bars out (flagged in the reports with their rows).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from btc_assets.ingestion.formats import canonical_funding, canonical_ohlcv, detect_kind, read_table
from btc_assets.ingestion.validation import (
    DEFAULT_LIMITS,
    DataValidationError,
    ValidationLimits,
    ValidationReport,
    validate_funding,
    validate_ohlcv,
)

ONE_HOUR = pd.Timedelta(hours=1)


@dataclass
class Loaded:
    """A validated canonical frame plus what validation said about each file."""

    frame: pd.DataFrame
    reports: list[ValidationReport] = field(default_factory=list)

    @property
    def repairs(self) -> list[str]:
        return [r for rep in self.reports for r in rep.repairs]


def frame_hash(frame: pd.DataFrame) -> str:
    """Content hash of a canonical frame (values, column names and dtypes), stable across processes."""
    digest = hashlib.sha256()
    digest.update(repr([(c, str(frame[c].dtype)) for c in frame.columns]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _combine(parts: list[tuple[pd.DataFrame, np.ndarray, str]], kind: str) -> tuple[pd.DataFrame, list[str]]:
    """Concatenate per-file frames in time order, resolving cross-file duplicates."""
    if len(parts) == 1:
        return parts[0][0], []
    frames = [p[0].assign(_file=p[2], _row=p[1]) for p in parts]
    both = pd.concat(frames, ignore_index=True).sort_values("timestamp", kind="stable").reset_index(drop=True)
    value_cols = [c for c in both.columns if c not in ("_file", "_row")]
    dup_ts = both["timestamp"].duplicated(keep="first").to_numpy()
    notes: list[str] = []
    if dup_ts.any():
        exact = both.duplicated(subset=value_cols, keep="first").to_numpy()
        conflict = np.flatnonzero(dup_ts & ~exact)
        if conflict.size:
            i = conflict[0]
            ts = both["timestamp"].iloc[i]
            first = both.loc[both["timestamp"] == ts].iloc[0]
            raise DataValidationError(
                both["_file"].iloc[i],
                int(both["_row"].iloc[i]),
                "duplicate-conflict",
                f"{kind} at {ts} differs from the same timestamp in {first['_file']} row {int(first['_row'])}",
            )
        notes.append(f"rule 'duplicate-exact' repaired: dropped {int(dup_ts.sum())} row(s) repeated across files")
        both = both.loc[~dup_ts].reset_index(drop=True)
    return both, notes


def load_ohlcv(paths: Sequence[str | Path], limits: ValidationLimits = DEFAULT_LIMITS, *, perp: bool = False) -> Loaded:
    """Read, validate and combine OHLCV files (any supported layout) into one canonical frame.

    ``perp``: the files hold a perpetual's bars; the ``perp-placeholder`` rule then looks at the earliest file (by
    first timestamp) and ``perp-no-trade`` at every file (see :mod:`btc_assets.ingestion.validation`).
    """
    what = "perp OHLCV" if perp else "OHLCV"
    if not paths:
        raise DataValidationError("<no files>", None, "file-missing", f"no {what} file given")
    canonical = []
    for path in paths:
        table = read_table(path)
        canonical.append((table.name, *canonical_ohlcv(table)))
    first = min(range(len(canonical)), key=lambda i: canonical[i][1]["timestamp"].min()) if perp else None
    parts, reports = [], []
    for i, (name, frame, rows) in enumerate(canonical):
        frame, rows, report = validate_ohlcv(frame, rows, name, limits, perp=perp, series_start=i == first)
        parts.append((frame, rows, name))
        reports.append(report)
    if sum(len(p[0]) for p in parts) == 0:
        raise DataValidationError(
            parts[0][2],
            None,
            "perp-no-trade",
            f"no traded bar left in the {what}: every bar is a placeholder or no-trade bar",
        )
    combined, notes = _combine(parts, "bar")
    if "_file" in combined.columns:
        close = combined["close"].to_numpy()
        lr = np.abs(np.diff(np.log(close)))
        jump = np.flatnonzero(lr > limits.max_abs_log_return)
        if jump.size:
            i = jump[0] + 1
            raise DataValidationError(
                combined["_file"].iloc[i],
                int(combined["_row"].iloc[i]),
                "absurd-jump",
                f"close moves from {close[i - 1]} ({combined['_file'].iloc[i - 1]}) to {close[i]} across files "
                f"(|log return| {lr[i - 1]:.3f} > {limits.max_abs_log_return})",
            )
        combined = combined.drop(columns=["_file", "_row"])
    for note in notes:
        reports[-1].repair("duplicate-exact", note)
    return Loaded(combined.reset_index(drop=True), reports)


def load_perp_ohlcv(paths: Sequence[str | Path], limits: ValidationLimits = DEFAULT_LIMITS) -> Loaded:
    """Read, validate and combine a perpetual's OHLCV files: the OHLCV loader and rules, plus the perp rules
    (listing placeholder and no-trade bars flagged in the reports and left out of the frame)."""
    return load_ohlcv(paths, limits, perp=True)


def load_funding(paths: Sequence[str | Path], limits: ValidationLimits = DEFAULT_LIMITS) -> Loaded:
    """Read, validate and combine funding files into one canonical frame."""
    if not paths:
        raise DataValidationError("<no files>", None, "file-missing", "no funding file given")
    parts, reports = [], []
    for path in paths:
        table = read_table(path)
        frame, rows = canonical_funding(table)
        frame, rows, report = validate_funding(frame, rows, table.name, limits)
        parts.append((frame, rows, table.name))
        reports.append(report)
    combined, notes = _combine(parts, "funding")
    combined = combined.drop(columns=[c for c in ("_file", "_row") if c in combined.columns])
    for note in notes:
        reports[-1].repair("duplicate-exact", note)
    return Loaded(combined.reset_index(drop=True), reports)


def inspect_file(path: str | Path, limits: ValidationLimits = DEFAULT_LIMITS) -> tuple[str, Loaded]:
    """Detect whether a file holds OHLCV or funding and validate it; returns the kind and the result."""
    kind = detect_kind(read_table(path))
    loader = load_ohlcv if kind == "ohlcv" else load_funding
    return kind, loader([path], limits)


def find_gaps(timestamps: pd.Series, step: pd.Timedelta = ONE_HOUR) -> pd.DataFrame:
    """Missing hours in a sorted timestamp series: one row per gap (first and last missing hour, hours)."""
    ts = pd.Series(timestamps).reset_index(drop=True)
    diffs = ts.diff()
    where = np.flatnonzero((diffs > step).to_numpy())
    return pd.DataFrame(
        {
            "first_missing": (ts.iloc[where - 1] + step).to_numpy() if where.size else ts.iloc[:0].to_numpy(),
            "last_missing": (ts.iloc[where] - step).to_numpy(),
            "hours": (diffs.iloc[where] // step).to_numpy().astype("int64") - 1,
        }
    )
