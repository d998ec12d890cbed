"""Numba kernels of the HMMs: Student-t emission log-densities and E-step sums, and the
log-space forward / backward / ξ-sum lattices shared by ``StudentTHMM`` (``hmm``) and the Gaussian helpers
(``gaussian``).

Each kernel has a plain, obviously-correct reference in ``_reference`` (numpy/scipy, or hmmlearn's own ``_hmmc``)
and the tests hold them to it. See the ``hmm`` module docstring ("Performance") for why these exist.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


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
