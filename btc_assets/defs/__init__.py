"""The Dagster face of btc-assets: assets, resources and jobs. Computation lives in the stage modules."""

from __future__ import annotations

import dagster as dg

from btc_assets.defs import experts, ingestion, portfolio, regimes, volatility
from btc_assets.defs.resources import default_resources

ALL_ASSETS = [*ingestion.assets, *volatility.assets, *regimes.assets, *experts.assets, *portfolio.assets]

study_job = dg.define_asset_job(
    "btc_study", selection=dg.AssetSelection.all(), description="Materialise the whole asset chain."
)


def build_definitions(home: str | None = None) -> dg.Definitions:
    """All definitions, with resources rooted at ``home`` (default: ``BTC_ASSETS_HOME``)."""
    return dg.Definitions(assets=ALL_ASSETS, jobs=[study_job], resources=default_resources(home))


defs = build_definitions()
