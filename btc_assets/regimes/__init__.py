"""Stage 3 of the chain: market regimes from a Student-t HMM, strictly causal (no Dagster in here).

``StudentTHMM`` (``hmm``) is the model, its numba kernels in ``_kernels`` (plain references in ``_reference``), its
random restarts and warm starts in ``restarts``; ``gaussian`` filters the ablation's Gaussian HMM; ``features``
builds the model's causal inputs; ``phases`` names states canonically; ``walkforward`` refits at every fold start
and filters (never smooths) each refit's train and test stretch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pandas as pd

from btc_assets.config import RegimeSettings
from btc_assets.fits import FitCache
from btc_assets.folds import FoldSchedule, out_of_sample
from btc_assets.regimes.features import FEATURES, regime_features
from btc_assets.regimes.phases import canonical_phases

if TYPE_CHECKING:
    from btc_assets.regimes.hmm import StudentTHMM
    from btc_assets.regimes.walkforward import RegimeFit, fit_walk_forward

# The model and the walk-forward fit come with hmmlearn and scikit-learn (~0.7 s of imports): loaded on first use
# (PEP 562), so a process that fits no regimes (the CLI, a seed run) does not load them.
_LAZY = {"StudentTHMM": "hmm", "RegimeFit": "walkforward", "fit_walk_forward": "walkforward"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def compute_regimes(
    bars: pd.DataFrame,
    volatility: pd.DataFrame,
    schedule: FoldSchedule,
    settings: RegimeSettings,
    fits: FitCache | None = None,
) -> RegimeFit:
    """Features from the hourly grid and the volatility table, then the walk-forward fit over ``schedule``
    (``fits``: the cache of refits, :func:`fit_walk_forward`)."""
    from btc_assets.regimes.walkforward import fit_walk_forward

    features = regime_features(
        bars, volatility["sigma"], volatility["sigma_bar"], settings.lfp_window, settings.lfp_min_period
    )
    return fit_walk_forward(features, schedule.folds_for(bars["timestamp"]), settings, fits)


__all__ = [
    "FEATURES",
    "RegimeFit",
    "StudentTHMM",
    "canonical_phases",
    "compute_regimes",
    "fit_walk_forward",
    "out_of_sample",
    "regime_features",
]
