"""New bars recompute only what they add: GARCH and HMM refits from the fit cache, walk-forward studies from the
seed's checkpoint; every result bit-identical to a recomputation from scratch, every earlier value unchanged."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from btc_assets.config import get_profile
from btc_assets.fits import FitCache, fit_key
from btc_assets.folds import FoldSchedule
from btc_assets.ingestion import build_market_bars
from btc_assets.ingestion.demo import DemoMarketSpec, generate_demo_market
from btc_assets.regimes import compute_regimes
from btc_assets.volatility import compute_volatility, garch_refits
from btc_assets.wfa import run_seed

SCHEDULE = FoldSchedule(warmup="365D", test="91D")  # 3 years: folds 0-7; the cut below: folds 0-6
PROFILE = get_profile("quick")
REGIMES = replace(PROFILE.regimes, n_restarts=1, n_iter=20)
CUT_DAYS = 100  # the cut ends 100 days before the full history: fold 7 starts in between, fold 6's test grows


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    market = generate_demo_market(DemoMarketSpec(years=3.0))
    return build_market_bars(market.ohlcv, market.funding).bars


@pytest.fixture(scope="module")
def n_cut(bars: pd.DataFrame) -> int:
    return len(bars) - 24 * CUT_DAYS


@pytest.fixture(scope="module")
def chains(bars: pd.DataFrame, n_cut: int, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The chain on the cut history, then on the whole history with the same fit caches, and from scratch."""
    home = tmp_path_factory.mktemp("fits")
    cut = bars.iloc[:n_cut].reset_index(drop=True)
    out: dict = {"cut_bars": cut}
    for name, frame in (("cut", cut), ("grown", bars)):
        vol_fits, hmm_fits = FitCache(home / "volatility", "v"), FitCache(home / "regimes", "r")
        out[f"{name}_vol"] = compute_volatility(frame, SCHEDULE, PROFILE.volatility, vol_fits)
        out[f"{name}_regimes"] = compute_regimes(frame, out[f"{name}_vol"], SCHEDULE, REGIMES, hmm_fits)
        out[f"{name}_fits"] = (vol_fits, hmm_fits)
    out["scratch_vol"] = compute_volatility(bars, SCHEDULE, PROFILE.volatility)
    out["scratch_regimes"] = compute_regimes(bars, out["scratch_vol"], SCHEDULE, REGIMES)
    return out


def test_fit_keys_see_every_input() -> None:
    import numpy as np

    x = np.arange(6.0)
    assert fit_key("a", x, 1) == fit_key("a", x.copy(), 1)
    assert fit_key("a", x, 1) != fit_key("a", x.astype(np.float32), 1)
    assert fit_key("a", x, 1) != fit_key("a", x.reshape(2, 3), 1)
    assert fit_key("a", x, 1) != fit_key("a", x, 2) != fit_key("a", x, None)
    y = x.copy()
    y[-1] = np.nextafter(y[-1], 10)
    assert fit_key("a", x) != fit_key("a", y)


def test_volatility_refits_only_the_new_refit_points(chains: dict, n_cut: int) -> None:
    grown, scratch, cut = chains["grown_vol"], chains["scratch_vol"], chains["cut_vol"]
    pd.testing.assert_frame_equal(grown, scratch, check_exact=True)  # the cache changes nothing
    pd.testing.assert_frame_equal(grown.iloc[:n_cut], cut, check_exact=True)  # nor do the new bars, before them
    refits = garch_refits(scratch)
    last_cut_bar = chains["cut_bars"]["timestamp"].iloc[-1]
    new = int((refits["refit_time"] > last_cut_bar).sum())
    fits = chains["grown_fits"][0]
    assert new >= 3 and fits.misses == new and fits.hits == len(refits) - new
    assert chains["cut_fits"][0].hits == 0


def test_regimes_refit_only_the_new_fold(chains: dict, bars: pd.DataFrame) -> None:
    grown, scratch, cut = chains["grown_regimes"], chains["scratch_regimes"], chains["cut_regimes"]
    pd.testing.assert_frame_equal(grown.probabilities, scratch.probabilities, check_exact=True)
    volatile = ["seconds"]  # wall time of the refit
    pd.testing.assert_frame_equal(grown.refits.drop(columns=volatile), scratch.refits.drop(columns=volatile))
    pd.testing.assert_frame_equal(grown.phases, scratch.phases, check_exact=True)
    assert list(cut.refits["fold"]) == list(range(7)) and list(grown.refits["fold"]) == list(range(8))
    fits = chains["grown_fits"][1]
    assert fits.misses == 1 and fits.hits == 7
    # every probability the cut history had is unchanged (fold 6's test window only grew)
    keys = ["fold", "timestamp"]
    both = cut.probabilities.merge(grown.probabilities, on=keys, suffixes=("", "_grown"), validate="1:1")
    assert len(both) == len(cut.probabilities)
    for column in [c for c in cut.probabilities.columns if c.startswith("p_")]:
        assert (both[column] == both[f"{column}_grown"]).all()


def test_seed_optimises_only_the_new_fold(chains: dict, bars: pd.DataFrame, tmp_path: Path) -> None:
    """The cut history's seed, then the whole history's in the same checkpoints: only fold 7's studies run, fold 6
    (whose test window grew) is re-scored out of sample, and every earlier out-of-sample bar is unchanged; the
    result equals a run from scratch, bit for bit."""
    settings = replace(PROFILE.wfa, n_trials=4, n_startup_trials=2, max_folds=None, select_top=2)
    messages: list[str] = []

    def seed_run(frames: tuple, checkpoints: Path):
        return run_seed(
            5,
            "seed_05",
            *frames,
            settings=settings,
            portfolio=PROFILE.portfolio,
            schedule=SCHEDULE,
            checkpoints=str(checkpoints),
            say=messages.append,
        )

    first = seed_run((chains["cut_bars"], chains["cut_vol"], chains["cut_regimes"].probabilities), tmp_path / "a")
    assert first.trials_run == 7 * 5 * 4
    grown_frames = (bars, chains["grown_vol"], chains["grown_regimes"].probabilities)
    messages.clear()
    grown = seed_run(grown_frames, tmp_path / "a")
    assert (grown.trials_run, grown.trials_from_checkpoint, grown.studies_retested) == (20, 140, 5)
    assert "seed_05: 20 trials run now, 140 from the checkpoint, 5 studies re-scored" in messages[-1]
    earlier = grown.oos.iloc[: len(first.oos)]
    pd.testing.assert_frame_equal(earlier, first.oos, check_exact=True)
    assert grown.oos["fold"].iloc[len(first.oos) :].isin([6, 7]).all()
    scratch = seed_run(grown_frames, tmp_path / "b")
    assert scratch.trials_run == 160
    for a, b in ((grown.oos, scratch.oos), (grown.folds, scratch.folds), (grown.trials, scratch.trials)):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_data_grown_by_five_months_runs_only_the_new_fold(shared_data: Path, tmp_path: Path) -> None:
    """``btc-assets run`` on the real files (from 2023: 2 folds) cut on 2025-12-20, then on the whole files (3 folds)
    in the same home: the chain refits only what the new bars add, the seed runs only the new fold's trials (its
    materialisation says so), and every earlier out-of-sample bar is identical to the first run's."""
    import dagster as dg

    from btc_assets_tests.test_cli import cli

    start, cut = pd.Timestamp("2023-01-01", tz="UTC"), pd.Timestamp("2025-12-20", tz="UTC")
    names = {"ohlcv": "btcusdt_1h", "funding": "btcusdt_funding_8h", "perp": "btcusdt_perp_1h"}
    files: dict[str, dict[str, str]] = {"cut": {}, "whole": {}}
    for option, name in names.items():
        frame = pd.read_parquet(shared_data / f"{name}.parquet")
        frame = frame[frame["timestamp"] >= start]
        for which, part in (("cut", frame[frame["timestamp"] < cut]), ("whole", frame)):
            path = tmp_path / f"{name}.{which}.parquet"
            part.to_parquet(path)
            files[which][option] = str(path)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[wfa]\nmax_folds = 0\nn_trials = 4\n")
    results = home / "warehouse" / "wfa_results" / "partition=seed_00"

    def run(which: str) -> subprocess.CompletedProcess[str]:
        args = [f"--{option}={path}" for option, path in files[which].items()]
        done = cli("run", "--profile", "quick", "--seeds", "0", "--jobs", "1", *args, home=home, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    def said(done: subprocess.CompletedProcess[str]) -> list[str]:
        return [line for line in done.stderr.splitlines() if "seed_00:" in line or "fits reused" in line]

    first = run("cut")
    assert "seed_00: done, 40 trials run now, 0 from checkpoint" in first.stderr, said(first)  # 2 folds × 5 × 4
    before = pd.read_parquet(next(results.glob("*.parquet")))
    second = run("whole")
    assert "seed_00: done, 20 trials run now, 40 from checkpoint" in second.stderr, said(second)
    assert "fits reused, 1 fitted now" in second.stderr  # the HMM: only the new fold's refit
    after = pd.read_parquet(next(results.glob("*.parquet")))
    assert after["timestamp"].iloc[-1] > before["timestamp"].iloc[-1] + pd.Timedelta(days=140)
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before, check_exact=True)
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("wfa_results"))
        meta = event.asset_materialization.metadata
        assert (meta["trials_run_now"].value, meta["trials_from_checkpoint"].value) == (20, 40)
