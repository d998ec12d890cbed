"""Experts: numba lines vs pandas, expert rules vs slow pure-Python references, causality, warm-up, line cache."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from btc_assets import experts as ex
from btc_assets.experts_reference import REFERENCES

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOL = {"rtol": 1e-10, "atol": 1e-10}


def random_bars(n: int = 3000, seed: int = 0, funding: bool = True) -> ex.BarArrays:
    """Random-walk OHLC with some missing hours (NaN rows, forward-filled as flat bars) and 8-hourly funding."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.standard_t(4, n) * 0.004))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.exponential(0.002, n))
    low = np.minimum(open_, close) * (1 - rng.exponential(0.002, n))
    gaps = rng.choice(np.arange(1, n), size=n // 100, replace=False)
    for arr in (open_, high, low, close):
        arr[gaps] = np.nan
    rate = np.full(n, np.nan)
    known = np.zeros(n, dtype=bool)
    if funding:
        settle = np.arange(7, n, 8)
        rate[settle] = rng.normal(0.0, 4e-4, settle.size)
        known[5:] = True
    return ex.BarArrays.from_arrays(open_, high, low, close, funding=rate, funding_known=known)


@pytest.fixture(scope="module")
def real_bars() -> ex.BarArrays:
    if not (SHARED_DATA / "btcusdt_1h.parquet").exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    from btc_assets.ingestion.bars import build_market_bars

    ohlcv = pd.read_parquet(SHARED_DATA / "btcusdt_1h.parquet")
    funding_path = SHARED_DATA / "btcusdt_funding_8h.parquet"
    funding = (
        pd.read_parquet(funding_path)[["timestamp", "funding_rate"]]
        if funding_path.exists()
        else pd.DataFrame({"timestamp": pd.Series(dtype="datetime64[ms, UTC]"), "funding_rate": []})
    )
    return ex.BarArrays.from_market_bars(build_market_bars(ohlcv, funding).bars)


# ------------------------------------------------------------------------------------------------------ lines


@pytest.mark.parametrize("seed", [0, 1])
def test_lines_match_pandas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4000
    x = 100 + np.cumsum(rng.normal(0, 1, n))
    x[500:530] = x[499]  # a constant run (flat bars over a gap)
    ties = np.round(x / 5.0) * 5.0  # many equal values: deque tie handling
    b = random_bars(n, seed)
    for w in (1, 2, 3, 7, 20, 99, 500, n, n + 5):
        for arr in (x, ties):
            np.testing.assert_allclose(ex.rolling_max(arr, w), ex.rolling_max_reference(arr, w), **TOL)
            np.testing.assert_allclose(ex.rolling_min(arr, w), ex.rolling_min_reference(arr, w), **TOL)
            np.testing.assert_array_equal(ex.rolling_max(arr, w), ex.rolling_max_reference(arr, w))
            np.testing.assert_array_equal(ex.rolling_min(arr, w), ex.rolling_min_reference(arr, w))
            np.testing.assert_allclose(ex.rolling_mean(arr, w), ex.rolling_mean_reference(arr, w), **TOL)
            if w >= 2:
                for ddof in (0, 1):
                    np.testing.assert_allclose(
                        ex.rolling_std(arr, w, ddof), ex.rolling_std_reference(arr, w, ddof), **TOL
                    )
        np.testing.assert_allclose(ex.wilder_rsi(b.close, w), ex.wilder_rsi_reference(b.close, w), **TOL)
        np.testing.assert_allclose(
            ex.wilder_atr(b.high, b.low, b.close, w), ex.wilder_atr_reference(b.high, b.low, b.close, w), **TOL
        )
    lead = np.r_[np.full(5, np.nan), x[:200]]
    for alpha, mp in ((0.5, 1), (2 / 21, 10), (1 / 14, 14)):
        np.testing.assert_allclose(ex.ewm_mean(lead, alpha, mp), ex.ewm_mean_reference(lead, alpha, mp), **TOL)
    # RSI on a flat series is 50 (no gains, no losses), not NaN
    assert np.all(ex.wilder_rsi(np.full(50, 3.0), 14)[14:] == 50.0)


def test_rolling_max_min_are_linear_time() -> None:
    """A monotonic series is the deque's worst case for a window rescan; 1e6 bars x window 1e5 must be instant."""
    import time

    x = np.arange(1_000_000, dtype=np.float64)
    ex.rolling_max(x[:10], 3)
    ex.rolling_min(x[:10], 3)
    t0 = time.perf_counter()
    hi = ex.rolling_max(-x, 100_000)  # decreasing: the max stays at the window's oldest element
    lo = ex.rolling_min(x, 100_000)
    assert time.perf_counter() - t0 < 0.5
    assert hi[-1] == -(1_000_000 - 100_000) and lo[-1] == 1_000_000 - 100_000


CASES = [
    ex.TrendExpert(),
    ex.TrendExpert(5, 12, 30, 10, cloud_filter=False, chikou=True),
    ex.TrendExpert(7, 20, 44, 15, chikou=True),
    ex.MeanReversionExpert(),
    ex.MeanReversionExpert(7, 12, 1.2, 40.0, 60.0),
    ex.MeanReversionExpert(30, 50, 1.5),
    ex.BreakoutExpert(),
    ex.BreakoutExpert(20, 8, 5, 60, 1.0, 1.5),
    ex.BreakoutExpert(40, 60, 10, 50, 0.9, 2.0),
    ex.CarryExpert(),
    ex.CarryExpert(1, 0.00005, 0.0002),
    ex.CarryExpert(5, 0.0003, 0.0004),
]


@pytest.mark.parametrize("expert", CASES, ids=repr)
@pytest.mark.parametrize("seed", [3, 4])
def test_expert_matches_slow_reference(expert, seed: int) -> None:
    b = random_bars(2500, seed)
    got = expert.positions(b, ex.LineCache())
    want = REFERENCES[type(expert)](b, expert)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    # a kind that says it never abstains with NaN (the search's signal cache then skips its NaN pass) does not
    assert not (type(expert).NAN_FREE and np.isnan(got).any())
    # the rules do fire, in both directions, and also stay flat
    assert (got > 0).mean() > 0.01 and (got < 0).mean() > 0.01 and (got == 0).mean() > 0.01


# ------------------------------------------------------------------------------------------------ Ichimoku by hand


def test_ichimoku_cloud_is_displaced() -> None:
    """low = 0..9, high = low + 2: a midpoint over n bars at t is t + (3 - n) / 2. With tenkan 2, kijun 3,
    senkou B 4 and displacement 2: tenkan = t + .5, kijun = t, span A at t = (tenkan + kijun)(t - 2) / 2 = t - 1.75
    (from t = 4), span B at t = mid4(t - 2) = t - 2.5 (from t = 5)."""
    low = np.arange(10.0)
    high = low + 2.0
    b = ex.BarArrays.from_arrays(low + 1.0, high, low, high)
    e = ex.TrendExpert(tenkan=2, kijun=3, senkou_b=4, displacement=2)
    ln = e.lines(b)
    nan = np.nan
    np.testing.assert_array_equal(ln["tenkan"], [nan, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5])
    np.testing.assert_array_equal(ln["kijun"], [nan, nan, 2, 3, 4, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(ln["span_a"], [nan] * 4 + [2.25, 3.25, 4.25, 5.25, 6.25, 7.25])
    np.testing.assert_array_equal(ln["span_b"], [nan] * 5 + [2.5, 3.5, 4.5, 5.5, 6.5])
    # close = high is above the cloud and tenkan > kijun: long once the cloud exists
    np.testing.assert_array_equal(e.positions(b), [0] * 5 + [1] * 5)
    # the cloud at 8 is built from bars <= 6: a spike in bar 7 moves span A/B at 9 (and the lines at 7), not at 8
    high2 = high.copy()
    high2[7] = 100.0
    ln2 = e.lines(ex.BarArrays.from_arrays(low + 1.0, high2, low, high2))
    np.testing.assert_array_equal(ln2["span_a"][:9], ln["span_a"][:9])
    np.testing.assert_array_equal(ln2["span_b"][:9], ln["span_b"][:9])
    assert ln2["span_a"][9] != ln["span_a"][9] and ln2["span_b"][9] != ln["span_b"][9]
    # mirrored (falling market, close = low below the cloud, tenkan < kijun): short
    b_down = ex.BarArrays.from_arrays(-low - 1.0, -low, -high, -high)
    np.testing.assert_array_equal(e.positions(b_down), [0] * 5 + [-1] * 5)


# ---------------------------------------------------------------------------------------------- range and warm-up


def _sample(cls, rng: np.random.Generator):
    kw = {}
    for name, (low, high, kind) in cls.SEARCH_SPACE.items():
        if kind == "int":
            kw[name] = int(rng.integers(low, high + 1))
        elif kind == "float":
            kw[name] = float(rng.uniform(low, high))
        else:
            kw[name] = bool(rng.integers(0, 2))
    return cls(**kw)


def test_search_spaces_cover_fields_and_defaults() -> None:
    for cls in (ex.TrendExpert, ex.MeanReversionExpert, ex.BreakoutExpert, ex.CarryExpert):
        assert set(cls.SEARCH_SPACE) == {f.name for f in fields(cls)}
        default = cls()
        for name, (low, high, kind) in cls.SEARCH_SPACE.items():
            assert kind in ("int", "float", "bool") and low < high
            assert low <= getattr(default, name) <= high, (cls.__name__, name)
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    configs = ex.ExpertConfigs.suggest(trial)
    assert ex.ExpertConfigs.from_params(trial.params) == configs


def test_outputs_bounded_and_zero_in_warmup() -> None:
    rng = np.random.default_rng(7)
    b = random_bars(3000, 11)
    cache = ex.LineCache()
    for _ in range(8):
        cfg = ex.ExpertConfigs(
            *(_sample(c, rng) for c in (ex.TrendExpert, ex.MeanReversionExpert, ex.BreakoutExpert, ex.CarryExpert))
        )
        p = ex.expert_positions(b, cfg, cache)
        assert p.shape == (len(b), 4) and np.isfinite(p).all() and np.abs(p).max() <= 1.0
        t, m, br, _ = cfg.experts()
        assert not p[: min(t.tenkan, t.kijun) - 1, 0].any()
        assert not p[: max(m.rsi_period, m.bb_window - 1), 1].any()
        assert not p[: max(br.window, br.exit_window, br.atr_long - 1), 2].any()
        assert not p[:5, 3].any()  # funding not known yet


# ------------------------------------------------------------------------------------------------------ cache


def test_line_cache_identity() -> None:
    b, b2 = random_bars(500, 0), random_bars(500, 1)
    cache = ex.LineCache()
    first = cache.get(b, "high_max", 20)
    assert cache.get(b, "high_max", 20) is first
    assert cache.get(b, "high_max", np.int64(20)) is first  # optimisers hand out numpy integers
    assert not first.flags.writeable
    other = cache.get(b, "high_max", 21)
    assert other is not first and not np.array_equal(other, first, equal_nan=True)
    assert cache.get(b, "low_min", 20) is not first
    assert cache.get(b2, "high_max", 20) is not first
    # the same data in a new BarArrays object shares the fingerprint, hence the lines
    same = ex.BarArrays.from_arrays(b.open, b.high, b.low, b.close, b.funding, b.funding_known)
    assert same.fingerprint == b.fingerprint and cache.get(same, "high_max", 20) is first
    for kind in ex.LINE_KINDS:
        assert cache.get(b, kind, 9) is cache.get(b, kind, 9)
    hits = cache.hits
    p1 = ex.expert_positions(b, ex.DEFAULT_CONFIGS, cache)
    p2 = ex.expert_positions(b, ex.DEFAULT_CONFIGS, cache)
    np.testing.assert_array_equal(p1, p2)
    assert cache.hits > hits
    small = ex.LineCache(maxsize=2)
    a = small.get(b, "atr", 5)
    small.get(b, "atr", 6)
    small.get(b, "atr", 7)
    assert len(small) == 2 and small.get(b, "atr", 5) is not a  # evicted (LRU), recomputed
    np.testing.assert_array_equal(small.get(b, "atr", 5), a)


# -------------------------------------------------------------------------------------------- real data, causality


@pytest.mark.realdata
def test_causality_bit_exact_on_real_data(real_bars: ex.BarArrays) -> None:
    b = real_bars
    rng = np.random.default_rng(0)
    configs = [
        ex.DEFAULT_CONFIGS,
        ex.ExpertConfigs(
            ex.TrendExpert(chikou=True, cloud_filter=True),
            ex.MeanReversionExpert(9, 30, 1.5, 40, 60),
            ex.BreakoutExpert(24, 12, 6, 48, 1.0, 2.0),
            ex.CarryExpert(3, 0.00005, 0.0003),
        ),
    ]
    full = [ex.expert_positions(b, cfg, ex.LineCache()) for cfg in configs]
    settled = np.flatnonzero(np.isfinite(b.funding))
    cuts = [500, int(settled[10]), int(settled[len(settled) // 2]) - 1, len(b) - 300]
    for t in cuts:
        k = len(b) - t - 1
        shock = np.exp(rng.normal(0, 0.05, k))
        cl = np.r_[b.close[: t + 1], b.close[t + 1 :] * shock]
        hi = np.r_[b.high[: t + 1], b.high[t + 1 :] * shock * 1.01]
        lo = np.r_[b.low[: t + 1], b.low[t + 1 :] * shock * 0.99]
        op = np.r_[b.open[: t + 1], b.open[t + 1 :] * shock]
        fu = np.r_[b.funding[: t + 1], b.funding[t + 1 :] * -3.0 + 0.001]
        pert = ex.BarArrays(op, hi, lo, cl, fu, b.funding_known)
        for cfg, ref in zip(configs, full, strict=True):
            got = ex.expert_positions(pert, cfg, ex.LineCache())
            np.testing.assert_array_equal(got[: t + 1], ref[: t + 1])
            assert not np.array_equal(got[t + 1 :], ref[t + 1 :])  # the perturbation does matter later


@pytest.mark.realdata
def test_real_data_defaults(real_bars: ex.BarArrays) -> None:
    b = real_bars
    assert len(b) == 76_671  # the complete hourly grid
    p = ex.expert_positions(b, ex.DEFAULT_CONFIGS, ex.LineCache())
    assert np.isfinite(p).all() and np.abs(p).max() <= 1.0
    frac_flat = (p == 0).mean(axis=0)
    frac_long = (p > 0).mean(axis=0)
    frac_short = (p < 0).mean(axis=0)
    # every expert takes both sides and is sometimes flat
    assert (frac_long[:3] > 0.05).all() and (frac_short[:3] > 0.05).all() and (frac_flat > 0.1).all()
    assert frac_short[3] > 0.05  # funding is usually positive: carry mostly shorts the perp
    # the trend follower is in the market more often than the mean reverter and the breakout trader
    assert frac_flat[0] < frac_flat[1] and frac_flat[0] < frac_flat[2]
    # carry is flat where funding is unknown (before the perpetual's history)
    assert not p[~b.funding_known, 3].any()
