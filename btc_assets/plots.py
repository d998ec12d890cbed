"""Charts as PNG bytes (matplotlib, headless). The Dagster layer saves them under ``reports/`` and attaches them to
asset metadata; nothing here knows about Dagster."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PHASE_COLOURS = {
    "calm": "#9ecae1",
    "trend_up": "#74c476",
    "chop": "#fdd0a2",
    "trend_down": "#fb6a4a",
    "crash": "#a50f15",
    "breakout": "#9e9ac8",
    "all": "#dddddd",
}


def _subplots(*args: Any, **kwargs: Any) -> tuple[Figure, Any]:
    """``pyplot.subplots`` on the headless Agg backend. pyplot is imported with the first chart, so a process that
    draws none (a seed run, the CLI) does not pay its ~0.3 s of start-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _percent() -> Any:
    """A tick formatter that shows fractions as percentages."""
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0)


def _png(fig: Figure) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows a PNG inline (the Dagster UI renders it in the asset's metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def regime_shaded_price(
    timestamps: pd.Series,
    close: np.ndarray,
    probs: np.ndarray,
    names: Sequence[str],
    title: str = "Price with regime shading (out-of-sample filtered probabilities)",
) -> bytes:
    """Log price with the background shaded by the most probable phase at each bar (no shading where unknown)."""
    ts = pd.to_datetime(pd.Series(timestamps)).dt.tz_convert(None).to_numpy()
    fig, ax = _subplots(figsize=(12, 4.5))
    known = np.isfinite(probs).all(axis=1)
    phase = np.where(known, np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1), -1)
    for k, name in enumerate(names):
        first = name.split("/")[0]  # "crash/breakout" -> crash; "chop_1" -> chop
        colour = PHASE_COLOURS.get(first, PHASE_COLOURS.get(first.split("_")[0], "#cccccc"))
        ax.fill_between(
            ts,
            0,
            1,
            where=phase == k,
            step="post",
            color=colour,
            alpha=0.45,
            lw=0,
            transform=ax.get_xaxis_transform(),
            label=name,
        )
    ax.plot(ts, close, color="black", lw=0.7)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(loc="upper left", ncol=len(names), fontsize=8, frameon=False)
    ax.margins(x=0)
    return _png(fig)


def equity_drawdown(
    timestamps: pd.Series, curves: Mapping[str, np.ndarray], title: str = "Equity and drawdown against buy-and-hold"
) -> bytes:
    """Equity curves (log scale, first curve emphasised) above their drawdowns."""
    ts = pd.to_datetime(pd.Series(timestamps)).dt.tz_convert(None).to_numpy()
    fig, (top, bottom) = _subplots(2, 1, figsize=(12, 6), sharex=True, height_ratios=[2.2, 1])
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
    bottom.yaxis.set_major_formatter(_percent())
    top.margins(x=0)
    return _png(fig)


def seed_fan(
    curves: Mapping[str, pd.DataFrame],
    references: Mapping[str, pd.DataFrame],
    title: str = "Out-of-sample equity of every seed (costs per leg) against the references",
) -> bytes:
    """The fan of the seeds' stitched equity curves (thin), their median (thick) and the references (dashed)."""
    fig, ax = _subplots(figsize=(12, 5))
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
        ax.plot(
            rts,
            np.cumprod(1.0 + frame["bar_return"].to_numpy()),
            ls="--",
            lw=1.0,
            color=f"C{i + 1}",
            label=name.replace("_", " "),
        )
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
    fig, ax = _subplots(figsize=(12, 4))
    x = np.arange(len(med))
    colours = ["C2" if v >= 0 else "C3" for v in med.to_numpy()]
    ax.bar(x, med.to_numpy(), color=colours, alpha=0.8)
    ax.errorbar(
        x,
        med.to_numpy(),
        yerr=[med.to_numpy() - low.to_numpy(), high.to_numpy() - med.to_numpy()],
        fmt="none",
        ecolor="black",
        lw=0.8,
        capsize=3,
    )
    ax.set_xticks(x, [str(f) for f in med.index])
    ax.set_xlabel("fold")
    ax.yaxis.set_major_formatter(_percent())
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_title(title)
    return _png(fig)


def regime_characteristics(
    phases: pd.DataFrame, title: str = "Regime characteristics per phase across refits"
) -> bytes:
    """Per phase, across refits: mean 24 h return, mean log volatility (standardised features' original units),
    Student-t degrees of freedom ν and expected duration. ``phases``: the ``regime_phases`` table."""
    panels = [
        ("mean_ret_24", "mean 24 h return"),
        ("mean_log_vol", "mean log volatility"),
        ("nu", "ν (tail)"),
        ("expected_duration_h", "expected duration (h)"),
    ]
    fig, axes = _subplots(1, 4, figsize=(14, 3.6))
    names = phases.sort_values("fold").groupby("phase")["name"].agg(lambda s: "/".join(dict.fromkeys(s)))
    for ax, (column, label) in zip(axes, panels, strict=True):
        for k, part in phases.sort_values("fold").groupby("phase"):
            colour = PHASE_COLOURS.get(str(names[k]).split("/")[0], f"C{k}")
            ax.plot(part["fold"], part[column], marker="o", ms=3, lw=1, color=colour, label=names[k])
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("fold")
        if column in ("nu", "expected_duration_h"):
            ax.set_yscale("log")
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title)
    return _png(fig)


def parameter_stability(
    params: pd.DataFrame, title: str = "Parameter stability across folds (median over seeds)"
) -> bytes:
    """Per phase: its gating weights and vol-target multiple at each fold. ``params``: one row per (seed, fold,
    phase) with columns fold, phase, gate.<expert>..., risk_scale."""
    gates = [c for c in params.columns if c.startswith("gate.")]
    phases = sorted(params["phase"].unique())
    fig, axes = _subplots(1, len(phases), figsize=(3.0 * len(phases), 3.4), sharey=True)
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


def ablation_chart(
    table: pd.DataFrame,
    per_seed: pd.DataFrame,
    title: str = "Ablation: out-of-sample metrics per variant (mean across seeds, CI, seeds as dots)",
) -> bytes:
    """Three panels (Sharpe, compounded monthly return, max drawdown): per variant the mean across seeds with its
    confidence interval and every seed as a dot; on the Sharpe panel, above each variant's bar, its paired p-values
    against its reference (t-test across seeds | stationary bootstrap of the daily return difference), which the
    variant's label names ("vs <reference>", ``table["versus"]``: the variant before it in the chain, ``mixture_soft``
    for the side variants). ``table`` and ``per_seed`` are :func:`btc_assets.evaluation.ablation.ablation_table`'s."""
    panels = [
        ("sharpe", "Sharpe (annualised)", False),
        ("monthly_return", "monthly return (compounded)", True),
        ("max_drawdown", "max drawdown", True),
    ]
    variants = list(table["variant"])
    x = np.arange(len(variants))
    versus = list(table["versus"]) if "versus" in table else [None, *variants[:-1]]
    labels = [f"{v} (vs {r})" if isinstance(r, str) else v for v, r in zip(variants, versus, strict=True)]
    fig, axes = _subplots(1, 3, figsize=(max(15.0, 2.6 * len(variants)), 5.0))
    from matplotlib.transforms import blended_transform_factory  # matplotlib is loaded by now (_subplots)

    for ax, (metric, label, percent) in zip(axes, panels, strict=True):
        mean = table[metric].to_numpy(dtype=float)
        low = np.nan_to_num(mean - table[f"{metric}_lo"].to_numpy(dtype=float))
        high = np.nan_to_num(table[f"{metric}_hi"].to_numpy(dtype=float) - mean)
        ax.bar(x, mean, color=[f"C{i}" for i in range(len(x))], alpha=0.75)
        ax.errorbar(x, mean, yerr=[low, high], fmt="none", ecolor="black", lw=0.9, capsize=4)
        for i, variant in enumerate(variants):
            dots = per_seed.loc[per_seed["variant"] == variant, metric].to_numpy(dtype=float)
            ax.scatter(np.full(dots.size, i) + np.linspace(-0.15, 0.15, dots.size), dots, s=9, color="black", zorder=3)
        if metric == "sharpe" and "p_sharpe_t" in table:
            where = blended_transform_factory(ax.transData, ax.transAxes)
            for i, reference in enumerate(versus):
                if not isinstance(reference, str):
                    continue  # no reference (the first of the chain)
                p_t, p_b = table["p_sharpe_t"].iloc[i], table["p_daily_bootstrap"].iloc[i]
                ax.text(
                    i,
                    0.98,
                    f"p_t {p_t:.2f}\np_bs {p_b:.2f}",
                    transform=where,
                    ha="center",
                    va="top",
                    fontsize=6.5,
                    color="#444",
                )
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xticks(x, labels, rotation=30, ha="right", rotation_mode="anchor", fontsize=7.5)
        ax.set_title(label, fontsize=10)
        if percent:
            ax.yaxis.set_major_formatter(_percent())
    fig.suptitle(title)
    return _png(fig)


ATTRIBUTION_COLOURS = {
    "gross": "#4575b4",
    "basis": "#74add1",
    "funding": "#abd9e9",
    "fees": "#d73027",
    "slippage": "#fc8d59",
    "borrowing": "#fee090",
}


def attribution_chart(
    table: pd.DataFrame, title: str = "Where the out-of-sample P&L comes from (median across seeds, %/yr of equity)"
) -> bytes:
    """From :func:`btc_assets.evaluation.attribution.across_seeds`'s table: per expert (over all phases) and per
    phase (over all experts; the label carries its median time share), the median of each component stacked (P&L
    terms with their sign, costs downwards) with the median ``net`` (diamond) and its 5–95 % range across seeds;
    and the median ``net`` of every (expert, phase) cell. Components' medians need not add up to the median net."""
    from btc_assets.evaluation.attribution import ALL, COMPONENTS, NET, SIGNS, TIME_SHARE, UNALLOCATED

    stats = table.pivot_table(
        index=["expert", "phase"], columns="component", values=["median", "p05", "p95"], sort=False
    )
    keys = list(stats.index)
    experts = [e for e, p in keys if p == ALL and e not in (ALL, UNALLOCATED)]
    phases = [
        p
        for e, p in keys
        if e == ALL and p != ALL and ("median", NET) in stats and not np.isnan(stats.loc[(e, p), ("median", NET)])
    ]
    fig, axes = _subplots(1, 3, figsize=(17, 5.2), width_ratios=[1.0, 1.2, 1.2])

    def stacked(ax: Axes, rows: list[tuple[str, str]], labels: list[str], heading: str) -> None:
        x = np.arange(len(rows))
        up, down = np.zeros(len(rows)), np.zeros(len(rows))
        for component, sign in zip(COMPONENTS, SIGNS, strict=True):
            v = sign * 100.0 * np.array([stats.loc[r, ("median", component)] for r in rows], dtype=float)
            v = np.nan_to_num(v)
            pos, neg = np.clip(v, 0, None), np.clip(v, None, 0)
            name = component if sign > 0 else f"−{component}"
            ax.bar(x, pos, bottom=up, color=ATTRIBUTION_COLOURS[component], label=name, width=0.6)
            ax.bar(x, neg, bottom=down, color=ATTRIBUTION_COLOURS[component], width=0.6)
            up, down = up + pos, down + neg
        net = 100.0 * np.array([[stats.loc[r, (s, NET)] for r in rows] for s in ("median", "p05", "p95")])
        ax.errorbar(
            x,
            net[0],
            yerr=[np.clip(net[0] - net[1], 0, None), np.clip(net[2] - net[0], 0, None)],
            fmt="D",
            color="black",
            ms=5,
            capsize=4,
            lw=1,
            label="net (p05–p95)",
            zorder=3,
        )
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xticks(x, labels, rotation=25, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_ylabel("% of equity per year")
        ax.set_title(heading, fontsize=10)

    stacked(axes[0], [(e, ALL) for e in experts], experts, "per expert (all phases)")
    shares = [
        stats.loc[(ALL, p), ("median", TIME_SHARE)] if ("median", TIME_SHARE) in stats else np.nan for p in phases
    ]
    stacked(
        axes[1],
        [(ALL, p) for p in phases],
        [p if np.isnan(s) else f"{p}\n{100 * s:.0f} % of time" for p, s in zip(phases, shares, strict=True)],
        "per phase (all experts)",
    )
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.04)
    )
    grid = (
        np.array(
            [
                [stats.loc[(e, p), ("median", NET)] if (e, p) in stats.index else np.nan for p in phases]
                for e in experts
            ],
            dtype=float,
        )
        * 100.0
    )
    scale = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() and np.nanmax(np.abs(grid)) > 0 else 1.0
    image = axes[2].imshow(grid, cmap="RdBu", vmin=-scale, vmax=scale, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                axes[2].text(
                    j,
                    i,
                    f"{grid[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if abs(grid[i, j]) > 0.6 * scale else "black",
                )
    axes[2].set_xticks(range(len(phases)), phases, rotation=25, ha="right", rotation_mode="anchor", fontsize=8)
    axes[2].set_yticks(range(len(experts)), experts, fontsize=8)
    axes[2].set_title("net per expert and phase", fontsize=10)
    fig.colorbar(image, ax=axes[2], label="% of equity per year", shrink=0.85)
    fig.suptitle(title)
    return _png(fig)
