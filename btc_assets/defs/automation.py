"""One step from the UI to rerun what is stale, and a daily update: a sensor that launches what is unsynced (the
chain, then exactly the stale or missing partitions of the seeds ``wfa_seeds`` and of the ablation
``ablation_runs``, then the summary), a schedule that re-reads the market data every day, and the functions
``btc-assets run`` / ``ablation`` use to choose what they launch.

Dagster 1.13's "Materialize unsynced" does not list stale *partitions* (dagster-io/dagster#20463, #22704). The
sensor ``stale_study`` asks Dagster's own stale-status API what is STALE or MISSING, in the chain's order:

1. the chain (``btc_study``'s assets): if any is unsynced, one run of those assets and everything below them, and
   nothing else this tick (a seed must not start on inputs about to change);
2. the profile's seeds and configured (variant, seed) runs: one run for each stale or missing partition;
3. once every seed is fresh and none runs: the summary (``summarise_seeds``) if it is unsynced.

It waits while a run of the chain, the summary or any other non-partition job (a UI materialisation) is queued or
in progress, and skips a partition with a run in flight. It is off by default: turn it on in the UI (Automation →
``stale_study`` → on) and every tick (each minute) launches what became stale. Each request's run key names
what it launches and the state it saw (code versions and the latest materialisations of the inputs), so one state
is launched once: a run that failed is not relaunched until something changes (relaunch it by hand).

The schedule ``daily_update`` (off by default; 02:00 UTC) re-reads the raw market data (``raw_ohlcv``,
``raw_funding``, ``raw_perp_ohlcv``; with the ``download`` source that fetches what the archive added since, and
nothing else), as ``btc-assets run`` does first. Their content hashes say whether anything changed; if it did, the
sensor brings the chain, the seeds and the summary up to date: each refits, and optimises, only what the new bars
add (``btc_assets.fits``, the seeds' per-study checkpoints).
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

RAW = ("raw_ohlcv", "raw_funding", "raw_perp_ohlcv")  # re-read every time: their content hashes tell what changed
PARTITION_JOBS = ("wfa_seeds", "ablation_runs")

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


def all_fresh(instance: dg.DagsterInstance, asset_graph, keys: Iterable[str | dg.AssetKey]) -> bool:
    """Whether Dagster reports every asset of ``keys`` FRESH: what the sensor and ``btc-assets run`` / ``ablation``
    ask before they launch the summary or the Gaussian regimes."""
    return all(v == "FRESH" for v in stale_statuses(instance, asset_graph, keys).values())


def stale_partitions(instance: dg.DagsterInstance, asset_graph, asset: str, keys: Iterable[str]) -> list[str]:
    """The partitions of ``asset`` among ``keys`` that Dagster reports STALE or MISSING, in order."""
    resolver = CachingStaleStatusResolver(instance, asset_graph, LoadingContextForTest(instance))  # one cache
    key = dg.AssetKey.from_user_string(asset)
    return [k for k in keys if resolver.get_status(key, k).value != "FRESH"]


def unsynced_chain(instance: dg.DagsterInstance, asset_graph, chain: Sequence[dg.AssetKey]) -> list[dg.AssetKey]:
    """The assets of ``chain`` that are not FRESH, and everything below them in ``chain`` (their inputs are about
    to change), in ``chain``'s order: what ``btc-assets run`` and the sensor materialise."""
    status = stale_statuses(instance, asset_graph, chain)
    changed = [dg.AssetKey.from_user_string(k) for k, v in status.items() if v != "FRESH"]
    if not changed:
        return []
    below = dg.AssetSelection.assets(*changed).downstream().resolve(asset_graph)
    return [k for k in chain if k in below]


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


def _other_in_flight(instance: dg.DagsterInstance) -> bool:
    """A run of anything but the partition jobs is queued or in progress (the chain, the summary, the UI's own)."""
    return any(r.job_name not in PARTITION_JOBS for r in instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT)))


def _keys_state(instance: dg.DagsterInstance, asset_graph, keys: Sequence[dg.AssetKey], inputs: Sequence[str]) -> str:
    """What a request of unpartitioned assets was made from: their code versions and their inputs' latest
    materialisations."""
    parts = [f"{k.to_user_string()}={asset_graph.get(k).code_version or ''}" for k in keys]
    for name in inputs:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        parts.append(f"{name}:{f'{event.run_id}@{event.timestamp}' if event else '-'}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _state(instance: dg.DagsterInstance, asset_graph, asset: str, inputs: Sequence[str], partition: str) -> str:
    """What a request was made from: the asset's code version and its inputs' latest materialisations."""
    parts = [asset_graph.get(dg.AssetKey(asset)).code_version or ""]
    for name in inputs:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        parts.append(f"{name}:{f'{event.run_id}@{event.timestamp}' if event else '-'}")
    return hashlib.sha256(f"{partition}|{'|'.join(parts)}".encode()).hexdigest()[:16]


def build_sensor(settings: Settings, jobs: Sequence) -> dg.SensorDefinition:
    """The ``stale_study`` sensor for the profile of ``settings``, targeting ``jobs`` (``btc_study``,
    ``wfa_seeds``, ``ablation_runs`` and ``summarise_seeds``; see the module docstring)."""
    tags = {"btc_assets/profile": settings.profile.name, "btc_assets/launched_by": "stale_study"}

    @dg.sensor(
        name="stale_study",
        jobs=list(jobs),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Launches what is unsynced, in order: the chain, then exactly the stale or missing seed and "
        "ablation partitions of the profile, then the summary (off by default; turn it on to rerun what a code, "
        "settings or data change made stale, and leave it on with the daily_update schedule).",
    )
    def stale_study_sensor(context: dg.SensorEvaluationContext):
        repository = context.repository_def
        instance, asset_graph = context.instance, repository.asset_graph
        if _other_in_flight(instance):
            return
        chain = list(repository.get_job("btc_study").asset_layer.executable_asset_keys)
        unsynced = unsynced_chain(instance, asset_graph, chain)
        if unsynced:
            state = _keys_state(instance, asset_graph, unsynced, [k.to_user_string() for k in chain])
            yield dg.RunRequest(run_key=f"btc_study:{state}", job_name="btc_study", asset_selection=unsynced, tags=tags)
            return
        pending = False
        for job, keys in wanted_partitions(settings).items():
            asset, inputs = TARGETS[job]
            busy = _in_flight(instance, job)
            for partition in stale_partitions(instance, asset_graph, asset, keys):
                pending = pending or job == "wfa_seeds"
                if partition in busy:
                    continue
                yield dg.RunRequest(
                    run_key=f"{job}:{_state(instance, asset_graph, asset, inputs, partition)}",
                    job_name=job,
                    partition_key=partition,
                    tags=tags,
                )
        summary = list(repository.get_job("summarise_seeds").asset_layer.executable_asset_keys)
        if pending or _in_flight(instance, "wfa_seeds"):
            return
        if not all_fresh(instance, asset_graph, summary):
            state = _keys_state(instance, asset_graph, summary, ["wfa_results", "market_bars"])
            yield dg.RunRequest(run_key=f"summarise_seeds:{state}", job_name="summarise_seeds", tags=tags)

    return stale_study_sensor


def build_schedule(settings: Settings, job) -> dg.ScheduleDefinition:
    """The ``daily_update`` schedule (see the module docstring): ``job`` is ``btc_study``, of which it runs the raw
    assets."""

    @dg.schedule(
        name="daily_update",
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Every day at 02:00 UTC: re-read the raw market data (the download source fetches only what "
        "is new); with the stale_study sensor on, whatever changed is then brought up to date.",
    )
    def daily_update(context: dg.ScheduleEvaluationContext):
        day = context.scheduled_execution_time.strftime("%Y-%m-%d")
        return dg.RunRequest(
            run_key=f"daily_update:{day}",
            asset_selection=[dg.AssetKey(name) for name in RAW],
            tags={"btc_assets/profile": settings.profile.name, "btc_assets/launched_by": "daily_update"},
        )

    return daily_update
