"""The buy-and-hold references (spot, perp, vol-targeted on the daily-horizon volatility), the horizon volatility,
and the report's "as reported" table for the original system."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from btc_assets.config import PortfolioSettings
from btc_assets.portfolio.horizon import ewm_recursion, horizon_sigma
from btc_assets.portfolio.metrics import REFERENCES, frame_metrics, reference_runs, vol_targeted_buy_and_hold
from btc_assets.portfolio.tables import Prices, engine_params, price_arrays


def seasonal_sigma(n: int, seed: int = 0) -> np.ndarray:
    """An hourly forecast with a strong intraday profile (×0.75 … ×1.35) on a slowly moving level."""
    rng = np.random.default_rng(seed)
    level = 0.6 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    profile = 1.05 + 0.30 * np.sin(2 * np.pi * np.arange(n) / 24)
    return level * profile


def test_horizon_sigma_is_the_documented_recursion() -> None:
    s = seasonal_sigma(500)
    s[[0, 1, 60, 61, 300]] = np.nan
    s[100] = -1.0  # not valid: leaves v unchanged
    a = 1 - 2 ** (-1 / 24)
    v, seen, expected = None, 0, []
    for x in s:
        if np.isfinite(x) and x > 0:
            v = x * x if v is None else v + a * (x * x - v)
            seen += 1
        expected.append(np.sqrt(v) if seen >= 24 else np.nan)
    out = horizon_sigma(s)
    np.testing.assert_allclose(out, expected, rtol=1e-13, equal_nan=True)
    assert np.isnan(out[:25]).all() and np.isfinite(out[26:]).all()  # 24 valid values needed (2 NaN first)
    assert horizon_sigma(s, 24, warmup=1)[2] == pytest.approx(s[2])
    assert horizon_sigma(np.array([])).size == 0 and np.isnan(horizon_sigma(np.full(5, np.nan))).all()
    with pytest.raises(ValueError):
        horizon_sigma(s, 0)


@pytest.mark.parametrize("halflife", [1.0, 7.3, 24.0, 72.0])
def test_ewm_recursion_is_lfilter_bit_for_bit(halflife: float) -> None:
    """The numba recursion behind horizon_sigma against its reference, scipy.signal.lfilter, exactly (squares of a
    seasonal forecast and of heavy-tailed values spanning many orders of magnitude)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(3)
    a = 1.0 - 2.0 ** (-1.0 / halflife)
    for x in (seasonal_sigma(5_000) ** 2, np.exp(rng.standard_normal(20_000) * 4.0)):
        expected, _ = lfilter([a], [1.0, a - 1.0], x, zi=[(1.0 - a) * x[0]])
        got = ewm_recursion(x, a, (1.0 - a) * x[0])
        assert np.array_equal(got, expected)


def test_horizon_sigma_damps_the_intraday_swing() -> None:
    s = seasonal_sigma(24 * 60)
    day = horizon_sigma(s)[24 * 10 :]
    one_step = s[24 * 10 :]

    def swing(x: np.ndarray) -> float:  # median within-day max / min
        days = x[: x.size // 24 * 24].reshape(-1, 24)
        return float(np.median(days.max(axis=1) / days.min(axis=1)))

    assert swing(one_step) > 1.7  # 1.35 / 0.75
    assert swing(day) < 1.1


def test_horizon_sigma_is_causal() -> None:
    s = seasonal_sigma(2000, seed=3)
    t = 1234
    changed = s.copy()
    changed[t + 1 :] = np.random.default_rng(9).uniform(0.1, 3.0, s.size - t - 1)
    a, b = horizon_sigma(s), horizon_sigma(changed)
    np.testing.assert_array_equal(a[: t + 1], b[: t + 1])
    assert not np.array_equal(a[t + 1 :], b[t + 1 :])


def market(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, 0.002, n))
    tradable = rng.random(n) > 0.02
    tradable[0] = True
    funding = np.where(np.arange(n) % 8 == 7, rng.normal(1e-4, 2e-4, n), 0.0)
    sigma = seasonal_sigma(n, seed)
    sigma[:30] = np.nan  # the GARCH warm-up
    basis = 1 + rng.normal(0, 5e-4, n)  # the perp's own prices: spot times a small basis
    return {
        "open_": open_ * basis,
        "close": close * basis,
        "spot_open": open_,
        "spot_close": close,
        "tradable": tradable,
        "funding": funding,
        "sigma_hat": horizon_sigma(sigma),
        "slip_sigma": sigma,
    }


def refs_of(m: dict[str, np.ndarray], params, window: slice = slice(None)) -> dict[str, pd.DataFrame]:
    prices = Prices(m["open_"], m["close"], m["spot_open"], m["spot_close"], m["tradable"], m["funding"], 0)
    return reference_runs(prices.window(window), m["sigma_hat"][window], m["slip_sigma"][window], params)


def test_references_are_causal() -> None:
    """Every price, funding rate and forecast after bar t changed: the three references up to t do not move."""
    n, t = 3000, 2100
    base = market(n)
    other = {k: v.copy() for k, v in base.items()}
    rng = np.random.default_rng(5)
    other["close"][t + 1 :] *= np.exp(np.cumsum(rng.normal(0.001, 0.02, n - t - 1)))
    other["open_"][t + 1 :] = other["close"][t + 1 :] * 0.999
    other["funding"][t + 1 :] = rng.normal(0, 1e-3, n - t - 1)
    other["sigma_hat"][t + 1 :] = rng.uniform(0.1, 3.0, n - t - 1)
    other["spot_close"][t + 1 :] = other["close"][t + 1 :] * 1.001
    params = engine_params(PortfolioSettings())
    window = slice(500, None)
    a = refs_of(base, params, window)
    b = refs_of(other, params, window)
    assert list(a) == list(REFERENCES)
    for name in REFERENCES:
        pd.testing.assert_frame_equal(a[name].iloc[: t + 1 - 500], b[name].iloc[: t + 1 - 500], check_exact=True)
        assert a[name]["equity"].iloc[-1] != b[name]["equity"].iloc[-1], name  # the change bites after t
    vt = a["vol_targeted_buy_and_hold"]
    assert vt["position"].iloc[1] > 0  # the daily volatility is known from the window's first bar
    spot, perp = a["buy_and_hold_spot"], a["buy_and_hold_perp"]
    assert spot["funding_pnl"].eq(0).all() and perp["funding_pnl"].ne(0).any()
    # spot on the spot prices, the perp on the perp's own: the two differ by the basis
    so, sc, po, pc = (base[k][500:] for k in ("spot_open", "spot_close", "open_", "close"))
    for frame, o, c in ((spot, so, sc), (perp, po, pc)):
        held = frame["position"].to_numpy()[9:20] == 1.0
        expected = (o[9:20] / c[8:19] - 1) + (c[9:20] / o[9:20] - 1)
        np.testing.assert_allclose(frame["price_pnl"].to_numpy()[9:20][held], expected[held], rtol=1e-12)
        assert held.sum() > 5


# ------------------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def real_references(shared_data: Path) -> dict[str, object]:
    from btc_assets.config import VolatilitySettings
    from btc_assets.evaluation.summary import reference_frames
    from btc_assets.folds import FoldSchedule
    from btc_assets.ingestion import build_market_bars, load_funding, load_ohlcv
    from btc_assets.volatility import compute_volatility

    ohlcv = load_ohlcv([shared_data / "btcusdt_1h.parquet"]).frame
    funding = load_funding([shared_data / "btcusdt_funding_8h.parquet"]).frame
    bars = build_market_bars(ohlcv, funding).bars
    vol = compute_volatility(bars, FoldSchedule(), VolatilitySettings())
    settings = PortfolioSettings()
    start = pd.Timestamp("2019-08-17", tz="UTC")  # the first out-of-sample bar of the default schedule
    refs = reference_frames(bars, vol, bars.loc[bars["timestamp"] >= start, "timestamp"], settings)
    metrics = {k: frame_metrics(f.set_index("timestamp"), settings.ruin_floor) for k, f in refs.items()}
    index = pd.DatetimeIndex(bars["timestamp"])
    window = slice(int(index.get_loc(start)), None)
    p = price_arrays(bars, settings).window(window)
    old_policy = dataclasses.replace(settings, band_rel=0.0, decision_hours=1)  # the band alone, as before
    one_step = vol_targeted_buy_and_hold(
        p.open_,
        p.close,
        p.tradable,
        p.funding,
        vol["sigma"].to_numpy()[window],
        engine_params(old_policy),
        index=index[window],
    )
    return {"refs": refs, "metrics": metrics, "one_step": one_step, "bars": bars}


@pytest.mark.realdata
@pytest.mark.slow
def test_vol_targeted_reference_on_real_data_is_not_a_straw_man(real_references: dict) -> None:
    m = real_references["metrics"]["vol_targeted_buy_and_hold"]
    vt = real_references["refs"]["vol_targeted_buy_and_hold"]
    assert m["turnover_annual"] < 15  # 8.2 measured (26.8 with the band alone)
    assert vt["equity"].min() > 0.3 and m["final_equity"] > 1.5  # not ruined (0.42 low, 2.14 at the end)
    assert m["cost_drag"] < 0.2
    # leverage on the one-step forecast itself with the band alone: the straw man this replaces (843×/yr, ruined)
    old = frame_metrics(real_references["one_step"])
    assert old["turnover_annual"] > 500 and old["final_equity"] < 0.2


@pytest.mark.realdata
@pytest.mark.slow
def test_spot_and_perp_buy_and_hold_on_real_data(real_references: dict) -> None:
    metrics, refs, bars = real_references["metrics"], real_references["refs"], real_references["bars"]
    spot, perp = metrics["buy_and_hold_spot"], metrics["buy_and_hold_perp"]
    frame = refs["buy_and_hold_spot"]
    prices = bars.set_index("timestamp").reindex(pd.DatetimeIndex(frame["timestamp"]))
    held = prices["close"].ffill().iloc[-1] / prices["open"].iloc[1]  # bought at the open of bar 1
    assert spot["final_equity"] == pytest.approx(held * (1 - 12e-4), rel=2e-3)  # one 10 + 2 bps entry
    assert 0.33 < spot["cagr"] < 0.37 and 0.75 < spot["sharpe"] < 0.85  # 35.1 %, 0.80 measured
    assert 0.18 < perp["cagr"] < 0.22 and 0.55 < perp["sharpe"] < 0.65  # 20.0 %, 0.60: funding paid
    assert spot["cost_drag"] < 1e-3 < 0.1 < perp["cost_drag"]


# ------------------------------------------------------------------------------------------------ report / summary


def test_report_shows_the_original_system_apart(tmp_path: Path) -> None:
    from btc_assets.evaluation.report import REPORTED_KEY, render_report
    from btc_assets.evaluation.summary import ORIGINAL_SYSTEM_REPORTED, original_system_reported

    reported = original_system_reported()
    assert list(reported["row"]) == ["original_system"]
    assert reported.loc[0, "return_per_month"] == ORIGINAL_SYSTEM_REPORTED["return_per_month"] == 0.003
    table = pd.DataFrame({"row": ["seed_00", *REFERENCES], "monthly_return": [0.01, 0.025, 0.015, 0.009]})
    facts = {"target": {"p_month_at_target": 0.1}, REPORTED_KEY: reported.drop(columns="row").iloc[0].to_dict()}
    page = render_report(tmp_path, table, facts).read_text()
    measured, apart = page.split("Original system, as reported")
    assert "original_system" not in measured and "buy_and_hold_spot" in measured
    assert "<table" in apart.split("<h3>")[0] and "0.0030" in apart and "unknown" in apart
    assert "all costs" not in page and "borrowing on a short spot leg" in page
    assert "p_month_at_target" in apart  # the other facts follow


def test_spot_reference_pays_the_spot_fee_setting() -> None:
    m = market(400)
    low = refs_of(m, engine_params(PortfolioSettings(spot_fee_bps=2.0)))["buy_and_hold_spot"]
    high = refs_of(m, engine_params(PortfolioSettings(spot_fee_bps=20.0)))["buy_and_hold_spot"]
    assert high["fee_cost"].sum() == pytest.approx(20e-4) and low["fee_cost"].sum() == pytest.approx(2e-4)
    maker = engine_params(PortfolioSettings(maker=True, perp_maker_bps=1.0, spot_maker_bps=3.0))
    assert (maker.perp_fee_bps, maker.spot_fee_bps) == (1.0, 3.0)
    assert refs_of(m, maker)["buy_and_hold_spot"]["fee_cost"].sum() == pytest.approx(3e-4)
