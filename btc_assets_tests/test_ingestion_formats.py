"""Every supported file layout reads into the same canonical frame; the raw file is never modified."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest

from btc_assets.ingestion import inspect_file, load_funding, load_ohlcv
from btc_assets.ingestion.schema import TS_DTYPE
from btc_assets_tests.conftest import binance_kline_rows, sha256


def _check_same(loaded: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert loaded["timestamp"].dtype == TS_DTYPE
    pdt.assert_frame_equal(
        loaded.reset_index(drop=True), expected.reset_index(drop=True), check_exact=False, rtol=1e-12
    )


def test_binance_spot_csv_without_header_ms(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    path = tmp_path / "BTCUSDT-1h-2024-01.csv"
    binance_kline_rows(ohlcv).to_csv(path, header=False, index=False)
    before = sha256(path)
    _check_same(load_ohlcv([path]).frame, ohlcv)
    assert sha256(path) == before


def test_binance_2025_spot_csv_microseconds(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    path = tmp_path / "BTCUSDT-1h-2025-01.csv"
    rows = binance_kline_rows(ohlcv, unit="us")
    assert rows["open_time"].iloc[0] > 1e15
    rows.to_csv(path, header=False, index=False)
    _check_same(load_ohlcv([path]).frame, ohlcv)


def test_binance_futures_csv_with_header(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    path = tmp_path / "BTCUSDT-1h-2024-01-futures.csv"
    binance_kline_rows(ohlcv).to_csv(path, header=True, index=False)
    _check_same(load_ohlcv([path]).frame, ohlcv)


def test_binance_zip_as_archived(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    path = tmp_path / "BTCUSDT-1h-2024-01.zip"
    buf = io.StringIO()
    binance_kline_rows(ohlcv).to_csv(buf, header=False, index=False)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("BTCUSDT-1h-2024-01.csv", buf.getvalue())
    _check_same(load_ohlcv([path]).frame, ohlcv)


def test_binance_kline_parquet(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    path = tmp_path / "klines.parquet"
    binance_kline_rows(ohlcv).to_parquet(path)
    _check_same(load_ohlcv([path]).frame, ohlcv)


@pytest.mark.parametrize("encoding", ["iso", "epoch_s", "epoch_ms"])
def test_plain_csv(tmp_path: Path, ohlcv: pd.DataFrame, encoding: str) -> None:
    frame = ohlcv.copy()
    if encoding == "iso":
        frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif encoding == "epoch_s":
        frame["timestamp"] = frame["timestamp"].astype("int64") // 1000
    else:
        frame["timestamp"] = frame["timestamp"].astype("int64")
    path = tmp_path / "plain.csv"
    frame.to_csv(path, index=False)
    _check_same(load_ohlcv([path]).frame, ohlcv)


def test_plain_csv_naive_datetime_taken_as_utc(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    frame = ohlcv.assign(timestamp=ohlcv["timestamp"].dt.tz_localize(None).dt.strftime("%Y-%m-%d %H:%M:%S"))
    path = tmp_path / "naive.csv"
    frame.to_csv(path, index=False)
    _check_same(load_ohlcv([path]).frame, ohlcv)


def test_plain_parquet(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    path = tmp_path / "plain.parquet"
    ohlcv.to_parquet(path)
    _check_same(load_ohlcv([path]).frame, ohlcv)


def test_freqtrade_feather(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    path = tmp_path / "BTC_USDT-1h.feather"
    ohlcv.rename(columns={"timestamp": "date"}).to_feather(path)
    _check_same(load_ohlcv([path]).frame, ohlcv)


def test_binance_funding_csv(tmp_path: Path, funding: pd.DataFrame) -> None:
    path = tmp_path / "BTCUSDT-fundingRate-2024-01.csv"
    calc = funding["timestamp"].astype("int64") + 7  # Binance stamps settlements a few ms after the hour
    pd.DataFrame({"calc_time": calc, "funding_interval_hours": 8, "last_funding_rate": funding["funding_rate"]}).to_csv(
        path, index=False
    )
    loaded = load_funding([path])
    _check_same(loaded.frame, funding)
    assert any("funding-round" in r for r in loaded.repairs)


def test_plain_funding_with_extra_columns(tmp_path: Path, funding: pd.DataFrame) -> None:
    path = tmp_path / "funding.parquet"
    funding.assign(mark_price=42_000.0).to_parquet(path)
    _check_same(load_funding([path]).frame, funding)


def test_inspect_tells_kinds_apart(tmp_path: Path, ohlcv: pd.DataFrame, funding: pd.DataFrame) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    binance_kline_rows(ohlcv).to_csv(a, header=False, index=False)
    funding.to_csv(b, index=False)
    assert inspect_file(a)[0] == "ohlcv"
    assert inspect_file(b)[0] == "funding"


def test_several_files_combined_overlap_dropped(tmp_path: Path, ohlcv: pd.DataFrame) -> None:
    """Monthly files from ms (2024) and µs (2025) eras combine; an exact overlap is kept once."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    binance_kline_rows(ohlcv.iloc[:30]).to_csv(a, header=False, index=False)
    binance_kline_rows(ohlcv.iloc[25:], unit="us").to_csv(b, header=False, index=False)
    loaded = load_ohlcv([b, a])
    _check_same(loaded.frame, ohlcv)
    assert any("repeated across files" in r for r in loaded.repairs)
