"""The synthetic demo market: canonical layout, determinism and the stylised facts it promises."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from btc_assets.ingestion.demo import (
    DEMO_REGIMES,
    DemoMarket,
    DemoMarketSpec,
    demo_transition_matrix,
    generate_demo_market,
)
from btc_assets.ingestion.schema import FUNDING_COLUMNS, OHLCV_COLUMNS, TS_DTYPE

HOURS_6Y = round(6.0 * 365.25 * 24)


@pytest.fixture(scope="module")
def market() -> DemoMarket:
    return generate_demo_market()


@pytest.fixture(scope="module")
def full(market: DemoMarket) -> pd.DataFrame:
    """OHLCV on the complete hourly grid (NaN in outage hours), with the true regime and hourly log return."""
    frame = market.ohlcv.set_index("timestamp").reindex(market.regimes.index)
    frame["ret"] = np.log(frame["close"] / frame["open"])
    frame["regime"] = market.regimes.to_numpy()
    return frame


def _runs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start index, length and code of each run of equal values."""
    starts = np.r_[0, np.flatnonzero(np.diff(codes)) + 1]
    lengths = np.diff(np.r_[starts, codes.size])
    return starts, lengths, codes[starts]


def test_canonical_layout(market: DemoMarket) -> None:
    o, f, r = market.ohlcv, market.funding, market.regimes
    assert tuple(o.columns) == OHLCV_COLUMNS
    assert str(o["timestamp"].dtype) == TS_DTYPE
    assert all(o[c].dtype == np.float64 for c in OHLCV_COLUMNS[1:])
    assert tuple(f.columns) == FUNDING_COLUMNS
    assert str(f["timestamp"].dtype) == TS_DTYPE and f["funding_rate"].dtype == np.float64
    assert len(r) == HOURS_6Y and 52_500 < len(o) < len(r)
    assert str(r.index.dtype) == TS_DTYPE
    assert list(r.cat.categories) == list(DEMO_REGIMES)
    assert set(r.unique()) == set(DEMO_REGIMES)
    assert o["timestamp"].iloc[0] == pd.Timestamp("2019-01-01", tz="UTC")
    assert o["open"].iloc[0] == DemoMarketSpec().start_price


def test_fast_and_deterministic(market: DemoMarket) -> None:
    t0 = time.perf_counter()
    again = generate_demo_market(DemoMarketSpec())
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"generation took {elapsed:.2f} s"
    pd.testing.assert_frame_equal(again.ohlcv, market.ohlcv, check_exact=True)
    pd.testing.assert_frame_equal(again.funding, market.funding, check_exact=True)
    pd.testing.assert_series_equal(again.regimes, market.regimes, check_exact=True)
    assert again.ohlcv[list(OHLCV_COLUMNS[1:])].to_numpy().tobytes() == (
        market.ohlcv[list(OHLCV_COLUMNS[1:])].to_numpy().tobytes()
    )
    other = generate_demo_market(DemoMarketSpec(seed=7))
    assert not np.array_equal(other.ohlcv["close"].to_numpy()[:1000], market.ohlcv["close"].to_numpy()[:1000])
    assert not np.array_equal(other.regimes.cat.codes.to_numpy(), market.regimes.cat.codes.to_numpy())


def test_passes_validator_sanity(market: DemoMarket) -> None:
    o = market.ohlcv
    ts = o["timestamp"]
    assert ts.is_monotonic_increasing and ts.is_unique
    assert (ts == ts.dt.floor("h")).all()
    assert not o.isna().any().any()
    prices = o[["open", "high", "low", "close"]].to_numpy()
    assert (prices > 0).all() and (o["volume"] > 0).all()
    assert (o["low"] <= np.minimum(o["open"], o["close"])).all()
    assert (o["high"] >= np.maximum(o["open"], o["close"])).all()
    assert (o["high"] / o["low"]).max() < 1.5
    assert np.abs(np.diff(np.log(o["close"].to_numpy()))).max() < 0.4
    # a continuous market: each bar opens exactly at the previous hour's close
    consecutive = (ts.diff() == pd.Timedelta(hours=1)).to_numpy()
    assert consecutive.sum() > 52_500
    assert np.array_equal(o["open"].to_numpy()[consecutive], o["close"].to_numpy()[np.roll(consecutive, -1)])


def test_project_validator_accepts_it(market: DemoMarket) -> None:
    from btc_assets.ingestion.validation import validate_funding, validate_ohlcv

    o, f = market.ohlcv, market.funding
    out, _, report = validate_ohlcv(o, np.arange(1, len(o) + 1), "demo")
    assert len(out) == len(o) and report.rows_out == len(o)
    out, _, _ = validate_funding(f, np.arange(1, len(f) + 1), "demo")
    assert len(out) == len(f)


def test_regime_chain_is_sticky_with_realistic_durations(market: DemoMarket) -> None:
    _, lengths, codes = _runs(market.regimes.cat.codes.to_numpy())
    means = {name: lengths[codes == k].mean() for k, name in enumerate(DEMO_REGIMES)}
    for name in ("calm", "trend_up", "trend_down", "chop"):
        assert 48 <= means[name] <= 720, (name, means[name])  # days to weeks
    assert 2 <= means["crash"] <= 72, means["crash"]  # hours to a few days
    assert means["crash"] < 0.3 * min(means[n] for n in DEMO_REGIMES if n != "crash")
    assert (codes == DEMO_REGIMES.index("crash")).sum() >= 5
    p = demo_transition_matrix()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert (np.diag(p) > 0.9).all()


def test_regimes_have_their_own_drift_and_volatility(full: pd.DataFrame) -> None:
    g = full.groupby("regime", observed=True)["ret"]
    vol, drift = g.apply(lambda r: r.abs().mean()), g.mean()
    assert vol["calm"] < min(vol["trend_up"], vol["trend_down"], vol["chop"])
    assert vol["crash"] > 2.0 * max(vol["trend_up"], vol["trend_down"], vol["chop"])
    assert drift["trend_up"] > 2e-4 and drift["trend_down"] < -2e-4 and drift["crash"] < -2e-3
    assert abs(drift["calm"]) < 2e-4 and abs(drift["chop"]) < 2e-4


def test_chop_mean_reverts_to_its_entry_level(market: DemoMarket, full: pd.DataFrame) -> None:
    codes = market.regimes.cat.codes.to_numpy()
    x_open = np.log(full["open"].to_numpy())
    starts, lengths, run_codes = _runs(codes)
    dev, nxt = [], []
    chop = run_codes == DEMO_REGIMES.index("chop")
    for s, n in zip(starts[chop], lengths[chop], strict=True):
        level = x_open[s]  # the level at which this chop episode began
        dev.append(x_open[s + 1 : s + n] - level)
        nxt.append(full["ret"].to_numpy()[s + 1 : s + n])
    dev_a, nxt_a = np.concatenate(dev), np.concatenate(nxt)
    ok = np.isfinite(dev_a) & np.isfinite(nxt_a)
    assert ok.sum() > 3_000
    assert np.corrcoef(dev_a[ok], nxt_a[ok])[0, 1] < -0.05


def test_heavy_tails_and_volatility_clustering(full: pd.DataFrame) -> None:
    r = full["ret"].dropna().to_numpy()
    assert stats.kurtosis(r) > 4.0  # excess kurtosis; a Gaussian has 0
    a = np.abs(r - r.mean())
    acf = np.array([np.corrcoef(a[:-lag], a[lag:])[0, 1] for lag in range(1, 25)])
    assert (acf > 0.05).all() and acf.mean() > 0.1, acf.round(3)


def test_volatility_seasonality(full: pd.DataFrame) -> None:
    ts = full.index
    weekday = ts.day_of_week < 5
    absr = full["ret"].abs()
    us_hours = absr[weekday & (ts.hour >= 13) & (ts.hour <= 17)].mean()
    asia_night = absr[weekday & (ts.hour >= 1) & (ts.hour <= 5)].mean()
    weekend = absr[~weekday].mean()
    assert us_hours > 1.25 * weekend
    assert us_hours > 1.2 * asia_night
    assert absr[weekday].mean() > 1.1 * weekend


@pytest.mark.parametrize("seed", [DemoMarketSpec().seed, 1, 2])
def test_prices_stay_btc_like(seed: int) -> None:
    m = generate_demo_market(DemoMarketSpec(seed=seed))
    close = m.ohlcv["close"]
    assert m.ohlcv["low"].min() > 1_000 and m.ohlcv["high"].max() < 300_000
    assert close.max() / close.min() > 3  # the market goes somewhere over six years
    r = np.log(m.ohlcv["close"] / m.ohlcv["open"]).to_numpy()
    assert np.abs(r).max() < 0.16
    assert (np.abs(r) > 0.1).mean() < 1e-3


def test_intrabar_range_and_volume(full: pd.DataFrame) -> None:
    d = full.dropna()
    hl = np.log(d["high"] / d["low"])
    by_regime = hl.groupby(d["regime"], observed=True).mean()
    assert by_regime["crash"] > 2.5 * by_regime["calm"]
    assert stats.spearmanr(hl, d["ret"].abs()).statistic > 0.4
    assert ((hl - d["ret"].abs()) > 0).mean() > 0.95  # some excursion beyond the body on almost every bar
    log_v = np.log(d["volume"])
    assert abs(stats.skew(log_v)) < 0.5  # log-normal
    assert stats.spearmanr(d["volume"], d["ret"].abs()).statistic > 0.3


def test_funding_schedule_and_co_movement(market: DemoMarket, full: pd.DataFrame) -> None:
    f = market.funding.set_index("timestamp")["funding_rate"]
    ts = f.index
    assert set(ts.hour) == {0, 8, 16} and (ts == ts.floor("h")).all()
    assert (np.diff(ts.asi8) == 8 * 3_600_000).all()
    assert len(f) == pytest.approx(HOURS_6Y / 8, abs=2)
    assert np.abs(f).max() <= 0.003
    assert 5e-5 < f.mean() < 3e-4 and f.std() > 1e-4
    trailing = np.log(full["close"].shift(1) / full["open"].shift(8)).reindex(ts)
    ok = trailing.notna()
    assert np.corrcoef(f[ok], trailing[ok])[0, 1] > 0.3
    regime_before = market.regimes.shift(1).reindex(ts)
    by_regime = f.groupby(regime_before.to_numpy()).mean()
    assert by_regime["trend_up"] > 2e-4
    assert by_regime["trend_down"] < 0 and by_regime["crash"] < by_regime["trend_down"]


def test_outages_are_absent_rows_and_do_not_move_prices() -> None:
    spec = DemoMarketSpec(years=1.0, n_outages=3, seed=11)
    m = generate_demo_market(spec)
    grid = pd.date_range(m.regimes.index[0], periods=len(m.regimes), freq="h", tz="UTC", unit="ms")
    assert m.regimes.index.equals(grid)
    missing = grid.difference(pd.DatetimeIndex(m.ohlcv["timestamp"]))
    _, lengths, _ = _runs(np.cumsum(np.r_[0, np.diff(missing.asi8) != 3_600_000]))
    assert len(lengths) == 3 and ((lengths >= 1) & (lengths <= 6)).all()
    assert len(m.ohlcv) + len(missing) == len(grid)
    no_gaps = generate_demo_market(DemoMarketSpec(years=1.0, n_outages=0, seed=11))
    assert len(no_gaps.ohlcv) == len(grid)
    same = no_gaps.ohlcv.set_index("timestamp").loc[m.ohlcv["timestamp"]].reset_index()
    pd.testing.assert_frame_equal(same, m.ohlcv, check_exact=True)


@pytest.mark.parametrize(
    "bad",
    [{"years": 0.0}, {"start_price": -1.0}, {"funding_interval_hours": 5}, {"n_outages": -1}],
)
def test_rejects_bad_specs(bad: dict) -> None:
    with pytest.raises(ValueError):
        generate_demo_market(DemoMarketSpec(**bad))


def test_other_funding_interval() -> None:
    f = generate_demo_market(DemoMarketSpec(years=0.1, funding_interval_hours=4)).funding
    assert set(f["timestamp"].dt.hour) == {0, 4, 8, 12, 16, 20}


# The frames' content hashes (``frame_hash``) before the perp was added: the perp's own random stream must leave the
# spot bars, the funding and the regimes exactly as they were. Recorded on a CPU without AVX-512: the hashes recorded
# earlier on one with it (default 21678dec…, structureless 932d5217…) differ, and numpy's float64 exp and log have
# AVX-512 code paths, so the generator now takes them from the C library (``demo._libm``).
PRE_PERP_HASHES = {
    "default": (
        "6170a1e7580436dbbd8a8979b14b9b3d7aa312339c2307f7b1d6ed6e77ff336e",
        "e63c24d1f9b0d5b159c1921070c21a5f8b8f035c6d731ab4d9ec91c3c1e14e2f",
    ),
    "structureless": (
        "7fbbdc27f7108987fcd446e580a9e76680256fe7ec42392e3cdb23daa8ed8154",
        "fa92322993214f4566fd5905df75bcea686ab2084e4c44dc34819fc1a96e7bbf",
    ),
}


def _basis(m: DemoMarket) -> pd.Series:
    spot = m.ohlcv.set_index("timestamp")["close"]
    return (m.perp.set_index("timestamp")["close"] / spot.reindex(m.perp["timestamp"]) - 1.0).dropna()


def test_spot_and_funding_unchanged_by_the_perp(market: DemoMarket) -> None:
    from btc_assets.ingestion import frame_hash

    null = generate_demo_market(DemoMarketSpec(structureless=True))
    for name, m in (("default", market), ("structureless", null)):
        assert (frame_hash(m.ohlcv), frame_hash(m.funding)) == PRE_PERP_HASHES[name], name
    later = generate_demo_market(DemoMarketSpec(perp_listing_days=600.0))
    pd.testing.assert_frame_equal(later.ohlcv, market.ohlcv, check_exact=True)
    pd.testing.assert_frame_equal(later.funding, market.funding, check_exact=True)
    # the perp's draws do not depend on its listing: the later listing is the same series, cut later
    tail = market.perp.loc[market.perp["timestamp"] >= later.perp["timestamp"].iloc[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(later.perp, tail, check_exact=True)


def test_perp_bars(market: DemoMarket) -> None:
    from btc_assets.ingestion.validation import validate_ohlcv

    perp, spot = market.perp, market.ohlcv
    assert tuple(perp.columns) == OHLCV_COLUMNS and str(perp["timestamp"].dtype) == TS_DTYPE
    assert all(perp[c].dtype == np.float64 for c in OHLCV_COLUMNS[1:])
    # listed 270 days after spot starts (the real perp came two years after spot), then every spot hour
    assert perp["timestamp"].iloc[0] == pd.Timestamp("2019-01-01", tz="UTC") + pd.Timedelta(days=270)
    assert perp["timestamp"].isin(spot["timestamp"]).all()
    assert (
        spot.loc[spot["timestamp"] >= perp["timestamp"].iloc[0], "timestamp"]
        .reset_index(drop=True)
        .equals(perp["timestamp"])
    )
    out, _, report = validate_ohlcv(perp, np.arange(1, len(perp) + 1), "demo perp", perp=True)
    assert len(out) == len(perp) and report.flagged == {}  # no placeholder or no-trade bar in it
    consecutive = (perp["timestamp"].diff() == pd.Timedelta(hours=1)).to_numpy()
    assert np.array_equal(perp["open"].to_numpy()[consecutive], perp["close"].to_numpy()[np.roll(consecutive, -1)])
    assert (perp["volume"] > spot["volume"].median()).mean() > 0.8
    # the basis: a few bps, mean-reverting, occasionally wider
    b = _basis(market)
    assert abs(b.mean()) < 2e-4 and 1e-4 < b.std() < 1e-3
    assert b.autocorr(1) > 0.8 and b.abs().max() > 5 * b.std()
    regime = market.regimes.reindex(b.index)
    assert b[regime == "crash"].std() > 2 * b[regime == "calm"].std()
    again = generate_demo_market()
    pd.testing.assert_frame_equal(again.perp, perp, check_exact=True)


def test_structureless_perp_basis_is_iid_noise() -> None:
    null = generate_demo_market(DemoMarketSpec(structureless=True))
    b = _basis(null)
    assert len(b) > 40_000 and abs(b.mean()) < 1e-5 and 1e-4 < b.std() < 1e-3
    assert abs(b.autocorr(1)) < 0.03
    regime = null.regimes.reindex(b.index)
    assert abs(b[regime == "trend_up"].mean() - b[regime == "crash"].mean()) < 3e-5


def test_short_market_may_end_before_the_perp_lists() -> None:
    m = generate_demo_market(DemoMarketSpec(years=0.1))
    assert m.perp.empty and tuple(m.perp.columns) == OHLCV_COLUMNS
    with pytest.raises(ValueError):
        generate_demo_market(DemoMarketSpec(perp_listing_days=-1.0))
