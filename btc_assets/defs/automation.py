"""One step from the UI to rerun what is stale: a sensor that launches exactly the stale or missing partitions of the
seeds (``wfa_seeds``) and of the ablation (``ablation_runs``), and the function ``btc-assets run`` / ``ablation``
use to choose the partitions they launch.

Dagster 1.13's "Materialize unsynced" does not list stale *partitions* (dagster-io/dagster#20463, #22704). The
sensor ``stale_partitions`` asks Dagster's own stale-status API, per partition, which of the profile's seeds and
configured (variant, seed) runs are STALE or MISSING, and requests one run for each. It is off by default: turn it
on in the UI (Automation → ``stale_partitions`` → on) and every tick (each minute) launches what became stale;
turn it off again when the study is up to date. Each request's run key names the partition and the state it saw
(its code version and the latest materialisations of its inputs), so one state is launched once: a partition
whose run failed is not relaunched until something changes (relaunch it by hand); a partition with a run queued
or in progress is skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver
from dagster._core.loader import LoadingContextForTest

from btc_assets.config import seed_key
from btc_assets.defs.partitions import ablation_key
from btc_assets.settings import Settings

IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]  # fmt: skip
# job → (the asset whose status decides, its unpartitioned inputs)
TARGETS = {
    "wfa_seeds": ("wfa_results", ("market_bars", "volatility", "regime_probabilities")),
    "ablation_runs": (
        "ablation_oos",
        ("market_bars", "volatility", "regime_probabilities", "gaussian_regime_probabilities"),
    ),
}


def stale_statuses(
    instance: dg.DagsterInstance, asset_graph, keys: Iterable[str | dg.AssetKey], partition: str | None = None
) -> dict[str, str]:
    """Dagster's own stale status (FRESH / STALE / MISSING) per asset key (and partition): the one place the
    project asks it (this sensor, ``btc-assets run`` / ``ablation``)."""
    resolver = CachingStaleStatusResolver(instance, asset_graph, LoadingContextForTest(instance))
    asset_keys = [dg.AssetKey.from_user_string(k) if isinstance(k, str) else k for k in keys]
    return {key.to_user_string(): resolver.get_status(key, partition).value for key in asset_keys}


def stale_partitions(instance: dg.DagsterInstance, asset_graph, asset: str, keys: Iterable[str]) -> list[str]:
    """The partitions of ``asset`` among ``keys`` that Dagster reports STALE or MISSING, in order."""
    resolver = CachingStaleStatusResolver(instance, asset_graph, LoadingContextForTest(instance))  # one cache
    key = dg.AssetKey.from_user_string(asset)
    return [k for k in keys if resolver.get_status(key, k).value != "FRESH"]


def wanted_partitions(settings: Settings) -> dict[str, list[str]]:
    """Per job, the partitions the profile asks for: its seeds, and its configured (variant, seed) runs."""
    profile = settings.profile
    return {
        "wfa_seeds": [seed_key(s) for s in range(profile.n_seeds)],
        "ablation_runs": [str(ablation_key(v, s)) for v in profile.ablation.variants for s in profile.ablation.seeds],
    }


def _in_flight(instance: dg.DagsterInstance, job: str) -> set[str]:
    runs = instance.get_runs(dg.RunsFilter(job_name=job, statuses=IN_FLIGHT))
    return {r.tags.get("dagster/partition", "") for r in runs}


def _state(instance: dg.DagsterInstance, asset_graph, asset: str, inputs: Sequence[str], partition: str) -> str:
    """What a request was made from: the asset's code version and its inputs' latest materialisations."""
    parts = [asset_graph.get(dg.AssetKey(asset)).code_version or ""]
    for name in inputs:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        parts.append(f"{name}:{f'{event.run_id}@{event.timestamp}' if event else '-'}")
    return hashlib.sha256(f"{partition}|{'|'.join(parts)}".encode()).hexdigest()[:16]


def build_sensor(settings: Settings, jobs: Sequence) -> dg.SensorDefinition:
    """The ``stale_partitions`` sensor for the profile of ``settings``, targeting ``jobs`` (``wfa_seeds`` and
    ``ablation_runs``; see the module docstring)."""

    @dg.sensor(
        name="stale_partitions",
        jobs=list(jobs),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Launches exactly the stale or missing seed and ablation partitions of the profile (off by "
        "default; turn it on to rerun what a code or settings change made stale, then off again).",
    )
    def stale_partitions_sensor(context: dg.SensorEvaluationContext):
        asset_graph = context.repository_def.asset_graph
        for job, keys in wanted_partitions(settings).items():
            asset, inputs = TARGETS[job]
            busy = _in_flight(context.instance, job)
            for partition in stale_partitions(context.instance, asset_graph, asset, keys):
                if partition in busy:
                    continue
                yield dg.RunRequest(
                    run_key=f"{job}:{_state(context.instance, asset_graph, asset, inputs, partition)}",
                    job_name=job,
                    partition_key=partition,
                    tags={"btc_assets/profile": settings.profile.name, "btc_assets/launched_by": "stale_partitions"},
                )

    return stale_partitions_sensor
