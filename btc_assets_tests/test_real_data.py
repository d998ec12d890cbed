"""The real exchange files in ../shared/data ingest cleanly, with their documented gaps reported."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from btc_assets.ingestion import build_market_bars, inspect_file, load_funding, load_ohlcv
from btc_assets_tests.conftest import sha256

pytestmark = pytest.mark.realdata

# From ../shared/data/README.md: the first rows of the 28 gaps of Binance spot BTCUSDT / ETHUSDT.
FIRST_GAPS = [
    ("2017-09-06 17:00", "2017-09-06 22:00", 6),
    ("2018-01-04 04:00", "2018-01-04 04:00", 1),
    ("2018-02-08 01:00", "2018-02-09 09:00", 33),
]


def test_btcusdt_spot_and_funding(shared_data: Path) -> None:
    spot, fund = shared_data / "btcusdt_1h.parquet", shared_data / "btcusdt_funding_8h.parquet"
    hashes = (sha256(spot), sha256(fund))
    ohlcv, funding = load_ohlcv([spot]), load_funding([fund])
    assert len(ohlcv.frame) == 76_543 and ohlcv.repairs == []
    assert len(funding.frame) == 7_323 and funding.repairs == []
    built = build_market_bars(ohlcv.frame, funding.frame)
    assert len(built.bars) == 76_671
    assert len(built.gaps) == 28 and built.gaps["hours"].sum() == 128 and built.bars["missing"].sum() == 128
    for (first, last, hours), row in zip(FIRST_GAPS, built.gaps.itertuples(), strict=False):
        assert (row.first_missing, row.last_missing, row.hours) == (
            pd.Timestamp(first, tz="UTC"),
            pd.Timestamp(last, tz="UTC"),
            hours,
        )
    assert built.gaps["hours"].max() == 33
    # every settlement but the one after the last bar (2026-05-17 00:00) lands on the grid
    assert built.funding_outside_bars == 1
    assert built.bars["funding_time"].notna().sum() == 7_322
    assert (sha256(spot), sha256(fund)) == hashes


@pytest.mark.parametrize(
    "name,kind,rows,repairs",
    [
        ("ethusdt_1h.parquet", "ohlcv", 76_543, 0),  # with its genuine 2017-08-22 flash wick (high/low 2.14)
        ("ethusdt_funding_8h.parquet", "funding", 7_089, 0),
        ("btcusdt_perp_1h.parquet", "ohlcv", 58_623, 0),
        ("bitstamp_btcusd_1h.parquet", "ohlcv", 57_379, 1),  # 20,142 volumes blanked upstream: volume-unknown
    ],
)
def test_other_real_files(shared_data: Path, name: str, kind: str, rows: int, repairs: int) -> None:
    got_kind, loaded = inspect_file(shared_data / name)
    assert got_kind == kind and len(loaded.frame) == rows and len(loaded.repairs) == repairs


def test_eth_has_the_same_28_gaps(shared_data: Path) -> None:
    from btc_assets.ingestion import find_gaps

    gaps = find_gaps(load_ohlcv([shared_data / "ethusdt_1h.parquet"]).frame["timestamp"])
    assert len(gaps) == 28 and gaps["hours"].sum() == 128
