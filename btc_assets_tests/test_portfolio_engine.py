"""Portfolio backtest: numba kernel vs the pandas reference, accounting invariants, causality, metrics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from btc_assets.portfolio import (
    BAR_COLUMNS,
    BookInputs,
    PortfolioParams,
    backtest_returns,
    backtest_score,
    buy_and_hold_perp,
    buy_and_hold_spot,
    gating_weights,
    new_state,
    portfolio_metrics,
    run_portfolio,
    run_portfolio_reference,
    vol_targeted_buy_and_hold,
)

E, K = 4, 5
CARRY = 3


def random_inputs(
    n: int = 600,
    seed: int = 0,
    *,
    missing: float = 0.03,
    nan_probs: float = 0.02,
    vol: float = 0.01,
    smooth: bool = False,
    basis: bool = False,
):
    """Random hourly inputs: forward-filled prices on missing (non-tradable) hours, funding every 8 bars,
    NaN probability rows and a NaN sigma warm-up. With ``basis`` also spot prices apart from the perp's by a
    mean-reverting basis, and a separate slippage volatility."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0, vol / 5, n))
    tradable = rng.random(n) > missing
    tradable[0] = True
    for t in np.flatnonzero(~tradable):  # a missing hour: prices carried from the previous close
        open_[t] = close[t] = close[t - 1]
    funding = np.where(np.arange(n) % 8 == 7, rng.normal(1e-4, 3e-4, n), 0.0)
    if smooth:
        z = np.zeros((n, E))
        for t in range(1, n):
            z[t] = 0.97 * z[t - 1] + rng.normal(0, 0.15, E)
        experts = np.clip(z, -1, 1)
    else:
        experts = np.clip(rng.normal(0, 0.7, (n, E)), -1, 1)
    experts[rng.random((n, E)) < 0.01] = np.nan
    probs = rng.dirichlet(np.ones(K), n)
    probs[rng.random(n) < nan_probs] = np.nan
    gating = rng.dirichlet(np.ones(E), K)
    sigma = rng.uniform(0.2, 1.2, n)
    sigma[:20] = np.nan
    out = dict(
        open_=open_,
        close=close,
        tradable=tradable,
        funding=funding,
        experts=experts,
        probs=probs,
        gating=gating,
        sigma_hat=sigma,
    )
    if basis:
        b = np.zeros(n)
        for t in range(1, n):
            b[t] = 0.9 * b[t - 1] + rng.normal(0, 3e-4)
        out["spot_close"] = close / (1 + b)
        out["spot_open"] = open_ / (1 + np.r_[b[0], b[:-1]] + rng.normal(0, 1e-4, n))
        out["slip_sigma"] = sigma * (1 + 0.5 * np.sin(np.arange(n) * 2 * np.pi / 24))
    return out


def engine_args(inputs: dict) -> tuple[BookInputs, np.ndarray]:
    """A dict of arrays (:func:`random_inputs`' keys, ``gating`` among them) as the engine's first two arguments."""
    arrays = {k: v for k, v in inputs.items() if k != "gating"}
    return BookInputs.from_arrays(**arrays), inputs["gating"]


def run(inputs, params, carry_col=CARRY):
    return run_portfolio(*engine_args(inputs), params, carry_col)


PARAM_SETS = {
    "soft": PortfolioParams(band=0.0, slip_vol_coef=3.0),
    "hard": PortfolioParams(hard_switch=True, band=0.0),
    "band": PortfolioParams(band=0.15, perp_fee_bps=10.0, slip_bps=5.0),
    "throttle": PortfolioParams(
        dd_max=0.05, k_min=0.2, rearm=0.5, band=0.05, vol_target=1.0, lev_max=3.0, ruin_floor=0.0
    ),
    "no_vol_target": PortfolioParams(vol_targeting=False, lev_max=0.8, band=0.02),
    "ruin": PortfolioParams(vol_target=2.0, lev_max=4.0, dd_max=0.0, ruin_floor=0.9, perp_fee_bps=20.0),
    "policy": PortfolioParams(
        band=0.05,
        band_rel=0.25,
        decision_hours=6.0,
        dd_max=0.05,
        k_min=0.2,
        vol_target=1.0,
        lev_max=3.0,
        ruin_floor=0.0,
    ),
    "basis": PortfolioParams(band=0.02, borrow_rate=0.5, spot_fee_bps=12.0, slip_vol_coef=2.0),
}
WITH_BASIS = ("policy", "basis")


@pytest.mark.parametrize("name", list(PARAM_SETS))
@pytest.mark.parametrize("carry_col", [CARRY, -1])
def test_kernel_matches_reference(name: str, carry_col: int) -> None:
    params = PARAM_SETS[name]
    inputs = random_inputs(
        500, seed=len(name) + carry_col, smooth=name in ("band", "throttle", "policy"), basis=name in WITH_BASIS
    )
    fast = run(inputs, params, carry_col)
    slow = run_portfolio_reference(*engine_args(inputs), params, carry_col)
    assert list(fast.columns) == list(slow.columns)
    np.testing.assert_allclose(fast.to_numpy(), slow.to_numpy(), rtol=0, atol=1e-9, equal_nan=True)
    assert (fast["turnover"] > 0).sum() > (5 if name == "ruin" else 20)  # the run trades
    if name == "throttle":
        assert fast["throttle"].min() < 0.5  # the throttle engaged
    if name == "band":
        held = (fast["position"].diff() == 0) & (fast["target_position"].shift().ne(fast["position"]))
        assert held.sum() > 10  # the band kept positions away from their targets
    if name == "hard":
        weights = fast.filter(like="weight_").dropna().to_numpy()
        rows = {tuple(r) for r in inputs["gating"]}
        assert all(tuple(w) in rows for w in weights)
    if name == "ruin":
        assert fast["equity"].min() < 0.9
        after = fast.index[fast["equity"] < 0.9][0]
        assert (fast.loc[after + 2 :, "position"] == 0).all()
    if name == "basis" and carry_col >= 0:
        assert fast["basis_pnl"].abs().sum() > 0 and fast["borrow_cost"].sum() > 0
    # the return is the sum of its parts
    parts = (
        fast["price_pnl"]
        + fast["basis_pnl"]
        + fast["funding_pnl"]
        - fast["fee_cost"]
        - fast["slippage_cost"]
        - fast["borrow_cost"]
    )
    np.testing.assert_allclose(parts, fast["bar_return"], rtol=0, atol=1e-15)


def test_score_matches_frame() -> None:
    inputs = random_inputs(700, seed=3)
    params = PARAM_SETS["throttle"]
    frame = run(inputs, params)
    score = backtest_score(*engine_args(inputs), params, CARRY)
    r = frame["bar_return"].to_numpy()
    assert math.isclose(score.log_growth, math.log(frame["equity"].iloc[-1]), abs_tol=1e-12)
    assert math.isclose(score.sum_return, r.sum(), abs_tol=1e-12)
    assert math.isclose(score.sum_sq_return, (r * r).sum(), abs_tol=1e-12)
    assert math.isclose(score.sum_sq_neg_return, (np.minimum(r, 0) ** 2).sum(), abs_tol=1e-12)
    assert score.max_drawdown == frame["drawdown"].max()
    assert math.isclose(score.turnover, frame["turnover"].sum(), abs_tol=1e-9)
    assert math.isclose(score.costs, (frame["fee_cost"] + frame["slippage_cost"]).sum(), abs_tol=1e-12)
    assert frame.attrs["score"] == score._asdict()


@pytest.mark.parametrize("name", sorted(PARAM_SETS))
def test_returns_are_the_frames_bar_returns_bit_for_bit(name: str) -> None:
    """``backtest_returns`` (the score loop writing each bar's return) gives the full outputs' ``bar_return`` to the
    last bit and the same scalars as ``backtest_score``, also on a book that starts flat for whole blocks (NaN
    probabilities: blocks the score loop skips) and when continuing a carried account."""
    inputs = random_inputs(1500, seed=11)
    inputs["probs"][:600] = np.nan  # more than two kernel blocks of 256 bars where no position can be taken
    params = PARAM_SETS[name]
    frame = run(inputs, params)
    returns, score = backtest_returns(*engine_args(inputs), params, CARRY)
    assert returns.tobytes() == frame["bar_return"].to_numpy().tobytes()
    assert score == backtest_score(*engine_args(inputs), params, CARRY)
    first, second = (dict(inputs), dict(inputs))
    for key, value in inputs.items():
        if key != "gating":
            first[key], second[key] = value[:900], value[900:]
    full_state, returns_state = new_state(E), new_state(E)
    run_portfolio(*engine_args(first), params, CARRY, state=full_state)
    backtest_returns(*engine_args(first), params, CARRY, state=returns_state)
    tail = run_portfolio(*engine_args(second), params, CARRY, state=full_state)
    tail_returns, _ = backtest_returns(*engine_args(second), params, CARRY, state=returns_state)
    assert tail_returns.tobytes() == tail["bar_return"].to_numpy().tobytes()


def test_output_columns_and_contributions() -> None:
    inputs = random_inputs(300, seed=5)
    frame = run_portfolio(
        *engine_args(inputs),
        PARAM_SETS["band"],
        CARRY,
        index=pd.date_range("2024-01-01", periods=300, freq="h", tz="UTC"),
        expert_names=["trend", "revert", "noise", "carry"],
    )
    for col in (*BAR_COLUMNS, "gross_exposure", "net_exposure", "contrib_trend", "contrib_carry", "weight_carry"):
        assert col in frame
    directional = frame[["contrib_trend", "contrib_revert", "contrib_noise"]].sum(axis=1)
    np.testing.assert_allclose(directional, frame["position"], atol=1e-12)
    np.testing.assert_array_equal(frame["contrib_carry"], frame["carry_position"])
    np.testing.assert_array_equal(frame["net_exposure"], frame["position"])


# --------------------------------------------------------------------------------------------- accounting invariants


def flat_market(n: int, price: float = 100.0):
    return dict(
        open_=np.full(n, price),
        close=np.full(n, price),
        tradable=np.ones(n, bool),
        funding=np.zeros(n),
        sigma_hat=np.full(n, 0.5),
    )


def single(expert: np.ndarray, gating=((1.0,),)):
    """One regime (probs = 1) and the given experts (n, E) with gating row(s)."""
    expert = np.asarray(expert, float)
    if expert.ndim == 1:
        expert = expert[:, None]
    n = expert.shape[0]
    return dict(experts=expert, probs=np.ones((n, 1)), gating=np.asarray(gating, float))


PLAIN = PortfolioParams(
    vol_targeting=False, lev_max=1.0, dd_max=0.0, band=0.0, perp_fee_bps=0.0, slip_bps=0.0, ruin_floor=0.0
)


def test_no_position_no_pnl_and_no_costs() -> None:
    inputs = random_inputs(400, seed=7)
    inputs["experts"] = np.zeros((400, E))
    frame = run(inputs, PortfolioParams())
    assert (
        frame[
            ["position", "carry_position", "turnover", "fee_cost", "slippage_cost", "funding_pnl", "bar_return"]
        ].to_numpy()
        == 0
    ).all()
    assert (frame["equity"] == 1.0).all()


def test_flat_bars_earn_only_costs() -> None:
    inputs = random_inputs(600, seed=8)
    on = (np.arange(600) // 40) % 2 == 0  # exposure switched on and off in stretches
    inputs["experts"] = np.where(on[:, None], inputs["experts"], 0.0)
    frame = run(inputs, PortfolioParams(band=0.0), carry_col=CARRY)
    flat_before = np.r_[True, (frame["position"].to_numpy()[:-1] == 0) & (frame["carry_position"].to_numpy()[:-1] == 0)]
    flat_now = (frame["position"] == 0).to_numpy() & (frame["carry_position"] == 0).to_numpy()
    both = flat_before & flat_now
    assert both.sum() > 100
    np.testing.assert_array_equal(frame["bar_return"].to_numpy()[both], 0.0)
    closing = flat_now & ~flat_before  # bars on which everything was closed at the open
    assert closing.sum() > 3
    r = frame["bar_return"].to_numpy()
    # closing at the open: P&L is the gap of the old position plus costs only
    prev = frame["position"].shift(1).to_numpy()
    gap = inputs["open_"] / np.r_[np.nan, inputs["close"][:-1]] - 1
    expected = prev * gap - frame["fee_cost"].to_numpy() - frame["slippage_cost"].to_numpy()
    np.testing.assert_allclose(r[closing], expected[closing], atol=1e-15)


def test_doubling_fees_doubles_fee_costs_exactly() -> None:
    inputs = random_inputs(800, seed=9)
    # no throttle, band 0 and no ruin stop: positions do not depend on the equity path, hence not on fees
    base = PortfolioParams(dd_max=0.0, band=0.0, ruin_floor=0.0, perp_fee_bps=3.0, slip_bps=2.0, slip_vol_coef=4.0)
    one = run(inputs, base)
    two = run(inputs, dataclasses.replace(base, perp_fee_bps=6.0, spot_fee_bps=2.0 * base.spot_fee_bps))
    np.testing.assert_array_equal(one["position"], two["position"])
    np.testing.assert_array_equal(one["carry_position"], two["carry_position"])
    np.testing.assert_array_equal(two["fee_cost"].to_numpy(), 2.0 * one["fee_cost"].to_numpy())
    np.testing.assert_array_equal(two["slippage_cost"], one["slippage_cost"])
    assert one["fee_cost"].sum() > 0
    assert two["equity"].iloc[-1] < one["equity"].iloc[-1]


@pytest.mark.parametrize(("side", "rate"), [(1.0, 1e-3), (-1.0, 1e-3), (1.0, -1e-3), (-1.0, -1e-3)])
def test_funding_sign_directional(side: float, rate: float) -> None:
    n = 30
    market = flat_market(n)
    market["funding"][20] = rate
    frame = run_portfolio(*engine_args({**market, **single(np.full(n, side))}), PLAIN)
    assert frame["position"].iloc[20] == side
    # long pays positive funding (receives negative), short the reverse
    assert frame["funding_pnl"].iloc[20] == -side * rate
    assert frame["bar_return"].iloc[20] == -side * rate
    assert (frame["bar_return"].drop(index=20) == 0).all()


@pytest.mark.parametrize("carry_signal", [-1.0, 1.0])
def test_funding_sign_carry_and_no_price_pnl(carry_signal: float) -> None:
    n = 60
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    market = dict(
        open_=np.r_[100.0, close[:-1]],
        close=close,
        tradable=np.ones(n, bool),
        funding=np.zeros(n),
        sigma_hat=np.full(n, 0.5),
    )
    market["funding"][[15, 40]] = [2e-3, -1e-3]
    experts = np.column_stack([np.zeros(n), np.full(n, carry_signal)])
    params = dataclasses.replace(PLAIN, lev_max=2.0, perp_fee_bps=5.0, slip_bps=1.0)
    frame = run_portfolio(*engine_args({**market, **single(experts, gating=((0.5, 0.5),))}), params, 1)
    c = 0.5 * carry_signal
    assert frame["carry_position"].iloc[1:].eq(c).all()
    assert frame["position"].eq(0).all()
    # short perp (c < 0) receives positive funding; no price P&L on the carry when spot and perp prices are the
    # same (no basis); both legs pay costs, each at its own venue's fee
    assert frame["funding_pnl"].iloc[15] == -c * 2e-3
    assert frame["funding_pnl"].iloc[40] == c * 1e-3
    assert frame["turnover"].iloc[1] == 2 * abs(c)
    assert frame["fee_cost"].iloc[1] == pytest.approx(abs(c) * (5e-4 + 10e-4), abs=1e-18)
    assert frame["carry_fee_cost"].iloc[1] == frame["fee_cost"].iloc[1]
    assert frame["basis_pnl"].eq(0).all() and frame["price_pnl"].eq(0).all()
    expected = frame["funding_pnl"] - frame["fee_cost"] - frame["slippage_cost"]
    np.testing.assert_allclose(frame["bar_return"], expected, atol=1e-18)
    assert frame["gross_exposure"].iloc[5] == 2 * abs(c)
    assert frame["net_exposure"].iloc[5] == 0


def test_leverage_never_exceeds_cap() -> None:
    inputs = random_inputs(1500, seed=11)
    inputs["sigma_hat"] = np.where(np.isnan(inputs["sigma_hat"]), np.nan, inputs["sigma_hat"] / 20)  # huge lev
    inputs["experts"][:, :3] = np.sign(inputs["experts"][:, :3])
    inputs["experts"][:, CARRY] = -1.0
    for params in (
        PortfolioParams(lev_max=1.5, vol_target=3.0, band=0.0),
        PortfolioParams(lev_max=2.5, vol_target=3.0, band=0.3, hard_switch=True),
    ):
        frame = run(inputs, params)
        lmax = params.lev_max
        assert frame["leverage"].max() == lmax
        assert frame["position"].abs().max() <= lmax
        assert frame["gross_exposure"].max() <= lmax + 1e-12
        if params.band == 0:
            assert frame["gross_exposure"].max() == pytest.approx(lmax)  # the carry leg is cut to fit the cap
        assert (frame["carry_position"] != 0).any()


def test_throttle_engages_at_drawdown_with_hysteresis() -> None:
    n = 200
    price = np.r_[np.full(10, 100.0), 100 * 0.97 ** np.arange(1, 61), np.full(20, 100 * 0.97**60)]
    price = np.r_[price, price[-1] * 1.02 ** np.arange(1, n - len(price) + 1)]
    market = flat_market(n)
    market["open_"] = np.r_[price[0], price[:-1]]
    market["close"] = price
    params = dataclasses.replace(PLAIN, dd_max=0.2, k_min=0.25, rearm=0.5)
    frame = run_portfolio(*engine_args({**market, **single(np.ones(n))}), params)
    dd = frame["drawdown"].to_numpy()
    thr = frame["throttle"].to_numpy()
    raw = np.clip(1 - dd / 0.2, 0.25, 1.0)
    # independent recurrence: down at once, back up only once dd <= 0.1
    expected = np.empty(n)
    level = 1.0
    for t in range(n):
        level = raw[t] if (raw[t] < level or dd[t] <= 0.1) else level
        expected[t] = level
    np.testing.assert_allclose(thr, expected, atol=1e-12)
    assert dd.max() >= 0.2
    first = int(np.argmax(dd >= 0.75 * 0.2))  # 1 − dd/dd_max reaches k_min = 0.25 at dd = 0.15
    assert dd[first - 1] < 0.15 <= dd[first]
    assert thr[first] == 0.25 and thr[first - 1] > 0.25
    assert (thr[dd >= 0.2] == 0.25).all()
    assert frame["target_position"].iloc[first] == 0.25
    assert frame["position"].iloc[first + 1] == 0.25
    # during the recovery the throttle stays at its floor while 0.1 < dd < 0.2 ...
    recovering = np.flatnonzero((np.arange(n) > int(np.argmax(dd))) & (dd > 0.1))
    assert len(recovering) > 3 and (thr[recovering] == thr[recovering[0]]).all()
    # ... and re-arms once dd <= rearm · dd_max
    rearmed = np.flatnonzero((np.arange(n) > first) & (dd <= 0.1))
    assert len(rearmed) and np.allclose(thr[rearmed], raw[rearmed], atol=1e-12)


def test_execution_lag_and_missing_bar() -> None:
    n = 40
    signal = np.zeros(n)
    signal[10:] = 1.0
    frame = run_portfolio(*engine_args({**flat_market(n), **single(signal)}), PLAIN)
    assert frame["target_position"].iloc[10] == 1.0
    assert (frame["position"].iloc[:11] == 0).all()
    assert frame["position"].iloc[11] == 1.0
    market = flat_market(n)
    market["tradable"][11] = False
    frame = run_portfolio(*engine_args({**market, **single(signal)}), PLAIN)
    assert frame["position"].iloc[11] == 0 and frame["turnover"].iloc[11] == 0
    assert frame["position"].iloc[12] == 1.0


def test_unknown_probs_or_sigma_means_flat() -> None:
    inputs = random_inputs(300, seed=13, nan_probs=0.0)
    inputs["probs"][100:110] = np.nan
    inputs["sigma_hat"][200:205] = np.nan
    frame = run(inputs, PortfolioParams(band=0.2))
    assert (frame["position"].iloc[np.r_[101:111, 201:206, 1:21]] == 0).all()
    assert (frame["carry_position"].iloc[np.r_[101:111, 201:206]] == 0).all()
    assert frame["position"].iloc[111:200].ne(0).any()


@pytest.mark.parametrize("cut", [50, 255, 256, 257, 400, 598])
def test_causality(cut: int) -> None:
    inputs = random_inputs(600, seed=17, smooth=True)
    params = dataclasses.replace(PARAM_SETS["throttle"], band=0.03, slip_vol_coef=2.0, ruin_floor=0.2)
    base = run(inputs, params)
    rng = np.random.default_rng(cut)
    later = slice(cut + 1, None)
    bumped = {k: v.copy() for k, v in inputs.items()}
    bumped["close"][later] *= np.exp(rng.normal(0, 0.05, 600 - cut - 1))
    bumped["open_"][later] *= np.exp(rng.normal(0, 0.05, 600 - cut - 1))
    bumped["funding"][later] = rng.normal(0, 1e-3, 600 - cut - 1)
    bumped["experts"][later] = -bumped["experts"][later]
    bumped["probs"][later] = rng.dirichlet(np.ones(K), 600 - cut - 1)
    bumped["sigma_hat"][later] = rng.uniform(0.05, 3, 600 - cut - 1)
    bumped["tradable"][cut + 2 :] = ~bumped["tradable"][cut + 2 :]  # whether bar t+1 trades is known at its open
    moved = run(bumped, params)
    held = ["position", "carry_position", *base.filter(like="contrib_").columns]
    pd.testing.assert_frame_equal(moved.loc[: cut + 1, held], base.loc[: cut + 1, held], check_exact=True)
    pd.testing.assert_frame_equal(moved.loc[:cut], base.loc[:cut], check_exact=True)
    if cut + 2 < 600:
        assert not moved.loc[cut + 2 :, "position"].equals(base.loc[cut + 2 :, "position"])


@pytest.mark.parametrize("hard", [False, True])
def test_gating_weights_sum_to_one(hard: bool) -> None:
    inputs = random_inputs(500, seed=19)
    weights = gating_weights(inputs["probs"], inputs["gating"], hard)
    known = ~np.isnan(inputs["probs"]).any(axis=1)
    assert np.isnan(weights[~known]).all()
    np.testing.assert_allclose(weights[known].sum(axis=1), 1.0, atol=1e-12)
    assert (weights[known] >= 0).all()
    if hard:
        np.testing.assert_array_equal(weights[known], inputs["gating"][inputs["probs"][known].argmax(axis=1)])
    else:
        np.testing.assert_allclose(weights[known], inputs["probs"][known] @ inputs["gating"], atol=1e-14)
    frame = run(inputs, PortfolioParams(hard_switch=hard))
    np.testing.assert_allclose(frame.filter(like="weight_").to_numpy(), weights, atol=1e-14, equal_nan=True)


def test_bad_inputs_rejected() -> None:
    inputs = random_inputs(50, seed=1)
    with pytest.raises(ValueError, match="gating"):
        run_portfolio(*engine_args({**inputs, "gating": inputs["gating"][:, :2]}), PortfolioParams())
    with pytest.raises(ValueError, match="carry_col"):
        run_portfolio(*engine_args(inputs), PortfolioParams(), carry_col=7)
    with pytest.raises(ValueError, match="params"):
        run_portfolio(*engine_args(inputs), np.zeros(3))


# ---------------------------------------------------------------------------------------------------------- metrics


def test_metrics_on_a_known_path() -> None:
    idx = pd.date_range("2024-01-01", periods=24 * 60, freq="h", tz="UTC")
    r = np.zeros(len(idx))
    r[10] = 0.10
    r[100] = -0.20
    r[800] = 0.30
    returns = pd.Series(r, index=idx)
    equity = np.cumprod(1 + r)
    m = portfolio_metrics(
        returns, equity, np.ones(len(idx)), np.full(len(idx), 1e-5), ruin_floor=0.9, exposure=np.ones(len(idx))
    )
    assert m["final_equity"] == pytest.approx(1.1 * 0.8 * 1.3)
    assert m["cagr"] == pytest.approx((1.1 * 0.8 * 1.3) ** (8760 / len(idx)) - 1)
    assert m["max_drawdown"] == pytest.approx(0.2)
    jan = 1.1 * 0.8 - 1
    feb = 1.3 - 1  # 2024: 31 + 29 days, both months complete
    assert m["monthly_return"] == pytest.approx((1 + m["cagr"]) ** (1 / 12) - 1)
    assert (1 + m["monthly_return"]) ** (12 * len(idx) / 8760) == pytest.approx(m["final_equity"])  # compounds back
    assert m["mean_monthly_return_arithmetic"] == pytest.approx((jan + feb) / 2)
    years = len(idx) / 8760
    assert m["cost_total"] == pytest.approx(len(idx) * 1e-5)
    assert m["cost_drag"] == pytest.approx(len(idx) * 1e-5 / years)  # 8.76 % of equity a year
    assert m["cost_share_of_gross"] == pytest.approx(len(idx) * 1e-5 / (r.sum() + len(idx) * 1e-5))
    assert m["tuw_longest_days"] == pytest.approx((800 - 100) / 24)  # under water on bars 100 … 799
    assert m["tuw_share"] == pytest.approx(700 / len(idx))
    assert m["hit_rate"] == pytest.approx(2 / len(idx))
    assert m["survival"] == 0.0  # 0.88 < 0.9
    assert m["turnover_annual"] == pytest.approx(8760)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(8760))
    assert m["calmar"] == pytest.approx(m["cagr"] / 0.2)
    # without the last hour, February is incomplete: only January counts in the arithmetic mean
    short = portfolio_metrics(returns.iloc[:-1], equity[:-1], np.ones(len(idx) - 1), np.zeros(len(idx) - 1))
    assert short["mean_monthly_return_arithmetic"] == pytest.approx(jan)
    assert short["cost_drag"] == 0.0 and short["cost_share_of_gross"] == 0.0
    # costs above a positive gross P&L: a share above 1; no gross profit: NaN (nothing to share)
    costs = np.full(len(idx), 0.30 / len(idx))
    net = r - costs  # Σ gross returns 0.2, costs 0.3: the run loses money after costs
    losing = portfolio_metrics(pd.Series(net, index=idx), np.cumprod(1 + net), np.ones(len(idx)), costs)
    assert losing["cost_share_of_gross"] == pytest.approx(0.30 / 0.20)
    flat = portfolio_metrics(pd.Series(-costs, index=idx), np.cumprod(1 - costs), np.ones(len(idx)), costs)
    assert flat["cost_drag"] == pytest.approx(0.30 / years) and math.isnan(flat["cost_share_of_gross"])


def test_calendar_months_complete_only() -> None:
    from btc_assets.portfolio.metrics import calendar_month_returns

    idx = pd.date_range("2024-01-15 05:00", "2024-04-01 00:00", freq="h", tz="UTC")  # Jan and Apr partial
    r = pd.Series(0.0, index=idx)
    r[pd.Timestamp("2024-02-10", tz="UTC")] = 0.05
    r[pd.Timestamp("2024-03-31 23:00", tz="UTC")] = -0.02  # the last hour of March
    r[pd.Timestamp("2024-01-20", tz="UTC")] = 0.5  # a partial month: left out
    months = calendar_month_returns(r)
    assert list(months.index) == [(2024, 2), (2024, 3)]
    np.testing.assert_allclose(months.to_numpy(), [0.05, -0.02])
    assert len(calendar_month_returns(r, complete_only=False)) == 4
    assert len(calendar_month_returns(r.drop(pd.Timestamp("2024-03-01", tz="UTC")))) == 1  # March lacks its first hour


def test_buy_and_hold_references() -> None:
    inputs = random_inputs(2000, seed=23, missing=0.0)
    params = PortfolioParams(perp_fee_bps=4.0, slip_bps=1.0, vol_target=0.3, lev_max=2.0)
    bh = buy_and_hold_perp(inputs["open_"], inputs["close"], inputs["tradable"], inputs["funding"], params)
    assert bh["position"].iloc[0] == 0 and (bh["position"].iloc[1:] == 1.0).all()
    assert bh["turnover"].sum() == 1.0
    o, c, f = inputs["open_"], inputs["close"], inputs["funding"]
    r = (o[1:] / c[:-1] - 1) * np.r_[0.0, np.ones(1998)] + (c[1:] / o[1:] - 1) - f[1:]
    r[0] -= 5e-4  # fee + slippage of the entry
    assert bh["equity"].iloc[-1] == pytest.approx(np.prod(1 + r), rel=1e-12)
    # spot: one entry at the spot fee (10 bps) + the base slippage, no funding
    spot = buy_and_hold_spot(inputs["open_"], inputs["close"], inputs["tradable"], params)
    r_spot = r + f[1:]
    r_spot[0] -= 1e-3 - 4e-4  # the spot fee instead of the perp fee
    assert spot["equity"].iloc[-1] == pytest.approx(np.prod(1 + r_spot), rel=1e-12)
    assert spot["turnover"].sum() == 1.0 and spot["funding_pnl"].eq(0).all()
    assert spot["fee_cost"].sum() == pytest.approx(1e-3) and bh["fee_cost"].sum() == pytest.approx(4e-4)
    assert (bh["funding_pnl"] != 0).any()
    vt = vol_targeted_buy_and_hold(
        inputs["open_"], inputs["close"], inputs["tradable"], inputs["funding"], inputs["sigma_hat"], params
    )
    assert vt["position"].max() <= 2.0 and vt["throttle"].eq(1.0).all()
    lev = np.minimum(2.0, 0.3 / inputs["sigma_hat"])
    np.testing.assert_allclose(vt["position"].iloc[22:], lev[21:-1], atol=1e-15)
    m = portfolio_metrics(vt["bar_return"], vt["equity"], vt["turnover"], vt["fee_cost"] + vt["slippage_cost"])
    assert np.isfinite([m["sharpe"], m["sortino"], m["ann_vol"], m["cagr"]]).all()


def test_frame_metrics_count_funding_paid_as_a_cost() -> None:
    from btc_assets.portfolio.metrics import bar_costs, frame_metrics

    inputs = random_inputs(2000, seed=23, missing=0.0)
    bh = buy_and_hold_perp(inputs["open_"], inputs["close"], inputs["tradable"], inputs["funding"])
    paid = np.maximum(-bh["funding_pnl"].to_numpy(), 0.0)
    assert paid.sum() > 0 and (bh["funding_pnl"] > 0).any()  # it pays and receives
    np.testing.assert_allclose(bar_costs(bh), bh["fee_cost"] + bh["slippage_cost"] + paid)
    m = frame_metrics(bh)
    assert m["cost_drag"] == pytest.approx(bar_costs(bh).sum() / (2000 / 8760))
    assert m["cost_total"] > (bh["fee_cost"] + bh["slippage_cost"]).sum()


@pytest.mark.parametrize("name", list(PARAM_SETS))
def test_books_side_by_side_equal_each_book_alone(name: str) -> None:
    """``backtest_scores`` runs B books over the same bars in one pass, each with its own gating, parameters (all
    but the shared ones), state and expert column: every book's scalars, returns and final state are those of the
    book run alone, bit for bit, fresh and carried, and in blocks a book skips (flat, probabilities unknown)."""
    from btc_assets.portfolio.engine import SHARED_PARAMS, backtest_returns, backtest_scores
    from btc_assets.portfolio.layout import N_STATE, Param

    inputs = random_inputs(900, seed=3 + len(name), smooth=True, basis=name in WITH_BASIS, nan_probs=0.0)
    inputs["probs"][300:600] = np.nan  # a stretch with no position: whole blocks a flat book skips
    book, _ = engine_args(inputs)
    rng = np.random.default_rng(len(name))
    n_books, at, n = 5, 1, len(book.close)
    base = PARAM_SETS[name].to_array()
    params = np.stack([base] * n_books)
    for p in (Param.DD_MAX, Param.K_MIN, Param.BAND, Param.BAND_REL, Param.SPOT_FEE_BPS, Param.BORROW_RATE):
        params[1:, p] = base[p] * rng.uniform(0.5, 1.5, n_books - 1)
    params[1:, Param.DECISION_HOURS] = rng.integers(1, 12, n_books - 1)
    params[3, Param.RUIN_FLOOR] = 0.999  # ruined early
    gatings = np.stack([rng.dirichlet(np.ones(book.experts.shape[1]), book.probs.shape[1]) for _ in range(n_books)])
    column = rng.normal(0.0, 1.0, (n_books, n + 40))  # each book's own column `at`, read from row 40
    column[:, rng.random(n + 40) < 0.05] = np.nan
    start = 40

    def alone(b: int, state: np.ndarray, rows: slice) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
        """Book b run by itself from ``state`` over ``rows``: its returns, scalars and final state."""
        experts = book.experts.copy()
        experts[:, at] = column[b, start : start + n]
        own = book._replace(experts=experts).rows(rows.start, rows.stop)
        end = state.copy()
        returns, score = backtest_returns(own, gatings[b], params[b], CARRY, state=end)
        assert backtest_score(own, gatings[b], params[b], CARRY, state=state.copy()) == score
        return returns, tuple(score), end

    states = np.stack([new_state(book.experts.shape[1]) for _ in range(n_books)])
    for rows in (slice(0, 500), slice(500, n)):  # fresh, then carried into the second piece
        piece = book.rows(rows.start, rows.stop)
        shared = {"column": column, "column_at": at, "column_start": start + rows.start}
        scored = states.copy()
        together = backtest_scores(piece, gatings, params, CARRY, states=scored, **shared)
        returns = np.zeros((n_books, rows.stop - rows.start))
        after = states.copy()
        assert backtest_scores(piece, gatings, params, CARRY, states=after, returns=returns, **shared).tobytes() == (
            together.tobytes()
        )
        for b in range(n_books):
            own_returns, score, end = alone(b, states[b], rows)
            assert tuple(together[b].tolist()) == score, (name, b, rows)
            assert returns[b].tobytes() == own_returns.tobytes()
            assert after[b, :N_STATE].tobytes() == end[:N_STATE].tobytes() == scored[b, :N_STATE].tobytes()
        states = after
    assert len({tuple(r) for r in together.tolist()}) == n_books, "the books do not differ: the test proves nothing"
    bad = params.copy()
    bad[2, SHARED_PARAMS[0]] += 0.1
    with pytest.raises(ValueError, match="must agree"):
        backtest_scores(book, gatings, bad, CARRY, column=column, column_at=at, column_start=start)
