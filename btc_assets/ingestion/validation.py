"""Validation of canonical OHLCV and funding frames.

Every rule has a stable name. A rule either *repairs* by a documented rule (the repair is logged and recorded in
the :class:`ValidationReport`) or *rejects* with a :class:`DataValidationError` naming the file, the row and the
rule. Raw files are never modified: repairs act on the in-memory frame only.

Row numbers are 1-based positions among the file's data rows (a header line is not counted), so "row 3" of a CSV
with a header is its fourth line.

Rules (R = reject, F = repair):

=====================  ==  =========================================================================================
rule                   R/F  meaning
=====================  ==  =========================================================================================
file-missing           R   the named file does not exist
empty-file             R   the file has no data rows
columns                R   the columns match no supported layout
value-parse            R   a price, volume or rate cell is not a number
timestamp-parse        R   a timestamp cannot be parsed
timestamp-units        R   epoch timestamps in one file mix units (ms and µs): a sign of a corrupt concatenation
timestamp-range        R   a timestamp lies before 2009-01-03 or more than a day in the future
timestamp-grid         R   a bar timestamp is not on the hour (funding: more than 5 minutes from the hour)
funding-round          F   funding settlement times a few ms/s off the hour are rounded to the hour
non-monotonic          R   timestamps decrease within one file
interval               R   the bars are not hourly (median spacing between bars is not one hour)
duplicate-exact        F   a row repeated with identical values is dropped (first kept)
duplicate-conflict     R   one timestamp appears with different values
nan                    R   a price or a funding rate is missing
volume-unknown         F   a missing volume (prices present) is kept as NaN and counted: some venues' files blank
                           volumes they know to be wrong (Bitstamp); no stage of this pipeline trades on volume
non-positive-price     R   open/high/low/close <= 0
negative-volume        R   volume < 0
ohlc-inconsistent      R   low > min(open, close), high < max(open, close) or low > high
absurd-jump            R   |log(close_t / close_{t-1})| above ``max_abs_log_return`` (default 0.5, i.e. -39 %/+65 %)
                           or a bar whose high/low ratio exceeds ``max_bar_range`` (default 3.0; the real ETH
                           data has a genuine 2.14 flash wick on 2017-08-22)
funding-range          R   |funding rate| > ``max_abs_funding`` (default 0.05 = 5 % per interval)
perp-placeholder       F   perp bars only: the leading run of flat bars (open = high = low = close, any volume) of
                           the earliest perp file, before the first traded bar, is the exchange's listing placeholder
                           (Binance BTCUSDT-perp: 10,000.00 on 2019-09-08 17:00-18:00): flagged and dropped
perp-no-trade          F   perp bars only: a flat bar with volume <= ``no_trade_volume`` (default 0.001, base asset)
                           is a no-trade bar (a price nobody traded at): flagged and dropped
=====================  ==  =========================================================================================

The two ``perp-*`` rules apply to perpetual OHLCV only (``validate_ohlcv(..., perp=True)``, ``load_perp_ohlcv``);
spot halts publish flat zero-volume klines too, and those stay (a spot bar's price is what the grid shows). A
flagged perp bar is *not* a repair of its values: it is left out of the perp series, so the grid has no perp price
for that hour and nothing trades on it. The flagged source rows are in ``ValidationReport.flagged`` (rule -> rows)
and, as text with the rows, in ``ValidationReport.repairs``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

log = logging.getLogger("btc_assets.ingestion")

EARLIEST = pd.Timestamp("2009-01-03", tz="UTC")


class DataValidationError(ValueError):
    """Bad input: names the file, the 1-based data row and the rule broken."""

    def __init__(self, file: str, row: int | None, rule: str, message: str) -> None:
        self.file, self.row, self.rule, self.detail = str(file), row, rule, message
        where = f"row {row}" if row is not None else "whole file"
        super().__init__(f"{self.file}: {where}: rule '{rule}': {message}")


@dataclass
class ValidationReport:
    """What validation did to one file: rows in, rows out, repairs applied."""

    file: str
    rows_in: int = 0
    rows_out: int = 0
    repairs: list[str] = field(default_factory=list)
    flagged: dict[str, list[int]] = field(default_factory=dict)  # rule -> 1-based source rows left out

    def repair(self, rule: str, message: str) -> None:
        text = f"{self.file}: rule '{rule}' repaired: {message}"
        self.repairs.append(text)
        log.warning(text)

    def flag(self, rule: str, rows: np.ndarray, message: str) -> None:
        """Record source ``rows`` flagged by ``rule`` (and left out of the series), with the rows in the text."""
        rows = [int(r) for r in rows]
        self.flagged.setdefault(rule, []).extend(rows)
        self.repair(rule, f"flagged and dropped {len(rows)} row(s) ({_row_ranges(rows)}): {message}")


@dataclass(frozen=True)
class ValidationLimits:
    """Thresholds of the plausibility rules (see the module docstring)."""

    max_abs_log_return: float = 0.5
    max_bar_range: float = 3.0
    max_abs_funding: float = 0.05
    funding_round_minutes: float = 5.0
    no_trade_volume: float = 0.001  # perp-no-trade: a flat bar with at most this volume (base asset)

    @property
    def funding_round_tolerance(self) -> pd.Timedelta:
        return pd.Timedelta(minutes=self.funding_round_minutes)


DEFAULT_LIMITS = ValidationLimits()


def _row(positions: np.ndarray | pd.Index, rows: np.ndarray) -> int:
    """1-based source row of the first offending position."""
    return int(rows[int(np.asarray(positions)[0])])


def _row_ranges(rows: list[int], limit: int = 30) -> str:
    """``"rows 1-2, 8-9"``: sorted rows as runs of consecutive numbers (at most ``limit`` runs named)."""
    runs: list[list[int]] = []
    for r in sorted(rows):
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
    more = f" and {len(runs) - limit} more run(s)" if len(runs) > limit else ""
    return f"row{'s' if len(rows) != 1 else ''} {text}{more}"


def flag_perp_no_trade(
    frame: pd.DataFrame,
    rows: np.ndarray,
    report: ValidationReport,
    limits: ValidationLimits = DEFAULT_LIMITS,
    *,
    series_start: bool = True,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Rules ``perp-placeholder`` and ``perp-no-trade``: drop (and report) perp bars nobody traded on.

    ``frame`` is one file's sorted canonical OHLCV. A flat bar has open = high = low = close. With
    ``series_start`` (the earliest file of the series) the leading run of flat bars is the listing placeholder,
    whatever its volume; anywhere else a flat bar with volume <= ``limits.no_trade_volume`` is a no-trade bar. A
    missing volume (rule ``volume-unknown``) does not make a flat bar a no-trade bar.
    """
    if frame.empty:
        return frame, rows
    o, h, lo, c, v = (frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    flat = (o == h) & (h == lo) & (lo == c)
    placeholder = np.zeros(len(frame), dtype=bool)
    if series_start:
        traded = np.flatnonzero(~flat)
        placeholder[: traded[0] if traded.size else len(frame)] = True
    no_trade = flat & (v <= limits.no_trade_volume) & ~placeholder  # NaN volume compares False
    ts = frame["timestamp"]
    for rule, mask, what in (
        ("perp-placeholder", placeholder, "the listing placeholder: flat bars before the first traded bar"),
        ("perp-no-trade", no_trade, f"flat bars (open = high = low = close) with volume <= {limits.no_trade_volume}"),
    ):
        where = np.flatnonzero(mask)
        if where.size:
            report.flag(
                rule, rows[where], f"{what}, {ts.iloc[where[0]]} .. {ts.iloc[where[-1]]}; no perp price on those hours"
            )
    keep = ~(placeholder | no_trade)
    if keep.all():
        return frame, rows
    return frame.loc[keep].reset_index(drop=True), rows[keep]


def check_timestamps(ts: pd.Series, rows: np.ndarray, file: str, *, now: pd.Timestamp | None = None) -> None:
    """Reject timestamps outside 2009..now+1d and decreasing timestamps."""
    now = now or pd.Timestamp.now(tz="UTC")
    bad = np.flatnonzero(((ts < EARLIEST) | (ts > now + pd.Timedelta(days=1))).to_numpy())
    if bad.size:
        raise DataValidationError(
            file, _row(bad, rows), "timestamp-range", f"timestamp {ts.iloc[bad[0]]} is implausible (unit error?)"
        )
    diffs = ts.diff().to_numpy()[1:]
    back = np.flatnonzero(diffs < pd.Timedelta(0).to_timedelta64())
    if back.size:
        i = back[0] + 1
        raise DataValidationError(
            file,
            _row([i], rows),
            "non-monotonic",
            f"timestamp {ts.iloc[i]} comes after {ts.iloc[i - 1]} (row {_row([i - 1], rows)})",
        )


def drop_duplicates(frame: pd.DataFrame, rows: np.ndarray, report: ValidationReport) -> tuple[pd.DataFrame, np.ndarray]:
    """Drop exact duplicate rows (repair); reject one timestamp carrying different values."""
    dup_ts = frame["timestamp"].duplicated(keep=False).to_numpy()
    if not dup_ts.any():
        return frame, rows
    exact = frame.duplicated(keep="first").to_numpy()
    conflicting = frame["timestamp"].duplicated(keep="first").to_numpy() & ~exact
    if conflicting.any():
        i = int(np.flatnonzero(conflicting)[0])
        ts = frame["timestamp"].iloc[i]
        first = int(np.flatnonzero((frame["timestamp"] == ts).to_numpy())[0])
        raise DataValidationError(
            report.file,
            int(rows[i]),
            "duplicate-conflict",
            f"timestamp {ts} appears again with different values (first at row {int(rows[first])})",
        )
    report.repair(
        "duplicate-exact",
        f"dropped {int(exact.sum())} exact duplicate row(s), first at row {int(rows[np.flatnonzero(exact)[0]])}",
    )
    keep = ~exact
    return frame.loc[keep].reset_index(drop=True), rows[keep]


def validate_ohlcv(
    frame: pd.DataFrame,
    rows: np.ndarray,
    file: str,
    limits: ValidationLimits = DEFAULT_LIMITS,
    report: ValidationReport | None = None,
    *,
    perp: bool = False,
    series_start: bool = True,
) -> tuple[pd.DataFrame, np.ndarray, ValidationReport]:
    """Apply every OHLCV rule to one file's canonical frame; return the repaired frame, its rows and the report.

    ``rows`` holds the 1-based source row of each frame row (same length as ``frame``). ``perp``: the bars are a
    perpetual's, so the ``perp-*`` rules drop its placeholder / no-trade bars (:func:`flag_perp_no_trade`; the
    leading placeholder run only with ``series_start``) before the range and jump rules look at the prices.
    """
    report = report or ValidationReport(file)
    report.rows_in = len(frame)
    if frame.empty:
        raise DataValidationError(file, None, "empty-file", "no data rows")
    ts = frame["timestamp"]
    off_grid = np.flatnonzero((ts != ts.dt.floor("h")).to_numpy())
    if off_grid.size:
        raise DataValidationError(
            file, _row(off_grid, rows), "timestamp-grid", f"bar time {ts.iloc[off_grid[0]]} is not on the hour"
        )
    prices = frame[["open", "high", "low", "close"]]
    nan_rows = np.flatnonzero(prices.isna().any(axis=1).to_numpy())
    if nan_rows.size:
        cols = [c for c in prices.columns if pd.isna(prices.iloc[nan_rows[0]][c])]
        raise DataValidationError(file, _row(nan_rows, rows), "nan", f"missing value in {', '.join(cols)}")
    no_volume = np.flatnonzero(frame["volume"].isna().to_numpy())
    if no_volume.size:
        report.repair(
            "volume-unknown",
            f"volume missing on {no_volume.size} row(s) (first: row {_row(no_volume, rows)}); kept as NaN, prices kept",
        )
    check_timestamps(ts, rows, file)
    frame, rows = drop_duplicates(frame, rows, report)
    if len(frame) >= 3:
        spacing = frame["timestamp"].diff().median()
        if spacing != pd.Timedelta(hours=1):
            raise DataValidationError(
                file, None, "interval", f"median spacing between bars is {spacing}, expected 1 hour (1h klines)"
            )
    o, h, lo, c, v = (frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    nonpos = np.flatnonzero((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0))
    if nonpos.size:
        raise DataValidationError(file, _row(nonpos, rows), "non-positive-price", "a price is zero or negative")
    negv = np.flatnonzero(v < 0)  # NaN compares False
    if negv.size:
        raise DataValidationError(file, _row(negv, rows), "negative-volume", f"volume {v[negv[0]]} < 0")
    bad = np.flatnonzero((lo > np.minimum(o, c)) | (h < np.maximum(o, c)) | (lo > h))
    if bad.size:
        i = bad[0]
        raise DataValidationError(
            file,
            _row(bad, rows),
            "ohlc-inconsistent",
            f"open={o[i]} high={h[i]} low={lo[i]} close={c[i]} violates low <= min(open, close) <= "
            "max(open, close) <= high",
        )
    if perp:
        frame, rows = flag_perp_no_trade(frame, rows, report, limits, series_start=series_start)
        h, lo, c = (frame[k].to_numpy() for k in ("high", "low", "close"))
    wide = np.flatnonzero(h / lo > limits.max_bar_range)
    if wide.size:
        raise DataValidationError(
            file,
            _row(wide, rows),
            "absurd-jump",
            f"bar range high/low = {h[wide[0]] / lo[wide[0]]:.3f} exceeds {limits.max_bar_range}",
        )
    lr = np.abs(np.diff(np.log(c)))
    jump = np.flatnonzero(lr > limits.max_abs_log_return)
    if jump.size:
        i = jump[0] + 1
        raise DataValidationError(
            file,
            _row([i], rows),
            "absurd-jump",
            f"close moves from {c[i - 1]} to {c[i]} (|log return| {lr[i - 1]:.3f} > {limits.max_abs_log_return})",
        )
    report.rows_out = len(frame)
    return frame.reset_index(drop=True), rows, report


def validate_funding(
    frame: pd.DataFrame,
    rows: np.ndarray,
    file: str,
    limits: ValidationLimits = DEFAULT_LIMITS,
    report: ValidationReport | None = None,
) -> tuple[pd.DataFrame, np.ndarray, ValidationReport]:
    """Apply every funding rule to one file's canonical frame; return the repaired frame, its rows and the report."""
    report = report or ValidationReport(file)
    report.rows_in = len(frame)
    if frame.empty:
        raise DataValidationError(file, None, "empty-file", "no data rows")
    nan_rows = np.flatnonzero(frame["funding_rate"].isna().to_numpy())
    if nan_rows.size:
        raise DataValidationError(file, _row(nan_rows, rows), "nan", "missing funding rate")
    ts = frame["timestamp"]
    check_timestamps(ts, rows, file)
    rounded = ts.dt.round("h")
    off = (ts - rounded).abs()
    far = np.flatnonzero((off > limits.funding_round_tolerance).to_numpy())
    if far.size:
        raise DataValidationError(
            file,
            _row(far, rows),
            "timestamp-grid",
            f"settlement time {ts.iloc[far[0]]} is more than {limits.funding_round_tolerance} from the hour",
        )
    moved = int((off > pd.Timedelta(0)).sum())
    if moved:
        report.repair("funding-round", f"rounded {moved} settlement time(s) to the hour")
        frame = frame.assign(timestamp=rounded)
    frame, rows = drop_duplicates(frame, rows, report)
    rate = frame["funding_rate"].to_numpy()
    out = np.flatnonzero(np.abs(rate) > limits.max_abs_funding)
    if out.size:
        raise DataValidationError(
            file,
            _row(out, rows),
            "funding-range",
            f"funding rate {rate[out[0]]} is outside ±{limits.max_abs_funding}",
        )
    report.rows_out = len(frame)
    return frame.reset_index(drop=True), rows, report
