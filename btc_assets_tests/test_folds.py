"""The walk-forward fold schedule."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from btc_assets.folds import FoldSchedule

FIRST, END = pd.Timestamp("2017-08-17 04:00", tz="UTC"), pd.Timestamp("2026-05-16 19:00", tz="UTC")


def test_default_schedule_on_the_real_history() -> None:
    folds = FoldSchedule().folds(FIRST, END)
    assert len(folds) == 14  # 13 six-month folds plus a final 3.3-month one after a 2-year warm-up
    assert folds[0].test_start == FIRST + pd.Timedelta("730D")
    for a, b in itertools.pairwise(folds):
        assert a.test_end == b.test_start  # test windows tile the out-of-sample period
    for f in folds:
        assert f.train_start == FIRST  # anchored
        assert f.test_start - f.train_end == pd.Timedelta("24h")  # purge gap
        assert f.train_end <= f.test_start < f.test_end <= END
    assert folds[-1].test_end == END


def test_rolling_schedule_keeps_window_length() -> None:
    folds = FoldSchedule(anchored=False).folds(FIRST, END)
    assert folds[0].train_start == FIRST
    assert all(f.train_end - f.train_start == pd.Timedelta("730D") - pd.Timedelta("24h") for f in folds)


def test_short_last_fold_dropped() -> None:
    end = FIRST + pd.Timedelta("730D") + pd.Timedelta("200D")
    folds = FoldSchedule(test="182D", min_last_test=0.5).folds(FIRST, end)
    assert len(folds) == 1
    assert len(FoldSchedule().folds(FIRST, FIRST + pd.Timedelta("700D"))) == 0


def test_bad_purge() -> None:
    with pytest.raises(ValueError):
        FoldSchedule(warmup="10D", purge="20D").folds(FIRST, END)
