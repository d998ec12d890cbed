"""Shared fixtures: small valid market files in every supported layout, and the real data folder."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# the longest modules, started first so that the two xdist workers finish together (each module runs on one worker,
# its tests in order: ``--dist loadscope`` in pyproject's addopts)
FIRST = (
    "test_ui_e2e",
    "test_cli",
    "test_faults",
    "test_dagster_defs",
    "test_celery",
    "test_postgres",
    "test_wfa",
    "test_incremental",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules of :data:`FIRST` first, in that order; the rest as collected."""
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(FIRST)))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_ohlcv(n: int = 48, start: str = "2024-01-01", seed: int = 0) -> pd.DataFrame:
    """A valid canonical hourly OHLCV frame (random walk, OHLC consistent)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=n, freq="h", tz="UTC", unit="ms")
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.005, n)))
    open_ = np.r_[40_000.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.003, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.003, n))
    volume = rng.lognormal(3, 0.5, n)
    return pd.DataFrame(
        {
            "timestamp": ts,
            "open": open_.round(2),
            "high": high.round(2),
            "low": low.round(2),
            "close": close.round(2),
            "volume": volume.round(5),
        }
    )


def make_funding(start: str = "2024-01-01 08:00", n: int = 6) -> pd.DataFrame:
    ts = pd.date_range(start, periods=n, freq="8h", tz="UTC", unit="ms")
    return pd.DataFrame({"timestamp": ts, "funding_rate": np.linspace(-0.0002, 0.0003, n)})


def binance_kline_rows(frame: pd.DataFrame, unit: str = "ms") -> pd.DataFrame:
    """The 12-column Binance public-data layout for a canonical frame."""
    scale = 1_000 if unit == "us" else 1
    open_time = frame["timestamp"].astype("datetime64[ms, UTC]").astype("int64") * scale
    return pd.DataFrame(
        {
            "open_time": open_time,
            "open": frame["open"],
            "high": frame["high"],
            "low": frame["low"],
            "close": frame["close"],
            "volume": frame["volume"],
            "close_time": open_time + 3_600_000 * scale - 1,
            "quote_volume": frame["volume"] * frame["close"],
            "count": 100,
            "taker_buy_volume": frame["volume"] / 2,
            "taker_buy_quote_volume": frame["volume"] * frame["close"] / 2,
            "ignore": 0,
        }
    )


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's environment: every ``BTC_ASSETS_*`` variable and ``DAGSTER_HOME`` are unset
    (the settings file is the test home's own, and tests' homes are ``tmp_path``)."""
    for name in [n for n in os.environ if n.startswith("BTC_ASSETS_") or n == "DAGSTER_HOME"]:
        monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _no_stale_defs_state_storage() -> Iterator[None]:
    """Dagster 1.13's ``DagsterInstance.__exit__`` disposes the instance but leaves it the current defs-state storage
    (a context variable its ``__enter__`` set), so a test after one that used ``dg.instance_for_test()`` would resolve
    definitions against a deleted temporary instance ("unable to open database file"): reset it after each test."""
    from dagster._core.storage.defs_state.base import _current_storage

    yield
    _current_storage.set(None)


def definitions(home: Path, profile: str = "quick", **source: str):
    """The project's definitions for a test home (settings resolved there, no environment); ``source``: the
    market source fields (``ohlcv=``, ``funding=``, ``perp=``, ``source=``)."""
    from btc_assets.defs import build_definitions
    from btc_assets.ingestion import SourceSettings
    from btc_assets.settings import resolve_settings

    settings = resolve_settings(home, profile, source=SourceSettings(**source), env={})
    return build_definitions(settings=settings)


@pytest.fixture
def ohlcv() -> pd.DataFrame:
    return make_ohlcv()


@pytest.fixture
def funding() -> pd.DataFrame:
    return make_funding()


@pytest.fixture(scope="session")
def shared_fits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fit cache (``btc_assets.fits``: GARCH and HMM refits keyed by their inputs and the stage's code) for the
    scenario tests' homes, shared by the session's xdist workers: those tests run the quick chain on the same demo
    market, and what they test is the command line, the UI and the faults, not the fits (``btc_assets.regimes`` and
    ``btc_assets.volatility`` have their own tests, and ``test_incremental`` the cache). The first home to need a
    refit fits it; a fit is a pure function of its key, written atomically, so workers racing on one key write the
    same bytes. Link a home to it with :func:`use_shared_fits`."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared_fits"
    folder.mkdir(exist_ok=True)
    return folder


def use_shared_fits(home: Path, fits: Path) -> Path:
    """Make ``home/fits`` (``Paths.fits``) a link to the session's :func:`shared_fits`; returns ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "fits").symlink_to(fits, target_is_directory=True)
    return home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "btcusdt_1h.parquet").exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def write_wfa_inputs(folder: Path, warmup: str = "365D", test: str = "91D", fits: Path | None = None) -> Path:
    """Three years of the demo market with its volatility and regime refits (8 folds of 91 days), as Parquet files
    plus ``schedule.json``: the inputs of the walk-forward tests and of ``wfa_worker.py``. ``fits``: a fit cache
    folder (the session's :func:`shared_fits`), so that the modules asking for the same inputs fit them once."""
    import json
    from dataclasses import asdict, replace

    from btc_assets.config import get_profile
    from btc_assets.fits import FitCache
    from btc_assets.folds import FoldSchedule
    from btc_assets.ingestion import build_market_bars
    from btc_assets.ingestion.demo import DemoMarketSpec, generate_demo_market
    from btc_assets.regimes import compute_regimes
    from btc_assets.volatility import compute_volatility

    schedule = FoldSchedule(warmup=warmup, test=test)
    market = generate_demo_market(DemoMarketSpec(years=3.0))
    bars = build_market_bars(market.ohlcv, market.funding).bars
    profile = get_profile("quick")
    vol = compute_volatility(bars, schedule, profile.volatility, FitCache(fits and fits / "volatility"))
    settings = replace(profile.regimes, n_restarts=1, n_iter=20)
    regimes = compute_regimes(bars, vol, schedule, settings, FitCache(fits and fits / "regimes"))
    for name, frame in (("bars", bars), ("volatility", vol), ("probs", regimes.probabilities)):
        frame.attrs = {}
        frame.to_parquet(folder / f"{name}.parquet")
    (folder / "schedule.json").write_text(json.dumps(asdict(schedule)))
    return folder
