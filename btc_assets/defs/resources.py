"""Dagster resources: where the project's state lives, where market data comes from, and the Parquet IO manager."""


import os
from pathlib import Path

import dagster as dg
import pandas as pd

from btc_assets.config import Paths, Profile, get_profile, settings_hash
from btc_assets.ingestion import SourceSettings
from btc_assets.storage import Warehouse


class ProjectHome(dg.ConfigurableResource):
    """The project's state folder (``BTC_ASSETS_HOME``): raw inputs, warehouse, checkpoints, reports."""

    home: str = ""

    @property
    def paths(self) -> Paths:
        return Paths.from_env(self.home or None).ensure()


LOAD_PROFILE: Profile = get_profile()  # the profile in force when the definitions load (BTC_ASSETS_PROFILE)


def code_version(revision: int, *sections: object) -> str:
    """An asset's code version: its code revision plus a hash of the settings sections it reads, so a settings
    change makes exactly that asset (and what depends on it) stale."""
    return f"{revision}-{settings_hash(*sections)}" if sections else str(revision)


class StudySettings(dg.ConfigurableResource):
    """The study profile (``quick`` | ``integration`` | ``full``); empty = ``BTC_ASSETS_PROFILE`` or ``quick``.

    Assets' code versions include a hash of the settings they use (taken from the profile in force when the
    definitions load), so changing a stage's settings makes that stage and everything below it stale.
    """

    profile: str = ""

    def get(self) -> Profile:
        return get_profile(self.profile or None)


class MarketSource(dg.ConfigurableResource):
    """Where market data comes from. Empty fields fall back to the ``BTC_ASSETS_*`` environment variables
    (``perp``: the perpetual's own OHLCV file(s), ``BTC_ASSETS_PERP``; optional)."""

    source: str = ""
    ohlcv: str = ""
    funding: str = ""
    symbol: str = ""
    start: str = ""
    perp: str = ""

    def settings(self) -> SourceSettings:
        return SourceSettings(source=self.source, ohlcv=self.ohlcv, funding=self.funding, symbol=self.symbol,
                              start=self.start, perp=self.perp).resolved()


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores each asset (partition) as one Parquet file in the warehouse, written atomically."""

    home: str = ""

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(Paths.from_env(self.home or None).warehouse)

    @staticmethod
    def _name(context: dg.OutputContext | dg.InputContext) -> str:
        return "__".join(context.asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}, not a DataFrame")
        partition = context.partition_key if context.has_asset_partitions else None
        path = self.warehouse.write(obj, self._name(context), partition)
        self.warehouse.refresh_catalog()
        context.add_output_metadata(
            {"path": dg.MetadataValue.path(str(path)), "rows": len(obj), "bytes": path.stat().st_size}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return self.warehouse.read(self._name(context), partition)


def default_resources(home: str | os.PathLike[str] | None = None) -> dict[str, object]:
    """The resources every asset needs; ``home`` overrides ``BTC_ASSETS_HOME`` (tests pass ``tmp_path``)."""
    home_str = str(Path(home)) if home else ""
    return {
        "project": ProjectHome(home=home_str),
        "market_source": MarketSource(),
        "study": StudySettings(),
        "io_manager": ParquetIOManager(home=home_str),
    }
