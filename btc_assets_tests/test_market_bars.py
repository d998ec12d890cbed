"""The hourly grid: gaps visible, never filled; funding on the bar that closes at the settlement; the perp's own
bars beside spot, NaN wherever no perp price is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from btc_assets.ingestion import MARKET_BAR_COLUMNS, build_market_bars, load_perp_ohlcv
from btc_assets.ingestion.schema import empty_funding, empty_ohlcv
from btc_assets_tests.conftest import make_funding, make_ohlcv

PERP = ["perp_open", "perp_high", "perp_low", "perp_close"]


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


def test_without_perp_the_perp_columns_are_nan() -> None:
    ohlcv, funding = make_ohlcv(48).drop(index=[7]).reset_index(drop=True), make_funding()
    old_call = build_market_bars(ohlcv, funding)
    for built in (old_call, build_market_bars(ohlcv, funding, empty_ohlcv()), build_market_bars(ohlcv, funding, None)):
        assert list(built.bars.columns) == list(MARKET_BAR_COLUMNS) and MARKET_BAR_COLUMNS[-4:] == tuple(PERP)
        assert (built.bars[PERP].dtypes == np.float64).all() and built.bars[PERP].isna().all().all()
        assert built.perp_outside_bars == 0
    # the perp columns come after the others, which a perp input leaves exactly as they were
    with_perp = build_market_bars(ohlcv, funding, make_ohlcv(48, seed=5)).bars
    pd.testing.assert_frame_equal(with_perp.drop(columns=PERP), old_call.bars.drop(columns=PERP), check_exact=True)


def test_perp_columns_nan_where_unknown_and_the_file_elsewhere(tmp_path: Path) -> None:
    """Spot 2024-01-01 00:00 .. 01-02 23:00; the perp from 05:00 (a placeholder at 05:00-06:00, a no-trade bar at
    20:00, two hours absent from its file) to 2024-01-03 06:00, 7 bars past the spot grid."""
    spot = make_ohlcv(48).drop(index=[30]).reset_index(drop=True)  # a spot gap: the perp still prices that hour
    perp = make_ohlcv(50, start="2024-01-01 05:00", seed=5)
    perp.loc[[0, 1], ["open", "high", "low", "close"]] = 10_000.0
    perp.loc[[0, 1], "volume"] = 0.0
    perp.loc[15, ["open", "high", "low", "close"]] = perp.loc[14, "close"]
    perp.loc[15, "volume"] = 0.0
    perp = perp.drop(index=[20, 21]).reset_index(drop=True)
    path = tmp_path / "perp.csv"
    perp.to_csv(path, index=False)
    loaded = load_perp_ohlcv([path])
    assert loaded.reports[0].flagged == {"perp-placeholder": [1, 2], "perp-no-trade": [16]}

    built = build_market_bars(spot, make_funding(), loaded.frame)
    bars = built.bars.set_index("timestamp")
    assert built.perp_outside_bars == 7 and len(bars) == 48
    assert (bars[PERP].dtypes == np.float64).all()
    hour = pd.Timestamp("2024-01-01 00:00", tz="UTC") + pd.to_timedelta(np.arange(48), unit="h")
    unknown = hour[
        (hour < pd.Timestamp("2024-01-01 07:00", tz="UTC"))  # before its listing, its placeholder
        | hour.isin(pd.DatetimeIndex(["2024-01-01 20:00", "2024-01-02 01:00", "2024-01-02 02:00"], tz="UTC"))
    ]  # its no-trade bar, its absent hours
    assert bars.loc[unknown, PERP].isna().all().all()
    known = bars.index.difference(unknown)
    assert len(known) == 48 - 10 and bars.loc[known, PERP].notna().all().all()
    expected = loaded.frame.set_index("timestamp").reindex(known)[["open", "high", "low", "close"]]
    np.testing.assert_array_equal(bars.loc[known, PERP].to_numpy(), expected.to_numpy())
    assert bars.loc[pd.Timestamp("2024-01-02 06:00", tz="UTC"), "missing"]  # a spot gap, perp known
    assert np.isfinite(bars.loc[pd.Timestamp("2024-01-02 06:00", tz="UTC"), "perp_close"])
