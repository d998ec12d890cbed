"""Evaluation asset: the summary across the seed partitions materialised so far."""

import json

import dagster as dg
import pandas as pd

from btc_assets import plots
from btc_assets.defs.portfolio import phase_labels
from btc_assets.defs.resources import LOAD_PROFILE, ProjectHome, StudySettings, code_version
from btc_assets.evaluation import attribution
from btc_assets.evaluation.summary import fold_parameters, reference_frames, summarise
from btc_assets.experts import LineCache
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
    figures as reported, in a table of their own (not measured here: unknown conventions). Costs: every leg at its
    own venue (perp and spot fees, slippage, funding, borrowing on a short spot leg). Charts:
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


@dg.asset(group_name=GROUP, kinds={"python", "parquet"}, code_version=code_version(1, LOAD_PROFILE.portfolio),
          deps=["wfa_results", "wfa_folds"])
def wfa_attribution(context: dg.AssetExecutionContext, project: ProjectHome, study: StudySettings,
                    market_bars: pd.DataFrame, regime_phases: pd.DataFrame) -> dg.Output:
    """Where the out-of-sample P&L comes from, across the seeds materialised so far: per expert and per regime
    phase, the gross price P&L, basis, funding, fees, slippage and borrowing and the net, each in fractions of
    equity per year, median / 5th / 95th percentile / mean across seeds (long format: expert, phase, component,
    median, p05, p95, mean, seeds; margins with expert or phase ``all``), plus the share of time in each phase
    (component ``time_share``). Each seed's cells add up to its Σ bar_return / years (``unallocated``, the rest, is
    ~0). Conventions: ``btc_assets.evaluation.attribution``. Chart: ``attribution.png``."""
    warehouse = Warehouse(project.paths.warehouse)
    with_folds = set(warehouse.partitions("wfa_folds"))
    seeds = [s for s in warehouse.partitions("wfa_results") if s in with_folds]
    if not seeds:
        raise ValueError("no seed has out-of-sample results yet: materialise some wfa_results partitions first")
    portfolio = study.get().portfolio
    phases = phase_labels(regime_phases)
    lines = LineCache(maxsize=256)  # the experts' lines, shared by the seeds
    runs = {s: attribution.wfa_attribution(warehouse.read("wfa_results", s), warehouse.read("wfa_folds", s),
                                           market_bars, portfolio, phases, lines) for s in seeds}
    table = attribution.across_seeds({s: r.cells for s, r in runs.items()},
                                     {s: r.time_share for s, r in runs.items()})
    unallocated = max(float(r.cells.loc[r.cells["expert"] == attribution.UNALLOCATED,
                                        list(attribution.COMPONENTS)].abs().to_numpy().max()) for r in runs.values())
    chart = plots.attribution_chart(table)
    (project.paths.reports / "attribution.png").write_bytes(chart)
    view = attribution.margins_view(table, scale=100.0)
    context.log.info(f"attribution of {len(seeds)} seed(s), %/yr (median across seeds):\n"
                     f"{view.to_string(float_format='%.3f')}")
    return dg.Output(table, metadata={
        "seeds": len(seeds),
        "attribution_pct_per_year": dg.MetadataValue.md(attribution.markdown(view)),
        "net_by_expert_and_phase_pct_per_year": dg.MetadataValue.md(
            attribution.markdown(attribution.net_grid(table, scale=100.0))),
        "max_unallocated_per_year": unallocated,
        "attribution_chart": dg.MetadataValue.md(plots.markdown_image(chart, "P&L attribution")),
    })


assets = [wfa_summary, wfa_attribution]
