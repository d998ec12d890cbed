"""Partitions, defined once: one partition per optimisation seed, and one per (ablation variant, seed)."""

import dagster as dg

from btc_assets.config import ABLATION_VARIANTS, N_SEEDS, seed_key

seed_partitions = dg.StaticPartitionsDefinition([seed_key(i) for i in range(N_SEEDS)])
# every variant × every seed; the profile's [ablation] variants and seeds say which ones `btc-assets ablation`
# launches and the ablation table reads
ablation_partitions = dg.MultiPartitionsDefinition(
    {"variant": dg.StaticPartitionsDefinition(list(ABLATION_VARIANTS)), "seed": seed_partitions}
)


def ablation_key(variant: str, seed: int) -> dg.MultiPartitionKey:
    """The ``ablation_runs`` partition of one (variant, seed)."""
    return dg.MultiPartitionKey({"variant": variant, "seed": seed_key(seed)})
