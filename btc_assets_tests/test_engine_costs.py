"""Costs per leg, borrowing, the carry's basis P&L (hand-computed cases) and the rebalance policy's invariants."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from btc_assets.portfolio import PortfolioParams, run_portfolio, run_portfolio_reference
from btc_assets_tests.test_portfolio_engine import CARRY, engine_args, random_inputs

# no vol targeting, no throttle, no band, no ruin stop: positions follow the signals exactly
PLAIN = PortfolioParams(
    vol_targeting=False,
    lev_max=2.0,
    dd_max=0.0,
    band=0.0,
    perp_fee_bps=5.0,
    spot_fee_bps=10.0,
    slip_bps=1.0,
    slip_vol_coef=0.0,
    ruin_floor=0.0,
)


def two_legs(n: int, directional: float, carry: float, *, perp=None, spot=None, funding=None):
    """One regime, a directional expert at ``directional`` and a carry expert at ``carry`` (gating weights 1)."""
    perp = np.full(n, 100.0) if perp is None else np.asarray(perp, float)
    spot = perp if spot is None else np.asarray(spot, float)
    return dict(
        open_=np.r_[perp[0], perp[:-1]],
        close=perp,
        spot_open=np.r_[spot[0], spot[:-1]],
        spot_close=spot,
        tradable=np.ones(n, bool),
        funding=np.zeros(n) if funding is None else funding,
        experts=np.column_stack([np.full(n, directional), np.full(n, carry)]),
        probs=np.ones((n, 1)),
        gating=np.ones((1, 2)),
        sigma_hat=np.full(n, 0.5),
    )


def test_each_leg_pays_its_own_venue() -> None:
    frame = run_portfolio(*engine_args(two_legs(5, 0.8, -0.4)), PLAIN, 1)
    entry = frame.iloc[1]
    # directional 0.8 at the perp fee; carry: 0.4 perp (perp fee) + 0.4 spot (spot fee); slippage on every leg
    assert entry["fee_cost"] == pytest.approx(0.8 * 5e-4 + 0.4 * 5e-4 + 0.4 * 10e-4, abs=1e-18)
    assert entry["carry_fee_cost"] == pytest.approx(0.4 * 15e-4, abs=1e-18)
    assert entry["slippage_cost"] == pytest.approx((0.8 + 0.8) * 1e-4, abs=1e-18)
    assert entry["carry_slippage_cost"] == pytest.approx(0.8 * 1e-4, abs=1e-18)
    assert entry["turnover"] == pytest.approx(1.6)
    maker = dataclasses.replace(PLAIN, perp_fee_bps=2.0, spot_fee_bps=7.5)
    m = run_portfolio(*engine_args(two_legs(5, 0.8, -0.4)), maker, 1).iloc[1]
    assert m["fee_cost"] == pytest.approx(0.8 * 2e-4 + 0.4 * 9.5e-4, abs=1e-18)


@pytest.mark.parametrize(("carry", "pays"), [(0.5, True), (-0.5, False)])
def test_borrowing_only_on_a_short_spot_leg(carry: float, pays: bool) -> None:
    params = dataclasses.replace(PLAIN, borrow_rate=0.0876)  # 1e-5 per hour
    frame = run_portfolio(*engine_args(two_legs(10, 0.0, carry)), params, 1)
    held = frame["borrow_cost"].iloc[1:]
    expected = 0.5 * 1e-5 if pays else 0.0
    np.testing.assert_allclose(held, expected, rtol=1e-12, atol=0)
    assert frame["borrow_cost"].iloc[0] == 0.0
    assert frame.attrs["score"]["costs"] == pytest.approx(
        (frame["fee_cost"] + frame["slippage_cost"] + frame["borrow_cost"]).sum(), abs=1e-15
    )


def test_carry_earns_the_basis_change_hand_computed() -> None:
    perp = np.array([100.0, 101.0, 100.5, 102.0, 102.0])
    spot = np.array([100.0, 100.8, 100.6, 101.7, 102.1])
    frame = run_portfolio(*engine_args(two_legs(5, 0.0, -1.0, perp=perp, spot=spot)), PLAIN, 1)
    c = -1.0  # short perp, long spot (held from bar 1 on; the carry cap is lev_max / 2 = 1)
    assert frame["carry_position"].iloc[1:].eq(c).all()
    # opens equal the previous closes: no gap; each bar earns c · (perp return − spot return)
    expected = [0.0] + [c * ((perp[t] / perp[t - 1] - 1) - (spot[t] / spot[t - 1] - 1)) for t in range(1, 5)]
    np.testing.assert_allclose(frame["basis_pnl"], expected, rtol=1e-12, atol=1e-18)
    assert frame["price_pnl"].eq(0).all() and frame["position"].eq(0).all()
    # bar 4: the perp stands still, spot rises 0.39 %: a short-perp / long-spot carry gains it
    assert frame["basis_pnl"].iloc[4] == pytest.approx(-c * (102.1 / 101.7 - 1))
    parts = frame["basis_pnl"] - frame["fee_cost"] - frame["slippage_cost"] - frame["borrow_cost"]
    np.testing.assert_allclose(frame["bar_return"], parts, atol=1e-18)
    ref = run_portfolio_reference(*engine_args(two_legs(5, 0.0, -1.0, perp=perp, spot=spot)), PLAIN, 1)
    np.testing.assert_allclose(frame.to_numpy(), ref.to_numpy(), atol=1e-15)


def test_directional_leg_is_priced_on_the_perp() -> None:
    perp = np.array([100.0, 101.0, 102.0, 101.0])
    spot = np.array([100.0, 100.0, 100.0, 100.0])
    frame = run_portfolio(*engine_args(two_legs(4, 1.0, 0.0, perp=perp, spot=spot)), PLAIN, 1)
    np.testing.assert_allclose(frame["price_pnl"].iloc[1:], [0.01, 102 / 101 - 1, 101 / 102 - 1], rtol=1e-12)
    assert frame["basis_pnl"].eq(0).all()


# --------------------------------------------------------------------------------------------------- the policy


def fills(frame) -> np.ndarray:
    return np.flatnonzero(frame["turnover"].to_numpy() > 0)


@pytest.mark.parametrize("hold", [1, 6, 24])
def test_decision_interval_spaces_fills(hold: int) -> None:
    inputs = random_inputs(1500, seed=hold, smooth=True, nan_probs=0.0, missing=0.0)
    inputs["experts"] = np.where(np.isnan(inputs["experts"]), 0.3, inputs["experts"])
    inputs["experts"][:, :3] = np.clip(inputs["experts"][:, :3], 0.05, 1)  # the target is never flat
    params = PortfolioParams(band=0.0, dd_max=0.0, ruin_floor=0.0, decision_hours=float(hold))
    frame = run_portfolio(*engine_args(inputs), params, CARRY)
    at = fills(frame)
    assert len(at) > 1500 // hold // 3
    assert np.diff(at).min() >= hold  # never two fills closer than the interval
    if hold > 1:
        assert np.diff(at).min() == hold  # and the interval binds (band 0: every free bar trades)
    ref = run_portfolio_reference(*engine_args(inputs), params, CARRY)
    np.testing.assert_allclose(frame.to_numpy(), ref.to_numpy(), atol=1e-9, equal_nan=True)


def test_going_flat_and_risk_limits_are_never_held_back() -> None:
    inputs = random_inputs(2000, seed=4, smooth=True, missing=0.0, vol=0.03)
    params = PortfolioParams(
        band=0.0, decision_hours=48.0, dd_max=0.1, k_min=0.1, rearm=0.5, vol_target=1.5, lev_max=3.0, ruin_floor=0.0
    )
    frame = run_portfolio(*engine_args(inputs), params, -1)  # directional only (a carry over its cap trades)
    target = frame["target_position"].to_numpy()
    position = frame["position"].to_numpy()
    flat = np.flatnonzero(target[:-1] == 0.0)
    np.testing.assert_array_equal(position[flat + 1], 0.0)  # a flat target is filled at the next open
    at = fills(frame)
    early = at[1:][np.diff(at) < 48]
    assert len(early) > 0
    thr = frame["throttle"].to_numpy()
    for t in early:  # every early fill went flat or followed a throttle cut since the previous fill
        prev = at[at < t][-1]
        assert position[t] == 0.0 or thr[t - 1] < thr[prev - 1], t
    assert any(position[t] != 0.0 for t in early)  # some were risk cuts, not only exits


def test_relative_band_keeps_small_moves() -> None:
    inputs = random_inputs(1500, seed=8, smooth=True, missing=0.0, nan_probs=0.0)
    params = PortfolioParams(band=0.02, band_rel=0.4, dd_max=0.0, ruin_floor=0.0)
    frame = run_portfolio(*engine_args(inputs), params, CARRY)
    d = frame["position"].to_numpy()
    td = frame["target_position"].to_numpy()
    moved = d[1:] != d[:-1]
    kept = ~moved & (td[:-1] != 0.0)
    gap = np.abs(td[:-1] - d[:-1])
    threshold = np.maximum(0.02, 0.4 * np.abs(d[:-1]))
    assert (gap[kept] <= threshold[kept] + 1e-15).all()
    trade = moved & (td[:-1] != 0.0)
    assert (gap[trade] > threshold[trade]).all() and trade.sum() > 20
    wide = run_portfolio(*engine_args(inputs), dataclasses.replace(params, band_rel=0.0), CARRY)
    assert frame["turnover"].sum() < wide["turnover"].sum()


def test_each_leg_keeps_its_own_decision_clock() -> None:
    """A carry fill does not restart the directional leg's decision interval (nor rebase its risk limit)."""
    n = 60
    perp = 100 * np.exp(np.cumsum(np.r_[0.0, np.full(n - 1, 1e-3)]))
    directional = np.where(np.arange(n) < 30, 0.5, 0.9)  # the target moves at close 30
    carry = np.where(np.arange(n) < 20, -0.4, 0.0)  # the carry goes flat at close 20 (never held back)
    market = two_legs(n, 0.0, 0.0, perp=perp)
    market["experts"] = np.column_stack([directional, carry])
    params = dataclasses.replace(PLAIN, band=0.1, decision_hours=25.0)
    frame = run_portfolio(*engine_args(market), params, 1)
    d, c = frame["position"].to_numpy(), frame["carry_position"].to_numpy()
    assert c[21] == 0.0 and c[20] == -0.4  # the carry's exit filled at bar 21
    # d was filled at bar 1; its clock is free from close 25 on, so the new target of close 30 fills at bar 31
    # (a shared clock restarted by the carry's fill at bar 21 would hold it until bar 46)
    assert d[30] == 0.5 and d[31] == 0.9
    ref = run_portfolio_reference(*engine_args(market), params, 1)
    np.testing.assert_allclose(frame.to_numpy(), ref.to_numpy(), atol=1e-12)


def test_perp_bars_price_the_directional_leg_only_while_the_perp_trades() -> None:
    import pandas as pd

    from btc_assets.config import PortfolioSettings
    from btc_assets.portfolio.tables import price_arrays

    n = 12
    spot = np.linspace(100.0, 111.0, n)
    perp = spot * 1.001
    perp[:3] = np.nan  # not listed yet
    perp[6] = np.nan  # a missing perp hour
    perp[10:] = np.nan  # the perp file ends before spot's
    bars = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
            "open": spot,
            "close": spot,
            "missing": np.zeros(n, bool),
            "funding_rate": 0.0,
            "funding_known": True,
            "perp_open": perp,
            "perp_close": perp,
        }
    )
    p = price_arrays(bars, PortfolioSettings())
    assert p.perp_from == 3
    np.testing.assert_array_equal(p.close[:3], spot[:3])
    np.testing.assert_array_equal(p.close[3:6], perp[3:6])
    assert p.close[6] == perp[5] and not p.tradable[6]  # forward-filled, no fill on it
    np.testing.assert_array_equal(p.close[10:], spot[10:])  # spot again after the perp's last bar
    assert p.tradable[10:].all() and p.tradable[:6].all()
    np.testing.assert_array_equal(p.spot_close, spot)
