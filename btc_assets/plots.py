"""Charts as PNG bytes (matplotlib, headless). The Dagster layer saves them under ``reports/`` and attaches them to
asset metadata; nothing here knows about Dagster."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

PHASE_COLOURS = {
    "calm": "#9ecae1", "trend_up": "#74c476", "chop": "#fdd0a2", "trend_down": "#fb6a4a", "crash": "#a50f15",
    "breakout": "#9e9ac8", "all": "#dddddd",
}


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows a PNG inline (the Dagster UI renders it in the asset's metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def regime_shaded_price(timestamps: pd.Series, close: np.ndarray, probs: np.ndarray, names: Sequence[str],
                        title: str = "Price with regime shading (out-of-sample filtered probabilities)") -> bytes:
    """Log price with the background shaded by the most probable phase at each bar (no shading where unknown)."""
    ts = pd.to_datetime(pd.Series(timestamps)).dt.tz_convert(None).to_numpy()
    fig, ax = plt.subplots(figsize=(12, 4.5))
    known = np.isfinite(probs).all(axis=1)
    phase = np.where(known, np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1), -1)
    for k, name in enumerate(names):
        first = name.split("/")[0]  # "crash/breakout" -> crash; "chop_1" -> chop
        colour = PHASE_COLOURS.get(first, PHASE_COLOURS.get(first.split("_")[0], "#cccccc"))
        ax.fill_between(ts, 0, 1, where=phase == k, step="post", color=colour, alpha=0.45, lw=0,
                        transform=ax.get_xaxis_transform(), label=name)
    ax.plot(ts, close, color="black", lw=0.7)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(loc="upper left", ncol=len(names), fontsize=8, frameon=False)
    ax.margins(x=0)
    return _png(fig)


def equity_drawdown(timestamps: pd.Series, curves: Mapping[str, np.ndarray],
                    title: str = "Equity and drawdown against buy-and-hold") -> bytes:
    """Equity curves (log scale, first curve emphasised) above their drawdowns."""
    ts = pd.to_datetime(pd.Series(timestamps)).dt.tz_convert(None).to_numpy()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, height_ratios=[2.2, 1])
    for i, (label, equity) in enumerate(curves.items()):
        equity = np.asarray(equity, dtype=float)
        peak = np.fmax.accumulate(equity)
        style = {"lw": 1.3, "color": "C0"} if i == 0 else {"lw": 0.8, "alpha": 0.8, "color": f"C{i}"}
        top.plot(ts, equity, label=label, **style)
        bottom.plot(ts, equity / peak - 1.0, **style)
    top.set_yscale("log")
    top.set_ylabel("equity (start = 1)")
    top.legend(loc="upper left", fontsize=8, frameon=False)
    top.set_title(title)
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    top.margins(x=0)
    return _png(fig)


def seed_fan(curves: Mapping[str, pd.DataFrame], references: Mapping[str, pd.DataFrame],
             title: str = "Out-of-sample equity of every seed (perp fees, slippage, funding) against the references"
             ) -> bytes:
    """The fan of the seeds' stitched equity curves (thin), their median (thick) and the references (dashed)."""
    fig, ax = plt.subplots(figsize=(12, 5))
    stacked = []
    ts = None
    for frame in curves.values():
        ts = pd.to_datetime(frame["timestamp"]).dt.tz_convert(None).to_numpy()
        equity = np.cumprod(1.0 + frame["bar_return"].to_numpy())
        stacked.append(equity)
        ax.plot(ts, equity, color="C0", lw=0.5, alpha=0.35)
    if stacked and ts is not None:
        ax.plot(ts, np.median(np.vstack(stacked), axis=0), color="C0", lw=1.8, label=f"median of {len(stacked)} seeds")
    for i, (name, frame) in enumerate(references.items()):
        rts = pd.to_datetime(frame["timestamp"]).dt.tz_convert(None).to_numpy()
        ax.plot(rts, np.cumprod(1.0 + frame["bar_return"].to_numpy()), ls="--", lw=1.0, color=f"C{i + 1}",
                label=name.replace("_", " "))
    ax.set_yscale("log")
    ax.set_ylabel("equity (start = 1)")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title(title)
    ax.margins(x=0)
    return _png(fig)


def fold_bars(fold_returns: pd.DataFrame, title: str = "Out-of-sample return per fold across seeds") -> bytes:
    """Per fold: the median test-window return across seeds, with the 5–95 % range as whiskers.
    ``fold_returns``: one row per (seed, fold) with columns fold, total_return."""
    grouped = fold_returns.groupby("fold")["total_return"]
    med, low, high = grouped.median(), grouped.quantile(0.05), grouped.quantile(0.95)
    fig, ax = plt.subplots(figsize=(12, 4))
    x = np.arange(len(med))
    colours = ["C2" if v >= 0 else "C3" for v in med.to_numpy()]
    ax.bar(x, med.to_numpy(), color=colours, alpha=0.8)
    ax.errorbar(x, med.to_numpy(), yerr=[med.to_numpy() - low.to_numpy(), high.to_numpy() - med.to_numpy()],
                fmt="none", ecolor="black", lw=0.8, capsize=3)
    ax.set_xticks(x, [str(f) for f in med.index])
    ax.set_xlabel("fold")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_title(title)
    return _png(fig)


def regime_characteristics(phases: pd.DataFrame,
                           title: str = "Regime characteristics per phase across refits") -> bytes:
    """Per phase, across refits: mean 24 h return, mean log volatility (standardised features' original units),
    Student-t degrees of freedom ν and expected duration. ``phases``: the ``regime_phases`` table."""
    panels = [("mean_ret_24", "mean 24 h return"), ("mean_log_vol", "mean log volatility"), ("nu", "ν (tail)"),
              ("expected_duration_h", "expected duration (h)")]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    names = phases.sort_values("refit").groupby("phase")["name"].agg(lambda s: "/".join(dict.fromkeys(s)))
    for ax, (column, label) in zip(axes, panels, strict=True):
        for k, part in phases.sort_values("refit").groupby("phase"):
            colour = PHASE_COLOURS.get(str(names[k]).split("/")[0], f"C{k}")
            ax.plot(part["refit"], part[column], marker="o", ms=3, lw=1, color=colour, label=names[k])
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("refit (fold)")
        if column in ("nu", "expected_duration_h"):
            ax.set_yscale("log")
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    return _png(fig)


def parameter_stability(params: pd.DataFrame, title: str = "Parameter stability across folds (median over seeds)"
                        ) -> bytes:
    """Per phase: its gating weights and vol-target multiple at each fold. ``params``: one row per (seed, fold,
    phase) with columns fold, phase, gate.<expert>..., risk_scale."""
    gates = [c for c in params.columns if c.startswith("gate.")]
    phases = sorted(params["phase"].unique())
    fig, axes = plt.subplots(1, len(phases), figsize=(3.0 * len(phases), 3.4), sharey=True)
    for ax, k in zip(np.atleast_1d(axes), phases, strict=True):
        med = params[params["phase"] == k].groupby("fold")[[*gates, "risk_scale"]].median()
        for i, g in enumerate(gates):
            ax.plot(med.index, med[g], marker="o", ms=3, lw=1, color=f"C{i}", label=g.removeprefix("gate."))
        ax.plot(med.index, med["risk_scale"] / 2.0, ls="--", color="black", lw=1, label="risk scale / 2")
        ax.set_title(f"phase {k}", fontsize=10)
        ax.set_xlabel("fold")
        ax.set_ylim(0, 1)
    np.atleast_1d(axes)[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    return _png(fig)


def ablation_chart(table: pd.DataFrame, per_seed: pd.DataFrame,
                   title: str = "Ablation: out-of-sample metrics per variant (mean across seeds, CI, seeds as dots)"
                   ) -> bytes:
    """Three panels (Sharpe, compounded monthly return, max drawdown): per variant the mean across seeds with its
    confidence interval and every seed as a dot; above each step, the paired p-values against the variant before
    it (t-test across seeds | stationary bootstrap of the daily return difference). ``table`` and ``per_seed`` are
    :func:`btc_assets.evaluation.ablation.ablation_table`'s."""
    panels = [("sharpe", "Sharpe (annualised)", False), ("monthly_return", "monthly return (compounded)", True),
              ("max_drawdown", "max drawdown", True)]
    variants = list(table["variant"])
    x = np.arange(len(variants))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, (metric, label, percent) in zip(axes, panels, strict=True):
        mean = table[metric].to_numpy(dtype=float)
        low = np.nan_to_num(mean - table[f"{metric}_lo"].to_numpy(dtype=float))
        high = np.nan_to_num(table[f"{metric}_hi"].to_numpy(dtype=float) - mean)
        ax.bar(x, mean, color=[f"C{i}" for i in range(len(x))], alpha=0.75)
        ax.errorbar(x, mean, yerr=[low, high], fmt="none", ecolor="black", lw=0.9, capsize=4)
        for i, variant in enumerate(variants):
            dots = per_seed.loc[per_seed["variant"] == variant, metric].to_numpy(dtype=float)
            ax.scatter(np.full(dots.size, i) + np.linspace(-0.15, 0.15, dots.size), dots, s=9, color="black",
                       zorder=3)
        if metric == "sharpe" and "p_sharpe_t" in table:
            where = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
            for i in range(1, len(x)):
                p_t, p_b = table["p_sharpe_t"].iloc[i], table["p_daily_bootstrap"].iloc[i]
                ax.text(i - 0.5, 0.98, f"p_t {p_t:.2f}\np_bs {p_b:.2f}", transform=where, ha="center", va="top",
                        fontsize=7, color="#444")
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xticks(x, variants, rotation=25, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        if percent:
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    fig.suptitle(title)
    return _png(fig)
