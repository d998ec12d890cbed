"""The hourly grid: gaps visible, never filled; funding on the bar that closes at the settlement."""

from __future__ import annotations

import numpy as np
import pandas as pd

from btc_assets.ingestion import MARKET_BAR_COLUMNS, build_market_bars
from btc_assets.ingestion.schema import empty_funding
from btc_assets_tests.conftest import make_funding, make_ohlcv


def test_gaps_flagged_not_filled() -> None:
    ohlcv = make_ohlcv(48).drop(index=[10, 11, 12, 30]).reset_index(drop=True)
    built = build_market_bars(ohlcv, make_funding())
    bars = built.bars
    assert list(bars.columns) == list(MARKET_BAR_COLUMNS)
    assert len(bars) == 48
    assert (bars["timestamp"].diff().dropna() == pd.Timedelta(hours=1)).all()
    assert bars["missing"].sum() == 4
    assert bars.loc[bars["missing"], ["open", "high", "low", "close", "volume"]].isna().all().all()
    assert bars.loc[~bars["missing"], "close"].notna().all()
    assert built.gaps["hours"].tolist() == [3, 1]
    assert built.gaps["first_missing"].iloc[0] == pd.Timestamp("2024-01-01 10:00", tz="UTC")
    assert built.gaps["last_missing"].iloc[0] == pd.Timestamp("2024-01-01 12:00", tz="UTC")


def test_funding_attached_to_bar_closing_at_settlement() -> None:
    ohlcv = make_ohlcv(48)
    funding = make_funding("2024-01-01 08:00", 5)
    bars = build_market_bars(ohlcv, funding).bars
    settled = bars[bars["funding_time"].notna()]
    assert len(settled) == 5
    # the bar opening at 07:00 closes at 08:00, the settlement instant
    assert (settled["timestamp"] + pd.Timedelta(hours=1) == settled["funding_time"]).all()
    np.testing.assert_array_equal(settled["funding_rate"].to_numpy(), funding["funding_rate"].to_numpy())
    assert (bars.loc[bars["funding_time"].isna(), "funding_rate"] == 0).all()
    # known from one interval before the first settlement to the last one
    known = bars.loc[bars["funding_known"], "timestamp"]
    assert known.iloc[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert known.iloc[-1] == pd.Timestamp("2024-01-02 15:00", tz="UTC")


def test_without_funding_everything_unknown() -> None:
    bars = build_market_bars(make_ohlcv(24), empty_funding()).bars
    assert not bars["funding_known"].any() and (bars["funding_rate"] == 0).all()


def test_settlement_outside_bars_counted() -> None:
    built = build_market_bars(make_ohlcv(24), make_funding("2024-01-01 08:00", 6))
    assert built.funding_outside_bars == 3  # 2024-01-02 00:00, 08:00, 16:00 close bars beyond the last one
