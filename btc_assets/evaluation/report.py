"""One self-contained HTML report (opens offline: images inlined as base64, no scripts, no external files)."""

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
        parts.append("<h2>Out-of-sample summary across seeds (all costs)</h2>")
        parts.append(summary.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0))
    for name, values in facts.items():
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
