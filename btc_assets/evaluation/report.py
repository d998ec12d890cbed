"""One self-contained HTML report (opens offline: images inlined as base64, no scripts, no external files).

The costs in every measured figure are those the engine charges, each leg at its own venue: perp fees on the
directional leg and the carry's perp leg, spot fees on the carry's spot leg (and the spot reference's entry),
slippage, funding on perp positions and borrowing on a short spot leg. The
original system's figures come from another study and are shown apart, "as reported" (:data:`REPORTED_KEY`)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from btc_assets.atomic import write_text_atomic
from btc_assets.evaluation.attribution import margins_view, net_grid

CHARTS = {  # file in reports/ → caption, in reading order
    "regime_shaded_price.png": "Price with regime shading (out-of-sample filtered probabilities)",
    "moe_equity_drawdown.png": "Mixture of experts with default parameters: equity and drawdown against buy-and-hold",
    "seed_fan.png": "Walk-forward out-of-sample equity of every seed against the references",
    "fold_returns.png": "Out-of-sample return per fold across seeds",
    "regime_characteristics.png": "Regime characteristics per phase across refits (mean, volatility, ν, duration)",
    "parameter_stability.png": "Stability of the optimised gating weights and vol-target multiples across folds",
    "ablation.png": "Ablation: each step of the chain against the variant before it, and the side variants "
    "(hard switching, gating-only search, TPE sampler) against mixture_soft (mean and CI across "
    "seeds, paired p-values: t-test across seeds | stationary bootstrap of daily return "
    "differences)",
}
COSTS = (
    "costs charged per leg: perp fees (directional and the carry's perp leg), spot fees (the carry's spot leg), "
    "slippage, funding, borrowing on a short spot leg"
)
REPORTED_KEY = "original_system_as_reported"  # the facts entry shown as its own table, not as measured figures
REFERENCES_NOTE = (
    "Reference rows: buy_and_hold_spot (spot BTC, one entry fee, no funding; the headline), "
    "buy_and_hold_perp (a 1× long perpetual paying funding), vol_targeted_buy_and_hold (leverage "
    "from the daily-horizon GARCH volatility, the strategy's band and costs). monthly_return is the "
    "compounded rate (1 + CAGR)^(1/12) − 1; cost_drag the costs paid per year as a fraction of "
    "equity; cost_share_of_gross the costs over the gross (pre-cost) P&L, blank when that is not "
    "positive."
)
ATTRIBUTION_CHART = "attribution.png"  # written by the wfa_attribution asset
ATTRIBUTION_NOTE = (
    "Each seed's stitched out-of-sample book split by expert and by regime phase (the phase whose "
    "probabilities decided the held position), in % of equity per year: the sum over the bars of "
    "each bar's amount (a fraction of that bar's starting equity) divided by the years. gross = "
    "directional price P&L, basis = the carry's basis P&L, funding received (negative: paid); fees, "
    "slippage and borrowing are costs, net = gross + basis + funding − fees − slippage − borrowing. "
    "Per seed the cells add up to the arithmetic return per year (Σ bar returns / years, not the "
    "CAGR); unallocated is what no share covers (~0). Shown: medians across seeds (a median of a "
    "sum is not the sum of the medians), the 5–95 % range of net, the median share of time each "
    "phase was the most probable one."
)
STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}"""


def _three_decimals(value: float) -> str:
    return f"{value:.3f}"


def render_report(
    reports: Path,
    summary: pd.DataFrame | None,
    facts: dict[str, dict[str, float]],
    title: str = "btc-assets study report",
    attribution: pd.DataFrame | None = None,
) -> Path:
    """Write ``reports/report.html`` from the charts in ``reports``, the summary table and the P&L attribution
    across seeds (``wfa_attribution``: :func:`btc_assets.evaluation.attribution.across_seeds`); returns its path.
    Charts and tables that are not there yet are listed as missing rather than silently left out."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    if summary is not None:
        parts.append(f"<h2>Out-of-sample summary across seeds ({html.escape(COSTS)})</h2>")
        parts.append(summary.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0))
        parts.append(f"<p>{html.escape(REFERENCES_NOTE)}</p>")
    missing = []
    if attribution is not None:
        parts.append("<h2>Where the out-of-sample P&amp;L comes from (% of equity per year, across seeds)</h2>")
        parts.append(f"<p>{html.escape(ATTRIBUTION_NOTE)}</p>")
        parts.append(
            margins_view(attribution, scale=100.0)
            .reset_index()
            .to_html(index=False, float_format=_three_decimals, border=0, na_rep="")
        )
        parts.append("<h3>net per expert and phase (median across seeds)</h3>")
        parts.append(net_grid(attribution, scale=100.0).to_html(float_format=_three_decimals, border=0, na_rep=""))
        chart = reports / ATTRIBUTION_CHART
        if chart.exists():
            data = base64.b64encode(chart.read_bytes()).decode()
            caption = "P&L attribution per expert and per phase (median across seeds, 5–95 % range of net)"
            parts.append(
                f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        else:
            missing.append(ATTRIBUTION_CHART)
    else:
        missing.append("wfa_attribution")
    reported = facts.get(REPORTED_KEY)
    if reported:
        figures = {k: v for k, v in reported.items() if k != "note"}
        parts.append("<h2>Original system, as reported (not measured here)</h2>")
        parts.append(
            pd.DataFrame([figures], index=["original_system"]).to_html(float_format=lambda v: f"{v:.4f}", border=0)
        )
        if reported.get("note"):
            parts.append(f"<p>{html.escape(str(reported['note']))}</p>")
    for name, values in ((k, v) for k, v in facts.items() if k != REPORTED_KEY):
        parts.append(
            f"<h3>{html.escape(name.replace('_', ' '))}</h3><pre>{html.escape(json.dumps(values, indent=1))}</pre>"
        )
    for file, caption in CHARTS.items():
        path = reports / file
        if not path.exists():
            missing.append(file)
            continue
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if missing:
        parts.append(f"<p>Not materialised yet: {html.escape(', '.join(missing))}</p>")
    parts.append("</body></html>")
    out = reports / "report.html"
    write_text_atomic(out, "\n".join(parts))
    return out
