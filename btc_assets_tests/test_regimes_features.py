"""Regime features (causal, bit for bit) and the canonical phase rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from btc_assets.regimes._reference import low_frequency_power_reference
from btc_assets.regimes.features import FEATURES, hourly_log_returns, low_frequency_power, regime_features
from btc_assets.regimes.phases import canonical_phases


def test_lfp_matches_explicit_dft() -> None:
    r = np.random.default_rng(0).normal(0, 0.01, 400)
    np.testing.assert_allclose(
        low_frequency_power(r, 64, 16), low_frequency_power_reference(r, 64, 16), rtol=1e-10, equal_nan=True
    )


def test_lfp_separates_trend_from_chop() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    trending = np.convolve(rng.normal(0, 1, n), np.ones(48) / 48, mode="same")  # persistent returns
    choppy = np.diff(rng.normal(0, 1, n + 1))  # negatively autocorrelated returns
    assert np.nanmean(low_frequency_power(trending)) > 0.8
    assert np.nanmean(low_frequency_power(choppy)) < 0.05


def test_lfp_causal_bit_exact() -> None:
    r = np.random.default_rng(2).normal(0, 0.01, 20_000)
    base = low_frequency_power(r)
    cut = 12_345
    perturbed = r.copy()
    perturbed[cut + 1 :] = np.random.default_rng(3).normal(0, 0.05, len(r) - cut - 1)
    assert np.array_equal(low_frequency_power(perturbed)[: cut + 1], base[: cut + 1], equal_nan=True)


def test_returns_carry_price_over_gaps() -> None:
    close = pd.Series([100.0, 101.0, np.nan, np.nan, 103.0])
    np.testing.assert_allclose(hourly_log_returns(close), [0, np.log(1.01), 0, 0, np.log(103 / 101)])


def test_features_causal_bit_exact() -> None:
    rng = np.random.default_rng(4)
    n = 3000
    ts = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    bars = pd.DataFrame({"timestamp": ts, "close": close})
    sigma = pd.Series(np.abs(rng.normal(0.6, 0.1, n)))
    base = regime_features(bars, sigma, sigma / np.sqrt(8760))
    assert list(base.columns) == list(FEATURES)
    cut = 2000
    bars2 = bars.copy()
    bars2.loc[cut + 1 :, "close"] *= np.exp(rng.normal(0, 0.05, n - cut - 1))
    sigma2 = sigma.copy()
    sigma2[cut + 1 :] *= 3
    changed = regime_features(bars2, sigma2, sigma2 / np.sqrt(8760))
    pd.testing.assert_frame_equal(changed.iloc[: cut + 1], base.iloc[: cut + 1], check_exact=True)
    assert not changed.iloc[cut + 1 :].equals(base.iloc[cut + 1 :])


@pytest.mark.parametrize("perm", [[0, 1, 2, 3, 4], [4, 2, 0, 3, 1], [3, 0, 4, 1, 2]])
def test_phase_rule_is_permutation_invariant(perm: list[int]) -> None:
    # (log_vol, trend) per state: calm, trend_up, chop, trend_down, crash
    base = np.array([[-1.0, 0.1], [0.0, 1.5], [0.2, 0.0], [0.3, -1.2], [2.0, -2.0]])
    means = base[perm]
    order, names = canonical_phases(means, ["log_vol", "trend"])
    assert names == ["calm", "trend_up", "chop", "trend_down", "crash"]
    assert [perm[s] for s in order] == [0, 1, 2, 3, 4]


def test_phase_rule_high_vol_up_is_breakout_and_small_k() -> None:
    means = np.array([[-1.0, 0.0], [2.0, 1.0], [0.0, 0.5]])
    assert canonical_phases(means, ["log_vol", "trend"])[1] == ["calm", "chop", "breakout"]
    assert canonical_phases(means[:2], ["log_vol", "trend"])[1] == ["calm", "breakout"]
    four = np.array([[-1.0, 0.0], [2.0, -1.0], [0.0, 0.5], [0.1, -0.5]])
    assert canonical_phases(four, ["log_vol", "trend"])[1] == ["calm", "trend_up", "trend_down", "crash"]
