"""Portfolio asset: the volatility-targeted mixture of experts, with metrics and charts in its metadata."""

import dagster as dg
import pandas as pd

from btc_assets import plots
from btc_assets.atomic import write_bytes_atomic
from btc_assets.defs.metadata import table_metadata
from btc_assets.defs.resources import ProjectHome, Study
from btc_assets.evaluation import attribution
from btc_assets.portfolio.tables import compute_portfolio, prepare_inputs

GROUP = "portfolio"
COMPUTED_BY = {"moe_portfolio": (("btc_assets.portfolio", "btc_assets.evaluation.attribution"), ("portfolio",))}


def _attach(project: ProjectHome, name: str, png: bytes, alt: str) -> dg.MetadataValue:
    path = project.paths.reports / f"{name}.png"
    write_bytes_atomic(path, png)
    return dg.MetadataValue.md(plots.markdown_image(png, alt) + f"\n\n`{path}`")


@dg.asset(group_name=GROUP, kinds={"python", "numba", "parquet"})
def moe_portfolio(
    context: dg.AssetExecutionContext,
    project: ProjectHome,
    study: Study,
    market_bars: pd.DataFrame,
    volatility: pd.DataFrame,
    regime_probabilities: pd.DataFrame,
    regime_phases: pd.DataFrame,
    expert_signals: pd.DataFrame,
) -> dg.Output:
    """The mixture-of-experts backtest per bar: expert weights soft-switched by the out-of-sample filtered regime
    probabilities through the gating matrix, volatility-targeted (the holding-horizon volatility), drawdown-throttled,
    rebalanced by the band / decision-interval policy and traded one bar after the signal on the perp's own bars,
    each leg paying its venue's fees, slippage, funding and (short spot) borrowing. Metadata:
    metrics against the references on the same out-of-sample bars (``buy_and_hold_spot``, the headline;
    ``buy_and_hold_perp``; ``vol_targeted_buy_and_hold``, see ``btc_assets.portfolio.metrics``), the
    equity/drawdown chart, the regime-shaded price chart and the out-of-sample P&L attribution per expert and
    phase in %/yr of equity (``btc_assets.evaluation.attribution``)."""
    settings = study.profile.portfolio
    inputs = prepare_inputs(market_bars, volatility, regime_probabilities, expert_signals, settings)
    run = compute_portfolio(inputs, settings)
    start = run.first_known
    ts = market_bars["timestamp"].iloc[start:]
    equity = plots.equity_drawdown(
        ts,
        {
            "mixture of experts": run.frame["equity"].to_numpy()[start:],
            **{name.replace("_", " "): ref["equity"].to_numpy() for name, ref in run.references.items()},
        },
        title="Out-of-sample equity and drawdown (fees per leg, slippage, funding, borrowing)",
    )
    shaded = plots.regime_shaded_price(
        market_bars["timestamp"], inputs.book.close, inputs.book.probs, phase_labels(regime_phases)
    )
    out = run.frame.reset_index(names="timestamp")
    columns = [
        "cagr",
        "monthly_return",
        "mean_monthly_return_arithmetic",
        "sharpe",
        "sortino",
        "calmar",
        "max_drawdown",
        "ann_vol",
        "tuw_longest_days",
        "turnover_annual",
        "cost_drag",
        "cost_share_of_gross",
        "hit_rate",
        "survival",
    ]
    table = run.metrics[columns]
    context.log.info(f"out-of-sample from {ts.iloc[0]}:\n{table.to_string(float_format='%.4f')}")
    att = attribution.moe_attribution(run.frame, inputs, settings, phase_labels(regime_phases))
    att_table = attribution.across_seeds({"moe": att.cells}, {"moe": att.time_share})
    att_view = attribution.margins_view(att_table, scale=100.0).drop(columns=["net_p05", "net_p95"])
    return dg.Output(
        out,
        metadata={
            "out_of_sample_start": str(ts.iloc[0]),
            "metrics": dg.MetadataValue.md(table.to_markdown(floatfmt=".4f")),
            "sharpe": float(table.loc["strategy", "sharpe"]),
            "max_drawdown": float(table.loc["strategy", "max_drawdown"]),
            "equity_drawdown": _attach(project, "moe_equity_drawdown", equity, "equity and drawdown"),
            "regime_shaded_price": _attach(project, "regime_shaded_price", shaded, "regime-shaded price"),
            "attribution_pct_per_year": table_metadata(att_view.reset_index(), digits=4),
            "attribution_net_by_expert_and_phase_pct_per_year": table_metadata(
                attribution.net_grid(att_table, scale=100.0).reset_index(), digits=4
            ),
        },
    )


def phase_labels(regime_phases: pd.DataFrame) -> list[str]:
    """One label per phase index: the names the refits gave it (e.g. ``crash/breakout`` when both occur)."""
    names = regime_phases.sort_values("fold").groupby("phase")["name"].agg(lambda s: "/".join(dict.fromkeys(s)))
    return names.sort_index().tolist()


assets = [moe_portfolio]
