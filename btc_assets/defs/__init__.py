"""The Dagster face of btc-assets: assets, resources and jobs. Computation lives in the stage modules."""

from __future__ import annotations

import multiprocessing

import dagster as dg

from btc_assets.config import Profile
from btc_assets.defs import ablation, evaluation, experts, ingestion, portfolio, regimes, volatility, wfa
from btc_assets.defs.automation import build_schedule, build_sensor
from btc_assets.defs.resources import default_resources
from btc_assets.settings import Settings, resolve_settings
from btc_assets.versions import code_version

_MODULES = (ingestion, volatility, regimes, experts, portfolio, wfa, evaluation, ablation)
ALL_ASSETS = [a for module in _MODULES for a in module.assets]  # unversioned: build_definitions stamps them
COMPUTED_BY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    name: spec for module in _MODULES for name, spec in module.COMPUTED_BY.items()
}


def asset_code_version(name: str, profile: Profile) -> str:
    """Asset ``name``'s code version under ``profile``: the source digest of the modules that compute it plus the
    hash of the settings sections it reads (``COMPUTED_BY``; :func:`btc_assets.versions.code_version`)."""
    modules, sections = COMPUTED_BY[name]
    return code_version(modules, *(getattr(profile, section) for section in sections))


def versioned_assets(profile: Profile) -> list[dg.AssetsDefinition]:
    """Every asset with its code version under ``profile`` (an asset missing from ``COMPUTED_BY`` is an error)."""
    missing = [k.to_user_string() for a in ALL_ASSETS for k in a.keys if k.to_user_string() not in COMPUTED_BY]
    if missing:
        raise ValueError(f"no COMPUTED_BY entry (modules, settings) for asset(s) {', '.join(missing)}")
    return [
        a.map_asset_specs(
            lambda spec: spec.replace_attributes(code_version=asset_code_version(spec.key.to_user_string(), profile))
        )
        for a in ALL_ASSETS
    ]


# Every step in a process of its own, as Dagster's default executor runs it (a crashed step fails its run, and the UI
# says so), but forked from a server that has already imported Dagster and the project (forkserver, preloaded)
# instead of a new interpreter importing them again: the chain's 13 steps (quick profile, fits cached, through
# ``dagster job execute``) took 47 s and 68 core-s, now 29-32 s and 40-44 core-s, same outputs. The CLI runs its
# jobs in process and does not use it.
# (where the platform has no forkserver, Windows: a fresh interpreter per step, Dagster's default)
_FORKSERVER = "forkserver" in multiprocessing.get_all_start_methods()
EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["btc_assets.defs"]}} if _FORKSERVER else {"spawn": {}}},
    name="multiprocess_preloaded",
)
WFA_SELECTION = dg.AssetSelection.assets(*wfa.walk_forward.keys)
SUMMARY_SELECTION = dg.AssetSelection.assets(
    *evaluation.wfa_summary.keys, *evaluation.wfa_attribution.keys, *evaluation.latest_position.keys
)
ABLATION_SELECTION = dg.AssetSelection.groups(ablation.GROUP)
CHAIN_SELECTION = dg.AssetSelection.all() - WFA_SELECTION - SUMMARY_SELECTION - ABLATION_SELECTION
study_job = dg.define_asset_job(
    "btc_study",
    selection=CHAIN_SELECTION,
    description="Materialise the chain up to the portfolio (everything that is not per seed).",
)
seeds_job = dg.define_asset_job(
    "wfa_seeds",
    selection=WFA_SELECTION,
    description="The walk-forward optimisation of one seed partition (one run per seed).",
)

try:  # the optional extra "celery" (pip install -e ".[celery]"): the seeds on a Celery cluster
    from dagster_celery import celery_executor
except ImportError:  # pragma: no cover - without the extra the job is not defined
    celery_executor = None
# the same seed partitions, each run's step sent to a Celery queue and run by whichever worker takes it (deploy/celery)
seeds_celery_job = (
    dg.define_asset_job(
        "wfa_seeds_celery",
        selection=WFA_SELECTION,
        executor_def=celery_executor,
        description="The walk-forward optimisation of one seed partition, its step run by a Celery worker "
        "(deploy/celery/run_config.yaml; the instance and the Optuna storage shared, e.g. on PostgreSQL).",
    )
    if celery_executor is not None
    else None
)

summary_job = dg.define_asset_job(
    "summarise_seeds",
    selection=SUMMARY_SELECTION,
    description="Summarise the seed partitions materialised so far.",
)

ABLATION_RUNS_SELECTION = dg.AssetSelection.assets(*ablation.ablation_run.keys)
ablation_runs_job = dg.define_asset_job(
    "ablation_runs",
    selection=ABLATION_RUNS_SELECTION,
    description="The walk-forward optimisation of one ablation (variant, seed) partition (one run per partition).",
)
ablation_job = dg.define_asset_job(
    "ablation_study",
    selection=ABLATION_SELECTION - ABLATION_RUNS_SELECTION,
    description="The ablation's Gaussian-HMM regimes and its table over the materialised (variant, seed) runs.",
)
JOBS = [study_job, seeds_job, summary_job, ablation_runs_job, ablation_job]
JOBS += [seeds_celery_job] if seeds_celery_job is not None else []


def build_definitions(
    home: str | None = None, profile: str | None = None, *, settings: Settings | None = None
) -> dg.Definitions:
    """All definitions for one home and profile. The settings are resolved here, once
    (:func:`btc_assets.settings.resolve_settings`, unless ``settings`` is given): the assets' code versions and
    the resources (``study`` is the resolved object) come from the same settings."""
    settings = settings or resolve_settings(home, profile)
    return dg.Definitions(
        assets=versioned_assets(settings.profile),
        asset_checks=ingestion.freshness_checks,
        jobs=JOBS,
        schedules=[build_schedule(settings, study_job)],
        sensors=[
            build_sensor(settings, [study_job, seeds_job, ablation_runs_job, summary_job]),
            ingestion.freshness_sensor,
        ],
        resources=default_resources(settings),
        executor=EXECUTOR,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What ``dagster dev -m btc_assets.defs`` loads: the definitions of the environment's home and profile
    (``btc-assets ui`` sets them), resolved when the code location loads, not when this module is imported."""
    return build_definitions()
