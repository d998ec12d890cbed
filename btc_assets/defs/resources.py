"""Dagster resources: where the project's state lives, where market data comes from, and the Parquet IO manager."""

import dataclasses

import dagster as dg
import pandas as pd

from btc_assets.config import Paths
from btc_assets.fits import FitCache
from btc_assets.ingestion import SourceSettings
from btc_assets.settings import Settings
from btc_assets.storage import Warehouse
from btc_assets.versions import source_digest

Study = dg.ResourceParam[Settings]  # the resolved settings, as a resource: ``study.profile.portfolio``


class ProjectHome(dg.ConfigurableResource):
    """The project's state folder (``BTC_ASSETS_HOME``): raw inputs, warehouse, checkpoints, reports."""

    home: str

    @property
    def paths(self) -> Paths:
        return Paths.at(self.home).ensure()

    def fits(self, stage: str) -> FitCache:
        """The fit cache of a stage module (``btc_assets.volatility``): ``fits/<stage>/``, keyed by its code."""
        return FitCache(self.paths.fits / stage.rsplit(".", 1)[-1], namespace=source_digest(stage))


class MarketSource(dg.ConfigurableResource):
    """Where market data comes from (``btc_assets.ingestion.SourceSettings``): filled from the resolved settings
    when the definitions are built; a run's config may name other files (``perp``: the perpetual's own OHLCV
    file(s), optional). Never read from the environment at run time."""

    source: str = ""
    ohlcv: str = ""
    funding: str = ""
    symbol: str = ""
    start: str = ""
    perp: str = ""
    binance_url: str = ""

    def settings(self) -> SourceSettings:
        return SourceSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SourceSettings)}).resolved(
            env={}
        )


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores each asset (partition) as one Parquet file in the warehouse, written atomically."""

    home: str

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(Paths.at(self.home).warehouse)

    @staticmethod
    def _name(context: dg.OutputContext | dg.InputContext) -> str:
        return "__".join(context.asset_key.path)

    @staticmethod
    def partition_name(key: str) -> str:
        """A partition key as a warehouse folder name: a multi-partition key's values joined by ``.`` in the order
        of its dimension names (``seed_00.original`` for variant ``original``, seed ``seed_00``)."""
        if isinstance(key, dg.MultiPartitionKey):
            return ".".join(key.keys_by_dimension[d] for d in sorted(key.keys_by_dimension))
        return key

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}, not a DataFrame")
        partition = self.partition_name(context.partition_key) if context.has_asset_partitions else None
        path = self.warehouse.write(obj, self._name(context), partition)
        self.warehouse.refresh_catalog()
        context.add_output_metadata(
            {"path": dg.MetadataValue.path(str(path)), "rows": len(obj), "bytes": path.stat().st_size}
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | dict[str, pd.DataFrame]:
        """One frame; or, for an unpartitioned asset reading a partitioned one (all its partitions), a dict
        partition key → frame of the partitions materialised so far (the others are skipped)."""
        name = self._name(context)
        if not context.has_asset_partitions:
            return self.warehouse.read(name)
        if context.has_partition_key:  # partitioned → partitioned: the same partition
            return self.warehouse.read(name, self.partition_name(context.asset_partition_key))
        out = {}
        for key in context.asset_partition_keys:
            path = self.warehouse.path_for(name, self.partition_name(key))
            if path.exists():
                out[key] = pd.read_parquet(path)
        return out


def default_resources(settings: Settings) -> dict[str, object]:
    """The resources every asset needs, from the resolved ``settings`` (tests resolve them on ``tmp_path``):
    ``study`` is the :class:`~btc_assets.settings.Settings` object itself (assets read ``study.profile``)."""
    home = str(settings.paths.home)
    src = settings.source
    return {
        "project": ProjectHome(home=home),
        "market_source": MarketSource(**dataclasses.asdict(src)),  # the same fields as SourceSettings
        "study": settings,
        "io_manager": ParquetIOManager(home=home),
    }
