"""Rolling lines shared by the seed processes through memory-mapped files (:mod:`btc_assets.line_store`)."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from btc_assets import experts
from btc_assets.config import get_profile
from btc_assets.folds import FoldSchedule
from btc_assets.line_store import UNBOUNDED, SharedLines
from btc_assets.versions import source_digest
from btc_assets.wfa import run_seed
from btc_assets.wfa.run import shared_lines
from btc_assets_tests.conftest import write_wfa_inputs

SCHEDULE = FoldSchedule(warmup="365D", test="91D")
WINDOWS = {"high_max": range(5, 30), "rsi": range(5, 12), "midpoint": range(5, 9)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, shared_fits: Path) -> Path:
    return write_wfa_inputs(tmp_path_factory.mktemp("line_inputs"), SCHEDULE.warmup, SCHEDULE.test, shared_fits)


def _bars(inputs: Path) -> experts.BarArrays:
    return experts.BarArrays.from_market_bars(pd.read_parquet(inputs / "bars.parquet"))


def test_stored_lines_are_the_computed_lines_bit_for_bit_and_read_only(inputs: Path, tmp_path: Path) -> None:
    bars = _bars(inputs)
    reference = experts.LineCache()
    store = SharedLines(tmp_path, bars.fingerprint, WINDOWS, lambda k, w: reference.get(bars, k, w))
    assert sorted(store.built) == ["high_max_5_29.npy", "midpoint_5_8.npy", "rsi_5_11.npy"]
    for kind, span in WINDOWS.items():
        for w in span:
            line = store.line(bars.fingerprint, kind, w)
            assert line is not None and not line.flags.writeable
            assert line.tobytes() == reference.get(bars, kind, w).tobytes()
    assert store.line(bars.fingerprint, "high_max", 30) is None  # outside the stored range
    assert store.line("another data version", "high_max", 10) is None
    # a cache backed by the store returns the stored lines, and computes the others itself
    cache = experts.LineCache(maxsize=4, shared=store)
    assert np.shares_memory(cache.get(bars, "rsi", 7), store.line(bars.fingerprint, "rsi", 7))
    assert cache.get(bars, "rsi", 40).tobytes() == reference.get(bars, "rsi", 40).tobytes() and len(cache) == 1


def test_another_version_of_the_line_code_builds_its_own_files(inputs: Path, tmp_path: Path) -> None:
    bars = _bars(inputs)
    compute = experts.LineCache()
    first = SharedLines(tmp_path, bars.fingerprint, WINDOWS, lambda k, w: compute.get(bars, k, w), version="aaa")
    second = SharedLines(tmp_path, bars.fingerprint, WINDOWS, lambda k, w: compute.get(bars, k, w), version="bbb")
    assert first.dir != second.dir and len(second.built) == len(WINDOWS)  # never the other version's lines


def test_a_second_process_maps_the_files_and_builds_nothing(inputs: Path, tmp_path: Path) -> None:
    bars = _bars(inputs)
    SharedLines(tmp_path, bars.fingerprint, WINDOWS, lambda k, w: experts.LineCache().get(bars, k, w))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / bars.fingerprint).iterdir()}
    code = (
        "import sys, pandas as pd; from btc_assets import experts; from btc_assets.line_store import SharedLines;"
        f"b = experts.BarArrays.from_market_bars(pd.read_parquet({str(inputs / 'bars.parquet')!r}));"
        f"s = SharedLines({str(tmp_path)!r}, b.fingerprint, {WINDOWS!r}, lambda k, w: 1 / 0);"
        "print(len(s.built), s.line(b.fingerprint, 'rsi', 9)[-1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", repr(float(experts.LineCache().get(bars, "rsi", 9)[-1]))]
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / bars.fingerprint).iterdir()}


def test_a_seed_on_shared_lines_equals_one_on_its_own(inputs: Path, tmp_path: Path) -> None:
    bars, vol, probs = (pd.read_parquet(inputs / f"{n}.parquet") for n in ("bars", "volatility", "probs"))
    profile = get_profile("quick")
    settings = replace(
        profile.wfa, n_trials=6, n_startup_trials=2, max_folds=2, select_top=2, progress_every=0.0, shared_lines=True,
        lines_resident_mb=1,  # the maps released every few lines: the same results
    )  # fmt: skip

    def go(name: str, lines: str | None):
        return run_seed(
            4, "seed_04", bars, vol, probs, settings=settings, portfolio=profile.portfolio, schedule=SCHEDULE,
            checkpoints=str(tmp_path / name), say=lambda m: None, lines=lines,
        )  # fmt: skip

    alone, shared = go("alone", None), go("shared", str(tmp_path / "lines"))
    off = replace(settings, shared_lines=False)
    assert run_seed(
        4, "seed_04", bars, vol, probs, settings=off, portfolio=profile.portfolio, schedule=SCHEDULE,
        checkpoints=str(tmp_path / "off"), say=lambda m: None, lines=str(tmp_path / "off_lines"),
    ).trials.equals(alone.trials)  # fmt: skip
    assert not (tmp_path / "off_lines").exists()  # the setting off: nothing written
    pd.testing.assert_frame_equal(shared.trials, alone.trials, check_exact=True)
    pd.testing.assert_frame_equal(shared.oos, alone.oos, check_exact=True)
    # the bound changes no result, so not the checkpoint's key either: without it, the seed resumes as done
    unbounded = replace(settings, lines_resident_mb=0)
    again = run_seed(
        4, "seed_04", bars, vol, probs, settings=unbounded, portfolio=profile.portfolio, schedule=SCHEDULE,
        checkpoints=str(tmp_path / "shared"), say=lambda m: None, lines=str(tmp_path / "lines"),
    )  # fmt: skip
    assert again.trials_run == 0 and again.trials.equals(shared.trials)
    # the search space's lines are in the files, one matrix per line kind
    arrays = experts.BarArrays.from_market_bars(bars)
    (folder,) = (tmp_path / "lines").glob(f"{arrays.fingerprint}-*/")  # one set, keyed by data and line code
    assert folder.name == f"{arrays.fingerprint}-{source_digest('btc_assets.experts')}"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"{k}_{r.start}_{r.stop - 1}.npy" for k, r in experts.line_windows().items())
    assert shared_lines(arrays, str(tmp_path / "lines")).shared.built == []  # the next seed builds nothing


def _resident_bytes(path: Path) -> int:
    """Bytes of ``path``'s mapping(s) resident in this process (``/proc/self/smaps``: each mapping's first line
    ends with its file's path, its ``Rss:`` line follows)."""
    text = Path("/proc/self/smaps").read_text()
    return 1024 * sum(int(kb) for kb in re.findall(re.escape(str(path)) + r"\n(?:.*\n)*?Rss:\s+(\d+) kB", text))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps (Linux)")
def test_the_resident_lines_stay_within_the_budget_and_read_the_same(inputs: Path, tmp_path: Path) -> None:
    bars = _bars(inputs)
    reference = experts.LineCache()
    windows = {"high_max": range(5, 45)}
    line_bytes = len(bars) * 8
    budget = 5 * line_bytes

    def read_all(store: SharedLines) -> int:
        """Every line read whole (and checked); the most of the file resident at any time."""
        most = 0
        for w in windows["high_max"]:
            line = store.line(bars.fingerprint, "high_max", w)
            assert line.tobytes() == reference.get(bars, "high_max", w).tobytes()
            most = max(most, _resident_bytes(path))
        return most

    unbounded = SharedLines(
        tmp_path, bars.fingerprint, windows, lambda k, w: reference.get(bars, k, w), resident_budget=UNBOUNDED
    )
    path = unbounded.dir / "high_max_5_44.npy"
    assert read_all(unbounded) >= 40 * line_bytes and unbounded.releases == 0  # without releases: the whole file
    unbounded.release()
    assert _resident_bytes(path) == 0

    bounded = SharedLines(tmp_path, bars.fingerprint, windows, lambda k, w: 1 / 0, resident_budget=budget)
    most = read_all(bounded)
    assert bounded.releases >= 7  # 40 lines through a budget of 5
    assert most <= budget + 2 * line_bytes + 2**17  # the budget, the line being read, page and fault-around slack
    assert read_all(bounded) <= most + 2**17  # the second pass reads the same values, mapped again


def test_only_the_two_most_recently_opened_sets_are_kept(inputs: Path, tmp_path: Path) -> None:
    """New data or new line code makes a new set (1.25 GB on the real history): opening one deletes the sets beyond
    the two most recently opened, except one whose lock is held (being built or opened); a process that maps a
    deleted set reads it on."""
    bars = _bars(inputs)
    compute = experts.LineCache()
    stores = {}
    for age, version in enumerate(("aaa", "bbb", "ccc")):
        stores[version] = SharedLines(
            tmp_path, bars.fingerprint, WINDOWS, lambda k, w: compute.get(bars, k, w), version
        )
        os.utime(stores[version].dir, ns=(age * 10**9, age * 10**9))  # opened one second after the previous
    assert stores["ccc"].pruned == [f"{bars.fingerprint}-aaa"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        f"{bars.fingerprint}-{v}" for v in ("bbb", "ccc")
    ]
    kept = stores["aaa"].line(bars.fingerprint, "rsi", 9)  # its files are deleted; the map still reads them
    assert kept.tobytes() == compute.get(bars, "rsi", 9).tobytes()
    with open(tmp_path / f"{bars.fingerprint}-bbb.lock", "a+") as lock:  # another process opening "bbb"
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        newest = SharedLines(tmp_path, bars.fingerprint, WINDOWS, lambda k, w: compute.get(bars, k, w), "ddd")
    assert newest.pruned == []  # "bbb" is in use, "ccc" is the most recent before "ddd"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        f"{bars.fingerprint}-{v}" for v in ("bbb", "ccc", "ddd")
    ]
