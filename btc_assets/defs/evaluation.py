"""Evaluation asset: the summary across the seed partitions materialised so far."""

import json

import dagster as dg
import pandas as pd

from btc_assets import plots
from btc_assets.defs.resources import LOAD_PROFILE, ProjectHome, StudySettings, code_version
from btc_assets.evaluation.summary import fold_parameters, reference_frames, summarise
from btc_assets.storage import Warehouse

GROUP = "evaluation"


@dg.asset(group_name=GROUP, kinds={"python", "parquet"}, code_version=code_version(2, LOAD_PROFILE.portfolio),
          deps=["wfa_results", "wfa_folds", "wfa_trials"])
def wfa_summary(context: dg.AssetExecutionContext, project: ProjectHome, study: StudySettings,
                market_bars: pd.DataFrame, volatility: pd.DataFrame, regime_phases: pd.DataFrame) -> dg.Output:
    """Out-of-sample results across the seeds materialised so far: per seed and median / 5th / 95th percentile
    (compounded monthly return, arithmetic mean of complete months, CAGR, Sharpe, Sortino, Calmar, max drawdown,
    turnover, cost drag, cost share of gross P&L, survival rate), the references on the same bars
    (buy_and_hold_spot, buy_and_hold_perp, vol_targeted_buy_and_hold), the 5 %/month target with its
    probability, and PSR / DSR with the trials counted across folds, phases and seeds; the original system's
    figures as reported, in a table of their own (not measured here: unknown conventions). Costs: perp fees,
    slippage and funding (spot fees on the spot reference only; borrowing not charged). Charts:
    the fan of seed equity curves, the per-fold out-of-sample returns, the regime characteristics per phase and the
    stability of the optimised parameters across folds."""
    warehouse = Warehouse(project.paths.warehouse)
    seeds = warehouse.partitions("wfa_results")
    oos = {s: warehouse.read("wfa_results", s) for s in seeds}
    trials = {s: warehouse.read("wfa_trials", s) for s in warehouse.partitions("wfa_trials") if s in oos}
    portfolio = study.get().portfolio
    summary = summarise(oos, trials, market_bars, volatility, portfolio)
    refs = reference_frames(market_bars, volatility, next(iter(oos.values()))["timestamp"], portfolio)
    fan = plots.seed_fan(oos, refs)
    fold_rows = [{"seed": s, "fold": f, "total_return": float((1 + g["bar_return"]).prod() - 1)}
                 for s, frame in oos.items() for f, g in frame.groupby("fold")]
    per_fold = plots.fold_bars(pd.DataFrame(fold_rows))
    folds = {s: warehouse.read("wfa_folds", s) for s in warehouse.partitions("wfa_folds") if s in oos}
    regimes_png = plots.regime_characteristics(regime_phases)
    stability = plots.parameter_stability(fold_parameters(folds))
    reports = project.paths.reports
    (reports / "seed_fan.png").write_bytes(fan)
    (reports / "fold_returns.png").write_bytes(per_fold)
    (reports / "regime_characteristics.png").write_bytes(regimes_png)
    (reports / "parameter_stability.png").write_bytes(stability)
    reported = summary.original_reported
    (reports / "summary.json").write_text(json.dumps({
        "target": summary.target, "overfitting": summary.overfitting,
        "original_system_as_reported": reported.drop(columns="row").iloc[0].to_dict(),
    }, indent=1))
    shown = summary.table.set_index("row")
    context.log.info(f"{len(seeds)} seed(s): {', '.join(seeds)}")
    return dg.Output(summary.table, metadata={
        "seeds": len(seeds),
        "summary": dg.MetadataValue.md(shown.to_markdown(floatfmt=".4f")),
        "target_5pct_month": dg.MetadataValue.json(summary.target),
        "original_system_as_reported": dg.MetadataValue.md(reported.to_markdown(index=False, floatfmt=".4f")),
        "overfitting": dg.MetadataValue.json(summary.overfitting),
        "seed_fan": dg.MetadataValue.md(plots.markdown_image(fan, "seed equity fan")),
        "fold_returns": dg.MetadataValue.md(plots.markdown_image(per_fold, "per-fold returns")),
        "regime_characteristics": dg.MetadataValue.md(plots.markdown_image(regimes_png, "regime characteristics")),
        "parameter_stability": dg.MetadataValue.md(plots.markdown_image(stability, "parameter stability")),
    })


assets = [wfa_summary]
