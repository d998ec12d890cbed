"""The charts, directly: each is a decodable PNG that shows its data (other data, other pixels; colours where the
docstring puts them)."""

from __future__ import annotations

import io

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from btc_assets import plots

N = 24 * 60


def _pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    return image[..., :3]


def _share_of(image: np.ndarray, hex_colour: str, tol: float = 0.06) -> float:
    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255.0 for i in (1, 3, 5)])
    return float((np.abs(image - rgb).max(axis=-1) < tol).mean())


def _on_white(hex_colour: str, alpha: float) -> str:
    """The colour ``hex_colour`` drawn with ``alpha`` over a white background."""
    return "#" + "".join(f"{round(255 - alpha * (255 - int(hex_colour[i : i + 2], 16))):02x}" for i in (1, 3, 5))


def _timestamps(n: int = N) -> pd.Series:
    return pd.Series(pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"))


def _book(seed: int, drift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"timestamp": _timestamps(), "bar_return": drift + rng.normal(0.0, 0.003, N)})


def test_fold_bars_colour_gains_green_and_losses_red() -> None:
    rows = [{"seed": s, "fold": f, "total_return": r} for s in range(3) for f, r in ((0, 0.05), (1, -0.04))]
    image = _pixels(plots.fold_bars(pd.DataFrame(rows)))
    green, red = _on_white("#2ca02c", 0.8), _on_white("#d62728", 0.8)  # C2, C3 at the bars' alpha
    assert _share_of(image, green) > 0.01 and _share_of(image, red) > 0.01
    only_gains = [{**r, "total_return": abs(r["total_return"])} for r in rows]
    assert _share_of(_pixels(plots.fold_bars(pd.DataFrame(only_gains))), red) < 0.0005


def test_seed_fan_draws_every_seed_and_the_references() -> None:
    curves = {f"seed_{s:02d}": _book(s) for s in range(3)}
    references = {"buy_and_hold_spot": _book(9, drift=0.0005)}
    image = _pixels(plots.seed_fan(curves, references))
    moved = dict(curves, seed_01=_book(1, drift=0.001))
    assert not np.array_equal(image, _pixels(plots.seed_fan(moved, references)))
    assert _share_of(image, "#ff7f0e") > 0.0005  # the first reference, dashed in C1


def test_equity_drawdown_and_regime_shading_show_their_inputs() -> None:
    ts = _timestamps()
    equity = np.cumprod(1.0 + _book(0)["bar_return"].to_numpy())
    base = _pixels(plots.equity_drawdown(ts, {"strategy": equity, "spot": equity[::-1].copy()}))
    assert not np.array_equal(base, _pixels(plots.equity_drawdown(ts, {"strategy": equity**2, "spot": equity})))
    probs = np.zeros((N, 2))
    probs[: N // 2, 0] = 1.0
    probs[N // 2 :, 1] = 1.0
    probs[:100] = np.nan  # unknown: no shading
    close = 100.0 * equity
    shaded = _pixels(plots.regime_shaded_price(ts, close, probs, ["calm", "crash/breakout"]))
    calm, crash = (plots.PHASE_COLOURS[name] for name in ("calm", "crash"))
    for colour in (calm, crash):
        assert _share_of(shaded, _on_white(colour, 0.45), tol=0.08) > 0.05


def test_regime_characteristics_and_parameter_stability_take_their_tables() -> None:
    phases = pd.DataFrame(
        [
            {
                "fold": f,
                "phase": k,
                "name": ["calm", "trend_up", "chop", "trend_down", "crash"][k],
                "mean_ret_24": 0.001 * (k - 2),
                "mean_log_vol": -5.0 + 0.3 * k,
                "nu": 3.0 + k,
                "expected_duration_h": 20.0 + 10 * k + f,
            }
            for f in range(4)
            for k in range(5)
        ]
    )
    _pixels(plots.regime_characteristics(phases))
    with pytest.raises(KeyError):
        plots.regime_characteristics(phases.drop(columns="nu"))
    params = pd.DataFrame(
        [
            {"seed": s, "fold": f, "phase": k, "gate.trend": 0.1 * k, "gate.carry": 0.5, "risk_scale": 1.0 + 0.1 * f}
            for s in range(2)
            for f in range(4)
            for k in range(3)
        ]
    )
    image = _pixels(plots.parameter_stability(params))
    assert not np.array_equal(image, _pixels(plots.parameter_stability(params.assign(risk_scale=0.5))))
