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
overridden by numba kernels (``_kernels``) that shift each lattice row once (K exponentials per step) and return
the same log-space lattices, with an exact per-cell log-sum-exp fallback wherever the shifted sum could have lost
terms to underflow (left-right chains, near-zero transitions), so they stay as robust as hmmlearn's "log"
implementation. Emission log-densities and the E-step sums are numba kernels too. Every kernel has a plain
reference in ``_reference`` (``*_reference``: numpy/scipy, or hmmlearn's own ``_hmmc``) and the tests check they
agree. The EM hot path makes no BLAS call (see ``_inverse_lower``). ``implementation="scaling"`` falls back to
hmmlearn's own scaled forward-backward, which is faster still but can underflow; "log" (the default) is the one to
use.

Warm start
----------
``warm_start(previous)`` (in ``restarts``, beside ``fit_with_restarts``) returns an unfitted copy with the previous
fit's parameters and ``init_params=""``, so a walk-forward refit on a slightly longer window starts at the old
optimum and converges in a few iterations.
"""

from __future__ import annotations

import logging

import numpy as np
from hmmlearn.base import BaseHMM
from scipy import optimize, special
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from btc_assets.regimes._kernels import (
    _forward_backward_kernel,
    _forward_log_kernel,
    _inverse_lower,
    _log_xi_sum_kernel,
    _normalise_rows_log,
    _t_loglik_kernel,
    _t_stats_kernel,
)
from btc_assets.regimes.restarts import fit_with_restarts

_log = logging.getLogger(__name__)

COVARIANCE_TYPES = ("full", "diag")
_INIT_DOF = 10.0
_INIT_STAY = 0.9
_KMEANS_SUBSAMPLE = 10_000
_KMEANS_ITER = 30
_KMEANS_INIT = 4
_EMPTY_STATE = 1e-8  # Σ_t γ_tj below this: state j keeps its emission parameters this iteration


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


__all__ = ["COVARIANCE_TYPES", "StudentTHMM"]
