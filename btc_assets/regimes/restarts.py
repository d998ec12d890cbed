"""Fitting with random restarts and warm starts of an HMM estimator (``StudentTHMM`` in ``hmm``).

``fit_with_restarts`` fits copies of an unfitted configuration, each with its own seed, and keeps the best;
``warm_start(previous)`` returns an unfitted copy with the previous fit's parameters and ``init_params=""``, so a
walk-forward refit on a slightly longer window starts at the old optimum and converges in a few iterations.
Nothing here imports the model (``hmm`` imports this module for ``StudentTHMM.fit_with_restarts``).
"""

from __future__ import annotations

import copy
import logging
from typing import TypeVar

import numpy as np
from hmmlearn.base import BaseHMM
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array

_log = logging.getLogger(__name__)

_Model = TypeVar("_Model", bound=BaseHMM)  # the estimator type in, the same type out (a ``StudentTHMM``)


def _rebuild(model: _Model, **overrides) -> _Model:
    """A fresh, unfitted estimator with ``model``'s hyper-parameters and ``overrides`` (through the constructor,
    so nothing fitted and no monitor state is shared with ``model``)."""
    params = copy.deepcopy(model.get_params(deep=False))
    params.update(overrides)
    return type(model)(**params)


def fit_with_restarts(model: _Model, X, n_restarts: int = 5, random_state=None, lengths=None) -> _Model:
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


def warm_start(previous: _Model, **overrides) -> _Model:
    """An unfitted model with ``previous``'s hyper-parameters (and ``overrides``), initialised at its fitted
    parameters (``init_params=""``): for walk-forward refits, which then converge in a few EM iterations."""
    model = _rebuild(previous, **{**overrides, "init_params": ""})
    for name in ("startprob_", "transmat_", "means_", "covars_", "dofs_"):
        setattr(model, name, copy.deepcopy(getattr(previous, name)))
    return model


__all__ = ["fit_with_restarts", "warm_start"]
