"""One self-contained HTML report (opens offline: images inlined as base64, no scripts, no external files).

The costs in every measured figure are those the engine charges: perp taker fees, slippage and funding on perp
positions; spot fees only on the spot reference's one entry; borrowing (margin interest) is not charged yet. The
original system's figures come from another study and are shown apart, "as reported" (:data:`REPORTED_KEY`)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

CHARTS = {  # file in reports/ → caption, in reading order
    "regime_shaded_price.png": "Price with regime shading (out-of-sample filtered probabilities)",
    "moe_equity_drawdown.png": "Mixture of experts with default parameters: equity and drawdown against buy-and-hold",
    "seed_fan.png": "Walk-forward out-of-sample equity of every seed against the references",
    "fold_returns.png": "Out-of-sample return per fold across seeds",
    "regime_characteristics.png": "Regime characteristics per phase across refits (mean, volatility, ν, duration)",
    "parameter_stability.png": "Stability of the optimised gating weights and vol-target multiples across folds",
    "ablation.png": "Ablation: each improvement against the variant before it (mean and CI across seeds, paired "
                    "p-values: t-test across seeds | stationary bootstrap of daily return differences)",
}
COSTS = "perp fees, slippage and funding charged; spot fees (spot reference only) and borrowing not charged"
REPORTED_KEY = "original_system_as_reported"  # the facts entry shown as its own table, not as measured figures
REFERENCES_NOTE = ("Reference rows: buy_and_hold_spot (spot BTC, one entry fee, no funding; the headline), "
                   "buy_and_hold_perp (a 1× long perpetual paying funding), vol_targeted_buy_and_hold (leverage "
                   "from the daily-horizon GARCH volatility, the strategy's band and costs). monthly_return is the "
                   "compounded rate (1 + CAGR)^(1/12) − 1; cost_drag the costs paid per year as a fraction of "
                   "equity; cost_share_of_gross the costs over the gross (pre-cost) P&L, blank when that is not "
                   "positive.")
STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}"""


def render_report(reports: Path, summary: pd.DataFrame | None, facts: dict[str, dict[str, float]],
                  title: str = "btc-assets study report") -> Path:
    """Write ``reports/report.html`` from the charts in ``reports`` and the summary table; returns its path.
    Charts that are not there yet are listed as missing rather than silently left out."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if summary is not None:
        parts.append(f"<h2>Out-of-sample summary across seeds ({html.escape(COSTS)})</h2>")
        parts.append(summary.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0))
        parts.append(f"<p>{html.escape(REFERENCES_NOTE)}</p>")
    reported = facts.get(REPORTED_KEY)
    if reported:
        figures = {k: v for k, v in reported.items() if k != "note"}
        parts.append("<h2>Original system, as reported (not measured here)</h2>")
        parts.append(pd.DataFrame([figures], index=["original_system"]).to_html(
            float_format=lambda v: f"{v:.4f}", border=0))
        if reported.get("note"):
            parts.append(f"<p>{html.escape(str(reported['note']))}</p>")
    for name, values in ((k, v) for k, v in facts.items() if k != REPORTED_KEY):
        parts.append(f"<h3>{html.escape(name.replace('_', ' '))}</h3><pre>{html.escape(json.dumps(values, indent=1))}"
                     "</pre>")
    missing = []
    for file, caption in CHARTS.items():
        path = reports / file
        if not path.exists():
            missing.append(file)
            continue
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if missing:
        parts.append(f"<p>Not materialised yet: {html.escape(', '.join(missing))}</p>")
    parts.append("</body></html>")
    out = reports / "report.html"
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
