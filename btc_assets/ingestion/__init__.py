"""Stage 1 of the chain: raw spot OHLCV, perp OHLCV and funding in, a clean hourly grid out (no Dagster in here)."""

from btc_assets.ingestion.bars import MARKET_BAR_COLUMNS, MarketBars, build_market_bars
from btc_assets.ingestion.load import (
    Loaded,
    find_gaps,
    frame_hash,
    inspect_file,
    load_funding,
    load_ohlcv,
    load_perp_ohlcv,
)
from btc_assets.ingestion.sources import SourceSettings, load_market_funding, load_market_ohlcv, load_market_perp
from btc_assets.ingestion.validation import DataValidationError, ValidationLimits, ValidationReport

__all__ = [
    "MARKET_BAR_COLUMNS",
    "DataValidationError",
    "Loaded",
    "MarketBars",
    "SourceSettings",
    "ValidationLimits",
    "ValidationReport",
    "build_market_bars",
    "find_gaps",
    "frame_hash",
    "inspect_file",
    "load_funding",
    "load_market_funding",
    "load_market_ohlcv",
    "load_market_perp",
    "load_ohlcv",
    "load_perp_ohlcv",
]
