"""The walk-forward fold schedule shared by every stage (GARCH refits, HMM refits, the optimiser).

Fold k tests on ``[test_start, test_end)`` with ``test_start = first + warmup + k * test``; it trains on
``[train_start, train_end)`` with ``train_end = test_start - purge``. The training window's last ``validation`` span
``[fit_end, train_end)`` is the inner validation slice: whatever is fitted for the fold (the HMM, the standardisation
of its features, the optimiser's parameters) is fitted on ``[train_start, fit_end)`` only, so the validation slice is
out of sample for all of it, as the test window is (a purge gap keeps features that look back
across the boundary from leaking test-window information into training labels). Anchored folds train from the first
bar; rolling folds train on a window of constant length ``warmup - purge`` ending at ``train_end``. The last,
shorter fold is kept when it covers at least ``min_last_test`` of a full test window. All bounds are UTC bar open
times; ends are exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold; ``*_end`` bounds are exclusive."""

    index: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    fit_end: pd.Timestamp  # train_end − validation: [train_start, fit_end) is the fit piece

    def fit_mask(self, ts: pd.Series | pd.DatetimeIndex) -> pd.Series:
        return (ts >= self.train_start) & (ts < self.fit_end)

    def train_mask(self, ts: pd.Series | pd.DatetimeIndex) -> pd.Series:
        return (ts >= self.train_start) & (ts < self.train_end)

    def test_mask(self, ts: pd.Series | pd.DatetimeIndex) -> pd.Series:
        return (ts >= self.test_start) & (ts < self.test_end)


@dataclass(frozen=True)
class FoldSchedule:
    """How the history is cut into walk-forward folds (defaults: 2-year warm-up, 6-month tests, 1-day purge, the
    last 182 days of each training window as its validation slice)."""

    warmup: str = "730D"
    test: str = "182D"
    purge: str = "24h"
    validation: str = "182D"
    anchored: bool = True
    min_last_test: float = 0.5

    def folds(self, first: pd.Timestamp, end: pd.Timestamp) -> list[Fold]:
        """Folds over bars from ``first`` up to (excluding) ``end``."""
        warmup, test, purge = pd.Timedelta(self.warmup), pd.Timedelta(self.test), pd.Timedelta(self.purge)
        validation = pd.Timedelta(self.validation)
        if purge >= warmup:
            raise ValueError("the purge gap must be shorter than the warm-up")
        if validation <= pd.Timedelta(0):
            raise ValueError(f"schedule.validation ({self.validation}) must be positive")
        out: list[Fold] = []
        test_start = first + warmup
        while test_start < end:
            test_end = min(test_start + test, end)
            if test_end - test_start < test * self.min_last_test and out:
                break
            train_end = test_start - purge
            train_start = first if self.anchored else train_end - (warmup - purge)
            out.append(Fold(len(out), train_start, train_end, test_start, test_end, train_end - validation))
            test_start = test_end
        return out

    def starts(self, first: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
        """Every test-window start on the grid ``first + warmup + k · test`` before ``end``, the start of a trailing
        piece too short to be a fold included: appending bars never moves or removes one, so refit points taken
        from here never change earlier values (fold starts themselves can appear once that piece grows)."""
        warmup, test = pd.Timedelta(self.warmup), pd.Timedelta(self.test)
        out, start = [], first + warmup
        while start < end:
            out.append(start)
            start += test
        return out

    def starts_for(self, timestamps: pd.Series) -> list[pd.Timestamp]:
        """:meth:`starts` over an hourly bar series."""
        ts = pd.Series(timestamps)
        return self.starts(ts.iloc[0], ts.iloc[-1] + pd.Timedelta(hours=1))

    def folds_for(self, timestamps: pd.Series) -> list[Fold]:
        """Folds over an hourly bar series (end = one hour after the last bar)."""
        ts = pd.Series(timestamps)
        return self.folds(ts.iloc[0], ts.iloc[-1] + pd.Timedelta(hours=1))


def out_of_sample(probabilities: pd.DataFrame) -> pd.DataFrame:
    """The test segments of a per-fold table (a ``segment`` column: train, validation or test) stitched into one
    causal series: one row per bar, from the fold that tests it."""
    test = probabilities[probabilities["segment"] == "test"]
    return test.drop(columns="segment").sort_values("timestamp").reset_index(drop=True)
