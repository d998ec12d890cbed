"""The Student-t HMM: exact densities, exact E-step kernels, monotone ECM, parameter recovery, causal filtering.

Recovery tolerances (simulated data, fixed seeds; states matched to the truth by the Hungarian algorithm on means):

====================================  =========================  =========================
quantity                              3 states, p=2, T=30,000    5 states, p=4, T=40,000
====================================  =========================  =========================
means, max abs error                  < 0.06                     < 0.06
scale matrices, max abs error /
  largest diagonal entry of the state  < 0.10                     < 0.10
ν, max relative error                 < 0.20                     < 0.20
transition matrix, max abs error      < 0.01                     < 0.01
Viterbi state accuracy                > 0.99                     > 0.99
filtered (argmax) state accuracy      > 0.97                     > 0.98
BIC, t-HMM vs Gaussian HMM            lower by > 1,000           lower by > 1,000
====================================  =========================  =========================
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hmmlearn import _hmmc
from hmmlearn.hmm import GaussianHMM
from scipy import special, stats
from scipy.optimize import linear_sum_assignment

from btc_assets.regimes import _kernels, _reference, gaussian, restarts
from btc_assets.regimes import hmm as hmm_module
from btc_assets.regimes.hmm import StudentTHMM
from btc_assets.regimes.restarts import fit_with_restarts, warm_start


def simulate(n, means, scales, dofs, transmat, seed):
    """A Student-t HMM path, independent of the model's own sampler: states from the stationary start."""
    rng = np.random.default_rng(seed)
    k, p = means.shape
    start = np.linalg.matrix_power(transmat, 1000)[0]
    cdf = np.cumsum(transmat, axis=1)
    states = np.empty(n, dtype=int)
    states[0] = rng.choice(k, p=start)
    u = rng.random(n)
    for t in range(1, n):
        states[t] = min(int(np.searchsorted(cdf[states[t - 1]], u[t], side="right")), k - 1)
    chols = np.linalg.cholesky(scales)
    w = rng.chisquare(dofs[states]) / dofs[states]
    x = means[states] + np.einsum("tij,tj->ti", chols[states], rng.standard_normal((n, p))) / np.sqrt(w)[:, None]
    return x, states


def three_state_truth():
    means = np.array([[0.0, 0.0], [2.0, -1.0], [-2.0, 1.5]])
    scales = np.array([[[0.5, 0.1], [0.1, 0.3]], [[0.2, 0.0], [0.0, 0.2]], [[1.0, -0.3], [-0.3, 0.8]]])
    dofs = np.array([3.0, 5.0, 8.0])
    transmat = np.array([[0.98, 0.01, 0.01], [0.015, 0.97, 0.015], [0.01, 0.02, 0.97]])
    return means, scales, dofs, transmat


def five_state_truth():
    means = np.array(
        [
            [0.0, 0.0, 0.0, 0.0],
            [2.5, 0.0, -1.0, 1.0],
            [-2.5, 1.0, 0.5, -1.0],
            [0.0, 3.0, 1.5, 0.5],
            [1.0, -2.5, 2.5, -0.5],
        ]
    )
    sd = np.array([0.4, 0.6, 0.8, 0.5, 0.7])
    rng = np.random.default_rng(42)
    scales = []
    for s in sd:
        c = rng.uniform(-0.3, 0.3, (4, 4))
        c = (c + c.T) / 2
        np.fill_diagonal(c, 1.0)
        scales.append(c * s * s)
    dofs = np.array([3.0, 4.0, 6.0, 8.0, 10.0])
    transmat = np.full((5, 5), 0.005) + np.eye(5) * 0.975
    return means, np.array(scales), dofs, transmat


def recovery(truth, n, seed):
    means, scales, dofs, transmat = truth
    x, states = simulate(n, means, scales, dofs, transmat, seed)
    template = StudentTHMM(n_components=len(means), n_iter=300, tol=1e-3)
    model = fit_with_restarts(template, x, n_restarts=3, random_state=seed)
    gauss = GaussianHMM(n_components=len(means), covariance_type="full", n_iter=300, tol=1e-3, random_state=seed)
    gauss.fit(x)
    _, perm = linear_sum_assignment(((means[:, None, :] - model.means_[None, :, :]) ** 2).sum(axis=2))
    return {"truth": truth, "x": x, "states": states, "model": model, "perm": perm, "gauss": gauss}


@pytest.fixture(scope="module")
def three_state():
    return recovery(three_state_truth(), 30_000, seed=0)


@pytest.fixture(scope="module")
def five_state():
    return recovery(five_state_truth(), 40_000, seed=0)


def random_model(covariance_type, k=3, p=3, seed=0):
    rng = np.random.default_rng(seed)
    model = StudentTHMM(n_components=k, covariance_type=covariance_type)
    model.n_features = p
    model.startprob_ = rng.dirichlet(np.ones(k))
    model.transmat_ = rng.dirichlet(np.ones(k) * 3, size=k) * 0.5 + np.eye(k) * 0.5
    model.means_ = rng.normal(0, 2, (k, p))
    if covariance_type == "full":
        a = rng.normal(0, 1, (k, p, p))
        model.covars_ = a @ a.transpose(0, 2, 1) + np.eye(p) * 0.5
    else:
        model.covars_ = rng.uniform(0.2, 2.0, (k, p))
    model.dofs_ = rng.uniform(2.5, 30.0, k)
    return model


def full_covars(model):
    return model.covars_ if model.covariance_type == "full" else np.stack([np.diag(c) for c in model.covars_])


# --------------------------------------------------------------------------------------------------------------
# Exactness
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_log_likelihood_equals_scipy_multivariate_t(covariance_type):
    model = random_model(covariance_type)
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 2, (500, 3)), rng.standard_t(1.5, (20, 3)) * 50])  # incl. far outliers
    got = model._compute_log_likelihood(x)
    for j in range(model.n_components):
        want = stats.multivariate_t.logpdf(x, loc=model.means_[j], shape=full_covars(model)[j], df=model.dofs_[j])
        np.testing.assert_allclose(got[:, j], want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_numba_kernels_equal_their_references(covariance_type):
    model = random_model(covariance_type, k=4, p=4, seed=3)
    x = np.random.default_rng(4).normal(0, 2, (3000, 4))
    log_frameprob = model._compute_log_likelihood(x)
    ref = _reference.t_loglik_reference(x, model.means_, full_covars(model), model.dofs_)
    np.testing.assert_allclose(log_frameprob, ref, rtol=1e-12, atol=1e-12)

    log_prob, fwd, bwd, post = _kernels._forward_backward_kernel(log_frameprob, *model._hmm_arrays())
    ref_prob, ref_fwd, ref_bwd, ref_post = _reference.forward_backward_reference(
        log_frameprob, model.startprob_, model.transmat_
    )
    assert log_prob == pytest.approx(ref_prob, rel=1e-12)
    np.testing.assert_allclose(fwd, ref_fwd, rtol=1e-11)
    np.testing.assert_allclose(bwd, ref_bwd, rtol=1e-11, atol=1e-9)
    np.testing.assert_allclose(post, ref_post, atol=1e-10)

    xi = _kernels._log_xi_sum_kernel(fwd, np.log(model.transmat_), model.transmat_, bwd, log_frameprob)
    np.testing.assert_allclose(
        xi, np.exp(_hmmc.compute_log_xi_sum(fwd, model.transmat_, bwd, log_frameprob)), rtol=1e-9
    )

    _, consts, half_nu_p, log_u_max = model._emission_terms()
    got = _kernels._t_stats_kernel(x, post, log_frameprob, model.means_, consts, half_nu_p, log_u_max)
    want = _reference.t_stats_reference(x, post, model.means_, full_covars(model), model.dofs_)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


def test_log_lattices_stay_exact_where_shifted_sums_underflow():
    """A left-right chain (state 1 absorbing) started in state 0, whose data first fit state 1 and then state 0:
    the path that stays in state 0 becomes ~e^-1000 unlikely before it dominates again. Shifting each lattice row
    once underflows there (~500 cells here); the exact per-cell fallback must give hmmlearn's values."""
    rng = np.random.default_rng(18)
    x = np.vstack([rng.standard_t(4, (300, 2)), rng.standard_t(4, (300, 2)) + 4])
    model = StudentTHMM(n_components=2)
    model.n_features = 2
    model.startprob_, model.transmat_ = np.array([1.0, 0.0]), np.array([[0.99, 0.01], [0.0, 1.0]])
    model.means_, model.covars_ = np.array([[4.0, 4.0], [0.0, 0.0]]), np.stack([np.eye(2)] * 2) * 1.5
    model.dofs_ = np.array([10.0, 10.0])
    lattice, log_prob, post, fwd, bwd = model._fit_log(x)
    ref_prob, ref_fwd, ref_bwd, ref_post = _reference.forward_backward_reference(
        lattice, model.startprob_, model.transmat_
    )
    assert np.isfinite(log_prob) and log_prob == pytest.approx(ref_prob, rel=1e-12)
    for got, want in ((fwd, ref_fwd), (bwd, ref_bwd)):
        finite = np.isfinite(want)
        assert np.array_equal(np.isfinite(got), finite)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-11)
    np.testing.assert_allclose(post, ref_post, atol=1e-10)
    with np.errstate(divide="ignore"):
        log_transmat = np.log(model.transmat_)
    xi = _kernels._log_xi_sum_kernel(fwd, log_transmat, model.transmat_, bwd, lattice)
    np.testing.assert_allclose(xi, np.exp(_hmmc.compute_log_xi_sum(fwd, model.transmat_, bwd, lattice)), rtol=1e-9)
    filtered = model.filter_proba(x)
    assert np.isfinite(filtered).all()
    np.testing.assert_allclose(filtered.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_score_on_iid_data_equals_hand_computed_t_mixture(covariance_type):
    model = random_model(covariance_type, k=3, p=2, seed=5)
    weights = np.array([0.5, 0.3, 0.2])
    model.startprob_ = weights
    model.transmat_ = np.tile(weights, (3, 1))  # every row = the start distribution: an i.i.d. t-mixture
    x, _ = model.sample(1500, random_state=6)
    logpdf = np.column_stack(
        [
            stats.multivariate_t.logpdf(x, loc=model.means_[j], shape=full_covars(model)[j], df=model.dofs_[j])
            for j in range(3)
        ]
    )
    mixture = special.logsumexp(logpdf + np.log(weights), axis=1).sum()
    assert abs(model.score(x) - mixture) < 1e-8
    # the numba forward pass (used while fitting) agrees as well
    assert abs(model._fit_log(x)[1] - mixture) < 1e-8


def test_em_sufficient_statistics_give_the_papers_updates():
    """One M-step against the ECM formulas written out directly (Peel & McLachlan 2000, Bulla 2011)."""
    model = random_model("full", k=2, p=2, seed=7)
    model.params = "mcn"
    x, _ = model.sample(2000, random_state=8)
    stats_ = model._initialize_sufficient_statistics()
    lattice, _, post, fwd, bwd = model._fit_log(x)
    model._accumulate_sufficient_statistics(stats_, x, lattice, post, fwd, bwd)
    old_means, old_covars, old_dofs = model.means_.copy(), model.covars_.copy(), model.dofs_.copy()
    model._do_mstep(stats_)
    p = 2
    for j in range(2):
        d = x - old_means[j]
        delta = np.einsum("ti,ij,tj->t", d, np.linalg.inv(old_covars[j]), d)
        u = (old_dofs[j] + p) / (old_dofs[j] + delta)
        g = post[:, j]
        mu = (g * u) @ x / (g * u).sum()
        sigma = ((x - mu) * (g * u)[:, None]).T @ (x - mu) / g.sum()
        np.testing.assert_allclose(model.means_[j], mu, rtol=1e-10)
        np.testing.assert_allclose(model.covars_[j], sigma, rtol=1e-9)
        nu = model.dofs_[j]
        equation = (
            -special.digamma(nu / 2)
            + np.log(nu / 2)
            + 1
            + (g * (np.log(u) - u)).sum() / g.sum()
            + special.digamma((old_dofs[j] + p) / 2)
            - np.log((old_dofs[j] + p) / 2)
        )
        assert abs(equation) < 1e-9


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_monitor_log_likelihood_never_decreases(covariance_type):
    rng = np.random.default_rng(9)
    means, scales, dofs, transmat = three_state_truth()
    dofs = np.array([3.0, 1e6, 6.0])  # one Gaussian state: its ν runs into the upper bound (the clipping branch)
    x, _ = simulate(4000, means, scales, dofs, transmat, seed=10)
    x[rng.integers(0, 4000, 5)] += 30.0  # a few gross outliers
    model = StudentTHMM(
        n_components=3, covariance_type=covariance_type, n_iter=80, tol=-np.inf, random_state=2, dof_bounds=(2.5, 15.0)
    )
    model.fit(x)
    history = np.array(model.monitor_.history)
    assert len(history) == 80
    assert np.all(np.diff(history) >= -1e-8 * np.abs(history[1:])), np.diff(history).min()
    assert history[-1] > history[0] + 10
    assert model.dofs_.max() == 15.0


def test_scaling_implementation_gives_the_same_fit():
    means, scales, dofs, transmat = three_state_truth()
    x, _ = simulate(3000, means, scales, dofs, transmat, seed=11)
    fits = [
        StudentTHMM(n_components=3, n_iter=8, tol=-np.inf, random_state=0, implementation=impl).fit(x)
        for impl in ("log", "scaling")
    ]
    for name in ("startprob_", "transmat_", "means_", "covars_", "dofs_"):
        np.testing.assert_allclose(getattr(fits[0], name), getattr(fits[1], name), rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------------------------------------------
# Recovery
# --------------------------------------------------------------------------------------------------------------


def recovery_errors(case):
    means, scales, dofs, transmat = case["truth"]
    model, perm = case["model"], case["perm"]
    inverse = np.argsort(perm)
    scale_err = max(
        np.abs(model.covars_[perm[j]] - scales[j]).max() / np.diag(scales[j]).max() for j in range(len(means))
    )
    return {
        "mean": np.abs(model.means_[perm] - means).max(),
        "scale": scale_err,
        "dof": np.abs(model.dofs_[perm] / dofs - 1).max(),
        "transmat": np.abs(model.transmat_[np.ix_(perm, perm)] - transmat).max(),
        "viterbi": (inverse[model.predict(case["x"])] == case["states"]).mean(),
        "filtered": (inverse[model.filter_proba(case["x"]).argmax(axis=1)] == case["states"]).mean(),
        "bic_t": model.bic(case["x"]),
        "bic_gauss": case["gauss"].bic(case["x"]),
    }


@pytest.mark.parametrize(("case_name", "min_filtered"), [("three_state", 0.97), ("five_state", 0.98)])
def test_parameter_recovery(case_name, min_filtered, request):
    case = request.getfixturevalue(case_name)
    err = recovery_errors(case)
    print(f"\n{case_name}: " + ", ".join(f"{k}={v:.4g}" for k, v in err.items()))
    assert err["mean"] < 0.06
    assert err["scale"] < 0.10
    assert err["dof"] < 0.20
    assert err["transmat"] < 0.01
    assert err["viterbi"] > 0.99
    assert err["filtered"] > min_filtered
    assert err["bic_t"] < err["bic_gauss"] - 1000
    logliks = case["model"].restart_logliks_
    assert len(logliks) == 3
    assert case["model"].score(case["x"]) == pytest.approx(logliks.max())


# --------------------------------------------------------------------------------------------------------------
# Causal filtering
# --------------------------------------------------------------------------------------------------------------


def test_filter_proba_is_causal_bit_for_bit(three_state):
    model, x = three_state["model"], three_state["x"][:4000]
    full = model.filter_proba(x)
    rng = np.random.default_rng(12)
    for t in [1, 2, 3, len(x) - 1, *rng.integers(1, len(x), 25).tolist()]:
        assert np.array_equal(model.filter_proba(x[:t]), full[:t]), t
    np.testing.assert_allclose(full.sum(axis=1), 1.0, atol=1e-12)
    assert full.shape == (len(x), model.n_components)


def test_filter_proba_is_the_normalised_forward_lattice_and_differs_from_smoothing(three_state):
    model, x = three_state["model"], three_state["x"][:4000]
    filtered = model.filter_proba(x)
    _, fwd = _hmmc.forward_log(model.startprob_, model.transmat_, model._compute_log_likelihood(x))
    np.testing.assert_allclose(filtered, np.exp(fwd - special.logsumexp(fwd, axis=1, keepdims=True)), atol=1e-10)
    smoothed = model.predict_proba(x)
    assert np.abs(filtered - smoothed).max() > 0.3  # smoothing sees the future around every regime switch
    assert (filtered.argmax(axis=1) != smoothed.argmax(axis=1)).sum() > 10
    np.testing.assert_allclose(filtered[-1], smoothed[-1], atol=1e-8)  # at the last bar both see the same data
    assert "never feed" in StudentTHMM.predict_proba.__doc__


def test_filter_proba_restarts_each_sequence(three_state):
    model, x = three_state["model"], three_state["x"][:1000]
    together = model.filter_proba(x, lengths=[300, 700])
    assert np.array_equal(together, np.vstack([model.filter_proba(x[:300]), model.filter_proba(x[300:])]))


# --------------------------------------------------------------------------------------------------------------
# hmmlearn integration: information criteria, sampling, priors, restarts, warm starts
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_bic_and_aic_count_the_degrees_of_freedom(covariance_type):
    means, scales, dofs, transmat = three_state_truth()
    x, _ = simulate(2000, means, scales, dofs, transmat, seed=13)
    model = StudentTHMM(n_components=3, covariance_type=covariance_type, n_iter=5, random_state=0).fit(x)
    k, p = 3, 2
    n_cov = k * p * (p + 1) // 2 if covariance_type == "full" else k * p
    n_params = (k - 1) + k * (k - 1) + k * p + n_cov + k  # the last k: one ν per state
    assert model._get_n_fit_scalars_per_param()["n"] == k
    loglik = model.score(x)
    assert model.bic(x) == pytest.approx(-2 * loglik + n_params * np.log(len(x)), rel=1e-12)
    assert model.aic(x) == pytest.approx(-2 * loglik + 2 * n_params, rel=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_sample_draws_from_the_state_t_distribution(covariance_type):
    model = random_model(covariance_type, k=1, p=3, seed=14)
    model.startprob_, model.transmat_ = np.array([1.0]), np.array([[1.0]])
    model.dofs_ = np.array([5.0])
    x, states = model.sample(8000, random_state=15)
    assert x.shape == (8000, 3)
    assert np.all(states == 0)
    d = x - model.means_[0]
    f_stat = np.einsum("ti,ij,tj->t", d, np.linalg.inv(full_covars(model)[0]), d) / 3  # ~ F(p, ν)
    assert stats.kstest(f_stat, stats.f(3, 5.0).cdf).pvalue > 1e-3
    assert np.abs(np.median(x, axis=0) - model.means_[0]).max() < 0.1


def test_sample_from_fitted_model(three_state):
    x, states = three_state["model"].sample(300, random_state=0)
    assert x.shape == (300, 2)
    assert set(np.unique(states)) <= {0, 1, 2}


def test_sticky_transmat_prior_gives_stickier_transitions():
    means, scales, dofs, _ = three_state_truth()
    transmat = np.full((3, 3), 0.05) + np.eye(3) * 0.85
    x, _ = simulate(6000, means, scales, dofs, transmat, seed=16)
    kwargs = {"n_components": 3, "n_iter": 100, "tol": 1e-3, "random_state": 0}
    plain = StudentTHMM(**kwargs).fit(x)
    sticky = StudentTHMM(transmat_prior=1.0 + 2000.0 * np.eye(3), **kwargs).fit(x)
    assert np.diag(sticky.transmat_).mean() > np.diag(plain.transmat_).mean() + 0.03


def test_fit_with_restarts_keeps_the_best_and_leaves_the_template_alone():
    means, scales, dofs, transmat = three_state_truth()
    x, _ = simulate(3000, means, scales, dofs, transmat, seed=17)
    template = StudentTHMM(n_components=3, n_iter=40, tol=1e-2)
    best = fit_with_restarts(template, x, n_restarts=3, random_state=5)
    assert not hasattr(template, "means_")
    assert best is not template and best.n_iter == 40 and best.monitor_.n_iter == 40
    assert len(best.restart_logliks_) == 3
    assert best.score(x) == pytest.approx(best.restart_logliks_.max())
    again = template.fit_with_restarts(x, n_restarts=3, random_state=5)
    assert again.score(x) == pytest.approx(best.score(x))


def test_set_params_reaches_the_convergence_monitor():
    """hmmlearn builds ``monitor_`` in ``__init__``; the model re-syncs it at fit time so set_params works."""
    means, scales, dofs, transmat = three_state_truth()
    x, _ = simulate(2000, means, scales, dofs, transmat, seed=19)
    model = StudentTHMM(n_components=3, n_iter=100, tol=1e-4, random_state=0).set_params(tol=1e9)
    model.fit(x)
    assert model.monitor_.iter == 2 and model.monitor_.converged


def test_warm_start_converges_in_few_iterations(three_state):
    x = three_state["x"]
    cold = StudentTHMM(n_components=3, n_iter=300, tol=1e-2, random_state=0).fit(x[:25_000])
    warm = warm_start(cold)
    assert warm.init_params == ""
    for name in ("startprob_", "transmat_", "means_", "covars_", "dofs_"):
        np.testing.assert_array_equal(getattr(warm, name), getattr(cold, name))
    warm.fit(x)  # the walk-forward window grew by 5,000 bars
    scratch = StudentTHMM(n_components=3, n_iter=300, tol=1e-2, random_state=0).fit(x)
    history = np.array(warm.monitor_.history)
    print(
        f"\nfrom scratch: {scratch.monitor_.iter} iterations; warm refit: {warm.monitor_.iter}; "
        f"warm start's first log-likelihood {history[0] - history[-1]:+.3f} from its last"
    )
    assert warm.monitor_.converged
    assert warm.monitor_.iter <= 10 and 3 * warm.monitor_.iter < scratch.monitor_.iter
    assert history[-1] - history[0] < 5.0  # it starts next to the optimum
    assert warm.score(x) == pytest.approx(three_state["model"].score(x), rel=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Validation and hygiene
# --------------------------------------------------------------------------------------------------------------


def test_check_rejects_invalid_parameters():
    model = random_model("full")
    model.dofs_ = np.array([5.0, -1.0, 3.0])
    with pytest.raises(ValueError, match="dofs_"):
        model._check()
    model = random_model("full")
    model.covars_[1] = -np.eye(3)
    with pytest.raises(ValueError, match="positive definite"):
        model._check()
    model = random_model("diag")
    model.covariance_type = "spherical"
    with pytest.raises(ValueError, match="covariance_type"):
        model._check()


@pytest.mark.parametrize("module", [hmm_module, _kernels, _reference, restarts, gaussian], ids=lambda m: m.__name__)
def test_module_does_not_import_dagster(module):
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(name.split(".")[0] == "dagster" for name in imported)
