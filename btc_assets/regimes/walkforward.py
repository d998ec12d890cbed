"""Walk-forward regime fitting: one Student-t HMM refit per fold, filtered probabilities over train and test.

For fold k the model is fitted on the fold's fit piece only: the training window minus its validation slice
(``Fold.fit_end``; features standardised with the fit piece's mean and standard deviation), so the inner validation
slice that picks the optimiser's winners is out of sample for the regime model, like the test window. Candidate
starts: fold k-1's fit (warm start; the first fold uses several random restarts instead) and this fold's Gaussian
HMM solution (a Student-t HMM nests the Gaussian, so starting there guarantees the t-model is never worse than the
Gaussian it is compared with); the best likelihood is kept. The fitted model then *filters* (forward pass only) the
contiguous stretch from the training start to the test end, so each probability uses the bars up to its own bar and
nothing later. Segments: ``train`` (the fit piece), ``validation``, ``purge``, ``test``. The optimiser fits on
``train``, selects on ``validation`` and tests on ``test`` with the same refit: one model per fold, fitted on
``train`` only (the test window's model is that one, not a refit on the whole training window), no look-ahead.
Columns ``p_0 .. p_{K-1}`` are in canonical phase order (``btc_assets.regimes.phases``).

``RegimeSettings.emission = "gaussian"`` fits Gaussian HMMs only (warm start plus ``n_restarts`` fresh starts per
refit), filtered the same way: the original design, for the ablation.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from hmmlearn.hmm import GaussianHMM

from btc_assets.config import RegimeSettings
from btc_assets.fits import FitCache, fit_key
from btc_assets.folds import Fold
from btc_assets.regimes.gaussian import gaussian_filter_proba
from btc_assets.regimes.hmm import StudentTHMM
from btc_assets.regimes.phases import canonical_phases
from btc_assets.regimes.restarts import fit_with_restarts, warm_start


@dataclass(frozen=True)
class RegimeFit:
    """Everything a walk-forward regime fit produced."""

    probabilities: pd.DataFrame  # fold (the id of the fold whose refit made the row), segment, timestamp, p_0..
    refits: pd.DataFrame  # one row per fold's refit: windows, likelihoods, BIC vs Gaussian, phase names, timing
    phases: pd.DataFrame  # one row per (fold, phase): feature means (original units), nu, expected duration


def prob_columns(n_states: int) -> list[str]:
    return [f"p_{k}" for k in range(n_states)]


def _sticky_prior(settings: RegimeSettings) -> np.ndarray:
    k = settings.n_states
    return np.ones((k, k)) + np.eye(k) * settings.sticky


def _new_model(settings: RegimeSettings, seed: int, n_obs: int) -> StudentTHMM:
    return StudentTHMM(
        n_components=settings.n_states,
        covariance_type=settings.covariance_type,
        n_iter=settings.n_iter,
        tol=settings.tol * n_obs,  # hmmlearn's tol is on the summed log-likelihood
        transmat_prior=_sticky_prior(settings),
        random_state=seed,
    )


def _gaussian(x: np.ndarray, settings: RegimeSettings, seed: int, previous: GaussianHMM | None) -> GaussianHMM:
    """A Gaussian HMM with the same K, covariance type and prior, warm-started from the previous refit's."""
    gauss = GaussianHMM(
        n_components=settings.n_states,
        covariance_type=settings.covariance_type,
        n_iter=settings.n_iter,
        tol=settings.tol * len(x),
        random_state=seed,
        transmat_prior=_sticky_prior(settings),
        implementation="scaling",
    )
    if previous is not None:
        gauss.init_params = ""
        gauss.startprob_, gauss.transmat_ = previous.startprob_.copy(), previous.transmat_.copy()
        gauss.means_, gauss.covars_ = previous.means_.copy(), previous.covars_.copy()
    return gauss.fit(x)


def _from_gaussian(gauss: GaussianHMM, settings: RegimeSettings, seed: int, n_obs: int) -> StudentTHMM:
    """A Student-t HMM started at a Gaussian HMM's solution (ν = 30, close to Gaussian); ECM then only improves."""
    model = _new_model(settings, seed, n_obs)
    model.init_params = ""
    model.startprob_, model.transmat_ = gauss.startprob_.copy(), gauss.transmat_.copy()
    model.means_ = gauss.means_.copy()
    model.covars_ = (
        gauss.covars_.copy() if settings.covariance_type == "full" else np.array([np.diag(c) for c in gauss.covars_])
    )
    model.dofs_ = np.full(settings.n_states, 30.0)
    return model


def _gaussian_candidates(
    x: np.ndarray, settings: RegimeSettings, seed: int, previous: GaussianHMM | None
) -> tuple[GaussianHMM, dict[str, float], str]:
    """Gaussian HMM fits for one refit: warm-started from the previous refit (if any) and ``n_restarts`` fresh
    starts (k-means initialisations with derived seeds); the best likelihood wins (ties: the name)."""
    candidates = {f"restart{r}": _gaussian(x, settings, seed + 7919 * r, None) for r in range(settings.n_restarts)}
    if previous is not None:
        candidates["warm"] = _gaussian(x, settings, seed, previous)
    scores = {name: float(m.score(x)) for name, m in candidates.items()}
    start = max(scores, key=lambda name: (scores[name], name))
    return candidates[start], scores, start


def _fit_fold(
    x_train: np.ndarray,
    settings: RegimeSettings,
    seed: int,
    previous: StudentTHMM | None,
    previous_gauss: GaussianHMM | None,
    pool: ThreadPoolExecutor,
) -> tuple[StudentTHMM | GaussianHMM, GaussianHMM, dict[str, float], str]:
    """One fold's refit: (the chosen model, the Gaussian HMM, every candidate's log-likelihood, the chosen one)."""

    # two independent chains on the two cores (the numba kernels release the GIL; results do not depend
    # on the threading): the Gaussian fit and the t-fit started from it || the warm (or restarted) t-fit
    def gaussian_chain() -> tuple[GaussianHMM, StudentTHMM]:
        gauss = _gaussian(x_train, settings, seed, previous_gauss)
        return gauss, _from_gaussian(gauss, settings, seed, len(x_train)).fit(x_train)

    if settings.emission == "gaussian":  # the original design (the ablation): Gaussian emissions only
        model, scores, start = _gaussian_candidates(x_train, settings, seed, previous_gauss)
        return model, model, scores, start
    chain = pool.submit(gaussian_chain)
    candidates: dict[str, StudentTHMM] = {}
    if previous is None:
        candidates["restarts"] = fit_with_restarts(
            _new_model(settings, seed, len(x_train)), x_train, n_restarts=settings.n_restarts, random_state=seed
        )
    else:
        warm = warm_start(previous, random_state=seed, tol=settings.tol * len(x_train))
        candidates["warm"] = warm.fit(x_train)
    gauss, candidates["gaussian"] = chain.result()
    scores = {name: float(m.score(x_train)) for name, m in candidates.items()}
    start = max(scores, key=lambda name: (scores[name], name))
    return candidates[start], gauss, scores, start


def fit_walk_forward(
    features: pd.DataFrame, folds: list[Fold], settings: RegimeSettings, fits: FitCache | None = None
) -> RegimeFit:
    """Fit one HMM per fold and filter its train + test stretch (see the module docstring).

    ``fits``: a :class:`btc_assets.fits.FitCache` of the refits keyed by their inputs (the standardised training
    features, the settings, the seed and the previous refit's key, whose models start this one): a longer history
    refits only its new folds and filters every fold again, bit-identically to fitting them all."""
    if settings.emission not in ("student_t", "gaussian"):
        raise ValueError(f"regimes.emission must be student_t or gaussian, not {settings.emission!r}")
    if not folds:
        raise ValueError("no walk-forward folds: the history is shorter than the warm-up")
    names = list(features.columns)
    index = pd.DatetimeIndex(features.index)
    valid = features.notna().all(axis=1).to_numpy()
    values = features.to_numpy(dtype=np.float64)
    cols = prob_columns(settings.n_states)
    parts, refit_rows, phase_rows = [], [], []
    previous: StudentTHMM | None = None
    previous_gauss: GaussianHMM | None = None
    previous_key = ""
    fits = fits or FitCache(None)
    pool = ThreadPoolExecutor(max_workers=1)
    for fold in folds:
        started = time.perf_counter()
        seed = settings.seed + 1009 * fold.index
        train = np.asarray(fold.fit_mask(index)) & valid
        if train.sum() < 50 * settings.n_states:
            raise ValueError(f"fold {fold.index}: only {int(train.sum())} usable training bars")
        mu, sd = values[train].mean(axis=0), values[train].std(axis=0)
        sd[sd == 0] = 1.0
        x_train = (values[train] - mu) / sd

        key = fit_key("hmm", previous_key, x_train, repr(settings), seed)
        cached = fits.get(key)
        if cached is None:
            cached = _fit_fold(x_train, settings, seed, previous, previous_gauss, pool)
            fits.put(key, cached)
        model, gauss, scores, start = cached
        previous_key, previous_gauss = key, gauss
        if settings.emission != "gaussian":
            previous = model
        order, phase_names = canonical_phases(model.means_, names)

        stretch = (index >= fold.train_start) & (index < fold.test_end) & valid
        first = int(np.argmax(stretch))
        last = len(index) - int(np.argmax(stretch[::-1]))
        if not stretch[first:last].all():
            raise ValueError(f"fold {fold.index}: features have gaps inside the fold; cannot filter contiguously")
        x_all = (values[first:last] - mu) / sd
        gaussian = settings.emission == "gaussian"
        proba = (gaussian_filter_proba(model, x_all) if gaussian else model.filter_proba(x_all))[:, order]
        ts = index[first:last]
        segment = np.select(
            [ts < fold.fit_end, ts < fold.train_end, ts < fold.test_start], ["train", "validation", "purge"], "test"
        )
        part = pd.DataFrame(proba, columns=cols)
        part.insert(0, "timestamp", ts)
        part.insert(0, "segment", segment)
        part.insert(0, "fold", fold.index)
        parts.append(part)

        loglik = scores[start]
        row = {
            "fold": fold.index,
            "train_start": fold.train_start,
            "fit_end": fold.fit_end,
            "train_end": fold.train_end,
            "test_start": fold.test_start,
            "test_end": fold.test_end,
            "n_train": int(train.sum()),
            "loglik": loglik,
            "bic": float(model.bic(x_train)),
            "iterations": int(model.monitor_.iter),
            "converged": bool(model.monitor_.converged),
            "phase_names": ",".join(phase_names),
            "start": start,
            "start_logliks": repr({k: round(v, 2) for k, v in scores.items()}),
            "gaussian_loglik": float(gauss.score(x_train)),
            "gaussian_bic": float(gauss.bic(x_train)),
        }
        row["seconds"] = time.perf_counter() - started
        refit_rows.append(row)
        durations = 1.0 / np.maximum(1.0 - np.diag(model.transmat_), 1e-12)
        original_means = model.means_ * sd + mu
        for k, state in enumerate(order):
            phase_rows.append(
                {
                    "fold": fold.index,
                    "phase": k,
                    "name": phase_names[k],
                    **{f"mean_{f}": float(original_means[state, j]) for j, f in enumerate(names)},
                    "nu": float("inf") if settings.emission == "gaussian" else float(model.dofs_[state]),
                    "expected_duration_h": float(durations[state]),
                    "share_train": float(proba[segment == "train", k].mean()),
                }
            )
    pool.shutdown()
    probabilities = pd.concat(parts, ignore_index=True)
    probabilities["segment"] = probabilities["segment"].astype("category")
    return RegimeFit(probabilities, pd.DataFrame(refit_rows), pd.DataFrame(phase_rows))
