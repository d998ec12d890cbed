"""Plain, obviously-correct references of the numba kernels in ``_kernels`` (numpy/scipy, or hmmlearn's own
compiled ``_hmmc``) and of the FFT feature ``features.low_frequency_power`` (an explicit DFT): not used by the
models, only by the tests that hold the fast code to them.
"""

from __future__ import annotations

import numpy as np
from hmmlearn import _hmmc
from scipy import linalg, special


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


__all__ = ["forward_backward_reference", "t_loglik_reference", "t_stats_reference"]


def low_frequency_power_reference(r: np.ndarray, window: int, min_period: int) -> np.ndarray:
    """Reference for ``features.low_frequency_power``: an explicit DFT of each (tapered) trailing window."""
    out = np.full(len(r), np.nan)
    j = np.arange(window)
    taper = 0.5 - 0.5 * np.cos(2 * np.pi * j / (window - 1))
    for t in range(window - 1, len(r)):
        x = r[t - window + 1 : t + 1] * taper
        power = np.array(
            [abs(np.sum(x * np.exp(-2j * np.pi * k * j / window))) ** 2 for k in range(1, window // 2 + 1)]
        )
        low = window / np.arange(1, window // 2 + 1) >= min_period
        out[t] = power[low].sum() / power.sum()
    return out
