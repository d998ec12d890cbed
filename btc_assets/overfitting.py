"""Selection-bias-aware evaluation statistics for backtests (pure numpy / scipy / arch, no Dagster here).

Conventions
* Every Sharpe ratio is per period (per row of the return series): SR = mean / std with ddof 1, no risk-free rate,
  not annualised. The formulas below need per-period values, and so does ``sr_variance`` (the variance of the
  per-period Sharpe ratios across trials). Annualise only for display (multiply by sqrt(periods per year)).
* Skewness γ3 and kurtosis γ4 are the biased (population) moment estimators γ3 = m3 / m2^1.5 and γ4 = m4 / m2² with
  m_k = mean((r - mean(r))^k), as in Bailey & López de Prado. γ4 is RAW kurtosis (3 for a normal), not excess.
* T is the number of returns. Inputs must be finite: drop or fill missing returns first (a NaN raises).
* A statistic of a selection is computed where the selection happened and on data it did not select by:
  :func:`study_cscv` runs CSCV over trials drawn at random from a study (never its best by the score under test);
  :func:`walk_forward_pbo` ranks each study's selected trial among all its trials on the test window, which the
  selection never saw; :func:`study_deflated_sharpe` deflates each study's selected trial by that study's own trial
  count and Sharpe variance, on the piece it was optimised on; :func:`design_deflated_sharpe_ratio` deflates an
  out-of-sample series by the number of designs compared.

References
* Bailey, D. H. & López de Prado, M. (2012). The Sharpe ratio efficient frontier. Journal of Risk 15(2), 3-44.
  (probabilistic Sharpe ratio, minimum track record length)
* Bailey, D. H. & López de Prado, M. (2014). The deflated Sharpe ratio: correcting for selection bias, backtest
  overfitting and non-normality. Journal of Portfolio Management 40(5), 94-107. (expected maximum SR, DSR)
* Bailey, D. H., Borwein, J., López de Prado, M. & Zhu, Q. J. (2017). The probability of backtest overfitting.
  Journal of Computational Finance 20(4), 39-69. (CSCV, PBO)
* White, H. (2000). A reality check for data snooping. Econometrica 68(5), 1097-1126.
* Hansen, P. R. (2005). A test for superior predictive ability. Journal of Business & Economic Statistics 23(4),
  365-380.
* Politis, D. N. & Romano, J. P. (1994). The stationary bootstrap. JASA 89(428), 1303-1313.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri  # the standard normal's cdf and quantile (what scipy.stats.norm computes)

__all__ = [
    "PBOResult",
    "WalkForwardPBO",
    "deflated_sharpe_ratio",
    "design_deflated_sharpe_ratio",
    "effective_number_of_trials",
    "expected_max_sharpe",
    "minimum_track_record_length",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "quantile_with_inf",
    "reality_check",
    "sharpe_ratio",
    "spa_test",
    "study_cscv",
    "study_deflated_sharpe",
    "study_keys",
    "unselected_trials",
    "walk_forward_pbo",
]

EULER_GAMMA = float(np.euler_gamma)  # Euler–Mascheroni constant γ ≈ 0.5772
_PBO_CHUNK = 2048  # combinations evaluated per vectorised step (bounds memory at chunk × N floats per array)
_FFT_BUDGET = 1 << 23  # padded samples per FFT batch in the long-run variance (~64 MB of float64)
_FLAT_TOL = 1e-10  # std below this fraction of the largest |return| counts as flat (SR NaN; SR 0 inside CSCV)


# ------------------------------------------------------------------------------------------------------ inputs


def _as_returns(returns: Any, name: str = "returns") -> np.ndarray:
    arr = np.asarray(returns, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size < 2:
        raise ValueError(f"{name} needs at least 2 observations, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; drop or fill missing returns first")
    return arr


def _as_matrix(trial_returns: Any, name: str = "trial_returns") -> np.ndarray:
    arr = np.asarray(trial_returns, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a T × N matrix (rows periods, columns trials), got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} needs at least 2 rows and 1 column, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; drop or fill missing returns first")
    return arr


def _moments(returns: Any) -> tuple[float, float, float, int]:
    """(per-period SR with ddof-1 std, biased skewness γ3, biased raw kurtosis γ4, T)."""
    r = _as_returns(returns)
    t = r.size
    mean = float(r.mean())
    dev = r - mean
    m2 = float(np.mean(dev**2))
    if math.sqrt(m2) <= _FLAT_TOL * float(np.abs(r).max()):  # constant up to rounding: SR undefined
        return math.nan, math.nan, math.nan, t
    m3 = float(np.mean(dev**3))
    m4 = float(np.mean(dev**4))
    sd = math.sqrt(m2 * t / (t - 1))
    return mean / sd, m3 / m2**1.5, m4 / m2**2, t


def _sr_variance_factor(sr: float, skew: float, kurt: float) -> float:
    """1 − γ3·SR + (γ4 − 1)/4·SR²: T times the asymptotic variance of the estimated SR (non-normal returns)."""
    return 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2


def _psr_from_moments(sr: float, skew: float, kurt: float, n_obs: float, sr_benchmark: float = 0.0) -> float:
    """PSR from summary statistics: Φ((SR − SR*)·sqrt(T − 1) / sqrt(1 − γ3·SR + (γ4 − 1)/4·SR²))."""
    factor = _sr_variance_factor(sr, skew, kurt)
    if not (factor > 0.0 and n_obs > 1):  # also catches NaN moments (constant returns)
        return math.nan
    z = (sr - sr_benchmark) * math.sqrt(n_obs - 1.0) / math.sqrt(factor)
    return float(ndtr(z))


# -------------------------------------------------------------------------------------------- Sharpe-ratio family


def sharpe_ratio(returns: Any) -> float:
    """Per-period Sharpe ratio mean(r) / std(r, ddof=1) (no risk-free rate, not annualised); NaN for flat returns.

    Flat means std <= 1e-10 · max|r| (constant returns up to rounding).
    """
    r = _as_returns(returns)
    sd = float(r.std(ddof=1))
    return float(r.mean()) / sd if sd > _FLAT_TOL * float(np.abs(r).max()) else math.nan


def probabilistic_sharpe_ratio(returns: Any, sr_benchmark: float = 0.0) -> float:
    """Probabilistic Sharpe ratio (Bailey & López de Prado 2012): P(true SR > SR*) given the sample.

    PSR = Φ( (SR − SR*) · sqrt(T − 1) / sqrt(1 − γ3·SR + (γ4 − 1)/4 · SR²) )

    with SR the per-period Sharpe ratio (ddof-1 std), γ3 the biased skewness, γ4 the biased RAW kurtosis (3 for a
    normal), T the number of returns and ``sr_benchmark`` = SR* per period. NaN for constant returns.
    """
    sr, skew, kurt, t = _moments(returns)
    return _psr_from_moments(sr, skew, kurt, t, sr_benchmark)


def expected_max_sharpe(n_trials: float, sr_variance: float) -> float:
    """Expected maximum of ``n_trials`` independent Sharpe estimates with true SR 0 (Bailey & López de Prado 2014).

    E[max SR] ≈ sqrt(V) · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)))

    with V = ``sr_variance`` (variance of the per-period SR across trials), N = ``n_trials`` (may be fractional,
    e.g. an effective number of trials) and γ the Euler–Mascheroni constant. N = 1 gives 0; for N just above 1 the
    approximation dips below 0, where the true expectation never goes, so the result is floored at 0.
    """
    n = float(n_trials)
    v = float(sr_variance)
    if not (n >= 1.0 and math.isfinite(n)):
        raise ValueError(f"n_trials must be a finite number >= 1, got {n_trials}")
    if not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"sr_variance must be a finite number >= 0, got {sr_variance}")
    if n == 1.0 or v == 0.0:
        return 0.0
    z = (1.0 - EULER_GAMMA) * ndtri(1.0 - 1.0 / n) + EULER_GAMMA * ndtri(1.0 - 1.0 / (n * math.e))
    return max(0.0, math.sqrt(v) * float(z))


def deflated_sharpe_ratio(returns: Any, n_trials: float, sr_variance: float) -> float:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014): the PSR against the expected maximum SR of the search.

    DSR = PSR(SR*) with SR* = :func:`expected_max_sharpe` (``n_trials``, ``sr_variance``); ``returns`` are those of
    the selected trial, ``sr_variance`` the variance of the per-period Sharpe ratios of all trials.
    """
    return probabilistic_sharpe_ratio(returns, expected_max_sharpe(n_trials, sr_variance))


def minimum_track_record_length(returns: Any, sr_benchmark: float = 0.0, alpha: float = 0.05) -> float:
    """Minimum track record length (Bailey & López de Prado 2012), in periods of ``returns``.

    MinTRL = 1 + (1 − γ3·SR + (γ4 − 1)/4 · SR²) · (z_{1−α} / (SR − SR*))²

    the number of returns needed for PSR(SR*) ≥ 1 − α at the observed SR, γ3, γ4 (per-period SR, biased skewness,
    biased raw kurtosis). ``inf`` when SR ≤ SR* (no track record is long enough); NaN for constant returns.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    sr, skew, kurt, _ = _moments(returns)
    if math.isnan(sr):
        return math.nan
    if sr <= sr_benchmark:
        return math.inf
    z = float(ndtri(1.0 - alpha))
    return 1.0 + _sr_variance_factor(sr, skew, kurt) * (z / (sr - sr_benchmark)) ** 2


def effective_number_of_trials(trial_returns: Any) -> float:
    """Effective number of independent trials from a T × N matrix of trial returns (columns are trials).

    Average-correlation heuristic N_eff = ρ̄ + (1 − ρ̄)·N, where ρ̄ is the mean of the N(N − 1)/2 pairwise Pearson
    correlations of the columns, clipped to [0, 1]: ρ̄ = 0 gives N, ρ̄ = 1 gives 1. Pairs involving a constant
    column (undefined correlation) are left out of the mean; with no defined pair ρ̄ = 0.
    """
    x = _as_matrix(trial_returns)
    n = x.shape[1]
    if n == 1:
        return 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(x, rowvar=False)
    pairs = corr[np.triu_indices(n, k=1)]
    pairs = pairs[np.isfinite(pairs)]
    rho = float(np.clip(pairs.mean(), 0.0, 1.0)) if pairs.size else 0.0
    return rho + (1.0 - rho) * n


def design_deflated_sharpe_ratio(returns: Any, n_designs: float) -> float:
    """DSR of a series that is the best of ``n_designs`` designs compared on the same data, deflated without the
    other designs' Sharpe ratios.

    DSR = PSR(SR*) with SR* = :func:`expected_max_sharpe` (``n_designs``, 1 / (T − 1)): under H0 every design has
    true SR 0, and the sampling variance of a per-period SR estimate at SR = 0 is 1 / (T − 1) whatever the skewness
    and kurtosis (the variance factor of the PSR is 1 there). So SR*·sqrt(T − 1) is the expected maximum of
    ``n_designs`` independent standard normals, and the DSR is the PSR's z-statistic minus that expected maximum
    (scaled by the PSR's variance factor at the observed SR). Designs count as independent: designs evaluated on the
    same bars are correlated, so this over-deflates slightly (conservative). ``n_designs`` = 1 gives the PSR.
    """
    r = _as_returns(returns)
    return probabilistic_sharpe_ratio(r, expected_max_sharpe(n_designs, 1.0 / (r.size - 1.0)))


def quantile_with_inf(values: Iterable[float], q: float) -> float:
    """The q-quantile (numpy's default linear interpolation, h = (n − 1)·q) of the non-NaN ``values`` with ±inf
    kept as the largest / smallest values instead of being dropped: e.g. a minimum track record length that is
    infinite (never significant) counts. Between a finite and an infinite order statistic the result is infinite
    (any positive weight on inf); exactly at a finite order statistic it is that value. NaN when nothing is left.
    (``np.quantile`` itself returns NaN there: its interpolation computes inf − inf.)"""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    x = np.asarray(list(values), dtype=float)
    x = np.sort(x[~np.isnan(x)])
    if x.size == 0:
        return math.nan
    h = (x.size - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, x.size - 1)
    frac = h - lo
    a, b = float(x[lo]), float(x[hi])
    if frac == 0.0 or a == b:
        return a
    if math.isinf(a) or math.isinf(b):
        return b if math.isinf(b) and b > 0 else a  # +inf above, or -inf below, absorbs any positive weight
    return a + frac * (b - a)


# ------------------------------------------------------------------------------------------------- PBO via CSCV


@dataclass(frozen=True, eq=False)
class PBOResult:
    """Outcome of :func:`probability_of_backtest_overfitting`.

    Per-combination arrays follow the order of ``itertools.combinations(range(n_blocks), n_blocks // 2)`` (the
    in-sample block sets). ``oos_rank`` is 1 (worst) .. N (best), ties averaged; logit = ln(ω̄ / (1 − ω̄)) with
    ω̄ = oos_rank / (N + 1).
    """

    pbo: float  # share of combinations with logit <= 0
    logits: np.ndarray  # (n_combinations,) float
    n_combinations: int
    is_best_index: np.ndarray  # (n_combinations,) int: trial with the best in-sample SR
    oos_rank: np.ndarray  # (n_combinations,) float: its out-of-sample rank among the N trials
    is_sharpe: np.ndarray  # (n_combinations,) in-sample per-period SR of the selected trial
    oos_sharpe: np.ndarray  # (n_combinations,) out-of-sample per-period SR of the selected trial
    n_blocks: int
    block_size: int  # rows per block
    n_dropped: int  # leading rows dropped so that T is a multiple of n_blocks


def _sharpe_from_sums(sums: np.ndarray, sumsq: np.ndarray, n: int, shift: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Per-period SR (ddof 1) of n rows from the sums of (r − shift) and of (r − shift)²; flat variances give SR 0."""
    var = np.maximum((sumsq - sums**2 / n) / (n - 1), 0.0)
    mean = sums / n + shift
    zero = var <= flat
    sd = np.sqrt(np.where(zero, 1.0, var))
    return np.where(zero, 0.0, mean / sd)


@functools.lru_cache(maxsize=8)
def _cscv_masks(s: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 matrices (C(s, s/2) × s) marking each combination's in-sample and out-of-sample blocks."""
    combos = np.array(list(itertools.combinations(range(s), s // 2)), dtype=np.intp)
    in_sample = np.zeros((combos.shape[0], s))
    in_sample[np.arange(combos.shape[0])[:, None], combos] = 1.0
    out_sample = 1.0 - in_sample
    in_sample.setflags(write=False)
    out_sample.setflags(write=False)
    return in_sample, out_sample


def probability_of_backtest_overfitting(trial_returns: Any, n_blocks: int = 16) -> PBOResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation (Bailey et al. 2017).

    ``trial_returns`` is T × N (rows periods in time order, columns the N trials of the search). The first
    T mod S rows are dropped so the rest splits into S = ``n_blocks`` equal contiguous blocks. For each of the
    C(S, S/2) choices of S/2 blocks as in-sample (the other S/2 out-of-sample; 12,870 for S = 16):

    1. the trial n* with the highest in-sample per-period SR (mean / ddof-1 std; first index on ties) is selected;
    2. ω̄ = rank of n*'s out-of-sample SR among the N trials (1 = worst, ties averaged) / (N + 1);
    3. λ = ln(ω̄ / (1 − ω̄)).

    PBO = share of combinations with λ ≤ 0 (the in-sample winner lands at or below the out-of-sample median).
    Each subset's SR comes from precomputed per-block sums of r and r² (centred per trial for accuracy), so all
    combinations are evaluated with matrix products. A trial with (numerically) zero variance in a subset gets SR 0.
    """
    x = _as_matrix(trial_returns)
    t, n_trials = x.shape
    s = int(n_blocks)
    if s != n_blocks or s < 2 or s % 2:
        raise ValueError(f"n_blocks must be an even integer >= 2, got {n_blocks}")
    if n_trials < 2:
        raise ValueError("CSCV needs at least 2 trials (columns)")
    block = t // s
    half = s // 2
    rows = half * block
    if rows < 2:
        raise ValueError(f"T = {t} rows is too short for {s} blocks (each half needs at least 2 rows)")
    dropped = t - block * s
    x = x[dropped:]
    shift = x.mean(axis=0)
    flat = (_FLAT_TOL * np.abs(x).max(axis=0)) ** 2
    centred = (x - shift).reshape(s, block, n_trials)
    block_sums = centred.sum(axis=1)  # S × N
    block_sumsq = (centred**2).sum(axis=1)

    in_sample, out_sample = _cscv_masks(s)
    n_comb = in_sample.shape[0]

    best = np.empty(n_comb, dtype=np.intp)
    rank = np.empty(n_comb)
    is_sr = np.empty(n_comb)
    oos_sr = np.empty(n_comb)
    for start in range(0, n_comb, _PBO_CHUNK):
        stop = min(start + _PBO_CHUNK, n_comb)
        m_is, m_oos = in_sample[start:stop], out_sample[start:stop]
        sr_is = _sharpe_from_sums(m_is @ block_sums, m_is @ block_sumsq, rows, shift, flat)
        sr_oos = _sharpe_from_sums(m_oos @ block_sums, m_oos @ block_sumsq, rows, shift, flat)
        idx = np.argmax(sr_is, axis=1)
        pick = np.arange(stop - start)
        chosen = sr_oos[pick, idx][:, None]
        below = (sr_oos < chosen).sum(axis=1)
        ties = (sr_oos == chosen).sum(axis=1)  # includes the chosen trial itself
        best[start:stop] = idx
        rank[start:stop] = below + (ties + 1) / 2.0
        is_sr[start:stop] = sr_is[pick, idx]
        oos_sr[start:stop] = chosen[:, 0]

    omega = rank / (n_trials + 1.0)
    logits = np.log(omega / (1.0 - omega))
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        n_combinations=int(n_comb),
        is_best_index=best,
        oos_rank=rank,
        is_sharpe=is_sr,
        oos_sharpe=oos_sr,
        n_blocks=s,
        block_size=int(block),
        n_dropped=int(dropped),
    )


# ---------------------------------------------------------------------------- PBO and DSR where the selection happened


def study_keys(trials: pd.DataFrame) -> list[str]:
    """The columns that identify one (seed, fold, phase) study in a trials frame (``seed`` only if present)."""
    return (["seed"] if "seed" in trials else []) + ["fold", "phase"]


def unselected_trials(trial_indices: Iterable[int], size: int, seed: int | Sequence[int] = 0) -> np.ndarray:
    """``size`` of the ``trial_indices`` drawn uniformly without replacement, without looking at any score: the
    configurations of a per-study CSCV that were not chosen by the score under test. Deterministic: the generator
    is ``numpy.random.default_rng(SeedSequence([*seed, *sorted indices]))``, so the same study (same trial indices,
    same ``seed``, e.g. (walk-forward seed, fold, phase)) always gets the same subset. All of them (sorted) when
    ``size`` >= their number. Returned sorted."""
    idx = np.array(sorted({int(i) for i in trial_indices}), dtype=np.int64)
    if (idx < 0).any():
        raise ValueError("trial indices must be non-negative")
    if size >= idx.size:
        return idx
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    parts = [int(s) for s in np.atleast_1d(np.asarray(seed, dtype=np.int64))]
    rng = np.random.default_rng(np.random.SeedSequence([*parts, *idx.tolist()]))
    return np.sort(rng.choice(idx, size=int(size), replace=False))


def study_cscv(
    trial_indices: Iterable[int],
    returns_of: Callable[[int], pd.Series],
    *,
    n_trials: int = 50,
    n_blocks: int = 16,
    seed: int | Sequence[int] = 0,
    period: str = "7D",
) -> dict[str, float]:
    """Probability of backtest overfitting of one study by CSCV over trials *not selected by the score under test*.

    Convention: the configurations are :func:`unselected_trials` (``n_trials`` of the study's trials drawn at random,
    seeded from the study, never by score); ``returns_of(index)`` gives a trial's per-bar returns over the training
    window (a Series with a DatetimeIndex, the same index for every trial); they are compounded per ``period`` bin
    (``index.floor(period)``, 7-day bins) and the bins are the CSCV rows, ``n_blocks`` blocks (fewer, even, when
    there are fewer than 4 bins per block). Taking the best trials by the same training score instead biases PBO
    upwards by construction (about 0.86 on pure noise instead of 0.5): given a high full-window score, a high
    in-sample half implies a lower out-of-sample half.

    Returns ``pbo`` (NaN with fewer than 2 trials or 8 bins), ``rho`` (the mean pairwise correlation of the chosen
    trials' binned returns, clipped to [0, 1], backed out of :func:`effective_number_of_trials`; 1 when undefined:
    the study's correlation for its effective number of trials), ``n_trials`` (chosen), ``n_study_trials`` (all),
    ``n_weeks`` (bins) and ``n_blocks`` (0 when no CSCV was possible), all floats."""
    all_indices = sorted({int(i) for i in trial_indices})
    chosen = unselected_trials(all_indices, n_trials, seed)
    columns = []
    starts = None
    for i in chosen:
        r = returns_of(int(i))
        if starts is None:  # first bar of each bin (the same bins for every trial)
            bins = pd.DatetimeIndex(r.index).floor(period).asi8
            starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        columns.append(np.expm1(np.add.reduceat(np.log1p(r.to_numpy(dtype=float)), starts)))  # compounded per bin
    matrix = np.column_stack(columns) if columns else np.empty((0, 0))
    n = len(chosen)
    rho = (n - effective_number_of_trials(matrix)) / (n - 1) if n >= 2 and matrix.shape[0] >= 2 else 1.0
    blocks = min(int(n_blocks), (matrix.shape[0] // 4) // 2 * 2)
    out = {
        "pbo": math.nan,
        "rho": float(rho),
        "n_trials": float(n),
        "n_study_trials": float(len(all_indices)),
        "n_weeks": float(matrix.shape[0]),
        "n_blocks": 0.0,
    }
    if n >= 2 and blocks >= 2:
        out["pbo"] = float(probability_of_backtest_overfitting(matrix, n_blocks=blocks).pbo)
        out["n_blocks"] = float(blocks)
    return out


@dataclass(frozen=True, eq=False)
class WalkForwardPBO:
    """Outcome of :func:`walk_forward_pbo`. ``studies`` has one row per study: its keys, ``n_trials`` (trials with a
    finite out-of-sample score), ``rank`` (1 = worst .. N = best, ties averaged), ``omega`` = rank / (N + 1) and
    ``logit`` = ln(ω / (1 − ω)) of the selected trial."""

    pbo: float  # share of studies with logit <= 0 (the selected trial at or below the out-of-sample median)
    mean_logit: float
    n_studies: int
    studies: pd.DataFrame


def walk_forward_pbo(trials: pd.DataFrame, score: str = "test") -> WalkForwardPBO:
    """Probability of backtest overfitting of the walk-forward procedure itself, one draw per study.

    For each (seed, fold, phase) study of ``trials`` (columns ``fold``, ``phase``, optional ``seed``, ``winner``
    and ``score``): the procedure selected one trial (``winner`` True) using training data only; ``score`` (default
    ``test``, the objective of every trial run on the fold's test window as an independent book) is out of sample
    for that selection. ω = rank of the selected trial's score among the study's N trials with a finite score (1 =
    worst, ties averaged) / (N + 1), λ = ln(ω / (1 − ω)); PBO = share of studies with λ < 0 (the selected trial in
    the bottom half out of sample), a study with λ = 0 (the median rank, e.g. every trial tied because the phase
    never traded in the test window) counting one half, so an uninformative study pulls towards 0.5, not up;
    ``mean_logit`` = mean λ (> 0: selection helps out of sample). Studies where the selected trial has no finite
    score or fewer than 2 trials do are left out; NaN when none is left. On a market without structure ω is
    uniform and PBO ≈ 0.5.
    Each study must have exactly one winner.
    """
    missing = [c for c in ("fold", "phase", "winner", score) if c not in trials]
    if missing:
        raise ValueError(
            f"the trials frame has no column(s) {missing}: the walk-forward PBO needs every trial's "
            f"out-of-sample {score!r} score (re-run the walk-forward to get it)"
        )
    keys = study_keys(trials)
    frame = trials[[*keys, "winner", score]].copy()
    frame[score] = pd.to_numeric(frame[score], errors="coerce").astype(float)
    frame.loc[~np.isfinite(frame[score]), score] = np.nan
    winners = frame.groupby(keys, sort=True)["winner"].sum()
    if not (winners == 1).all():
        bad = winners[winners != 1]
        raise ValueError(f"every study needs exactly one winner; {len(bad)} do not (first: {bad.index[0]})")
    grouped = frame.groupby(keys, sort=True)[score]
    frame["_rank"] = grouped.rank(method="average")
    frame["_n"] = grouped.transform("count")
    chosen = frame[frame["winner"].astype(bool)].rename(columns={"_rank": "rank", "_n": "n_trials"})
    chosen = chosen[chosen["rank"].notna() & (chosen["n_trials"] >= 2)]
    omega = chosen["rank"] / (chosen["n_trials"] + 1.0)
    studies = (
        chosen[keys]
        .assign(
            n_trials=chosen["n_trials"].astype(int),
            rank=chosen["rank"],
            omega=omega,
            logit=np.log(omega / (1.0 - omega)),
        )
        .reset_index(drop=True)
    )
    if studies.empty:
        return WalkForwardPBO(math.nan, math.nan, 0, studies)
    below = (studies["logit"] < 0.0).to_numpy(dtype=float) + 0.5 * (studies["logit"] == 0.0).to_numpy(dtype=float)
    return WalkForwardPBO(float(below.mean()), float(studies["logit"].mean()), len(studies), studies)


def study_deflated_sharpe(
    trials: pd.DataFrame, sharpe: str = "fit_sharpe", bars: str = "fit_bars", rho: str = "study_rho"
) -> pd.DataFrame:
    """Deflated Sharpe ratio of each study's selected trial on the piece the search optimised, with that study's
    own trial count and Sharpe variance (Bailey & López de Prado 2014, applied where the selection happened).

    Per (seed, fold, phase) study of ``trials``: SR = the winner's ``sharpe`` (per bar, on the fit piece), T = its
    ``bars`` (bars of that piece), V = the variance (ddof 1) of ``sharpe`` across the study's trials, N = the
    study's number of trials, N_eff = ρ + (1 − ρ)·N with ρ the study's ``rho`` column (clipped to [0, 1]; N_eff = N
    without it). ``dsr`` = PSR(SR* = E[max SR](N_eff, V)), ``dsr_raw_n`` the same with N. The trials frame has no
    skewness or kurtosis, so the PSR uses normal moments (γ3 = 0, γ4 = 3): for hourly bars (|SR| ≈ 0.01 per bar)
    the non-normal terms γ3·SR and (γ4 − 3)/4·SR² change the PSR's variance factor by well under 1 % (|γ3| ≤ 1,
    γ4 ≤ 40). The winner is chosen by the validation score among the best fit scores, so its fit SR is at most the
    maximum the deflation expects: conservative. NaN where T < 2 or fewer than 2 trials have a finite SR.

    Returns one row per study: keys, ``n_trials``, ``n_effective``, ``sr``, ``sr_variance``, ``n_bars``,
    ``expected_max_sr``, ``expected_max_sr_raw_n``, ``dsr``, ``dsr_raw_n``.
    """
    missing = [c for c in ("fold", "phase", "winner", sharpe, bars) if c not in trials]
    if missing:
        raise ValueError(f"the trials frame has no column(s) {missing}")
    keys = study_keys(trials)
    rows = []
    for key, study in trials.groupby(keys, sort=True):
        sr_all = pd.to_numeric(study[sharpe], errors="coerce").to_numpy(dtype=float)
        sr_all = sr_all[np.isfinite(sr_all)]
        win = study[study["winner"].astype(bool)]
        if len(win) != 1:
            raise ValueError(f"study {key} has {len(win)} winners, needs exactly one")
        n = len(study)
        r = float(study[rho].iloc[0]) if rho in study else math.nan
        r = min(max(r, 0.0), 1.0) if math.isfinite(r) else 0.0
        n_eff = r + (1.0 - r) * n
        sr = float(win[sharpe].iloc[0])
        t = float(win[bars].iloc[0])
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row.update(
            n_trials=float(n),
            n_effective=n_eff,
            sr=sr,
            n_bars=t,
            sr_variance=math.nan,
            expected_max_sr=math.nan,
            expected_max_sr_raw_n=math.nan,
            dsr=math.nan,
            dsr_raw_n=math.nan,
        )
        if sr_all.size >= 2 and math.isfinite(sr) and math.isfinite(t) and t >= 2:
            v = float(np.var(sr_all, ddof=1))
            e_eff, e_raw = expected_max_sharpe(max(n_eff, 1.0), v), expected_max_sharpe(max(n, 1), v)
            row.update(
                sr_variance=v,
                expected_max_sr=e_eff,
                expected_max_sr_raw_n=e_raw,
                dsr=_psr_from_moments(sr, 0.0, 3.0, t, e_eff),
                dsr_raw_n=_psr_from_moments(sr, 0.0, 3.0, t, e_raw),
            )
        rows.append(row)
    columns = [
        *keys,
        "n_trials",
        "n_effective",
        "sr",
        "sr_variance",
        "n_bars",
        "expected_max_sr",
        "expected_max_sr_raw_n",
        "dsr",
        "dsr_raw_n",
    ]
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------------------------- bootstrap data-snooping tests


def _snooping_inputs(strategy_returns: Any, benchmark_returns: Any) -> tuple[np.ndarray, np.ndarray]:
    bench = _as_returns(benchmark_returns, "benchmark_returns")
    strat = np.asarray(strategy_returns, dtype=float)
    if strat.ndim == 1:
        strat = strat[:, None]
    strat = _as_matrix(strat, "strategy_returns")
    if strat.shape[0] != bench.size:
        raise ValueError(f"strategy_returns has {strat.shape[0]} rows but benchmark_returns has {bench.size}")
    return strat, bench


def _block_size(block_size: int | None, t: int) -> int:
    if block_size is None:
        return max(1, int(math.sqrt(t)))  # arch's own default
    if int(block_size) != block_size or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size}")
    return int(block_size)


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _stationary_bootstrap_variance(d: np.ndarray, block_size: int) -> np.ndarray:
    """Long-run variance ω̂² of each column of ``d`` under the stationary bootstrap (Hansen 2005, eq. for ω̂²).

    ω̂² = γ̂_0 + 2 Σ_{i=1}^{T−1} κ_i γ̂_i,  κ_i = (1 − i/T)(1 − q)^i + (i/T)(1 − q)^{T−i},  q = 1 / block_size,
    with γ̂_i = Σ_t (d_t − d̄)(d_{t+i} − d̄) / T (autocovariances via FFT). Same estimator as arch's SPA.
    """
    t, k = d.shape
    q = 1.0 / block_size
    lag = np.arange(1, t)
    kappa = (1.0 - lag / t) * (1.0 - q) ** lag + (lag / t) * (1.0 - q) ** (t - lag)
    n_fft = 1 << (2 * t - 1).bit_length()  # zero padding >= 2T − 1: linear, not circular, autocovariances
    step = max(1, _FFT_BUDGET // n_fft)  # columns per FFT batch, bounds memory for long T and many models
    out = np.empty(k)
    for start in range(0, k, step):
        x = d[:, start : start + step]
        x = x - x.mean(axis=0)
        spec = np.fft.rfft(x, n=n_fft, axis=0)
        acov = np.fft.irfft(spec.real**2 + spec.imag**2, n=n_fft, axis=0)[:t] / t
        out[start : start + step] = acov[0] + 2.0 * (kappa @ acov[1:])
    return out


def spa_test(
    strategy_returns: Any,
    benchmark_returns: Any,
    *,
    block_size: int | None = None,
    reps: int = 1000,
    seed: int | np.random.Generator = 0,
) -> dict[str, float]:
    """Hansen's (2005) test for superior predictive ability of strategies over a benchmark (buy and hold).

    H0: no strategy has a higher expected return than the benchmark. Losses are L = −returns, so the loss
    differentials are d_k = L_bench − L_k = r_k − r_bench (T × M; a 1-D strategy is M = 1). The statistic is
    max_k d̄_k / ω̂_k with ω̂_k² the stationary-bootstrap long-run variance of d_k (see
    :func:`_stationary_bootstrap_variance`). ``arch.bootstrap.SPA`` (stationary bootstrap, ``block_size`` mean block
    length, default int(sqrt(T)); ``reps`` replications; ``seed`` an int or a ``numpy.random.Generator``) does the
    bootstrap and the three recenterings. arch 8.0.0 accepts ``studentize=True`` but never divides by ω̂ when
    computing p-values, so the studentized differentials d_k / ω̂_k are passed to it directly (benchmark losses 0,
    model losses −d_k / ω̂_k); a differential with zero variance is left unscaled.

    Hansen's statistic is floored at 0 (T = max(max_k √T d̄_k / ω̂_k, 0), p = P*(T* ≥ T)), so when no strategy has
    a positive mean excess return all p-values are 1. arch does not floor; without this rule a strategy identical
    to the benchmark would get p = 0 (strict comparison of exact zeros) and a uniformly worse one p ≈ 0.5.

    Caveat: ω̂ is estimated, and with many strategies the studentized statistic over-rejects in finite samples (a
    null simulation with M = 100 iid zero-mean differentials, T = 2000, gave 11 % rejections at the 5 % level with
    the default block length 44 and 8.5 % with block length 10, against 5 % with the true ω or without
    studentization). Read it next to :func:`reality_check` and choose ``block_size`` deliberately (e.g. with
    ``arch.bootstrap.optimal_block_length``).

    Returns the p-values ``{"lower", "consistent", "upper"}``; Hansen recommends ``consistent``. Small means some
    strategy beats the benchmark after accounting for the search over all M strategies.
    """
    strat, bench = _snooping_inputs(strategy_returns, benchmark_returns)
    t = bench.size
    b = _block_size(block_size, t)
    d = strat - bench[:, None]
    if d.mean(axis=0).max() <= 0.0:
        return {"lower": 1.0, "consistent": 1.0, "upper": 1.0}
    var = _stationary_bootstrap_variance(d, b)
    omega = np.where(var > 0.0, np.sqrt(np.maximum(var, 0.0)), 1.0)
    from arch.bootstrap import SPA  # with its first use: arch loads ~1.2 s of modules (see btc_assets.volatility)

    spa = SPA(np.zeros(t), -(d / omega), block_size=b, reps=int(reps), bootstrap="stationary", seed=_rng(seed))
    spa.compute()
    p = spa.pvalues
    return {key: float(p[key]) for key in ("lower", "consistent", "upper")}


def reality_check(
    strategy_returns: Any,
    benchmark_returns: Any,
    *,
    block_size: int | None = None,
    reps: int = 1000,
    seed: int | np.random.Generator = 0,
) -> dict[str, float]:
    """White's (2000) Reality Check of strategies against a benchmark (buy and hold).

    Same setup as :func:`spa_test` (losses −returns, d_k = r_k − r_bench, stationary bootstrap via
    ``arch.bootstrap.RealityCheck`` with the same ``block_size`` / ``reps`` / ``seed`` conventions) but with White's
    non-studentized statistic max_k d̄_k and every model recentred (the upper, least-favourable p-value). As in
    :func:`spa_test`, p = 1 when no strategy has a positive mean excess return (never a rejection; also avoids
    arch's p = 0 for a strategy identical to the benchmark).

    Returns ``{"pvalue": p}``.
    """
    strat, bench = _snooping_inputs(strategy_returns, benchmark_returns)
    b = _block_size(block_size, bench.size)
    if (strat - bench[:, None]).mean(axis=0).max() <= 0.0:
        return {"pvalue": 1.0}
    from arch.bootstrap import RealityCheck  # with its first use (see spa_test)

    rc = RealityCheck(
        -bench, -strat, block_size=b, reps=int(reps), bootstrap="stationary", studentize=False, seed=_rng(seed)
    )
    rc.compute()
    return {"pvalue": float(rc.pvalues["upper"])}
