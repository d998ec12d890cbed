"""The Dagster face of btc-assets: assets, resources and jobs. Computation lives in the stage modules."""

from __future__ import annotations

import dagster as dg

from btc_assets.defs import ablation, evaluation, experts, ingestion, portfolio, regimes, volatility, wfa
from btc_assets.defs.resources import default_resources

ALL_ASSETS = [*ingestion.assets, *volatility.assets, *regimes.assets, *experts.assets, *portfolio.assets,
              *wfa.assets, *evaluation.assets, *ablation.assets]

WFA_SELECTION = dg.AssetSelection.assets(*wfa.walk_forward.keys)
SUMMARY_SELECTION = dg.AssetSelection.assets(*evaluation.wfa_summary.keys, *evaluation.wfa_attribution.keys)
ABLATION_SELECTION = dg.AssetSelection.groups(ablation.GROUP)
CHAIN_SELECTION = dg.AssetSelection.all() - WFA_SELECTION - SUMMARY_SELECTION - ABLATION_SELECTION
study_job = dg.define_asset_job(
    "btc_study", selection=CHAIN_SELECTION,
    description="Materialise the chain up to the portfolio (everything that is not per seed).",
)
seeds_job = dg.define_asset_job(
    "wfa_seeds", selection=WFA_SELECTION,
    description="The walk-forward optimisation of one seed partition (one run per seed).",
)

summary_job = dg.define_asset_job(
    "summarise_seeds", selection=SUMMARY_SELECTION,
    description="Summarise the seed partitions materialised so far.",
)

ablation_job = dg.define_asset_job(
    "ablation_study", selection=ABLATION_SELECTION,
    description="The ablation: Gaussian-HMM regimes and the walk-forward of every variant on the configured seeds.",
)


def build_definitions(home: str | None = None) -> dg.Definitions:
    """All definitions, with resources rooted at ``home`` (default: ``BTC_ASSETS_HOME``)."""
    return dg.Definitions(assets=ALL_ASSETS, jobs=[study_job, seeds_job, summary_job, ablation_job],
                          resources=default_resources(home))


defs = build_definitions()
