"""Gaussian-HMM helpers for the ablation's Gaussian (original-design) regimes: emission log-densities and the
causal filtered state probabilities of a fitted hmmlearn ``GaussianHMM``, by the same forward kernel as
``StudentTHMM.filter_proba``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_array

from btc_assets.regimes._kernels import _forward_log_kernel, _normalise_rows_log


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


__all__ = ["gaussian_filter_proba", "gaussian_log_densities"]
