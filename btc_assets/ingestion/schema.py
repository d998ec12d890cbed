"""Canonical in-memory schemas shared by every ingestion source.

Every reader (user files, the Binance archive, ccxt, the synthetic demo market) returns frames in exactly
these layouts, so validation and the hourly grid are written once.

* OHLCV: ``timestamp`` (``datetime64[ms, UTC]``, bar *open* time), ``open``, ``high``, ``low``, ``close``,
  ``volume`` (all ``float64``; volume in the base asset).
* Funding: ``timestamp`` (``datetime64[ms, UTC]``, settlement time on the hour), ``funding_rate``
  (``float64``, fraction per funding interval, positive = longs pay shorts).
"""

from __future__ import annotations

import pandas as pd

TS_DTYPE = "datetime64[ms, UTC]"
OHLCV_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
FUNDING_COLUMNS: tuple[str, ...] = ("timestamp", "funding_rate")


def empty_ohlcv() -> pd.DataFrame:
    """An OHLCV frame with no rows and the canonical dtypes."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in OHLCV_COLUMNS})
    frame["timestamp"] = pd.Series(dtype=TS_DTYPE)
    return frame[list(OHLCV_COLUMNS)]


def empty_funding() -> pd.DataFrame:
    """A funding frame with no rows and the canonical dtypes."""
    return pd.DataFrame({"timestamp": pd.Series(dtype=TS_DTYPE), "funding_rate": pd.Series(dtype="float64")})
