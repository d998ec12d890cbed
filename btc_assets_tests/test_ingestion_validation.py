"""Every validation rule: bad input is rejected naming file, row and rule, or repaired by a logged rule.

Rows are 1-based data rows: in a CSV with a header, row N is line N + 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from btc_assets.ingestion import DataValidationError, load_funding, load_ohlcv, load_perp_ohlcv
from btc_assets_tests.conftest import binance_kline_rows, make_ohlcv, sha256


def write_csv(tmp_path: Path, frame: pd.DataFrame, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def expect_error(paths: list[Path], rule: str, row: int | None, *, funding: bool = False) -> DataValidationError:
    loader = load_funding if funding else load_ohlcv
    with pytest.raises(DataValidationError) as info:
        loader(paths)
    err = info.value
    assert err.rule == rule, str(err)
    assert err.row == row, str(err)
    assert str(paths[0]) in err.file or any(str(p) in err.file for p in paths)
    text = str(err)
    assert f"rule '{rule}'" in text and (row is None or f"row {row}" in text) and err.file in text
    return err


def iso(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    expect_error([path], "empty-file", None)


def test_header_only_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("timestamp,open,high,low,close,volume\n")
    expect_error([path], "empty-file", None)


def test_missing_file(tmp_path: Path) -> None:
    expect_error([tmp_path / "nope.csv"], "file-missing", None)


def test_wrong_columns(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    path = write_csv(tmp_path, ohlcv.rename(columns={"close": "last"}))
    err = expect_error([path], "columns", None)
    assert "close" in str(err)


def test_wrong_column_count_without_header(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    path = tmp_path / "nine.csv"
    binance_kline_rows(ohlcv).iloc[:, :9].to_csv(path, header=False, index=False)
    expect_error([path], "columns", None)


def test_unparseable_timestamp(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = iso(ohlcv)
    frame.loc[6, "timestamp"] = "2024-13-45 99:00"
    expect_error([write_csv(tmp_path, frame)], "timestamp-parse", 7)


def test_non_numeric_price(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = iso(ohlcv).astype({"high": object})
    frame.loc[3, "high"] = "n/a?"
    expect_error([write_csv(tmp_path, frame)], "value-parse", 4)


def test_mixed_ms_and_us_in_one_file(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    rows = binance_kline_rows(ohlcv)
    rows.loc[10:, "open_time"] *= 1000
    path = tmp_path / "mixed.csv"
    rows.to_csv(path, header=False, index=False)
    err = expect_error([path], "timestamp-units", 11)
    assert "us" in str(err) and "ms" in str(err)


def test_timestamp_out_of_range(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = iso(ohlcv)
    frame.loc[0, "timestamp"] = "2001-01-01T00:00:00Z"
    expect_error([write_csv(tmp_path, frame)], "timestamp-range", 1)


def test_bar_not_on_the_hour(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = iso(ohlcv)
    frame.loc[4, "timestamp"] = "2024-01-01T04:30:00Z"
    expect_error([write_csv(tmp_path, frame)], "timestamp-grid", 5)


def test_non_monotonic(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = ohlcv.copy()
    frame.iloc[[20, 21]] = frame.iloc[[21, 20]].to_numpy()
    err = expect_error([write_csv(tmp_path, iso(frame))], "non-monotonic", 22)
    assert "row 21" in str(err)


def test_exact_duplicate_dropped_and_logged(
    tmp_path: Path, ohlcv: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    frame = pd.concat([ohlcv.iloc[:11], ohlcv.iloc[10:]], ignore_index=True)
    path = write_csv(tmp_path, iso(frame))
    before = sha256(path)
    loaded = load_ohlcv([path])
    assert len(loaded.frame) == len(ohlcv)
    assert loaded.reports[0].rows_in == len(ohlcv) + 1 and loaded.reports[0].rows_out == len(ohlcv)
    assert any("duplicate-exact" in r and "row 12" in r for r in loaded.repairs)
    assert "duplicate-exact" in caplog.text
    assert sha256(path) == before, "the raw file must never be modified"


def test_duplicate_with_different_values(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    dup = ohlcv.iloc[[10]].assign(close=ohlcv["close"].iloc[10] * 1.01, high=ohlcv["high"].iloc[10] * 1.02)
    frame = pd.concat([ohlcv.iloc[:11], dup, ohlcv.iloc[11:]], ignore_index=True)
    err = expect_error([write_csv(tmp_path, iso(frame))], "duplicate-conflict", 12)
    assert "row 11" in str(err)


def test_not_hourly(tmp_path: Path) -> None:
    frame = make_ohlcv(40)
    frame["timestamp"] = pd.date_range("2024-01-01", periods=40, freq="4h", tz="UTC", unit="ms")
    expect_error([write_csv(tmp_path, iso(frame))], "interval", None)


def test_nan_price(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = iso(ohlcv)
    frame.loc[8, "low"] = np.nan
    err = expect_error([write_csv(tmp_path, frame)], "nan", 9)
    assert "low" in str(err)


def test_nan_volume_kept_and_counted(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = iso(ohlcv)
    frame.loc[[3, 5], "volume"] = np.nan
    loaded = load_ohlcv([write_csv(tmp_path, frame)])
    assert loaded.frame["volume"].isna().sum() == 2
    assert any("volume-unknown" in r and "2 row(s)" in r and "row 4" in r for r in loaded.repairs)


@pytest.mark.parametrize("value", [0.0, -5.0])
def test_non_positive_price(tmp_path: Path, ohlcv: pd.DataFrame, value: float) -> None:
    frame = iso(ohlcv)
    frame.loc[15, ["open", "low"]] = value
    expect_error([write_csv(tmp_path, frame)], "non-positive-price", 16)


def test_negative_volume(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = iso(ohlcv)
    frame.loc[2, "volume"] = -1.0
    expect_error([write_csv(tmp_path, frame)], "negative-volume", 3)


@pytest.mark.parametrize("column,factor", [("low", 1.01), ("high", 0.99)])
def test_ohlc_inconsistent(tmp_path: Path, ohlcv: pd.DataFrame, column: str, factor: float) -> None:
    frame = iso(ohlcv)
    ref = (
        max(frame.loc[30, "open"], frame.loc[30, "close"])
        if column == "low"
        else min(frame.loc[30, "open"], frame.loc[30, "close"])
    )
    frame.loc[30, column] = ref * factor
    err = expect_error([write_csv(tmp_path, frame)], "ohlc-inconsistent", 31)
    assert "low <= min(open, close)" in str(err)


def test_absurd_close_jump(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = ohlcv.copy()
    frame.loc[25, ["open", "high", "low", "close"]] = frame.loc[25, ["open", "high", "low", "close"]] * 10
    frame.loc[25, "open"] = frame.loc[25, "low"]
    expect_error([write_csv(tmp_path, iso(frame))], "absurd-jump", 26)


def test_absurd_bar_range(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = iso(ohlcv)
    frame.loc[12, "high"] = frame.loc[12, "low"] * 3.5
    err = expect_error([write_csv(tmp_path, frame)], "absurd-jump", 13)
    assert "high/low" in str(err)


def test_absurd_jump_across_files(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    later = make_ohlcv(24, start="2024-01-03")
    later[["open", "high", "low", "close"]] *= 3.0
    a = write_csv(tmp_path, iso(ohlcv), "a.csv")
    b = write_csv(tmp_path, iso(later), "b.csv")
    err = expect_error([a, b], "absurd-jump", 1)
    assert err.file == str(b)


def test_funding_out_of_range(tmp_path: Path, funding: pd.DataFrame) -> None:
    frame = funding.copy()
    frame.loc[3, "funding_rate"] = 0.06
    expect_error([write_csv(tmp_path, iso(frame), "f.csv")], "funding-range", 4, funding=True)


def test_funding_far_from_the_hour(tmp_path: Path, funding: pd.DataFrame) -> None:
    frame = iso(funding)
    frame.loc[2, "timestamp"] = "2024-01-02T00:20:00Z"
    expect_error([write_csv(tmp_path, frame, "f.csv")], "timestamp-grid", 3, funding=True)


def test_funding_nan(tmp_path: Path, funding: pd.DataFrame) -> None:
    frame = iso(funding)
    frame.loc[1, "funding_rate"] = np.nan
    expect_error([write_csv(tmp_path, frame, "f.csv")], "nan", 2, funding=True)


def test_funding_conflicting_duplicate(tmp_path: Path, funding: pd.DataFrame) -> None:
    frame = pd.concat([funding, funding.iloc[[2]].assign(funding_rate=0.001)], ignore_index=True)
    frame = frame.sort_values("timestamp", kind="stable")
    expect_error([write_csv(tmp_path, iso(frame), "f.csv")], "duplicate-conflict", 4, funding=True)


def test_conflict_across_files_names_both(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    a = write_csv(tmp_path, iso(ohlcv.iloc[:30]), "a.csv")
    b = write_csv(tmp_path, iso(ohlcv.iloc[25:].assign(volume=1.0)), "b.csv")
    with pytest.raises(DataValidationError) as info:
        load_ohlcv([a, b])
    assert info.value.rule == "duplicate-conflict"
    assert str(a) in str(info.value) and str(b) in str(info.value)


# ------------------------------------------------------------------------------ perp bars: placeholder / no-trade


def _flat(frame: pd.DataFrame, index: list[int], price: float, volume: float) -> None:
    frame.loc[index, ["open", "high", "low", "close"]] = price
    frame.loc[index, "volume"] = volume


def perp_frame() -> pd.DataFrame:
    """48 perp bars: a flat listing placeholder (rows 1-2, the second with zero volume), two flat zero-volume bars
    (rows 11-12), a flat bar that did trade (row 21) and a flat bar with an unknown volume (row 31)."""
    frame = make_ohlcv(48, seed=3)
    _flat(frame, [0], 40_000.0, 0.002)
    _flat(frame, [1], 40_000.0, 0.0)
    _flat(frame, [10, 11], frame.loc[9, "close"], 0.0)
    _flat(frame, [20], frame.loc[19, "close"], 5.0)
    _flat(frame, [30], frame.loc[29, "close"], np.nan)
    return frame


def test_perp_placeholder_and_no_trade_bars_flagged_and_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frame = perp_frame()
    path = write_csv(tmp_path, iso(frame), "perp.csv")
    before = sha256(path)
    loaded = load_perp_ohlcv([path])
    report = loaded.reports[0]
    assert report.flagged == {"perp-placeholder": [1, 2], "perp-no-trade": [11, 12]}
    assert (report.rows_in, report.rows_out) == (48, 44)
    dropped = frame["timestamp"].iloc[[0, 1, 10, 11]]
    assert not loaded.frame["timestamp"].isin(dropped).any()
    kept = frame.drop(index=[0, 1, 10, 11]).reset_index(drop=True)
    pd.testing.assert_frame_equal(loaded.frame, kept, check_exact=False, rtol=1e-12)  # rows 21 and 31 stay
    assert any(f"{path}: rule 'perp-placeholder'" in r and "rows 1-2" in r for r in loaded.repairs)
    assert any(f"{path}: rule 'perp-no-trade'" in r and "rows 11-12" in r for r in loaded.repairs)
    assert "perp-no-trade" in caplog.text
    assert sha256(path) == before, "the raw file must never be modified"
    # the perp rules are the perp's: spot keeps its flat bars (exchange halts publish them as real prices)
    spot = load_ohlcv([path])
    assert len(spot.frame) == 48 and spot.reports[0].flagged == {}


def test_perp_placeholder_price_far_from_the_market_is_not_a_jump(tmp_path: Path) -> None:
    frame = perp_frame()
    _flat(frame, [0, 1], 10_000.0, 0.0)  # the real BTCUSDT perp's 10,000.00 against a market at 10,400
    path = write_csv(tmp_path, iso(frame), "perp.csv")
    assert load_perp_ohlcv([path]).reports[0].flagged["perp-placeholder"] == [1, 2]
    expect_error([path], "absurd-jump", 3)  # as spot, the same file breaks the jump rule


def test_perp_placeholder_only_before_the_series_starts(tmp_path: Path) -> None:
    """The leading run is looked for in the earliest file only (whatever the order given); a later file that opens
    on a traded flat bar keeps it, and its own no-trade bars are flagged with its own rows."""
    frame = perp_frame()
    later = make_ohlcv(24, start="2024-01-03", seed=4)
    later[["open", "high", "low", "close"]] *= frame["close"].iloc[-1] / later["open"].iloc[0]
    _flat(later, [0], later.loc[0, "open"], 3.0)
    _flat(later, [5], later.loc[4, "close"], 0.0)
    a = write_csv(tmp_path, iso(frame), "a.csv")
    b = write_csv(tmp_path, iso(later), "b.csv")
    loaded = load_perp_ohlcv([b, a])
    flagged = {rep.file: rep.flagged for rep in loaded.reports}
    assert flagged == {str(b): {"perp-no-trade": [6]}, str(a): {"perp-placeholder": [1, 2], "perp-no-trade": [11, 12]}}
    assert len(loaded.frame) == 48 - 4 + 24 - 1
    assert loaded.frame["timestamp"].is_monotonic_increasing


def test_bad_perp_file_names_file_row_and_rule(tmp_path: Path) -> None:
    frame = iso(perp_frame())
    frame.loc[16, "low"] = max(frame.loc[16, "open"], frame.loc[16, "close"]) * 1.01
    path = write_csv(tmp_path, frame, "perp.csv")
    with pytest.raises(DataValidationError) as info:
        load_perp_ohlcv([path])
    err = info.value
    assert (err.file, err.row, err.rule) == (str(path), 17, "ohlc-inconsistent")
    assert f"{path}: row 17: rule 'ohlc-inconsistent'" in str(err)


def test_perp_file_with_no_traded_bar_is_rejected(tmp_path: Path) -> None:
    frame = make_ohlcv(6)
    _flat(frame, list(range(6)), 40_000.0, 0.0)
    path = write_csv(tmp_path, iso(frame), "perp.csv")
    with pytest.raises(DataValidationError) as info:
        load_perp_ohlcv([path])
    assert (info.value.file, info.value.row, info.value.rule) == (str(path), None, "perp-no-trade")


@pytest.mark.realdata
def test_real_perp_file_flags_exactly_its_listing_artefacts(shared_data: Path) -> None:
    """../shared/data/README.md: 2019-09-08 17:00-18:00 a flat 10,000.00 placeholder (volume 0.002 / 0), real
    trading from 19:00, then 2019-09-09 00:00-01:00 flat zero-volume bars; nothing else is flat."""
    path = shared_data / "btcusdt_perp_1h.parquet"
    before = sha256(path)
    loaded = load_perp_ohlcv([path])
    assert loaded.reports[0].flagged == {"perp-placeholder": [1, 2], "perp-no-trade": [8, 9]}
    assert len(loaded.frame) == 58_623 - 4
    assert loaded.frame["timestamp"].iloc[0] == pd.Timestamp("2019-09-08 19:00", tz="UTC")
    hours = pd.DatetimeIndex(["2019-09-08 17:00", "2019-09-08 18:00", "2019-09-09 00:00", "2019-09-09 01:00"], tz="UTC")
    assert not loaded.frame["timestamp"].isin(hours).any()
    assert sha256(path) == before
