"""Fitted models kept by what they were fitted on, so a recomputation refits only what new data adds.

A fit (one GARCH refit, one HMM refit) is a pure function of its inputs: the training values, the settings, the
seed and the starting values (the previous refit's parameters). :func:`fit_key` hashes exactly those inputs, and
:class:`FitCache` keeps the fitted result under that key, pickled, one file a fit, written atomically. Appending bars
leaves every earlier refit's inputs unchanged, so a recomputation over the longer history finds them here and fits
only the refits the new bars create; everything cheap and per bar (filters, forecasts, features) is recomputed in
full from the same parameters, so the result is bit-identical to a recomputation without the cache (tested).

The keys also carry the versions of the fitting libraries and a caller's namespace (the source digest of the
stage's code), so a changed library or stage never reuses a fit. ``FitCache(None)`` keeps nothing (every look-up
misses): the stage functions run the same with or without a cache. This module imports nothing from
``btc_assets`` but the atomic write, so any stage may use it.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from btc_assets.atomic import write_bytes_atomic

LIBRARIES = ("numpy", "scipy", "arch", "hmmlearn", "numba")


def _library_versions() -> str:
    out = []
    for name in LIBRARIES:
        try:
            out.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            out.append(f"{name}=-")
    return ",".join(out)


def fit_key(*parts: Any) -> str:
    """A hash of a fit's inputs: arrays by dtype, shape and bytes, everything else by ``repr``."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"array|{part.dtype.str}|{part.shape}|".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(f"{type(part).__name__}|{part!r}|".encode())
    return digest.hexdigest()[:32]


@dataclass
class FitCache:
    """Fitted results under ``folder`` (None: keep nothing), one pickle a key; counts its hits and misses."""

    folder: Path | None
    namespace: str = ""
    hits: int = field(default=0, init=False)
    misses: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._prefix = fit_key(self.namespace, _library_versions())[:12]
        if self.folder is not None:
            self.folder = Path(self.folder)
            self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{self._prefix}-{key}.pkl"

    def get(self, key: str) -> Any | None:
        """The fit stored under ``key``, or None (counted as a miss)."""
        if self.folder is not None:
            try:
                value = pickle.loads(self._path(key).read_bytes())
            except FileNotFoundError:
                value = None
            if value is not None:
                self.hits += 1
                return value
        self.misses += 1
        return None

    def put(self, key: str, value: Any) -> None:
        if self.folder is not None:
            write_bytes_atomic(self._path(key), pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def summary(self) -> str:
        return f"{self.hits} fits reused, {self.misses} fitted now"
