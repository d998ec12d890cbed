"""Evaluation asset: the summary across the seed partitions materialised so far."""

import json

import dagster as dg
import pandas as pd

from btc_assets import plots
from btc_assets.atomic import write_bytes_atomic, write_text_atomic
from btc_assets.defs.metadata import table_metadata
from btc_assets.defs.portfolio import phase_labels
from btc_assets.defs.resources import ProjectHome, Study
from btc_assets.evaluation import attribution
from btc_assets.evaluation.position import latest_positions
from btc_assets.evaluation.summary import fold_parameters, reference_frames, summarise
from btc_assets.experts import BarArrays, LineCache
from btc_assets.wfa.run import shared_lines

GROUP = "evaluation"
COMPUTED_BY = {
    "wfa_summary": (("btc_assets.evaluation.summary",), ("portfolio",)),
    "wfa_attribution": (("btc_assets.evaluation.attribution",), ("portfolio",)),
    "latest_position": (("btc_assets.evaluation.position",), ("portfolio", "position")),
}


# the figures a reader tracks across materialisations (Dagster's Plots tab): (row, column) of the summary table
HEADLINE = {
    "median_monthly_return": ("median", "monthly_return"),
    "median_cagr": ("median", "cagr"),
    "median_sharpe": ("median", "sharpe"),
    "median_max_drawdown": ("median", "max_drawdown"),
    "median_turnover_annual": ("median", "turnover_annual"),
    "median_cost_drag": ("median", "cost_drag"),
    "p05_cagr": ("p05", "cagr"),
    "p95_cagr": ("p95", "cagr"),
    "spot_cagr": ("buy_and_hold_spot", "cagr"),
    "spot_sharpe": ("buy_and_hold_spot", "sharpe"),
    "perp_cagr": ("buy_and_hold_perp", "cagr"),
}
HEADLINE_STATISTICS = (
    "median_study_pbo",
    "pbo_walk_forward",
    "pbo_walk_forward_logit",
    "pbo_walk_forward_sharpe",
    "median_dsr",
    "median_study_dsr",
    "median_psr_vs_spot",
    "spa_consistent",
    "reality_check",
    "n_trials",
)


def headline_metadata(table: pd.DataFrame, overfitting: dict, target: dict) -> dict[str, float | int]:
    """Typed top-level figures (floats, ints), so the UI plots them across materialisations."""
    out: dict[str, float | int] = {}
    for name, (row, column) in HEADLINE.items():
        if row in table.index and column in table.columns:
            out[name] = float(table.loc[row, column])
    for name in HEADLINE_STATISTICS:
        if name in overfitting:
            value = overfitting[name]
            out[name] = int(value) if name == "n_trials" else float(value)
    out["p_month_at_target"] = float(target.get("p_month_at_target", float("nan")))
    return out


ALL_SEEDS = dg.AssetIn(partition_mapping=dg.AllPartitionMapping())  # every seed partition materialised so far


@dg.asset(
    group_name=GROUP,
    kinds={"python", "parquet"},
    ins={"wfa_results": ALL_SEEDS, "wfa_folds": ALL_SEEDS, "wfa_trials": ALL_SEEDS},
)
def wfa_summary(
    context: dg.AssetExecutionContext,
    project: ProjectHome,
    study: Study,
    market_bars: pd.DataFrame,
    volatility: pd.DataFrame,
    regime_phases: pd.DataFrame,
    wfa_results: dict[str, pd.DataFrame],
    wfa_folds: dict[str, pd.DataFrame],
    wfa_trials: dict[str, pd.DataFrame],
) -> dg.Output:
    """Out-of-sample results across the seeds materialised so far: per seed and median / 5th / 95th percentile
    (compounded monthly return, arithmetic mean of complete months, CAGR, Sharpe, Sortino, Calmar, max drawdown,
    turnover, cost drag, cost share of gross P&L, survival rate), the references on the same bars
    (buy_and_hold_spot, buy_and_hold_perp, vol_targeted_buy_and_hold), the 5 %/month target with its
    probability, and PSR / DSR with the trials counted across folds, phases and seeds; the original system's
    figures as reported, in a table of their own (not measured here: unknown conventions). Costs: every leg at its
    own venue (perp and spot fees, slippage, funding, borrowing on a short spot leg). Charts:
    the fan of seed equity curves, the per-fold out-of-sample returns, the regime characteristics per phase and the
    stability of the optimised parameters across folds."""
    seeds = sorted(wfa_results)
    if not seeds:
        raise ValueError("no seed has out-of-sample results yet: materialise some wfa_results partitions first")
    oos = {s: wfa_results[s] for s in seeds}
    trials = {s: wfa_trials[s] for s in seeds if s in wfa_trials}
    portfolio = study.profile.portfolio
    summary = summarise(oos, trials, market_bars, volatility, portfolio)
    refs = reference_frames(market_bars, volatility, next(iter(oos.values()))["timestamp"], portfolio)
    fan = plots.seed_fan(oos, refs)
    fold_rows = [
        {"seed": s, "fold": f, "total_return": float((1 + g["bar_return"]).prod() - 1)}
        for s, frame in oos.items()
        for f, g in frame.groupby("fold")
    ]
    per_fold = plots.fold_bars(pd.DataFrame(fold_rows))
    folds = {s: wfa_folds[s] for s in seeds if s in wfa_folds}
    regimes_png = plots.regime_characteristics(regime_phases)
    stability = plots.parameter_stability(fold_parameters(folds))
    reports = project.paths.reports
    for name, png in (
        ("seed_fan", fan),
        ("fold_returns", per_fold),
        ("regime_characteristics", regimes_png),
        ("parameter_stability", stability),
    ):
        write_bytes_atomic(reports / f"{name}.png", png)
    reported = summary.original_reported
    write_text_atomic(
        reports / "summary.json",
        json.dumps(
            {
                "target": summary.target,
                "overfitting": summary.overfitting,
                "original_system_as_reported": reported.drop(columns="row").iloc[0].to_dict(),
            },
            indent=1,
        ),
    )
    shown = summary.table.set_index("row")
    context.log.info(f"{len(seeds)} seed(s): {', '.join(seeds)}")
    return dg.Output(
        summary.table,
        metadata={
            "seeds": len(seeds),
            **headline_metadata(shown, summary.overfitting, summary.target),
            "summary": table_metadata(summary.table),
            "original_system_as_reported": table_metadata(reported),
            "overfitting": dg.MetadataValue.json(summary.overfitting),
            "target_5pct_month": dg.MetadataValue.json(summary.target),
            "seed_fan": dg.MetadataValue.md(plots.markdown_image(fan, "seed equity fan")),
            "fold_returns": dg.MetadataValue.md(plots.markdown_image(per_fold, "per-fold returns")),
            "regime_characteristics": dg.MetadataValue.md(plots.markdown_image(regimes_png, "regime characteristics")),
            "parameter_stability": dg.MetadataValue.md(plots.markdown_image(stability, "parameter stability")),
        },
    )


@dg.asset(group_name=GROUP, kinds={"python", "parquet"}, ins={"wfa_results": ALL_SEEDS, "wfa_folds": ALL_SEEDS})
def wfa_attribution(
    context: dg.AssetExecutionContext,
    project: ProjectHome,
    study: Study,
    market_bars: pd.DataFrame,
    regime_phases: pd.DataFrame,
    wfa_results: dict[str, pd.DataFrame],
    wfa_folds: dict[str, pd.DataFrame],
) -> dg.Output:
    """Where the out-of-sample P&L comes from, across the seeds materialised so far: per expert and per regime
    phase, the gross price P&L, basis, funding, fees, slippage and borrowing and the net, each in fractions of
    equity per year, median / 5th / 95th percentile / mean across seeds (long format: expert, phase, component,
    median, p05, p95, mean, seeds; margins with expert or phase ``all``), plus the share of time in each phase
    (component ``time_share``). Each seed's cells add up to its Σ bar_return / years (``unallocated``, the rest, is
    ~0). Conventions: ``btc_assets.evaluation.attribution``. Chart: ``attribution.png``."""
    seeds = sorted(s for s in wfa_results if s in wfa_folds)
    if not seeds:
        raise ValueError("no seed has out-of-sample results yet: materialise some wfa_results partitions first")
    portfolio = study.profile.portfolio
    phases = phase_labels(regime_phases)
    # the experts' lines, shared by the seeds: the seeds' memory-mapped files when they use them (built already)
    if study.profile.wfa.shared_lines:
        arrays, wfa = BarArrays.from_market_bars(market_bars), study.profile.wfa
        lines = shared_lines(arrays, str(project.paths.lines), study.profile.experts, wfa.lines_resident_mb)
    else:
        lines = LineCache(maxsize=256)
    runs = {
        s: attribution.wfa_attribution(wfa_results[s], wfa_folds[s], market_bars, portfolio, phases, lines)
        for s in seeds
    }
    table = attribution.across_seeds({s: r.cells for s, r in runs.items()}, {s: r.time_share for s, r in runs.items()})
    unallocated = max(
        float(
            r.cells.loc[r.cells["expert"] == attribution.UNALLOCATED, list(attribution.COMPONENTS)]
            .abs()
            .to_numpy()
            .max()
        )
        for r in runs.values()
    )
    chart = plots.attribution_chart(table)
    write_bytes_atomic(project.paths.reports / "attribution.png", chart)
    view = attribution.margins_view(table, scale=100.0)
    context.log.info(
        f"attribution of {len(seeds)} seed(s), %/yr (median across seeds):\n{view.to_string(float_format='%.3f')}"
    )
    return dg.Output(
        table,
        metadata={
            "seeds": len(seeds),
            "attribution_pct_per_year": table_metadata(view.reset_index(), digits=4),
            "net_by_expert_and_phase_pct_per_year": table_metadata(
                attribution.net_grid(table, scale=100.0).reset_index(), digits=4
            ),
            "max_unallocated_per_year": unallocated,
            "attribution_chart": dg.MetadataValue.md(plots.markdown_image(chart, "P&L attribution")),
        },
    )


@dg.asset(group_name=GROUP, kinds={"python", "parquet"}, ins={"wfa_results": ALL_SEEDS, "wfa_folds": ALL_SEEDS})
def latest_position(
    context: dg.AssetExecutionContext,
    study: Study,
    market_bars: pd.DataFrame,
    regime_probabilities: pd.DataFrame,
    wfa_results: dict[str, pd.DataFrame],
    wfa_folds: dict[str, pd.DataFrame],
) -> dg.Output:
    """The position to hold in the bar after the last out-of-sample bar, per seed and across the seeds (median,
    5th / 95th percentile, standard deviation): the directional (perp) and carry (long perp / short spot) orders
    each seed's latest fold decided at that close, in equity units and in BTC for ``[position] capital`` USDT, with
    the raw targets, leverage, throttle, gating weights and regime probabilities behind them; ``timestamp`` is the
    bar it is for, ``stale_hours`` how far that bar lies behind the bar after the last one in ``market_bars``.
    Research advice from a backtest: no order is sent anywhere (``btc_assets.evaluation.position``)."""
    seeds = sorted(s for s in wfa_results if s in wfa_folds)
    profile = study.profile
    table = latest_positions(
        {s: wfa_results[s] for s in seeds},
        {s: wfa_folds[s] for s in seeds},
        market_bars,
        regime_probabilities,
        profile.portfolio,
        profile.position.capital,
    )
    median = table.set_index("row").loc["median"]
    stale = float(median["stale_hours"])
    if stale > 0:
        context.log.warning(f"the position is for {median['timestamp']}, {stale:.0f} h behind the data's next bar")
    context.log.info(
        f"{len(seeds)} seed(s); median directional {median['directional']:+.3f}, carry {median['carry']:+.3f}"
    )
    return dg.Output(
        table,
        metadata={
            "seeds": len(seeds),
            "for_bar": str(median["timestamp"]),
            "stale_hours": stale,
            "median_directional": float(median["directional"]),
            "median_carry": float(median["carry"]),
            "median_directional_btc": float(median["directional_btc"]),
            "capital_usdt": float(profile.position.capital),
            "positions": table_metadata(
                table[["row", "directional", "carry", "directional_btc", "carry_btc", "leverage", "throttle"]],
                digits=4,
            ),
        },
    )


assets = [wfa_summary, wfa_attribution, latest_position]
