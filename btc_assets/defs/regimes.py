"""Regime assets: walk-forward Student-t HMM filtered probabilities and per-refit phase characteristics."""

import dagster as dg
import pandas as pd

from btc_assets.defs.resources import ProjectHome, Study
from btc_assets.regimes import FEATURES, compute_regimes

GROUP = "regimes"
COMPUTED_BY = {
    name: (("btc_assets.regimes",), ("schedule", "regimes")) for name in ("regime_probabilities", "regime_phases")
}


@dg.multi_asset(
    group_name=GROUP,
    outs={
        "regime_probabilities": dg.AssetOut(
            kinds={"python", "parquet"},
            description="Filtered (forward-only) Student-t HMM phase probabilities per walk-forward refit: over the "
            "refit's training window and the test window after it (columns p_0.. in canonical phase "
            "order; segment = train | validation | purge | test). Never smoothed.",
        ),
        "regime_phases": dg.AssetOut(
            kinds={"python", "parquet"},
            description="Per refit and phase: name, feature means, degrees of freedom ν, expected duration, and the "
            "refit's likelihood, BIC and the Gaussian-HMM comparison.",
        ),
    },
)
def regimes(
    context: dg.AssetExecutionContext,
    project: ProjectHome,
    study: Study,
    market_bars: pd.DataFrame,
    volatility: pd.DataFrame,
):
    """Fit the K-state Student-t HMM at every fold start (warm-started, restarts on the first) on causal features
    standardised with training-window statistics only; filter each refit's train and test stretch. Refits are kept
    by their inputs (``fits/regimes``): after new bars only the new folds are fitted."""
    profile = study.profile
    fits = project.fits(COMPUTED_BY["regime_probabilities"][0][0])
    fit = compute_regimes(market_bars, volatility, profile.schedule, profile.regimes, fits)
    refits = fit.refits
    phases = fit.phases.merge(refits, on="fold", how="left")
    context.log.info(
        f"{len(refits)} refits ({fits.summary()}) in {refits['seconds'].sum():.1f} s; "
        f"phases: {refits['phase_names'].iloc[-1]}"
    )
    summary = refits[
        [
            "fold",
            "train_end",
            "n_train",
            "iterations",
            "loglik",
            "bic",
            "gaussian_loglik",
            "gaussian_bic",
            "phase_names",
        ]
    ]
    last = fit.phases[fit.phases["fold"] == refits["fold"].iloc[-1]]
    yield dg.Output(
        fit.probabilities,
        output_name="regime_probabilities",
        metadata={
            "refits": len(refits),
            "refits_fitted_now": fits.misses,
            "features": ", ".join(FEATURES),
            "phase_names": refits["phase_names"].iloc[-1],
            "bic_student_t_minus_gaussian_last": float(refits["bic"].iloc[-1] - refits["gaussian_bic"].iloc[-1]),
            "refit_summary": dg.MetadataValue.md(summary.to_markdown(index=False, floatfmt=".6g")),
        },
    )
    yield dg.Output(
        phases,
        output_name="regime_phases",
        metadata={
            "last_refit_phases": dg.MetadataValue.md(last.to_markdown(index=False, floatfmt=".4g")),
        },
    )


assets = [regimes]
