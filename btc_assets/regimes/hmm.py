"""Hidden Markov model with multivariate Student-t emissions, built on hmmlearn (no Dagster in here).

Model
-----
State ``s_t`` follows a first-order Markov chain (``startprob_`` π, ``transmat_`` A). Given ``s_t = j`` the
observation ``x_t ∈ R^p`` is multivariate Student-t with location μ_j (``means_``), scale matrix Σ_j (``covars_``;
the covariance is ν_j/(ν_j − 2) Σ_j) and degrees of freedom ν_j (``dofs_``)::

    log f_j(x) = lnΓ((ν+p)/2) − lnΓ(ν/2) − p/2 log(νπ) − ½ log|Σ| − (ν+p)/2 · log(1 + δ/ν),
    δ = (x − μ)ᵀ Σ⁻¹ (x − μ)   (computed through the Cholesky factor L of Σ: δ = |L⁻¹(x − μ)|²).

The t is the Gaussian scale mixture x | w ~ N(μ, Σ/w), w ~ Gamma(ν/2, rate ν/2); treating w (and the states) as
missing data gives the ECM algorithm of Peel & McLachlan (2000), "Robust mixture modelling using the t
distribution", Statistics and Computing 10:339–348, which Bulla (2011), "Hidden Markov models with t components.
Increased persistence and other aspects", Quantitative Finance 11(3):459–475, carries over to HMMs by replacing the
mixture's posterior probabilities τ_tj with the forward-backward state posteriors γ_tj. The single-t case is Liu &
Rubin (1995), "ML estimation of the t distribution using EM and its extensions, ECM and ECME", Statistica Sinica
5:19–39.

One iteration (parameters θ⁽ᵏ⁾ → θ⁽ᵏ⁺¹⁾)
-----------------------------------------
E-step, at θ⁽ᵏ⁾: γ_tj = p(s_t = j | x_1..x_T) and ξ_t(i, j) from forward-backward; δ_tj the Mahalanobis distance of
x_t under state j; the conditional expectation of the latent weight u_tj = E[w_t | x_t, s_t = j] =
(ν_j⁽ᵏ⁾ + p) / (ν_j⁽ᵏ⁾ + δ_tj).

CM-step 1 (closed form, joint in μ and Σ)::

    μ_j = Σ_t γ_tj u_tj x_t / Σ_t γ_tj u_tj
    Σ_j = Σ_t γ_tj u_tj (x_t − μ_j)(x_t − μ_j)ᵀ / Σ_t γ_tj          (note: divided by Σγ, not by Σγu)

CM-step 2: ν_j is the root of (Peel & McLachlan 2000; the same statement in Liu & Rubin 1995 for one t, and in
Hasannasab, Hertrich, Laus & Steidl 2020, "Alternatives to the EM algorithm for ML estimation of location, scatter
matrix and degree of freedom of the Student t distribution", Numerical Algorithms, as their EM ν-step)::

    −ψ(ν/2) + log(ν/2) + 1 + Σ_t γ_tj (log u_tj − u_tj) / Σ_t γ_tj + ψ((ν_j⁽ᵏ⁾ + p)/2) − log((ν_j⁽ᵏ⁾ + p)/2) = 0.

The last two terms hold the *current* ν_j⁽ᵏ⁾ (they come from E[log w | x] = log u + ψ((ν⁽ᵏ⁾+p)/2) −
log((ν⁽ᵏ⁾+p)/2), an E-step constant), not the unknown ν: only so is the step the exact maximiser of the
Q-function, which is what makes the likelihood non-decreasing (writing the unknown ν into those two terms, as is
sometimes done, gives a step that is neither ECM nor ECME and carries no such guarantee). The left side is
strictly decreasing in ν (Q is strictly concave in ν because ψ'(x) > 1/x), so the root is unique; it is found by
``scipy.optimize.brentq`` inside ``dof_bounds`` and clipped to the bound when there is no sign change (the
constrained maximiser of a concave function). π and A get the usual Baum-Welch update from hmmlearn
(Dirichlet-MAP when ``startprob_prior`` / ``transmat_prior`` exceed 1; then the *posterior*, not the likelihood,
is what EM increases).

``min_covar`` regularisation is an eigenvalue floor: Σ_j ← V diag(max(λ, min_covar)) Vᵀ (diag: each variance
floored). Over the set {Σ : Σ ⪰ min_covar·I} this is the exact maximiser of the Σ-part of Q (Ingrassia 2004,
"A likelihood-based constrained algorithm for multivariate normal mixture models", Stat. Methods & Applications
13:151–166; the t's Σ-part of Q has the Gaussian form), so unlike "add min_covar·I after every M-step" it
keeps EM monotone; when no eigenvalue is below the floor Σ_j is the unconstrained update, untouched.

Causality
---------
``filter_proba`` returns p(s_t | x_1..x_t) from a forward pass only; it is causal bit for bit
(``filter_proba(X[:t]) == filter_proba(X)[:t]``). ``predict_proba``, ``score_samples``, ``predict`` / ``decode``
(Viterbi or MAP) all condition on the whole sequence and see the future: never feed them downstream.

Performance
-----------
hmmlearn's compiled log-space forward-backward (``_hmmc.forward_log`` / ``backward_log`` /
``compute_log_xi_sum`` plus its scipy ``logsumexp`` posteriors) costs ~80 ms per pass at T = 70,000, K = 5 on its
own: each step does a K-term log-sum-exp per cell (K² exponentials). ``_fit_log`` (an hmmlearn subclass hook) is
overridden by numba kernels that shift each lattice row once (K exponentials per step) and return the same
log-space lattices, with an exact per-cell log-sum-exp fallback wherever the shifted sum could have lost terms to
underflow (left-right chains, near-zero transitions), so they stay as robust as hmmlearn's "log" implementation.
Emission log-densities and the E-step sums are numba kernels too. Every kernel has a plain reference beside it
(``*_reference``: numpy/scipy, or hmmlearn's own ``_hmmc``) and the tests check they agree. The EM hot path
makes no BLAS call (see ``_inverse_lower``). ``implementation="scaling"`` falls back to hmmlearn's own scaled
forward-backward, which is faster still but can underflow; "log" (the default) is the one to use.

Warm start
----------
``warm_start(previous)`` returns an unfitted copy with the previous fit's parameters and ``init_params=""``, so a
walk-forward refit on a slightly longer window starts at the old optimum and converges in a few iterations.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np
from hmmlearn import _hmmc
from hmmlearn.base import BaseHMM
from numba import njit
from scipy import linalg, optimize, special
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

_log = logging.getLogger(__name__)

COVARIANCE_TYPES = ("full", "diag")
_INIT_DOF = 10.0
_INIT_STAY = 0.9
_KMEANS_SUBSAMPLE = 10_000
_KMEANS_ITER = 30
_KMEANS_INIT = 4
_EMPTY_STATE = 1e-8  # Σ_t γ_tj below this: state j keeps its emission parameters this iteration


# ----------------------------------------------------------------------------------------------------------------
# Numba kernels (each with a plain reference implementation used by the tests)
# ----------------------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _t_loglik_kernel(X, means, inv_chols, consts, half_nu_p, dofs):  # pragma: no cover - compiled
    """log f_j(x_t) for all t, j: consts[j] − (ν_j + p)/2 · log(1 + δ_tj/ν_j), δ_tj = |L_j⁻¹(x_t − μ_j)|².

    ``inv_chols`` are the lower-triangular inverses of the Cholesky factors L_j; ``consts`` the x-free part of
    log f_j; ``half_nu_p`` = (ν_j + p)/2. Rows are computed one at a time with no reduction across rows, so a row's
    value does not depend on the others (``filter_proba`` is causal bit for bit), and the transcendental call is
    never in an innermost loop (no vector-math variant can be substituted for part of the rows).
    """
    T, p = X.shape
    K = means.shape[0]
    out = np.empty((T, K))
    y = np.empty(p)
    for t in range(T):
        for j in range(K):
            for a in range(p):
                y[a] = X[t, a] - means[j, a]
            delta = 0.0
            for a in range(p):
                acc = 0.0
                for b in range(a + 1):
                    acc += inv_chols[j, a, b] * y[b]
                delta += acc * acc
            # log(1 + x) rather than log1p: 1.7x faster here, and the absolute error (what a log-density needs)
            # is the same ~1e-16.
            out[t, j] = consts[j] - half_nu_p[j] * math.log(1.0 + delta / dofs[j])
    return out


@njit(cache=True, nogil=True)
def _inverse_lower(chols):  # pragma: no cover - compiled
    """Inverses of lower-triangular matrices (K, p, p) by forward substitution.

    Deliberately not ``scipy.linalg.solve_triangular``: on a small multi-core box that call wakes OpenBLAS's
    worker threads, whose busy-waiting then steals the core from the numba kernels (measured: 6 ms → 48 ms for the
    70,000×5 log-density pass). The EM hot path makes no BLAS call.
    """
    K, p, _ = chols.shape
    out = np.zeros((K, p, p))
    for j in range(K):
        for c in range(p):
            out[j, c, c] = 1.0 / chols[j, c, c]
            for a in range(c + 1, p):
                acc = 0.0
                for b in range(c, a):
                    acc += chols[j, a, b] * out[j, b, c]
                out[j, a, c] = -acc / chols[j, a, a]
    return out


_SAFE_SUM = 1e-250  # a shifted sum below this may have lost terms to underflow: that cell is redone exactly


@njit(cache=True, nogil=True, error_model="numpy")
def _forward_log_kernel(log_frameprob, log_startprob, log_transmat, transmat):  # pragma: no cover - compiled
    """Log-space forward lattice fwd[t, j] = log p(x_1..x_t, s_t = j), as hmmlearn's ``_hmmc.forward_log``.

    Per step the previous row is shifted by its maximum M once: fwd[t, j] = logB[t, j] + M + log Σ_i e_i A_ij,
    e_i = exp(fwd[t−1, i] − M) — K exponentials per step instead of hmmlearn's K². Underflow can only lose terms
    whose share of the sum is < 1e-58 unless the sum itself is tiny; a cell whose sum falls below ``_SAFE_SUM``
    (e.g. reachable only through an almost-impossible transition) is recomputed with the exact per-cell
    log-sum-exp. Each row depends only on the previous row and its own emissions: causal bit for bit.
    """
    T, K = log_frameprob.shape
    fwd = np.empty((T, K))
    e = np.empty(K)
    for j in range(K):
        fwd[0, j] = log_startprob[j] + log_frameprob[0, j]
    for t in range(1, T):
        m = -np.inf
        for i in range(K):
            if fwd[t - 1, i] > m:
                m = fwd[t - 1, i]
        if m == -np.inf:
            for j in range(K):
                fwd[t, j] = -np.inf
            continue
        for i in range(K):
            e[i] = math.exp(fwd[t - 1, i] - m)
        for j in range(K):
            acc = 0.0
            for i in range(K):
                acc += e[i] * transmat[i, j]
            if acc >= _SAFE_SUM:
                fwd[t, j] = log_frameprob[t, j] + m + math.log(acc)
            else:
                mj = -np.inf
                for i in range(K):
                    v = fwd[t - 1, i] + log_transmat[i, j]
                    if v > mj:
                        mj = v
                if mj == -np.inf:
                    fwd[t, j] = -np.inf
                else:
                    acc = 0.0
                    for i in range(K):
                        acc += math.exp(fwd[t - 1, i] + log_transmat[i, j] - mj)
                    fwd[t, j] = log_frameprob[t, j] + mj + math.log(acc)
    return fwd


@njit(cache=True, nogil=True, error_model="numpy")
def _backward_log_kernel(log_frameprob, log_transmat, transmat):  # pragma: no cover - compiled
    """Log-space backward lattice bwd[t, i] = log p(x_{t+1}..x_T | s_t = i), as hmmlearn's
    ``_hmmc.backward_log``; same shift-once scheme and exact per-cell fallback as ``_forward_log_kernel``."""
    T, K = log_frameprob.shape
    bwd = np.empty((T, K))
    e = np.empty(K)
    for i in range(K):
        bwd[T - 1, i] = 0.0
    for t in range(T - 2, -1, -1):
        m = -np.inf
        for j in range(K):
            v = log_frameprob[t + 1, j] + bwd[t + 1, j]
            if v > m:
                m = v
        if m == -np.inf:
            for i in range(K):
                bwd[t, i] = -np.inf
            continue
        for j in range(K):
            e[j] = math.exp(log_frameprob[t + 1, j] + bwd[t + 1, j] - m)
        for i in range(K):
            acc = 0.0
            for j in range(K):
                acc += transmat[i, j] * e[j]
            if acc >= _SAFE_SUM:
                bwd[t, i] = m + math.log(acc)
            else:
                mi = -np.inf
                for j in range(K):
                    v = log_transmat[i, j] + log_frameprob[t + 1, j] + bwd[t + 1, j]
                    if v > mi:
                        mi = v
                if mi == -np.inf:
                    bwd[t, i] = -np.inf
                else:
                    acc = 0.0
                    for j in range(K):
                        acc += math.exp(log_transmat[i, j] + log_frameprob[t + 1, j] + bwd[t + 1, j] - mi)
                    bwd[t, i] = mi + math.log(acc)
    return bwd


@njit(cache=True, nogil=True, error_model="numpy")
def _normalise_rows_log(lattice):  # pragma: no cover - compiled
    """exp(row − logsumexp(row)) for every row, row by row (a row's result never depends on another row)."""
    T, K = lattice.shape
    out = np.empty((T, K))
    for t in range(T):
        m = -np.inf
        for j in range(K):
            if lattice[t, j] > m:
                m = lattice[t, j]
        total = 0.0
        for j in range(K):
            v = math.exp(lattice[t, j] - m)
            out[t, j] = v
            total += v
        inv = 1.0 / total
        for j in range(K):
            out[t, j] *= inv
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _logsumexp_row(row):  # pragma: no cover - compiled
    m = -np.inf
    for v in row:
        if v > m:
            m = v
    if m == -np.inf:
        return m
    total = 0.0
    for v in row:
        total += math.exp(v - m)
    return m + math.log(total)


@njit(cache=True, nogil=True, error_model="numpy")
def _forward_backward_kernel(log_frameprob, log_startprob, log_transmat, transmat):  # pragma: no cover - compiled
    """Log-space forward-backward. Returns (log_prob, fwd, bwd, posteriors) exactly as hmmlearn's ``_fit_log``."""
    fwd = _forward_log_kernel(log_frameprob, log_startprob, log_transmat, transmat)
    bwd = _backward_log_kernel(log_frameprob, log_transmat, transmat)
    log_prob = _logsumexp_row(fwd[fwd.shape[0] - 1])
    return log_prob, fwd, bwd, _normalise_rows_log(fwd + bwd)


@njit(cache=True, nogil=True, error_model="numpy")
def _log_xi_sum_kernel(fwd_log, log_transmat, transmat, bwd_log, log_frameprob):  # pragma: no cover - compiled
    """Σ_t ξ_t(i, j), ξ_t(i, j) = p(s_{t−1} = i, s_t = j | x_1..x_T), from log-space lattices; equals hmmlearn's
    ``_hmmc.compute_log_xi_sum`` (exponentiated).

    ξ_t ∝ exp(fwd[t−1, i]) A_ij exp(logB[t, j] + bwd[t, j]) and sums to one over (i, j), so each t is normalised
    directly with the two factors shifted separately (2K exponentials per t instead of K²). When the shifted sum
    is below ``_SAFE_SUM`` (its dominant terms may have underflowed) that t is redone with the exact joint shift.
    """
    T, K = fwd_log.shape
    out = np.zeros((K, K))
    ea = np.empty(K)
    eg = np.empty(K)
    m = np.empty((K, K))
    for t in range(1, T):
        amax = -np.inf
        gmax = -np.inf
        for i in range(K):
            if fwd_log[t - 1, i] > amax:
                amax = fwd_log[t - 1, i]
            g = log_frameprob[t, i] + bwd_log[t, i]
            if g > gmax:
                gmax = g
        if amax == -np.inf or gmax == -np.inf:
            continue
        for i in range(K):
            ea[i] = math.exp(fwd_log[t - 1, i] - amax)
            eg[i] = math.exp(log_frameprob[t, i] + bwd_log[t, i] - gmax)
        s = 0.0
        for i in range(K):
            for j in range(K):
                v = ea[i] * transmat[i, j] * eg[j]
                m[i, j] = v
                s += v
        if s < _SAFE_SUM:
            vmax = -np.inf
            for i in range(K):
                for j in range(K):
                    v = fwd_log[t - 1, i] + log_transmat[i, j] + log_frameprob[t, j] + bwd_log[t, j]
                    m[i, j] = v
                    if v > vmax:
                        vmax = v
            if vmax == -np.inf:
                continue
            s = 0.0
            for i in range(K):
                for j in range(K):
                    v = math.exp(m[i, j] - vmax)
                    m[i, j] = v
                    s += v
        inv = 1.0 / s
        for i in range(K):
            for j in range(K):
                out[i, j] += m[i, j] * inv
    return out


@njit(cache=True, nogil=True)
def _t_stats_kernel(X, posteriors, log_frameprob, centres, consts, half_nu_p, log_u_max):  # pragma: no cover
    """E-step sums for the ECM steps, with y_t = x_t − centre_j (centre = current μ_j, for numerical accuracy).

    Returns Σγ, Σγu, Σγu y, Σγu y yᵀ and Σγ(log u − u) per state, u_tj = (ν_j + p)/(ν_j + δ_tj). The weights come
    from the emission log-densities already computed for this E-step: log(1 + δ/ν) = (consts − log f)/((ν + p)/2),
    so log u = log((ν + p)/ν) − log(1 + δ/ν) (``log_u_max`` = log((ν + p)/ν)) costs one exp and no Mahalanobis
    distance. ``log_frameprob`` must come from the same parameters (it does: the E-step's own lattice).
    """
    T, p = X.shape
    K = centres.shape[0]
    post = np.zeros(K)
    wsum = np.zeros(K)
    wy = np.zeros((K, p))
    wyy = np.zeros((K, p, p))
    logu_u = np.zeros(K)
    y = np.empty(p)
    for t in range(T):
        for j in range(K):
            g = posteriors[t, j]
            log_u = log_u_max[j] - (consts[j] - log_frameprob[t, j]) / half_nu_p[j]
            u = math.exp(log_u)
            gu = g * u
            post[j] += g
            wsum[j] += gu
            logu_u[j] += g * (log_u - u)
            for a in range(p):
                y[a] = X[t, a] - centres[j, a]
            for a in range(p):
                gy = gu * y[a]
                wy[j, a] += gy
                for b in range(a + 1):
                    wyy[j, a, b] += gy * y[b]
    for j in range(K):
        for a in range(p):
            for b in range(a):
                wyy[j, b, a] = wyy[j, a, b]
    return post, wsum, wy, wyy, logu_u


def t_loglik_reference(X, means, covars, dofs):
    """Plain numpy/scipy reference for ``_t_loglik_kernel`` (full scale matrices, shape (K, p, p))."""
    X = np.asarray(X, dtype=np.float64)
    p = X.shape[1]
    out = np.empty((X.shape[0], len(means)))
    for j, (mu, cov, nu) in enumerate(zip(means, covars, dofs, strict=True)):
        chol = linalg.cholesky(cov, lower=True)
        z = linalg.solve_triangular(chol, (X - mu).T, lower=True)
        delta = (z**2).sum(axis=0)
        const = (
            special.gammaln((nu + p) / 2)
            - special.gammaln(nu / 2)
            - 0.5 * p * np.log(nu * np.pi)
            - np.log(np.diag(chol)).sum()
        )
        out[:, j] = const - 0.5 * (nu + p) * np.log1p(delta / nu)
    return out


def t_stats_reference(X, posteriors, centres, covars, dofs):
    """Plain numpy reference for ``_t_stats_kernel`` (full scale matrices)."""
    X = np.asarray(X, dtype=np.float64)
    p = X.shape[1]
    K = len(centres)
    post, wsum, logu_u = np.zeros(K), np.zeros(K), np.zeros(K)
    wy, wyy = np.zeros((K, p)), np.zeros((K, p, p))
    for j in range(K):
        y = X - centres[j]
        delta = np.einsum("ti,ij,tj->t", y, np.linalg.inv(covars[j]), y)
        u = (dofs[j] + p) / (dofs[j] + delta)
        g = posteriors[:, j]
        post[j], wsum[j] = g.sum(), (g * u).sum()
        wy[j] = (g * u) @ y
        wyy[j] = (y * (g * u)[:, None]).T @ y
        logu_u[j] = (g * (np.log(u) - u)).sum()
    return post, wsum, wy, wyy, logu_u


def forward_backward_reference(log_frameprob, startprob, transmat):
    """hmmlearn's own compiled log-space forward-backward, the reference for ``_forward_backward_kernel``."""
    log_prob, fwd = _hmmc.forward_log(startprob, transmat, log_frameprob)
    bwd = _hmmc.backward_log(startprob, transmat, log_frameprob)
    post = np.exp(fwd + bwd - special.logsumexp(fwd + bwd, axis=1, keepdims=True))
    return log_prob, fwd, bwd, post


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _floor_eigenvalues(cov: np.ndarray, floor: float) -> np.ndarray:
    """Constrained Σ-maximiser: eigenvalues below ``floor`` raised to it; untouched when none is below."""
    cov = 0.5 * (cov + cov.T)
    vals, vecs = np.linalg.eigh(cov)
    if vals.min() >= floor:
        return cov
    return (vecs * np.maximum(vals, floor)) @ vecs.T


def _kmeans(X: np.ndarray, k: int, rs: np.random.RandomState, n_init: int = _KMEANS_INIT, n_iter: int = _KMEANS_ITER):
    """Best (lowest inertia) of ``n_init`` k-means++ seedings each refined by Lloyd iterations; deterministic
    given ``rs``. Returns (centres, labels)."""
    n = len(X)
    best = None
    for _ in range(n_init):
        centres = np.empty((k, X.shape[1]))
        centres[0] = X[rs.randint(n)]
        d2 = ((X - centres[0]) ** 2).sum(axis=1)
        for c in range(1, k):
            total = d2.sum()
            idx = rs.choice(n, p=d2 / total) if total > 0 else rs.randint(n)
            centres[c] = X[idx]
            d2 = np.minimum(d2, ((X - centres[c]) ** 2).sum(axis=1))
        for _ in range(n_iter):
            dist = ((X[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
            labels = dist.argmin(axis=1)
            new = centres.copy()
            for c in range(k):
                members = labels == c
                if members.any():
                    new[c] = X[members].mean(axis=0)
            if np.array_equal(new, centres):
                break
            centres = new
        dist = ((X[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        labels = dist.argmin(axis=1)
        inertia = dist[np.arange(n), labels].sum()
        if best is None or inertia < best[0]:
            best = (inertia, centres, labels)
    return best[1], best[2]


def _split(X: np.ndarray, lengths):
    if lengths is None:
        return [X]
    ends = np.cumsum(lengths)
    if ends[-1] != len(X):
        raise ValueError(f"lengths sum to {ends[-1]} but X has {len(X)} rows")
    return np.split(X, ends[:-1])


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


class StudentTHMM(BaseHMM):
    """HMM with multivariate Student-t emissions, fitted by ECM (see the module docstring for the equations).

    Parameters (sklearn style, stored as given)
    -------------------------------------------
    n_components : number of states K.
    covariance_type : "full" (``covars_`` (K, p, p) scale matrices) or "diag" (``covars_`` (K, p) diagonals).
    min_covar : eigenvalue (diag: variance) floor of the scale matrices.
    dof_bounds : (low, high) for ν; the default low of 2.05 keeps every state's covariance finite.
    startprob_prior, transmat_prior : Dirichlet prior parameters (scalar or array; a K×K ``transmat_prior`` with a
        large diagonal makes regimes sticky).
    algorithm, random_state, n_iter, tol, verbose, implementation : as in hmmlearn.
    params, init_params : letters s (startprob), t (transmat), m (means), c (covars), n (dofs).

    Fitted attributes: ``startprob_``, ``transmat_``, ``means_``, ``covars_``, ``dofs_``, ``monitor_``
    (``monitor_.history`` is the log-likelihood before each M-step), ``n_features``.
    """

    def __init__(
        self,
        n_components=5,
        covariance_type="full",
        min_covar=1e-3,
        dof_bounds=(2.05, 200.0),
        startprob_prior=1.0,
        transmat_prior=1.0,
        algorithm="viterbi",
        random_state=None,
        n_iter=100,
        tol=1e-4,
        verbose=False,
        params="stmcn",
        init_params="stmcn",
        implementation="log",
    ):
        super().__init__(
            n_components=n_components,
            startprob_prior=startprob_prior,
            transmat_prior=transmat_prior,
            algorithm=algorithm,
            random_state=random_state,
            n_iter=n_iter,
            tol=tol,
            verbose=verbose,
            params=params,
            init_params=init_params,
            implementation=implementation,
        )
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.dof_bounds = dof_bounds

    # -- parameters --------------------------------------------------------------------------------------------

    def _full_covars(self) -> np.ndarray:
        covars = np.asarray(self.covars_, dtype=np.float64)
        if self.covariance_type == "diag":
            return np.stack([np.diag(c) for c in covars])
        return covars

    def _cholesky_factors(self) -> np.ndarray:
        if self.covariance_type == "diag":
            return np.stack([np.diag(np.sqrt(c)) for c in np.asarray(self.covars_, dtype=np.float64)])
        return np.stack([np.linalg.cholesky(c) for c in np.asarray(self.covars_, dtype=np.float64)])

    def _get_n_fit_scalars_per_param(self):
        k, p = self.n_components, self.n_features
        return {
            "s": k - 1,
            "t": k * (k - 1),
            "m": k * p,
            "c": k * p * (p + 1) // 2 if self.covariance_type == "full" else k * p,
            "n": k,
        }

    def _check(self):
        super()._check()
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}")
        low, high = self.dof_bounds
        if not 0 < low < high:
            raise ValueError(f"dof_bounds must satisfy 0 < low < high, got {self.dof_bounds}")
        k = self.n_components
        self.means_ = np.asarray(self.means_, dtype=np.float64)
        if self.means_.ndim != 2 or self.means_.shape[0] != k:
            raise ValueError(f"means_ must have shape (n_components, n_features), got {self.means_.shape}")
        p = self.means_.shape[1]
        if not hasattr(self, "n_features"):
            self.n_features = p
        if p != self.n_features:
            raise ValueError(f"means_ has {p} features but the model has {self.n_features}")
        self.covars_ = np.asarray(self.covars_, dtype=np.float64)
        expected = (k, p, p) if self.covariance_type == "full" else (k, p)
        if self.covars_.shape != expected:
            raise ValueError(
                f"covars_ must have shape {expected} for {self.covariance_type!r}, got {self.covars_.shape}"
            )
        if self.covariance_type == "diag":
            if not (np.isfinite(self.covars_).all() and (self.covars_ > 0).all()):
                raise ValueError("diag covars_ must be positive")
        else:
            for j, c in enumerate(self.covars_):
                if not np.allclose(c, c.T):
                    raise ValueError(f"covars_[{j}] is not symmetric")
                try:
                    np.linalg.cholesky(c)
                except np.linalg.LinAlgError as err:
                    raise ValueError(f"covars_[{j}] is not positive definite") from err
        self.dofs_ = np.asarray(self.dofs_, dtype=np.float64)
        if self.dofs_.shape != (k,) or not (np.isfinite(self.dofs_).all() and (self.dofs_ > 0).all()):
            raise ValueError("dofs_ must be a positive vector of length n_components")

    def _init(self, X, lengths=None):
        """Best-of-4 k-means++/Lloyd on a winsorised random subsample (seeded by ``random_state``) for μ and Σ; ν = 10;
        uniform ``startprob_``; sticky ``transmat_`` (0.9 on the diagonal). Only what ``init_params`` names, or
        what is missing, is initialised; a warm start sets ``init_params=""`` and keeps everything.

        Also re-syncs ``monitor_`` with ``tol`` / ``n_iter`` / ``verbose``: hmmlearn builds the monitor in
        ``__init__`` only, so ``set_params(tol=...)`` would otherwise be ignored by the convergence test."""
        self.monitor_.tol, self.monitor_.n_iter, self.monitor_.verbose = self.tol, self.n_iter, self.verbose
        self._check_and_set_n_features(X)
        k, p = self.n_components, self.n_features
        rs = check_random_state(self.random_state)
        if self._needs_init("s", "startprob_"):
            self.startprob_ = np.full(k, 1.0 / k)
        if self._needs_init("t", "transmat_"):
            off = (1.0 - _INIT_STAY) / (k - 1) if k > 1 else 0.0
            self.transmat_ = np.full((k, k), off) + np.eye(k) * ((_INIT_STAY if k > 1 else 1.0) - off)
        need_m = self._needs_init("m", "means_")
        need_c = self._needs_init("c", "covars_")
        if need_m or need_c:
            sub = X if len(X) <= _KMEANS_SUBSAMPLE else X[np.sort(rs.choice(len(X), _KMEANS_SUBSAMPLE, False))]
            lo, hi = np.percentile(sub, [1.0, 99.0], axis=0)
            clipped = np.clip(sub, lo, hi)
            scale = clipped.std(axis=0)
            scale[scale == 0] = 1.0
            centres, labels = _kmeans(clipped / scale, k, rs)
            glob = np.atleast_2d(np.cov(clipped, rowvar=False, bias=True))
            if need_m:
                self.means_ = centres * scale
            if need_c:
                covs = []
                for j in range(k):
                    members = clipped[labels == j]
                    cov = np.atleast_2d(np.cov(members, rowvar=False, bias=True)) if len(members) > 2 * p else glob
                    covs.append(_floor_eigenvalues(cov, self.min_covar))
                covs = np.stack(covs)
                if self.covariance_type == "diag":
                    covs = np.maximum(np.stack([np.diag(c) for c in covs]), self.min_covar)
                self.covars_ = covs
        if self._needs_init("n", "dofs_"):
            self.dofs_ = np.full(k, float(np.clip(_INIT_DOF, *self.dof_bounds)))
        n_fit_scalars = sum(v for key, v in self._get_n_fit_scalars_per_param().items() if key in self.params)
        if X.size < n_fit_scalars:
            _log.warning(
                "Fitting a model with %d free scalar parameters with only %d data points will result "
                "in a degenerate solution.",
                n_fit_scalars,
                X.size,
            )

    # -- emissions ---------------------------------------------------------------------------------------------

    def _emission_terms(self):
        """(inverse Cholesky factors, x-free log-density constants, (ν+p)/2, log((ν+p)/ν)) of every state."""
        p = self.n_features
        nu = np.asarray(self.dofs_, dtype=np.float64)
        chols = self._cholesky_factors()
        inv_chols = _inverse_lower(chols)
        log_det_half = np.log(np.diagonal(chols, axis1=1, axis2=2)).sum(axis=1)
        consts = special.gammaln((nu + p) / 2) - special.gammaln(nu / 2) - 0.5 * p * np.log(nu * np.pi) - log_det_half
        return inv_chols, consts, (nu + p) / 2, np.log((nu + p) / nu)

    def _compute_log_likelihood(self, X):
        inv_chols, consts, half_nu_p, _ = self._emission_terms()
        return _t_loglik_kernel(
            np.ascontiguousarray(X, dtype=np.float64),
            np.ascontiguousarray(self.means_, dtype=np.float64),
            inv_chols,
            consts,
            half_nu_p,
            np.ascontiguousarray(self.dofs_, dtype=np.float64),
        )

    def _generate_sample_from_state(self, state, random_state=None):
        """x = μ + L z / √w with z ~ N(0, I), w ~ χ²_ν / ν (L the Cholesky factor of Σ): one multivariate t draw."""
        rs = check_random_state(random_state)
        if self.covariance_type == "diag":
            z = np.sqrt(self.covars_[state]) * rs.standard_normal(self.n_features)
        else:
            z = np.linalg.cholesky(self.covars_[state]) @ rs.standard_normal(self.n_features)
        w = rs.chisquare(self.dofs_[state]) / self.dofs_[state]
        return self.means_[state] + z / np.sqrt(w)

    # -- E-step --------------------------------------------------------------------------------------------------

    def _hmm_arrays(self):
        """(log π, log A, A) as contiguous float arrays for the kernels (log 0 = −inf, no warning)."""
        startprob = np.ascontiguousarray(self.startprob_, dtype=np.float64)
        transmat = np.ascontiguousarray(self.transmat_, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.log(startprob), np.log(transmat), transmat

    def _fit_log(self, X):
        """Same contract and values as hmmlearn's ``BaseHMM._fit_log`` (log lattices), by the numba kernels."""
        log_frameprob = self._compute_log_likelihood(X)
        log_prob, fwd, bwd, post = _forward_backward_kernel(log_frameprob, *self._hmm_arrays())
        return log_frameprob, log_prob, post, fwd, bwd

    def _initialize_sufficient_statistics(self):
        stats = super()._initialize_sufficient_statistics()
        k, p = self.n_components, self.n_features
        stats.update(
            post=np.zeros(k), wsum=np.zeros(k), wy=np.zeros((k, p)), wyy=np.zeros((k, p, p)), logu_u=np.zeros(k)
        )
        return stats

    def _accumulate_sufficient_statistics_log(self, stats, X, lattice, posteriors, fwdlattice, bwdlattice):
        """hmmlearn's start/transition sums, with the ξ-sum from the numba kernel instead of ``_hmmc``."""
        stats["nobs"] += 1
        if "s" in self.params:
            stats["start"] += posteriors[0]
        if "t" in self.params and len(lattice) > 1:
            _, log_transmat, transmat = self._hmm_arrays()
            stats["trans"] += _log_xi_sum_kernel(fwdlattice, log_transmat, transmat, bwdlattice, lattice)

    def _accumulate_sufficient_statistics(self, stats, X, lattice, posteriors, fwdlattice, bwdlattice):
        """Start/transition sums (hmmlearn), then the ECM sums Σγ, Σγu, Σγu y, Σγu y yᵀ, Σγ(log u − u) with
        y = x − μ⁽ᵏ⁾ (the raw-moment sums Σγu x, Σγu x xᵀ shifted by the current means, to avoid cancellation)."""
        super()._accumulate_sufficient_statistics(stats, X, lattice, posteriors, fwdlattice, bwdlattice)
        if not any(c in self.params for c in "mcn"):
            return
        log_frameprob = lattice if self.implementation == "log" else self._compute_log_likelihood(X)
        _, consts, half_nu_p, log_u_max = self._emission_terms()
        post, wsum, wy, wyy, logu_u = _t_stats_kernel(
            np.ascontiguousarray(X, dtype=np.float64),
            np.ascontiguousarray(posteriors, dtype=np.float64),
            np.ascontiguousarray(log_frameprob, dtype=np.float64),
            np.ascontiguousarray(self.means_, dtype=np.float64),
            consts,
            half_nu_p,
            log_u_max,
        )
        stats["post"] += post
        stats["wsum"] += wsum
        stats["wy"] += wy
        stats["wyy"] += wyy
        stats["logu_u"] += logu_u

    # -- M-step --------------------------------------------------------------------------------------------------

    def _solve_dof(self, mean_logu_u: float, nu_old: float) -> float:
        p = self.n_features
        constant = 1.0 + mean_logu_u + special.digamma((nu_old + p) / 2) - np.log((nu_old + p) / 2)

        def equation(nu):
            return -special.digamma(nu / 2) + np.log(nu / 2) + constant

        low, high = self.dof_bounds
        f_low, f_high = equation(low), equation(high)
        if f_low <= 0:  # decreasing in ν: Q is largest at the lower bound
            return float(low)
        if f_high >= 0:
            return float(high)
        return float(optimize.brentq(equation, low, high, xtol=1e-12, rtol=1e-14, maxiter=200))

    def _do_mstep(self, stats):
        super()._do_mstep(stats)  # startprob_ / transmat_ with their Dirichlet priors
        post, wsum = stats["post"], stats["wsum"]
        active = (post > _EMPTY_STATE) & (wsum > 0)
        means = np.array(self.means_, dtype=np.float64)
        shift = np.zeros_like(means)
        shift[active] = stats["wy"][active] / wsum[active, None]
        if "m" not in self.params:
            shift[:] = 0.0
        if "c" in self.params:
            covars = np.array(self.covars_, dtype=np.float64)
            for j in np.flatnonzero(active):
                scatter = (stats["wyy"][j] - wsum[j] * np.outer(shift[j], shift[j])) / post[j]
                if self.covariance_type == "full":
                    covars[j] = _floor_eigenvalues(scatter, self.min_covar)
                else:
                    covars[j] = np.maximum(np.diag(scatter), self.min_covar)
            self.covars_ = covars
        if "m" in self.params:
            self.means_ = means + shift
        if "n" in self.params:
            dofs = np.array(self.dofs_, dtype=np.float64)
            for j in np.flatnonzero(active):
                dofs[j] = self._solve_dof(stats["logu_u"][j] / post[j], dofs[j])
            self.dofs_ = dofs

    # -- inference -----------------------------------------------------------------------------------------------

    def filter_proba(self, X, lengths=None) -> np.ndarray:
        """Filtered state probabilities p(s_t | x_1..x_t), shape (T, K), rows normalised to one.

        Forward pass only, so causal bit for bit: ``filter_proba(X[:t])`` equals ``filter_proba(X)[:t]`` exactly
        (``np.array_equal``) for every t. With ``lengths``, each sequence is filtered on its own from
        ``startprob_``. This is the only state probability that may feed anything downstream.
        """
        check_is_fitted(self, "startprob_")
        self._check()
        X = check_array(X)
        log_startprob, log_transmat, transmat = self._hmm_arrays()
        parts = [np.empty((0, self.n_components))]
        for sub in _split(X, lengths):
            if len(sub):
                fwd = _forward_log_kernel(self._compute_log_likelihood(sub), log_startprob, log_transmat, transmat)
                parts.append(_normalise_rows_log(fwd))
        return np.concatenate(parts)

    def predict_proba(self, X, lengths=None):
        """Smoothed posteriors p(s_t | x_1..x_T) (forward-backward): every row sees the *future* of the sequence.

        For diagnostics and plots only: it must never feed anything downstream (features, signals, backtests).
        Use ``filter_proba`` for causal probabilities.
        """
        return super().predict_proba(X, lengths)

    def fit_with_restarts(self, X, n_restarts=5, random_state=None, lengths=None) -> StudentTHMM:
        """Best of ``n_restarts`` randomly initialised copies of this (unfitted) configuration; see the function."""
        return fit_with_restarts(self, X, n_restarts=n_restarts, random_state=random_state, lengths=lengths)


def _rebuild(model: StudentTHMM, **overrides) -> StudentTHMM:
    """A fresh, unfitted estimator with ``model``'s hyper-parameters and ``overrides`` (through the constructor,
    so nothing fitted and no monitor state is shared with ``model``)."""
    params = copy.deepcopy(model.get_params(deep=False))
    params.update(overrides)
    return type(model)(**params)


def fit_with_restarts(model: StudentTHMM, X, n_restarts: int = 5, random_state=None, lengths=None) -> StudentTHMM:
    """Fit ``n_restarts`` copies of ``model`` (same hyper-parameters, each with its own seed drawn from
    ``random_state``) and return the one with the highest final log-likelihood ``score(X)``.

    ``model`` itself is left untouched. The returned model carries ``restart_logliks_`` (one per restart, -inf
    for a failed fit) and ``restart_seeds_``.
    """
    if n_restarts < 1:
        raise ValueError("n_restarts must be >= 1")
    X = check_array(X)
    seeds = check_random_state(random_state).randint(0, 2**31 - 1, size=n_restarts)
    best, best_ll, logliks = None, -np.inf, []
    for seed in seeds:
        candidate = _rebuild(model, random_state=int(seed))
        try:
            candidate.fit(X, lengths)
            ll = float(candidate.score(X, lengths))
        except (ValueError, np.linalg.LinAlgError) as err:
            _log.warning("restart with seed %d failed: %s", seed, err)
            ll = -np.inf
        logliks.append(ll)
        if np.isfinite(ll) and (best is None or ll > best_ll):
            best, best_ll = candidate, ll
    if best is None:
        raise RuntimeError(f"all {n_restarts} restarts failed")
    best.restart_logliks_ = np.array(logliks)
    best.restart_seeds_ = seeds
    return best


def warm_start(previous: StudentTHMM, **overrides) -> StudentTHMM:
    """An unfitted model with ``previous``'s hyper-parameters (and ``overrides``), initialised at its fitted
    parameters (``init_params=""``): for walk-forward refits, which then converge in a few EM iterations."""
    model = _rebuild(previous, **{**overrides, "init_params": ""})
    for name in ("startprob_", "transmat_", "means_", "covars_", "dofs_"):
        setattr(model, name, copy.deepcopy(getattr(previous, name)))
    return model


__all__ = [
    "COVARIANCE_TYPES",
    "StudentTHMM",
    "fit_with_restarts",
    "forward_backward_reference",
    "t_loglik_reference",
    "t_stats_reference",
    "warm_start",
]


def gaussian_log_densities(X: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """log N(x_t; μ_j, Σ_j) for every row and state, (T, K); ``covars`` full (K, p, p)."""
    from scipy.stats import multivariate_normal

    return np.column_stack(
        [multivariate_normal(means[j], covars[j], allow_singular=True).logpdf(X).reshape(-1) for j in range(len(means))]
    )


def gaussian_filter_proba(model: Any, X: np.ndarray) -> np.ndarray:
    """Filtered state probabilities p(s_t | x_1..x_t) of a fitted hmmlearn ``GaussianHMM`` (any covariance type):
    the same forward pass as :meth:`StudentTHMM.filter_proba`, so causal bit for bit. For the ablation's Gaussian
    (original-design) regimes."""
    X = check_array(X)
    covars = np.asarray(model.covars_, dtype=np.float64)  # hmmlearn returns full matrices for every type
    log_frameprob = np.ascontiguousarray(gaussian_log_densities(X, model.means_, covars))
    startprob = np.ascontiguousarray(model.startprob_, dtype=np.float64)
    transmat = np.ascontiguousarray(model.transmat_, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_startprob, log_transmat = np.log(startprob), np.log(transmat)
    return _normalise_rows_log(_forward_log_kernel(log_frameprob, log_startprob, log_transmat, transmat))
