"""Ablation assets: Gaussian-HMM regimes (the original design) and the walk-forward ablation across variants."""

from dataclasses import replace

import dagster as dg
import pandas as pd

from btc_assets import plots, wfa
from btc_assets.defs.resources import LOAD_PROFILE, ProjectHome, StudySettings, code_version
from btc_assets.evaluation.ablation import (
    ablation_table,
    default_jobs,
    design_snooping,
    needs_gaussian_regimes,
    run_ablation,
)
from btc_assets.evaluation.summary import SPOT, reference_frames
from btc_assets.regimes import compute_regimes

GROUP = "ablation"
_GAUSSIAN = replace(LOAD_PROFILE.regimes, emission="gaussian")


@dg.asset(group_name=GROUP, kinds={"python", "hmmlearn", "parquet"},
          code_version=code_version(1, LOAD_PROFILE.schedule, _GAUSSIAN))
def gaussian_regime_probabilities(context: dg.AssetExecutionContext, study: StudySettings,
                                  market_bars: pd.DataFrame, volatility: pd.DataFrame) -> pd.DataFrame:
    """Filtered (forward-only) phase probabilities from a Gaussian HMM refitted at every fold start, on the same
    causal features and schedule as ``regime_probabilities``: the original design's regimes, for the ablation."""
    profile = study.get()
    fit = compute_regimes(market_bars, volatility, profile.schedule, replace(profile.regimes, emission="gaussian"))
    context.add_output_metadata({"refits": len(fit.refits), "phase_names": fit.refits["phase_names"].iloc[-1]})
    return fit.probabilities


# revision 2: side variants compared with mixture_soft, every variant's sampler pinned (random; tpe for one)
_VERSION = f"{wfa.CODE_VERSION}-" + code_version(2, LOAD_PROFILE.ablation, LOAD_PROFILE.wfa, LOAD_PROFILE.portfolio,
                                                  LOAD_PROFILE.schedule, LOAD_PROFILE.regimes)


@dg.multi_asset(
    group_name=GROUP,
    outs={
        "ablation": dg.AssetOut(
            kinds={"python", "optuna", "parquet"}, code_version=_VERSION,
            description="One row per ablation variant: out-of-sample metrics (mean and confidence interval across "
                        "seeds), paired tests against its reference (column versus: the variant before it in the "
                        "chain, mixture_soft for the side variants) and the walk-forward PBO.",
        ),
        "ablation_seeds": dg.AssetOut(
            kinds={"python", "parquet"}, code_version=_VERSION,
            description="One row per (variant, seed): the out-of-sample metrics of that walk-forward run.",
        ),
    },
)
def ablation(context: dg.AssetExecutionContext, project: ProjectHome, study: StudySettings,
             market_bars: pd.DataFrame, volatility: pd.DataFrame, regime_probabilities: pd.DataFrame,
             gaussian_regime_probabilities: pd.DataFrame):
    """Run the same walk-forward optimisation (data, costs, seeds) for each variant, from the original design
    (Ichimoku only, Gaussian HMM, no vol targeting) through vol targeting and the Student-t HMM to the soft mixture of
    experts, and the side variants off it (hard switching, gating-only search, TPE sampler); each (variant, seed)
    resumes from its own checkpoint. Table with confidence intervals across seeds and paired tests of each variant
    against its reference (``versus``), plus the ablation chart."""
    profile = study.get()
    settings = profile.ablation
    gaussian = gaussian_regime_probabilities if needs_gaussian_regimes(settings.variants) else None
    jobs = min(default_jobs(), len(settings.variants) * len(settings.seeds))
    context.log.info(f"ablation: {len(settings.variants)} variants × seeds {list(settings.seeds)}, {jobs} process(es)")
    trials: dict[tuple[str, int], pd.DataFrame] = {}
    results = run_ablation(market_bars, volatility, regime_probabilities, gaussian, profile,
                           str(project.paths.checkpoints), jobs=jobs, say=context.log.info, trials_out=trials)
    table, per_seed = ablation_table(results, profile, trials=trials)
    spot = reference_frames(market_bars, volatility, next(iter(results.values()))["timestamp"],
                            profile.portfolio)[SPOT]
    snooping = design_snooping(results, spot, profile)
    chart = plots.ablation_chart(table, per_seed)
    (project.paths.reports / "ablation.png").write_bytes(chart)
    shown = ["variant", "n_seeds", "sharpe", "sharpe_lo", "sharpe_hi", "monthly_return", "max_drawdown",
             "survival", "versus", "d_sharpe", "p_sharpe_t", "p_sharpe_wilcoxon", "d_daily_mean_ann",
             "p_daily_bootstrap", "pbo_walk_forward"]
    yield dg.Output(table, output_name="ablation", metadata={
        "seeds": dg.MetadataValue.json(list(settings.seeds)),
        "table": dg.MetadataValue.md(table[[c for c in shown if c in table]].to_markdown(index=False,
                                                                                          floatfmt=".4f")),
        "ablation_chart": dg.MetadataValue.md(plots.markdown_image(chart, "ablation")),
        "snooping_vs_spot": dg.MetadataValue.json(snooping),
    })
    yield dg.Output(per_seed, output_name="ablation_seeds", metadata={"runs": len(per_seed)})


assets = [gaussian_regime_probabilities, ablation]
