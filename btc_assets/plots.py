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
