"""The Dagster face of btc-assets: assets, resources and jobs. Computation lives in the stage modules."""

from __future__ import annotations

import dagster as dg

from btc_assets.defs import experts, ingestion, portfolio, regimes, volatility, wfa
from btc_assets.defs.resources import default_resources

ALL_ASSETS = [*ingestion.assets, *volatility.assets, *regimes.assets, *experts.assets, *portfolio.assets,
              *wfa.assets]

WFA_SELECTION = dg.AssetSelection.assets(*wfa.walk_forward.keys)
study_job = dg.define_asset_job(
    "btc_study", selection=dg.AssetSelection.all() - WFA_SELECTION,
    description="Materialise the chain up to the portfolio (everything that is not per seed).",
)
seeds_job = dg.define_asset_job(
    "wfa_seeds", selection=WFA_SELECTION,
    description="The walk-forward optimisation of one seed partition (one run per seed).",
)


def build_definitions(home: str | None = None) -> dg.Definitions:
    """All definitions, with resources rooted at ``home`` (default: ``BTC_ASSETS_HOME``)."""
    return dg.Definitions(assets=ALL_ASSETS, jobs=[study_job, seeds_job], resources=default_resources(home))


defs = build_definitions()
