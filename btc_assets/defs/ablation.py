"""Ablation assets: Gaussian-HMM regimes (the original design), one walk-forward run per (variant, seed) partition,
and the ablation table across them."""

from dataclasses import replace

import dagster as dg
import pandas as pd

from btc_assets import plots
from btc_assets.atomic import write_bytes_atomic
from btc_assets.config import seed_from_key
from btc_assets.defs.metadata import table_metadata
from btc_assets.defs.partitions import ablation_key, ablation_partitions
from btc_assets.defs.resources import ProjectHome, Study
from btc_assets.evaluation.ablation import SHOWN, ablation_table, design_snooping, run_variant
from btc_assets.evaluation.summary import SPOT, reference_frames
from btc_assets.regimes import compute_regimes

GROUP = "ablation"
POOL = "wfa"  # the same pool as the seeds: at most `default_limit` walk-forward runs at once on the instance
_RUNS = (("btc_assets.evaluation.ablation",), ("ablation", "wfa", "portfolio", "schedule", "regimes", "experts"))
COMPUTED_BY = {
    "gaussian_regime_probabilities": (("btc_assets.regimes",), ("schedule", "regimes")),
    "ablation_oos": _RUNS,
    "ablation_trials": _RUNS,
    "ablation": _RUNS,
    "ablation_seeds": _RUNS,
}


@dg.asset(group_name=GROUP, kinds={"python", "hmmlearn", "parquet"})
def gaussian_regime_probabilities(
    context: dg.AssetExecutionContext,
    project: ProjectHome,
    study: Study,
    market_bars: pd.DataFrame,
    volatility: pd.DataFrame,
) -> pd.DataFrame:
    """Filtered (forward-only) phase probabilities from a Gaussian HMM refitted at every fold start, on the same
    causal features and schedule as ``regime_probabilities``: the original design's regimes, for the ablation.
    Refits are kept by their inputs, like the Student-t model's."""
    profile = study.profile
    fits = project.fits("btc_assets.regimes")
    settings = replace(profile.regimes, emission="gaussian")
    fit = compute_regimes(market_bars, volatility, profile.schedule, settings, fits)
    context.add_output_metadata(
        {
            "refits": len(fit.refits),
            "refits_fitted_now": fits.misses,
            "phase_names": fit.refits["phase_names"].iloc[-1],
        }
    )
    return fit.probabilities


@dg.multi_asset(
    group_name=GROUP,
    partitions_def=ablation_partitions,
    pool=POOL,
    outs={
        "ablation_oos": dg.AssetOut(
            kinds={"python", "optuna", "parquet"},
            description="One (variant, seed)'s stitched out-of-sample bars, as wfa_results for a seed.",
        ),
        "ablation_trials": dg.AssetOut(
            kinds={"python", "parquet"},
            description="Every Optuna trial of one (variant, seed), as wfa_trials; for the walk-forward PBO.",
        ),
    },
)
def ablation_run(
    context: dg.AssetExecutionContext,
    project: ProjectHome,
    study: Study,
    market_bars: pd.DataFrame,
    volatility: pd.DataFrame,
    regime_probabilities: pd.DataFrame,
    gaussian_regime_probabilities: pd.DataFrame,
):
    """The walk-forward optimisation of one ablation variant on one seed (partition ``variant`` × ``seed``): the
    same data, costs and seed as the study, only the variant's settings changed
    (``btc_assets.evaluation.ablation``); resumes from its own checkpoint after any crash."""
    keys = context.partition_key.keys_by_dimension
    variant, seed = keys["variant"], keys["seed"]
    result = run_variant(
        variant,
        seed_from_key(seed),
        market_bars,
        volatility,
        regime_probabilities,
        gaussian_regime_probabilities,
        study.profile,
        str(project.paths.checkpoints),
        say=context.log.info,
        lines=str(project.paths.lines),
    )
    context.log.info(f"ablation {variant} {seed}: done ({result.trials_run} trials run now)")
    yield dg.Output(
        result.oos,
        output_name="ablation_oos",
        metadata={
            "variant": variant,
            "seed": seed,
            "trials_run_now": result.trials_run,
            "trials_from_checkpoint": result.trials_from_checkpoint,
            "studies_retested": result.studies_retested,
            "resumed": result.resumed,
            "final_equity": float(result.oos["equity"].iloc[-1]),
            "checkpoint_fingerprint": result.fingerprint.key,
        },
    )
    yield dg.Output(result.trials, output_name="ablation_trials", metadata={"trials": len(result.trials)})


def configured_runs(frames: dict[str, pd.DataFrame], variants, seeds) -> dict[tuple[str, int], pd.DataFrame]:
    """The frames of the configured (variant, seed) partitions, keyed (variant, seed number)."""
    out = {}
    for key, frame in frames.items():
        dims = key.keys_by_dimension
        seed = seed_from_key(dims["seed"])
        if dims["variant"] in variants and seed in seeds:
            out[(dims["variant"], seed)] = frame
    return dict(sorted(out.items(), key=lambda kv: (list(variants).index(kv[0][0]), kv[0][1])))


@dg.multi_asset(
    group_name=GROUP,
    ins={
        "ablation_oos": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
        "ablation_trials": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
    },
    outs={
        "ablation": dg.AssetOut(
            kinds={"python", "parquet"},
            description="One row per ablation variant: out-of-sample metrics (mean and confidence interval across "
            "seeds), paired tests against its reference (column versus: the variant before it in the "
            "chain, mixture_soft for the side variants) and the walk-forward PBO.",
        ),
        "ablation_seeds": dg.AssetOut(
            kinds={"python", "parquet"},
            description="One row per (variant, seed): the out-of-sample metrics of that walk-forward run.",
        ),
    },
)
def ablation(
    context: dg.AssetExecutionContext,
    project: ProjectHome,
    study: Study,
    market_bars: pd.DataFrame,
    volatility: pd.DataFrame,
    ablation_oos: dict[str, pd.DataFrame],
    ablation_trials: dict[str, pd.DataFrame],
):
    """The ablation table over the configured variants and seeds (``[ablation]``) whose ``ablation_runs``
    partitions are materialised: from the original design (Ichimoku only, Gaussian HMM, no vol targeting) through
    vol targeting and the Student-t HMM to the soft mixture of experts, and the side variants off it (hard
    switching, gating-only search, TPE sampler). Confidence intervals across seeds, paired tests of each variant
    against its reference (``versus``), the walk-forward PBO, data snooping against spot, and the chart."""
    profile = study.profile
    settings = profile.ablation
    results = configured_runs(ablation_oos, settings.variants, settings.seeds)
    trials = configured_runs(ablation_trials, settings.variants, settings.seeds)
    wanted = {(v, s) for v in settings.variants for s in settings.seeds}
    missing = sorted(wanted - set(results), key=lambda k: (settings.variants.index(k[0]), k[1]))
    if missing:
        raise ValueError(
            f"{len(missing)} configured ablation run(s) not materialised yet, e.g. "
            + ", ".join(str(ablation_key(v, s)) for v, s in missing[:5])
            + ": materialise those ablation_runs partitions first (btc-assets ablation launches them)"
        )
    context.log.info(f"ablation: {len(settings.variants)} variants × seeds {list(settings.seeds)}")
    table, per_seed = ablation_table(results, profile, trials=trials)
    spot = reference_frames(market_bars, volatility, next(iter(results.values()))["timestamp"], profile.portfolio)[SPOT]
    snooping = design_snooping(results, spot, profile)
    chart = plots.ablation_chart(table, per_seed)
    write_bytes_atomic(project.paths.reports / "ablation.png", chart)
    yield dg.Output(
        table,
        output_name="ablation",
        metadata={
            "seeds": dg.MetadataValue.json(list(settings.seeds)),
            "table": table_metadata(table[[c for c in SHOWN if c in table]]),
            "ablation_chart": dg.MetadataValue.md(plots.markdown_image(chart, "ablation")),
            "snooping_vs_spot": dg.MetadataValue.json(snooping),
        },
    )
    yield dg.Output(per_seed, output_name="ablation_seeds", metadata={"runs": len(per_seed)})


assets = [gaussian_regime_probabilities, ablation_run, ablation]
