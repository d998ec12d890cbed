"""Volatility asset: realized estimators and walk-forward GARCH forecasts on the hourly grid."""

import dagster as dg
import pandas as pd

from btc_assets import volatility as vol
from btc_assets.defs.resources import ProjectHome, Study

GROUP = "volatility"
COMPUTED_BY = {"volatility": (("btc_assets.volatility",), ("schedule", "volatility"))}


@dg.asset(group_name=GROUP, kinds={"python", "parquet"})
def volatility(
    context: dg.AssetExecutionContext, project: ProjectHome, study: Study, market_bars: pd.DataFrame
) -> dg.Output:
    """Per hourly bar: realized volatility (close-to-close, Parkinson, Garman–Klass, Yang–Zhang; trailing windows)
    and the GARCH forecast ``sigma`` of bar t+1's volatility given data up to t (annualised; ``sigma_bar`` per bar).

    GARCH parameters are re-estimated monthly and at every walk-forward fold start, each time on data before the
    refit point only; between refits the variance is filtered bar by bar with fixed parameters. Fits are kept by
    their inputs (``fits/volatility``): after new bars only the new refit points are fitted.
    """
    profile = study.profile
    settings = profile.volatility
    fits = project.fits(COMPUTED_BY["volatility"][0][0])
    out = vol.compute_volatility(market_bars, profile.schedule, settings, fits)
    losses = vol.forecast_losses(out["sigma_bar"], out["log_return"])
    refits = vol.garch_refits(out)
    context.log.info(f"GARCH: {len(refits)} refits ({fits.summary()}); losses {losses}")
    return dg.Output(
        out,
        metadata={
            "refits": len(refits),
            "refits_fitted_now": fits.misses,
            "refit_parameters": dg.MetadataValue.md(refits.to_markdown(index=False, floatfmt=".4g")),
            "forecast_losses": dg.MetadataValue.json(losses),
            "spec": f"{settings.vol}(1,1) {settings.dist} errors, seasonal={settings.seasonal}, "
            f"train window {settings.train_window} bars",
        },
    )


assets = [volatility]
