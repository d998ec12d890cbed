"""The clean hourly grid: OHLCV on every UTC hour, gaps flagged, funding settlements attached.

Conventions
* One row per UTC hour from the first to the last bar; ``timestamp`` is the bar's open time.
* A missing exchange hour stays visible: its row has ``missing = True`` and NaN open/high/low/close/volume. No
  price is invented here; each downstream stage states how it treats such hours.
* A funding settlement at time T is attached to the bar that *closes* at T (open time T − 1 h): a position held
  through that bar is the position held at the settlement instant. On that row ``funding_time = T`` and
  ``funding_rate`` is the settled rate; on every other row ``funding_time`` is NaT and ``funding_rate`` is 0.
* ``funding_known`` is True on bars inside the funding history (from one interval before the first settlement to
  the last settlement). Outside it ``funding_rate`` is 0 because nothing is known, not because nothing was paid:
  strategies holding perpetuals must not trade there.
* ``perp_open`` / ``perp_high`` / ``perp_low`` / ``perp_close`` are the perpetual's own bar on the same hour (same
  open-time convention), NaN wherever no perp price is known: before the perp's first bar, on perp hours absent
  from its file, on its flagged listing-placeholder / no-trade bars (rules ``perp-placeholder``, ``perp-no-trade``,
  left out when it was loaded), and everywhere when there is no perp input. Perp bars outside the spot grid are
  dropped and counted (``MarketBars.perp_outside_bars``). Like spot gaps, a perp gap is never filled here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from btc_assets.ingestion.load import find_gaps
from btc_assets.ingestion.schema import TS_DTYPE

MARKET_BAR_COLUMNS = (
    "timestamp",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "missing",
    "funding_rate",
    "funding_time",
    "funding_known",
    "perp_open",
    "perp_high",
    "perp_low",
    "perp_close",
)
PERP_COLUMNS = ("perp_open", "perp_high", "perp_low", "perp_close")


@dataclass(frozen=True)
class MarketBars:
    """The grid plus what building it found."""

    bars: pd.DataFrame
    gaps: pd.DataFrame
    funding_outside_bars: int
    perp_outside_bars: int = 0


def build_market_bars(ohlcv: pd.DataFrame, funding: pd.DataFrame, perp: pd.DataFrame | None = None) -> MarketBars:
    """Put validated canonical OHLCV on a complete hourly UTC grid and join the funding settlements and, when
    given, the perpetual's validated canonical OHLCV (``None`` or empty: the perp columns are all NaN)."""
    if ohlcv.empty:
        raise ValueError("no OHLCV bars to put on the grid")
    ohlcv = ohlcv.sort_values("timestamp").reset_index(drop=True)
    grid = pd.date_range(ohlcv["timestamp"].iloc[0], ohlcv["timestamp"].iloc[-1], freq="h", unit="ms")
    bars = ohlcv.set_index("timestamp").reindex(grid)
    bars.index.name = "timestamp"
    bars["missing"] = bars["close"].isna()
    bars = bars.reset_index()
    bars["timestamp"] = bars["timestamp"].astype(TS_DTYPE)

    rate = np.zeros(len(bars))
    ftime = pd.Series(pd.NaT, index=bars.index, dtype=TS_DTYPE)
    known = np.zeros(len(bars), dtype=bool)
    outside = 0
    if not funding.empty:
        funding = funding.sort_values("timestamp").reset_index(drop=True)
        bar_of = funding["timestamp"] - pd.Timedelta(hours=1)
        pos = grid.get_indexer(pd.DatetimeIndex(bar_of))
        inside = pos >= 0
        outside = int((~inside).sum())
        rate[pos[inside]] = funding["funding_rate"].to_numpy()[inside]
        ftime.iloc[pos[inside]] = funding["timestamp"].to_numpy()[inside]
        intervals = funding["timestamp"].diff().dropna()
        first_interval = intervals.iloc[0] if len(intervals) else pd.Timedelta(hours=8)
        start = funding["timestamp"].iloc[0] - first_interval
        end = funding["timestamp"].iloc[-1] - pd.Timedelta(hours=1)
        known = ((bars["timestamp"] >= start) & (bars["timestamp"] <= end)).to_numpy()
    bars["funding_rate"] = rate
    bars["funding_time"] = ftime.astype(TS_DTYPE)
    bars["funding_known"] = known

    perp_values = np.full((len(bars), len(PERP_COLUMNS)), np.nan)
    perp_outside = 0
    if perp is not None and not perp.empty:
        pos = grid.get_indexer(pd.DatetimeIndex(perp["timestamp"]))
        inside = pos >= 0
        perp_outside = int((~inside).sum())
        perp_values[pos[inside]] = perp[["open", "high", "low", "close"]].to_numpy(dtype=np.float64)[inside]
    for i, column in enumerate(PERP_COLUMNS):
        bars[column] = perp_values[:, i]
    return MarketBars(bars[list(MARKET_BAR_COLUMNS)], find_gaps(ohlcv["timestamp"]), outside, perp_outside)
