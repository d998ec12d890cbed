"""Causality, bit for bit, on real data: change every value after bar t and recompute; nothing up to t moves.

Covered: the volatility table (realized estimators, GARCH forecasts and the horizon forecast), the mixture-of-experts
portfolio on spot and the perp's own bars (every cost, the rebalance policy) and the regime probabilities — the
out-of-sample (test-segment) series and every refit whose training window ended by t. A refit whose training
window extends past t is in-sample over its own training window by design (the optimiser trains on it), so it
is excluded; its *test* probabilities come later than its training end and are covered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from btc_assets.config import RegimeSettings, VolatilitySettings
from btc_assets.folds import FoldSchedule
from btc_assets.ingestion import build_market_bars, load_funding, load_ohlcv, load_perp_ohlcv
from btc_assets.regimes import compute_regimes, out_of_sample
from btc_assets.volatility import compute_volatility

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

SCHEDULE = FoldSchedule(warmup="365D", test="91D")
VOL = VolatilitySettings(train_window=8_760)
REGIMES = RegimeSettings(n_states=5, n_restarts=1, n_iter=8, tol=1e-2)


@pytest.fixture(scope="module")
def real_bars(shared_data: Path) -> pd.DataFrame:
    ohlcv = load_ohlcv([shared_data / "btcusdt_1h.parquet"]).frame
    ohlcv = ohlcv[ohlcv["timestamp"] < pd.Timestamp("2020-09-01", tz="UTC")].reset_index(drop=True)
    funding = load_funding([shared_data / "btcusdt_funding_8h.parquet"]).frame
    perp = load_perp_ohlcv([shared_data / "btcusdt_perp_1h.parquet"]).frame
    return build_market_bars(ohlcv, funding, perp).bars


def perturb_after(bars: pd.DataFrame, t: int, seed: int = 7) -> pd.DataFrame:
    """Every price after bar t replaced by a different, still valid, path (and the funding changed too)."""
    rng = np.random.default_rng(seed)
    out = bars.copy()
    n = len(out) - t - 1
    shock = np.exp(np.cumsum(rng.normal(0.0005, 0.02, n)))
    for column in ("open", "high", "low", "close", "perp_open", "perp_high", "perp_low", "perp_close"):
        out.loc[t + 1 :, column] = out.loc[t + 1 :, column].to_numpy() * shock
    basis = 1 + rng.normal(0, 1e-3, n)  # and the perp's basis to spot
    for column in ("perp_open", "perp_close"):
        out.loc[t + 1 :, column] = out.loc[t + 1 :, column].to_numpy() * basis
    out.loc[t + 1 :, "volume"] = out.loc[t + 1 :, "volume"].to_numpy() * rng.uniform(0.5, 2.0, n)
    out.loc[t + 1 :, "funding_rate"] = rng.normal(0, 0.0005, n) * out.loc[t + 1 :, "funding_time"].notna()
    return out


@pytest.fixture(scope="module")
def runs(real_bars: pd.DataFrame) -> dict[str, object]:
    t = int(np.searchsorted(real_bars["timestamp"], pd.Timestamp("2019-12-15 13:00", tz="UTC")))
    perturbed = perturb_after(real_bars, t)
    vol_a = compute_volatility(real_bars, SCHEDULE, VOL)
    vol_b = compute_volatility(perturbed, SCHEDULE, VOL)
    reg_a = compute_regimes(real_bars, vol_a, SCHEDULE, REGIMES)
    reg_b = compute_regimes(perturbed, vol_b, SCHEDULE, REGIMES)
    return {
        "t": t,
        "cut": real_bars["timestamp"].iloc[t],
        "vol": (vol_a, vol_b),
        "reg": (reg_a, reg_b),
        "bars": (real_bars, perturbed),
    }


def test_portfolio_up_to_t_unchanged(runs: dict) -> None:
    """The mixture of experts on spot and perp bars, with fees per leg, basis, funding, borrowing and the
    decision-interval policy: its per-bar frame up to t is bit-identical when everything after t changes."""
    from btc_assets import experts
    from btc_assets.config import PortfolioSettings
    from btc_assets.portfolio.tables import compute_portfolio, prepare_inputs

    t = runs["t"]
    settings = PortfolioSettings(borrow_rate=0.2, band=0.02, decision_hours=12)
    frames = []
    for bars, vol, reg in zip(runs["bars"], runs["vol"], runs["reg"], strict=True):
        arrays = experts.BarArrays.from_market_bars(bars)
        signals = pd.DataFrame(
            experts.expert_positions(arrays, experts.DEFAULT_CONFIGS), columns=list(experts.EXPERT_NAMES)
        )
        frames.append(
            compute_portfolio(prepare_inputs(bars, vol, reg.probabilities, signals, settings), settings).frame
        )
    a, b = frames
    held = a.iloc[: t + 1]
    assert held["position"].ne(0).sum() > 200, held["target_position"].abs().describe()
    assert held["basis_pnl"].ne(0).any() or held["carry_position"].eq(0).all()
    pd.testing.assert_frame_equal(a.iloc[: t + 1], b.iloc[: t + 1], check_exact=True)
    assert not np.array_equal(a["equity"].iloc[t + 1 :], b["equity"].iloc[t + 1 :]), "the test must bite"


def test_volatility_up_to_t_unchanged(runs: dict) -> None:
    t = runs["t"]
    vol_a, vol_b = runs["vol"]
    assert vol_a["sigma"].iloc[: t + 1].notna().sum() > 5_000
    pd.testing.assert_frame_equal(vol_a.iloc[: t + 1], vol_b.iloc[: t + 1], check_exact=True)
    assert not np.array_equal(vol_a["sigma"].iloc[t + 1 :], vol_b["sigma"].iloc[t + 1 :]), "the test must bite"


def test_regime_probabilities_up_to_t_unchanged(runs: dict) -> None:
    cut = runs["cut"]
    reg_a, reg_b = runs["reg"]
    oos_a, oos_b = out_of_sample(reg_a.probabilities), out_of_sample(reg_b.probabilities)
    before_a, before_b = oos_a[oos_a["timestamp"] <= cut], oos_b[oos_b["timestamp"] <= cut]
    assert len(before_a) > 2_000
    pd.testing.assert_frame_equal(before_a, before_b, check_exact=True)
    finished = reg_a.refits.loc[reg_a.refits["train_end"] <= cut, "fold"]
    assert len(finished) >= 2
    for frame in (reg_a.probabilities, reg_b.probabilities):
        assert frame["fold"].isin(finished).any()
    sel_a = reg_a.probabilities[reg_a.probabilities["fold"].isin(finished) & (reg_a.probabilities["timestamp"] <= cut)]
    sel_b = reg_b.probabilities[reg_b.probabilities["fold"].isin(finished) & (reg_b.probabilities["timestamp"] <= cut)]
    pd.testing.assert_frame_equal(sel_a.reset_index(drop=True), sel_b.reset_index(drop=True), check_exact=True)
    after_a, after_b = oos_a[oos_a["timestamp"] > cut], oos_b[oos_b["timestamp"] > cut]
    assert not np.array_equal(after_a.filter(like="p_").to_numpy(), after_b.filter(like="p_").to_numpy())


def test_validation_slice_is_out_of_sample_for_the_regime_model(runs: dict) -> None:
    """A refit whose inner validation slice contains t was fitted (HMM and standardisation) on its fit piece only:
    perturbing everything after t leaves every probability of that refit up to t bit-identical, its fit piece and
    the validation bars up to t included. (Fitted on the whole training window, as before, this fails.)"""
    cut = runs["cut"]
    reg_a, reg_b = runs["reg"]
    refits = reg_a.refits
    inside = refits.loc[(refits["fit_end"] <= cut) & (refits["train_end"] > cut), "fold"]
    assert len(inside) >= 1, "no refit has t in its validation slice: the test proves nothing"
    for refit in inside:
        pa, pb = reg_a.probabilities, reg_b.probabilities
        rows_a = pa[(pa["fold"] == refit) & (pa["timestamp"] <= cut)]
        rows_b = pb[(pb["fold"] == refit) & (pb["timestamp"] <= cut)]
        assert (rows_a["segment"] == "validation").sum() > 24
        pd.testing.assert_frame_equal(rows_a.reset_index(drop=True), rows_b.reset_index(drop=True), check_exact=True)
