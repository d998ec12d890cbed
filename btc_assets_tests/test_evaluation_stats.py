"""Evaluation statistics: PSR / DSR / MinTRL against hand transcriptions, PBO against a slow loop, SPA / RC."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from arch.bootstrap import StationaryBootstrap
from scipy.stats import rankdata

from btc_assets.evaluation import (
    PBOResult,
    deflated_sharpe_ratio,
    effective_number_of_trials,
    expected_max_sharpe,
    minimum_track_record_length,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    reality_check,
    sharpe_ratio,
    spa_test,
)
from btc_assets.overfitting import _psr_from_moments, _stationary_bootstrap_variance

PHI = NormalDist()  # standard normal from the standard library, independent of scipy
EULER = 0.5772156649015329
# An explicit, visibly skewed return vector (one large loss, one large gain).
R = [0.012, -0.004, 0.021, -0.015, 0.007, 0.003, -0.027, 0.018, 0.009, -0.002, 0.031, -0.011, 0.006, -0.058, 0.014]


def hand_moments(r: list[float]) -> tuple[float, float, float]:
    """Per-period SR (ddof 1), biased skewness and biased RAW kurtosis with plain Python sums."""
    n = len(r)
    mean = sum(r) / n
    dev = [x - mean for x in r]
    m2 = sum(d**2 for d in dev) / n
    m3 = sum(d**3 for d in dev) / n
    m4 = sum(d**4 for d in dev) / n
    sd = math.sqrt(sum(d**2 for d in dev) / (n - 1))
    return mean / sd, m3 / m2**1.5, m4 / m2**2


def hand_psr(sr: float, skew: float, kurt: float, n: float, sr_star: float) -> float:
    return PHI.cdf((sr - sr_star) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))


def hand_emax(n: float, v: float) -> float:
    return math.sqrt(v) * ((1 - EULER) * PHI.inv_cdf(1 - 1 / n) + EULER * PHI.inv_cdf(1 - 1 / (n * math.e)))


# ----------------------------------------------------------------------------------------------- Sharpe family


def test_sharpe_ratio_is_per_period_mean_over_ddof1_std() -> None:
    n = len(R)
    mean = sum(R) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in R) / (n - 1))
    assert sharpe_ratio(R) == pytest.approx(mean / sd, rel=1e-12)
    assert math.isnan(sharpe_ratio([0.01, 0.01, 0.01]))
    with pytest.raises(ValueError, match="NaN"):
        sharpe_ratio([0.01, math.nan, 0.02])


def test_psr_and_dsr_match_the_closed_forms_on_an_explicit_vector() -> None:
    sr, skew, kurt = hand_moments(R)
    assert skew < -1.0 and kurt > 4.0  # the example really exercises the non-normal terms
    n = len(R)
    assert probabilistic_sharpe_ratio(R) == pytest.approx(hand_psr(sr, skew, kurt, n, 0.0), rel=1e-10)
    assert probabilistic_sharpe_ratio(R, sr_benchmark=0.1) == pytest.approx(hand_psr(sr, skew, kurt, n, 0.1), rel=1e-10)
    sr_star = hand_emax(10, 0.02)
    assert expected_max_sharpe(10, 0.02) == pytest.approx(sr_star, rel=1e-10)
    assert deflated_sharpe_ratio(R, n_trials=10, sr_variance=0.02) == pytest.approx(
        hand_psr(sr, skew, kurt, n, sr_star), rel=1e-10
    )


def test_dsr_numerical_example_of_bailey_lopez_de_prado_2014() -> None:
    # Inputs of the paper's numerical example: annualised SR 2.5 over 5 years of daily returns (T = 1250,
    # 250 days a year), skewness −3, raw kurtosis 10, N = 100 trials with annualised SR variance 0.5.
    sr, v = 2.5 / math.sqrt(250), 0.5 / 250
    sr_star = hand_emax(100, v)
    dsr = hand_psr(sr, -3.0, 10.0, 1250, sr_star)
    assert expected_max_sharpe(100, v) == pytest.approx(sr_star, rel=1e-10)
    assert _psr_from_moments(sr, -3.0, 10.0, 1250, expected_max_sharpe(100, v)) == pytest.approx(dsr, rel=1e-10)
    # The paper reports SR0 ≈ 0.1132 (per day) and DSR ≈ 0.9004 for this example (quoted from memory of the paper).
    assert round(sr_star, 4) == 0.1132
    assert round(dsr, 4) == 0.9004


def test_psr_dsr_monotonicities() -> None:
    rng = np.random.default_rng(3)
    r = rng.normal(0.001, 0.01, 500)
    psr0 = probabilistic_sharpe_ratio(r)
    assert probabilistic_sharpe_ratio(r, sr_benchmark=sharpe_ratio(r)) == pytest.approx(0.5, abs=1e-12)
    assert deflated_sharpe_ratio(r, n_trials=1, sr_variance=0.01) == pytest.approx(psr0, rel=1e-12)
    dsr = [deflated_sharpe_ratio(r, n_trials=n, sr_variance=0.002) for n in (2, 5, 10, 100, 1000)]
    assert all(d < psr0 for d in dsr)
    assert all(a > b for a, b in itertools.pairwise(dsr))
    psr = [probabilistic_sharpe_ratio(r, sr_benchmark=b) for b in (-0.05, 0.0, 0.05, 0.1)]
    assert all(a > b for a, b in itertools.pairwise(psr))


@pytest.mark.parametrize("n_trials", [100, 1000])
def test_expected_max_sharpe_against_monte_carlo(n_trials: int) -> None:
    v = 0.04
    draws = np.random.default_rng(11).normal(0.0, math.sqrt(v), size=(20_000 // (n_trials // 100), n_trials))
    mc = draws.max(axis=1).mean()
    assert expected_max_sharpe(n_trials, v) == pytest.approx(mc, rel=0.02)


def test_expected_max_sharpe_edge_cases() -> None:
    assert expected_max_sharpe(1, 0.5) == 0.0
    assert expected_max_sharpe(50, 0.0) == 0.0
    assert expected_max_sharpe(50, 0.36) == pytest.approx(2 * expected_max_sharpe(50, 0.09), rel=1e-12)
    with pytest.raises(ValueError):
        expected_max_sharpe(0.5, 0.1)
    with pytest.raises(ValueError):
        expected_max_sharpe(10, -0.1)


def test_minimum_track_record_length_closed_form() -> None:
    sr, skew, kurt = hand_moments(R)
    assert sr > 0.0
    for bench, alpha in [(0.0, 0.05), (sr / 2, 0.05), (-0.1, 0.05), (0.0, 0.01)]:
        z = PHI.inv_cdf(1 - alpha)
        expected = 1 + (1 - skew * sr + (kurt - 1) / 4 * sr**2) * (z / (sr - bench)) ** 2
        got = minimum_track_record_length(R, sr_benchmark=bench, alpha=alpha)
        assert got == pytest.approx(expected, rel=1e-10)
        # At T = MinTRL the PSR (same SR, skew, kurtosis) is exactly 1 − α.
        assert hand_psr(sr, skew, kurt, got, bench) == pytest.approx(1 - alpha, abs=1e-9)
    assert minimum_track_record_length(R, sr_benchmark=sr) == math.inf
    assert minimum_track_record_length(R, sr_benchmark=sr + 0.1) == math.inf
    assert minimum_track_record_length([-x for x in R if x > 0] + [0.001]) == math.inf  # negative mean


def test_effective_number_of_trials() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 1))
    assert effective_number_of_trials(np.repeat(x, 6, axis=1)) == pytest.approx(1.0)
    a = rng.normal(size=(400, 5))
    ortho, _ = np.linalg.qr(a - a.mean(axis=0))  # orthonormal columns spanning centred vectors: correlation 0
    assert effective_number_of_trials(ortho) == pytest.approx(5.0, abs=1e-6)
    assert effective_number_of_trials(np.hstack([x, -x])) == pytest.approx(2.0)  # ρ̄ = −1 clipped to 0
    common = rng.normal(size=(300, 1))
    m = 0.7 * common + rng.normal(size=(300, 8))
    pairs = [np.corrcoef(m[:, i], m[:, j])[0, 1] for i in range(8) for j in range(i + 1, 8)]
    rho = sum(pairs) / len(pairs)
    assert 0.2 < rho < 0.6
    assert effective_number_of_trials(m) == pytest.approx(rho + (1 - rho) * 8, rel=1e-10)


# ----------------------------------------------------------------------------------------------------------- PBO


def slow_pbo(x: np.ndarray, n_blocks: int) -> dict[str, np.ndarray]:
    """The obvious CSCV loop: concatenate blocks, Sharpe per column, argmax, OOS rank, logit."""
    t, n = x.shape
    size = t // n_blocks
    x = x[t - size * n_blocks :]
    blocks = [x[i * size : (i + 1) * size] for i in range(n_blocks)]
    out: dict[str, list[float]] = {"best": [], "rank": [], "logit": [], "is_sr": [], "oos_sr": []}
    for combo in itertools.combinations(range(n_blocks), n_blocks // 2):
        is_rows = np.vstack([blocks[i] for i in combo])
        oos_rows = np.vstack([blocks[i] for i in range(n_blocks) if i not in combo])
        sr_is = is_rows.mean(axis=0) / is_rows.std(axis=0, ddof=1)
        sr_oos = oos_rows.mean(axis=0) / oos_rows.std(axis=0, ddof=1)
        k = int(np.argmax(sr_is))
        rank = rankdata(sr_oos)[k]
        w = rank / (n + 1)
        for key, value in zip(out, (k, rank, math.log(w / (1 - w)), sr_is[k], sr_oos[k]), strict=True):
            out[key].append(value)
    return {key: np.array(values) for key, values in out.items()}


def test_pbo_vectorised_matches_slow_loop() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 1.0, size=(125, 9)) + rng.normal(0.0, 0.05, size=9)  # T = 125: 5 leading rows dropped
    x[:, 4:6] = x[:, [2, 7]]  # duplicated trials: exact ties, averaged in the OOS rank
    res = probability_of_backtest_overfitting(x, n_blocks=6)
    slow = slow_pbo(x, 6)
    assert isinstance(res, PBOResult)
    assert res.n_combinations == math.comb(6, 3) == len(slow["best"])
    assert (res.n_dropped, res.block_size, res.n_blocks) == (5, 20, 6)
    np.testing.assert_array_equal(res.is_best_index, slow["best"])
    np.testing.assert_array_equal(res.oos_rank, slow["rank"])
    np.testing.assert_allclose(res.logits, slow["logit"], rtol=1e-12)
    np.testing.assert_allclose(res.is_sharpe, slow["is_sr"], rtol=1e-10)
    np.testing.assert_allclose(res.oos_sharpe, slow["oos_sr"], rtol=1e-10)
    assert res.pbo == np.mean(slow["logit"] <= 0)
    assert 0.0 < res.pbo < 1.0  # the case is not degenerate
    assert np.any(res.oos_rank % 1 == 0.5)  # ties did occur


def test_pbo_low_with_planted_skill() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, size=(2000, 50))
    x[:, 17] += 0.15  # a genuine drift in every block: SR ≈ 0.15 per period against 49 noise trials
    res = probability_of_backtest_overfitting(x)
    assert res.n_combinations == math.comb(16, 8) == 12_870
    assert res.pbo < 0.1
    assert np.mean(res.is_best_index == 17) > 0.9


def test_pbo_near_one_half_for_pure_noise() -> None:
    # For noise the in-sample winner's out-of-sample rank is uniform, so E[PBO] = 0.5; a single data set's PBO
    # varies a lot (its combinations share data; sd ≈ 0.18 at T = 2000, N = 50), hence the average over 16 draws.
    pbos = [
        probability_of_backtest_overfitting(np.random.default_rng(seed).normal(size=(2000, 50))).pbo
        for seed in range(16)
    ]
    assert abs(np.mean(pbos) - 0.5) < 0.1


def test_pbo_input_validation() -> None:
    x = np.random.default_rng(0).normal(size=(100, 4))
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(x, n_blocks=5)
    with pytest.raises(ValueError, match="2 trials"):
        probability_of_backtest_overfitting(x[:, :1], n_blocks=4)
    with pytest.raises(ValueError, match="too short"):
        probability_of_backtest_overfitting(x[:3], n_blocks=4)


# ------------------------------------------------------------------------------------------------ SPA / Reality Check


def _market(seed: int, t: int = 1000) -> tuple[np.random.Generator, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng, rng.normal(0.0005, 0.03, t)


def test_long_run_variance_matches_hansen_formula() -> None:
    rng = np.random.default_rng(2)
    d = np.column_stack([rng.normal(size=60), np.convolve(rng.normal(size=64), np.ones(5), "valid")])
    t, q = d.shape[0], 1 / 7
    expected = []
    for col in d.T:
        x = col - col.mean()
        gamma = [sum(x[s] * x[s + i] for s in range(t - i)) / t for i in range(t)]
        kappa = [(1 - i / t) * (1 - q) ** i + (i / t) * (1 - q) ** (t - i) for i in range(t)]
        expected.append(gamma[0] + 2 * sum(kappa[i] * gamma[i] for i in range(1, t)))
    np.testing.assert_allclose(_stationary_bootstrap_variance(d, 7), expected, rtol=1e-10)


def test_spa_and_reality_check_detect_a_strong_drift() -> None:
    rng, bench = _market(0)
    strat = bench + 0.002 + rng.normal(0.0, 0.01, bench.size)  # t-stat of the excess return ≈ 6
    spa = spa_test(strat, bench, reps=500, seed=1)
    assert set(spa) == {"lower", "consistent", "upper"}
    assert max(spa.values()) < 0.05
    assert reality_check(strat, bench, reps=500, seed=1)["pvalue"] < 0.05


def test_spa_and_reality_check_do_not_reject_a_costly_copy() -> None:
    rng, bench = _market(1)
    strat = bench - 0.0005 * np.abs(rng.normal(size=bench.size))  # buy and hold minus a (random) trading cost
    assert min(spa_test(strat, bench, reps=500, seed=1).values()) > 0.5
    assert reality_check(strat, bench, reps=500, seed=1)["pvalue"] > 0.5
    # A strategy identical to the benchmark is no evidence either (arch alone returns p = 0 here).
    assert spa_test(bench, bench, reps=200) == {"lower": 1.0, "consistent": 1.0, "upper": 1.0}
    assert reality_check(bench, bench, reps=200) == {"pvalue": 1.0}


def test_spa_p_values_for_a_mixed_set_of_strategies() -> None:
    # One noisy strategy with a tiny positive in-sample edge and two costly copies: the bootstrap path runs, the
    # p-values are proper fractions ordered lower <= consistent <= upper (Hansen's recentring), none significant.
    rng, bench = _market(2)
    models = np.column_stack(
        [
            bench + 0.0005 + rng.normal(0.0, 0.005, bench.size),
            bench - 0.0005 * np.abs(rng.normal(size=bench.size)),
            bench - 0.001 + rng.normal(0.0, 0.005, bench.size),
        ]
    )
    excess = (models - bench[:, None]).mean(axis=0)
    assert excess[0] > 0.0 > excess[1:].max()
    p = spa_test(models, bench, reps=500, seed=3)
    assert 0.1 < p["lower"] <= p["consistent"] <= p["upper"] < 1.0


def test_spa_studentizes_but_reality_check_does_not() -> None:
    # Model 0: small, very reliable edge. Model 1: no edge, huge variance. Studentized (SPA) the edge stands out;
    # White's raw-mean statistic is dominated by model 1's noise.
    rng, bench = _market(1)
    models = np.column_stack(
        [bench + 0.0005 + rng.normal(0.0, 0.002, bench.size), bench + rng.normal(0.0, 0.2, bench.size)]
    )
    assert spa_test(models, bench, reps=500, seed=0)["consistent"] < 0.05
    assert reality_check(models, bench, reps=500, seed=0)["pvalue"] > 0.1


def test_reality_check_matches_whites_bootstrap_by_hand() -> None:
    # White (2000): V = max_k d̄_k, V*_b = max_k (d̄*_kb − d̄_k), p = share of V*_b > V, with the same stationary
    # bootstrap draws (same block length and seed) as arch uses internally.
    rng, bench = _market(2)
    models = np.column_stack(
        [
            bench + 0.0005 + rng.normal(0.0, 0.005, bench.size),
            bench - 0.0005 * np.abs(rng.normal(size=bench.size)),
            bench - 0.001 + rng.normal(0.0, 0.005, bench.size),
        ]
    )
    d = models - bench[:, None]
    draws = StationaryBootstrap(12, d, seed=np.random.default_rng(5))
    v_star = [np.max(data[0][0].mean(axis=0) - d.mean(axis=0)) for data in draws.bootstrap(300)]
    expected = float(np.mean(np.array(v_star) > d.mean(axis=0).max()))
    assert 0.1 < expected < 0.9
    assert reality_check(models, bench, block_size=12, reps=300, seed=5)["pvalue"] == expected


def test_spa_is_deterministic_and_consistent_with_reality_check_for_one_strategy() -> None:
    rng, bench = _market(4, t=600)
    strat = bench + 0.0004 + rng.normal(0.0, 0.01, bench.size)  # borderline: p-values strictly inside (0, 1)
    first = spa_test(strat, bench, reps=400, seed=9, block_size=10)
    assert 0.0 < first["upper"] < 1.0
    assert spa_test(strat, bench, reps=400, seed=9, block_size=10) == first
    assert spa_test(strat, bench, reps=400, seed=np.random.default_rng(9), block_size=10) == first
    rc = reality_check(strat, bench, reps=400, seed=9, block_size=10)
    assert rc == reality_check(strat, bench, reps=400, seed=9, block_size=10)
    # One strategy: studentizing is a positive rescaling, so with the same draws SPA's upper p-value is White's.
    assert rc["pvalue"] == first["upper"]
    with pytest.raises(ValueError, match="rows"):
        spa_test(strat[:-1], bench)


# ------------------------------------------------------------------------------ statistics where selection happened


def test_quantile_with_inf_counts_infinite_values() -> None:
    from btc_assets.overfitting import quantile_with_inf

    finite = [3.0, 1.0, 7.0, 2.0, 10.0]
    for q in (0.0, 0.05, 0.25, 0.5, 0.95, 1.0):  # the same as numpy's linear quantile on finite values
        assert quantile_with_inf(finite, q) == pytest.approx(float(np.quantile(finite, q)), rel=1e-12)
    seeds = [100.0, math.inf, 40.0, math.inf, math.nan]  # NaN (undefined) left out, inf (never significant) kept
    assert quantile_with_inf(seeds, 0.5) == math.inf  # two of four seeds never: the median is infinite
    assert quantile_with_inf(seeds, 0.05) == pytest.approx(40.0 + 0.15 * 60.0)
    assert quantile_with_inf(seeds, 0.95) == math.inf
    assert quantile_with_inf([5.0, math.inf, math.inf], 0.0) == 5.0
    assert quantile_with_inf([-math.inf, 1.0, 2.0], 0.25) == -math.inf
    assert math.isnan(quantile_with_inf([math.nan], 0.5))
    with np.errstate(invalid="ignore"):  # why not np.quantile: its interpolation computes inf − inf
        assert math.isnan(float(np.quantile([10.0, math.inf], 0.75)))


def wf_frame() -> pd.DataFrame:
    """Three hand-made studies (two seeds): ranks with ties, a NaN test score, one too-small study."""
    rows = [
        # seed A, fold 1, phase 0: test scores 0.1, 0.3, 0.3, 0.5; the winner (0.3) ties with another: rank 2.5
        ("A", 1, 0, 0, 0.1, False),
        ("A", 1, 0, 1, 0.3, True),
        ("A", 1, 0, 2, 0.3, False),
        ("A", 1, 0, 3, 0.5, False),
        # seed A, fold 1, phase 1: the winner is the best of 3 finite scores (one NaN dropped): rank 3 of N = 3
        ("A", 1, 1, 0, -10.0, False),
        ("A", 1, 1, 1, np.nan, False),
        ("A", 1, 1, 2, 0.2, True),
        ("A", 1, 1, 3, 0.0, False),
        # seed B, fold 1, phase 0: the winner is the worst: rank 1 of 2
        ("B", 1, 0, 0, -0.2, True),
        ("B", 1, 0, 1, 0.4, False),
        # seed B, fold 2, phase 0: only the winner has a score: left out
        ("B", 2, 0, 0, 0.1, True),
        ("B", 2, 0, 1, np.nan, False),
    ]
    return pd.DataFrame(rows, columns=["seed", "fold", "phase", "trial", "test", "winner"])


def test_walk_forward_pbo_by_hand() -> None:
    from btc_assets.overfitting import walk_forward_pbo

    res = walk_forward_pbo(wf_frame())
    assert res.n_studies == 3
    studies = res.studies.set_index(["seed", "fold", "phase"])
    omega = {("A", 1, 0): 2.5 / 5, ("A", 1, 1): 3 / 4, ("B", 1, 0): 1 / 3}
    for key, w in omega.items():
        assert studies.loc[key, "omega"] == pytest.approx(w)
        assert studies.loc[key, "logit"] == pytest.approx(math.log(w / (1 - w)))
    assert studies.loc[("A", 1, 1), "n_trials"] == 3 and studies.loc[("A", 1, 0), "rank"] == 2.5
    assert res.pbo == pytest.approx(1 / 2)  # (0.5 + 0 + 1) / 3: ω = 0.5 (the median rank) counts one half
    assert res.mean_logit == pytest.approx(np.mean([math.log(w / (1 - w)) for w in omega.values()]))
    # without a seed column the studies are (fold, phase)
    one = walk_forward_pbo(wf_frame().query("seed == 'A'").drop(columns="seed"))
    assert one.n_studies == 2 and list(one.studies.columns[:2]) == ["fold", "phase"]
    with pytest.raises(ValueError, match="test"):
        walk_forward_pbo(wf_frame().drop(columns="test"))
    two_winners = wf_frame()
    two_winners.loc[0, "winner"] = True
    with pytest.raises(ValueError, match="exactly one winner"):
        walk_forward_pbo(two_winners)
    empty = walk_forward_pbo(wf_frame().iloc[-2:])
    assert empty.n_studies == 0 and math.isnan(empty.pbo)


def test_unselected_trials_are_deterministic_and_blind_to_scores() -> None:
    from btc_assets.overfitting import unselected_trials

    idx = range(300)
    first = unselected_trials(idx, 50, seed=(3, 7, 2))
    assert first.size == 50 and np.unique(first).size == 50 and np.all(np.diff(first) > 0)
    assert np.array_equal(unselected_trials(reversed(idx), 50, seed=(3, 7, 2)), first)  # order does not matter
    assert not np.array_equal(unselected_trials(idx, 50, seed=(3, 7, 3)), first)  # another study, another subset
    assert np.array_equal(unselected_trials(range(6), 50, seed=1), np.arange(6))  # few trials: all of them
    # spread over the whole study, not the first (or best) trials: both halves are represented
    assert 10 < int((first < 150).sum()) < 40


def test_study_cscv_runs_the_chosen_trials_only_and_compounds_weekly() -> None:
    from btc_assets.overfitting import study_cscv, unselected_trials

    rng = np.random.default_rng(4)
    index = pd.date_range("2021-01-07", periods=24 * 7 * 40, freq="h")  # a Thursday: 7-day bins from the epoch
    hourly = rng.normal(0.0, 0.01, (index.size, 30))
    calls: list[int] = []

    def returns_of(i: int) -> pd.Series:
        calls.append(i)
        return pd.Series(hourly[:, i], index=index)

    out = study_cscv(range(30), returns_of, n_trials=12, n_blocks=8, seed=(1, 2))
    chosen = unselected_trials(range(30), 12, seed=(1, 2))
    assert calls == chosen.tolist()
    weekly = np.prod(1 + hourly[:, chosen].reshape(40, 168, 12), axis=1) - 1
    expected = probability_of_backtest_overfitting(weekly, n_blocks=8)
    assert out["pbo"] == expected.pbo and (out["n_trials"], out["n_study_trials"]) == (12.0, 30.0)
    assert (out["n_weeks"], out["n_blocks"]) == (40.0, 8.0)
    assert out["rho"] == pytest.approx((12 - effective_number_of_trials(weekly)) / 11)
    short = study_cscv(
        range(30), lambda i: pd.Series(hourly[: 24 * 7 * 7, i], index=index[: 24 * 7 * 7]), n_trials=12, n_blocks=16
    )
    assert math.isnan(short["pbo"]) and short["n_blocks"] == 0.0  # 7 weeks: too short for CSCV


def test_study_deflated_sharpe_uses_each_studys_own_trials() -> None:
    from btc_assets.overfitting import study_deflated_sharpe

    rng = np.random.default_rng(8)
    frames = []
    for fold, (n, rho, bars) in enumerate([(40, 0.3, 5000.0), (10, 0.0, 12000.0)]):
        sr = rng.normal(0.0, 0.01 * (fold + 1), n)
        frames.append(
            pd.DataFrame(
                {
                    "fold": fold,
                    "phase": 0,
                    "trial": range(n),
                    "fit_sharpe": sr,
                    "winner": np.arange(n) == int(np.argmax(sr)),
                    "study_rho": rho,
                    "fit_bars": bars,
                }
            )
        )
    trials = pd.concat(frames, ignore_index=True)
    out = study_deflated_sharpe(trials).set_index("fold")
    for fold, frame in enumerate(frames):
        v = float(frame["fit_sharpe"].var(ddof=1))
        n, rho, t = len(frame), float(frame["study_rho"].iloc[0]), float(frame["fit_bars"].iloc[0])
        sr = float(frame["fit_sharpe"].max())
        n_eff = rho + (1 - rho) * n
        assert out.loc[fold, "n_effective"] == pytest.approx(n_eff)
        assert out.loc[fold, "sr_variance"] == pytest.approx(v)
        assert out.loc[fold, "dsr"] == pytest.approx(hand_psr(sr, 0.0, 3.0, t, hand_emax(n_eff, v)), rel=1e-10)
        assert out.loc[fold, "dsr_raw_n"] == pytest.approx(hand_psr(sr, 0.0, 3.0, t, hand_emax(n, v)), rel=1e-10)
    # the studies are not pooled: the first study's deflation does not depend on the second one
    alone = study_deflated_sharpe(frames[0]).iloc[0]
    assert alone["dsr"] == out.loc[0, "dsr"]
    with pytest.raises(ValueError, match="fit_bars"):
        study_deflated_sharpe(trials.drop(columns="fit_bars"))


def test_design_deflated_sharpe_ratio_closed_form() -> None:
    from btc_assets.overfitting import design_deflated_sharpe_ratio

    r = np.random.default_rng(9).normal(0.0005, 0.01, 2000)
    sr, skew, kurt = hand_moments(list(r))
    for n in (1, 2, 6, 50):
        expected = hand_psr(sr, skew, kurt, r.size, hand_emax(n, 1 / (r.size - 1)) if n > 1 else 0.0)
        assert design_deflated_sharpe_ratio(r, n) == pytest.approx(expected, rel=1e-9)
    assert design_deflated_sharpe_ratio(r, 6) < design_deflated_sharpe_ratio(r, 2) < probabilistic_sharpe_ratio(r)
