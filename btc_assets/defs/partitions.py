"""Partitions, defined once: one partition per optimisation seed."""

import dagster as dg

from btc_assets.config import N_SEEDS, seed_key

seed_partitions = dg.StaticPartitionsDefinition([seed_key(i) for i in range(N_SEEDS)])
