"""Volatility: realized estimators, the GARCH variance filter, walk-forward GARCH forecasts and their losses.

Real-data tests use ``../shared/data/btcusdt_1h.parquet`` put on the full hourly grid (NaN on missing hours) and
are skipped when it is absent.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from arch.univariate import GARCH, ConstantMean, StudentsT
from arch.utility.exceptions import DataScaleWarning

from btc_assets import volatility as vol
from btc_assets.config import VolatilitySettings
from btc_assets.folds import FoldSchedule

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PARQUET = DATA / "btcusdt_1h.parquet"
UTC = "UTC"
# Off-calendar walk-forward fold starts (as FoldSchedule makes them: first bar + warm-up + k * test).
FOLD_STARTS = tuple(pd.Timestamp(t, tz=UTC) for t in ("2019-08-17 04:00", "2021-02-13 04:00", "2023-08-12 16:00"))
TRAIN_WINDOW = 17_520
MIN_TRAIN = 2_000


# --------------------------------------------------------------------------------------------------------- helpers


def ohlc_frame(rows: list[tuple[float, float, float, float]], start: str = "2024-01-01") -> pd.DataFrame:
    ts = pd.date_range(start, periods=len(rows), freq="h", tz=UTC)
    return pd.DataFrame(rows, columns=["open", "high", "low", "close"]).assign(timestamp=ts)


def random_bars(n: int, seed: int = 0, start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    open_ = np.r_[30_000.0, close[:-1]] * np.exp(rng.normal(0, 0.0005, n))
    high = np.maximum(open_, close) * np.exp(rng.uniform(0, 0.004, n))
    low = np.minimum(open_, close) * np.exp(-rng.uniform(0, 0.004, n))
    ts = pd.date_range(start, periods=n, freq="h", tz=UTC)
    return pd.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low, "close": close})


def hand_estimators(bars: list[tuple[float, float, float, float]], prev_close: float) -> dict[str, float]:
    """The four estimators for one full window, written out term by term (annualised)."""
    ln = math.log
    closes = [prev_close] + [b[3] for b in bars]
    ret = [ln(closes[i + 1] / closes[i]) for i in range(len(bars))]
    overnight = [ln(b[0] / closes[i]) for i, b in enumerate(bars)]
    oc = [ln(b[3] / b[0]) for b in bars]
    rs = [ln(b[1] / b[3]) * ln(b[1] / b[0]) + ln(b[2] / b[3]) * ln(b[2] / b[0]) for b in bars]
    n = len(bars)
    park = sum(ln(b[1] / b[2]) ** 2 for b in bars) / (4 * ln(2) * n)
    gk = sum(0.5 * ln(b[1] / b[2]) ** 2 - (2 * ln(2) - 1) * ln(b[3] / b[0]) ** 2 for b in bars) / n
    k = 0.34 / (1.34 + (n + 1) / (n - 1))
    yz = statistics.variance(overnight) + k * statistics.variance(oc) + (1 - k) * sum(rs) / n
    year = 24 * 365
    return {
        "rv_cc": math.sqrt(statistics.variance(ret) * year),
        "rv_parkinson": math.sqrt(park * year),
        "rv_gk": math.sqrt(gk * year),
        "rv_yz": math.sqrt(yz * year),
    }


def simulate_garch(n: int, omega: float, alpha: float, beta: float, nu: float, seed: int = 1):
    """GARCH(1,1) with standardised Student-t shocks; returns (r, h) with h[t] the variance of r[t]."""
    rng = np.random.default_rng(seed)
    shocks = rng.standard_t(nu, n) * math.sqrt((nu - 2) / nu)
    r, h = np.empty(n), np.empty(n)
    var = omega / (1 - alpha - beta)
    for t in range(n):
        h[t] = var
        r[t] = math.sqrt(var) * shocks[t]
        var = omega + alpha * r[t] ** 2 + beta * var
    return r, h


# --------------------------------------------------------------------------------------------- realized volatility


def test_realized_estimators_match_hand_computation() -> None:
    rows = [
        (100.0, 101.0, 99.5, 100.5),
        (100.6, 102.0, 100.1, 101.7),
        (101.6, 101.9, 99.0, 99.4),
        (99.5, 100.8, 98.7, 100.2),
        (100.1, 100.3, 97.9, 98.0),
        (98.1, 99.9, 97.6, 99.8),
    ]
    bars = ohlc_frame(rows)
    out = vol.realized_volatility(bars, window=4, min_periods=3)
    assert list(out.columns) == list(vol.REALIZED_COLUMNS)
    assert out.index.equals(bars.index)
    for t in (4, 5):
        expected = hand_estimators(rows[t - 3 : t + 1], prev_close=rows[t - 4][3])
        for name, value in expected.items():
            assert out[name].iloc[t] == pytest.approx(value, rel=1e-12), (t, name)
    # Rows 0-1 have fewer than 3 valid terms; row 2 has two returns (row 0 has no previous close) -> still NaN.
    assert out["rv_cc"].iloc[:3].isna().all() and out["rv_parkinson"].iloc[:2].isna().all()
    assert out["rv_parkinson"].iloc[2] == pytest.approx(
        math.sqrt(sum(math.log(h / lo) ** 2 for _, h, lo, _ in rows[:3]) / (4 * math.log(2) * 3) * 8760), rel=1e-12
    )


def test_realized_estimators_skip_missing_bars() -> None:
    rows = [
        (100.0, 101.0, 99.5, 100.5),
        (100.6, 102.0, 100.1, 101.7),
        (101.6, 101.9, 99.0, 99.4),
        (99.5, 100.8, 98.7, 100.2),
        (100.1, 100.3, 97.9, 98.0),
        (98.1, 99.9, 97.6, 99.8),
        (99.7, 100.9, 99.1, 100.4),
    ]
    bars = ohlc_frame(rows)
    bars.loc[4, ["open", "high", "low", "close"]] = np.nan  # a missing hour
    out = vol.realized_volatility(bars, window=5, min_periods=2)
    # Window rows 2..6 at t=6: valid returns are rows 2, 3 and 6 (row 5's previous close is missing).
    closes = [r[3] for r in rows]
    ret = [math.log(closes[2] / closes[1]), math.log(closes[3] / closes[2]), math.log(closes[6] / closes[5])]
    assert out["rv_cc"].iloc[6] == pytest.approx(math.sqrt(statistics.variance(ret) * 8760), rel=1e-12)
    hl = [math.log(rows[i][1] / rows[i][2]) ** 2 for i in (2, 3, 5, 6)]
    assert out["rv_parkinson"].iloc[6] == pytest.approx(math.sqrt(sum(hl) / (4 * math.log(2) * 4) * 8760), rel=1e-12)
    assert out.iloc[4].notna().all()  # the missing bar's own row still has a (trailing) value
    assert np.isfinite(out.to_numpy()[2:]).all()


def test_realized_estimators_are_trailing() -> None:
    bars = random_bars(400, seed=3)
    bars.loc[[50, 51, 200], ["open", "high", "low", "close"]] = np.nan
    window, t = 24, 250
    base = vol.realized_volatility(bars, window=window)
    changed = bars.copy()
    changed.loc[t + 1 :, ["open", "high", "low", "close"]] *= 1.3
    changed.loc[t + 1 :, "high"] *= 1.02
    moved = vol.realized_volatility(changed, window=window)
    assert np.array_equal(base.iloc[: t + 1].to_numpy(), moved.iloc[: t + 1].to_numpy(), equal_nan=True)
    assert not np.array_equal(base.iloc[t + 1 :].to_numpy(), moved.iloc[t + 1 :].to_numpy(), equal_nan=True)
    # The value at t depends only on rows t-window+1..t (and the close just before them, for returns).
    window_only = vol.realized_volatility(bars.iloc[t - window : t + 1].reset_index(drop=True), window=window)
    np.testing.assert_allclose(base.iloc[t].to_numpy(), window_only.iloc[-1].to_numpy(), rtol=1e-10)


@pytest.mark.realdata
def test_realized_estimators_on_real_data(real_grid: pd.DataFrame) -> None:
    rv = vol.realized_volatility(real_grid.reset_index(), window=24)
    assert rv.notna().mean().min() > 0.99
    medians = rv.median()
    assert ((medians > 0.2) & (medians < 1.5)).all(), medians  # annualised BTC volatility
    ratio = (rv["rv_parkinson"] / rv["rv_cc"]).median()
    assert 0.7 < ratio < 1.4
    assert np.log(rv).corr().to_numpy().min() > 0.85


# ------------------------------------------------------------------------------------------------- variance filter


@pytest.mark.parametrize("gamma", [0.0, 0.07])
def test_numba_filter_equals_reference(gamma: float) -> None:
    rng = np.random.default_rng(5)
    eps = rng.standard_t(4, 5_000)
    eps[rng.choice(5_000, 40, replace=False)] = np.nan
    args = (0.8, 0.02, 0.06, gamma, 0.9)
    fast = vol.garch_filter(eps, *args)
    ref = vol.garch_filter_reference(eps, *args)
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=0)
    # A missing bar is no news: the next variance is ω + α h + β h, with no leverage term.
    t = int(np.flatnonzero(np.isnan(eps))[3])
    assert ref[t] == pytest.approx(0.02 + (0.06 + 0.9) * ref[t - 1], rel=1e-15)
    t = int(np.flatnonzero(eps[1:] < 0)[0]) + 1
    assert ref[t] == pytest.approx(0.02 + (0.06 + gamma) * eps[t] ** 2 + 0.9 * ref[t - 1], rel=1e-14)


def test_filter_reproduces_arch_recursion() -> None:
    r, _ = simulate_garch(6_000, omega=0.02, alpha=0.07, beta=0.9, nu=5.0)
    res = ConstantMean(r, volatility=GARCH(1, 1, 1), distribution=StudentsT()).fit(disp="off")
    mu, omega, alpha, gamma, beta = res.params.to_numpy()[:5]
    h0 = vol.initial_variance(vol.arch_backcast(r - r.mean()), omega, alpha, gamma, beta)
    h_next = vol.garch_filter(r - mu, h0, omega, alpha, gamma, beta)
    arch_h = np.asarray(res.conditional_volatility) ** 2
    assert arch_h[0] == pytest.approx(h0, rel=1e-12)
    np.testing.assert_allclose(h_next[:-1], arch_h[1:], rtol=1e-10)


def test_seasonal_profile_recovers_pattern() -> None:
    index = pd.date_range("2024-01-01", periods=168 * 200, freq="h", tz=UTC)
    how = vol.hour_of_week(index)
    truth = 1.0 + 0.6 * np.sin(2 * np.pi * how / 24) ** 2 + 0.3 * (how >= 120)  # intraday + weekend shape
    r = 0.01 * truth * np.random.default_rng(2).standard_normal(len(index))
    r[::97] = np.nan
    profile = vol.seasonal_profile(r, how)
    assert profile.shape == (168,) and np.mean(profile**2) == pytest.approx(1.0, rel=1e-12)
    true_profile = truth[:168] / np.sqrt(np.mean(truth[:168] ** 2))
    assert np.corrcoef(profile, true_profile)[0, 1] > 0.9
    assert np.abs(profile / true_profile - 1).mean() < 0.1


# ---------------------------------------------------------------------------------------------- GARCH (synthetic)


def test_refit_schedule() -> None:
    index = pd.date_range("2020-01-01", "2020-06-30 23:00", freq="h", tz=UTC)
    observed = np.ones(len(index), dtype=bool)
    observed[100:400] = False
    points = [
        pd.Timestamp("2020-03-15 12:30", tz=UTC),
        pd.Timestamp("2020-04-01", tz=UTC),
        pd.Timestamp("2020-08-01", tz=UTC),
        "2020-05-20 06:00",
    ]
    schedule = vol.refit_schedule(index, observed, "MS", points, train_window=1_500, min_train=1_200)
    times = [p for p, _, _ in schedule]
    # Feb 1 has 744 bars before it (300 missing); Mar 1: 1440 bars, 1140 observed < 1200; Aug 1 is past the end.
    assert times == [
        pd.Timestamp(t, tz=UTC)
        for t in ("2020-03-15 12:30", "2020-04-01", "2020-05-01", "2020-05-20 06:00", "2020-06-01")
    ]
    for point, row, start in schedule:
        assert index[row] >= point > index[row - 1]
        assert row - start <= 1_500 and observed[start:row].sum() >= 1_200
    assert vol.refit_schedule(index, observed, None, [], 1_500, 1_200) == []


def test_horizon_variance_is_archs_multi_step_forecast() -> None:
    """Without seasonality, sigma_horizon² is the mean of arch's analytic 1…H-step variance forecasts."""
    r, _ = simulate_garch(6_000, omega=0.02, alpha=0.07, beta=0.9, nu=5.0, seed=3)
    res = ConstantMean(r, volatility=GARCH(1, 0, 1), distribution=StudentsT()).fit(disp="off")
    _, omega, alpha, beta = res.params.to_numpy()[:4]
    fc = res.forecast(horizon=24, start=5_000, reindex=False).variance.to_numpy()  # rows: origins 5000 …
    persistence = alpha + beta
    got = vol.horizon_variance(
        fc[:, 0],
        np.zeros(len(fc), dtype=np.int64),
        np.ones(vol.HOURS_PER_WEEK),
        persistence,
        omega / (1 - persistence),
        24,
    )
    np.testing.assert_allclose(got, fc.mean(axis=1), rtol=1e-10)
    one = vol.horizon_variance(
        fc[:, 0],
        np.zeros(len(fc), dtype=np.int64),
        np.ones(vol.HOURS_PER_WEEK),
        persistence,
        omega / (1 - persistence),
        1,
    )
    np.testing.assert_allclose(one, fc[:, 0], rtol=1e-14)


def test_sigma_horizon_averages_the_seasonal_factor() -> None:
    """Horizon 1 is the next hour's forecast itself; horizon 24 damps the intraday swing of the seasonal factor."""
    r, _ = simulate_garch(8_000, omega=4e-7, alpha=0.06, beta=0.92, nu=6.0, seed=5)
    index = pd.date_range("2021-01-04", periods=len(r), freq="h", tz=UTC)
    season = 1 + 0.5 * np.sin(2 * np.pi * index.hour.to_numpy() / 24)
    returns = pd.Series(r * season, index=index)
    kwargs = dict(refit_every=None, refit_points=[index[5_000]], train_window=None)
    one = vol.garch_forecast(returns, horizon=1, **kwargs)
    day = vol.garch_forecast(returns, horizon=24, **kwargs)
    np.testing.assert_allclose(one["sigma_horizon"], one["sigma"], rtol=1e-12)
    test = slice(5_200, None)

    def intraday_swing(s: pd.Series) -> float:
        by_hour = s.iloc[test].groupby(index[test].hour).median()
        return float(by_hour.max() / by_hour.min())

    assert intraday_swing(one["sigma"]) > 2.0 and intraday_swing(day["sigma_horizon"]) < 1.1
    assert day["sigma_horizon"].iloc[:5_000].isna().all() and day["sigma_horizon"].iloc[5_000:].notna().all()


def test_garch_recovers_simulated_parameters_and_volatility() -> None:
    omega, alpha, beta, nu = 4e-7, 0.08, 0.9, 5.0
    r, h = simulate_garch(24_000, omega, alpha, beta, nu, seed=11)
    index = pd.date_range("2021-01-01", periods=len(r), freq="h", tz=UTC)
    returns = pd.Series(r, index=index)
    returns.iloc[[500, 9_000, 9_001, 20_000]] = np.nan
    out = vol.garch_forecast(returns, refit_every=None, refit_points=[index[20_000]], train_window=None, seasonal=False)
    fit = vol.garch_refits(out).iloc[0]
    assert fit["alpha"] == pytest.approx(alpha, abs=0.02) and fit["beta"] == pytest.approx(beta, abs=0.03)
    assert 3.5 < fit["nu"] < 8 and fit["converged"]
    assert fit["uncond_vol"] == pytest.approx(math.sqrt(omega / (1 - alpha - beta) * 8760), rel=0.2)
    test = slice(20_000, len(r) - 1)
    forecast, truth = out["sigma_bar"].to_numpy()[test], np.sqrt(h[20_001:])
    assert np.corrcoef(forecast, truth)[0, 1] > 0.97
    assert np.median(forecast / truth) == pytest.approx(1.0, abs=0.05)
    np.testing.assert_allclose(out["sigma"], out["sigma_bar"] * math.sqrt(8760), rtol=1e-15)
    assert out["sigma"].iloc[:20_000].isna().all() and (out["refit_id"].iloc[:20_000] == -1).all()
    assert out["refit_time"].iloc[:20_000].isna().all() and (out["refit_time"].iloc[20_000:] == index[20_000]).all()


def test_garch_rejects_bad_input() -> None:
    index = pd.date_range("2021-01-01", periods=10, freq="h", tz=UTC)
    with pytest.raises(ValueError, match="hourly grid"):
        vol.garch_forecast(pd.Series(0.0, index=index.delete(4)))
    with pytest.raises(ValueError, match="vol"):
        vol.garch_forecast(pd.Series(0.0, index=index), vol="EGARCH")
    with pytest.raises(ValueError, match="dist"):
        vol.garch_forecast(pd.Series(0.0, index=index), dist="ged")


def test_forecast_losses_formula() -> None:
    index = pd.date_range("2021-01-01", periods=6, freq="h", tz=UTC)
    returns = pd.Series([0.01, -0.02, 0.0, 0.01, np.nan, 0.03], index=index)
    sigma = pd.Series([0.01, 0.02, 0.01, 0.015, 0.02, 0.01], index=index)
    out = vol.forecast_losses(sigma, returns, baseline_window=2, hac_lags=1)
    # Bar t is forecast at t-1: h_t = sigma_{t-1}², baseline = mean r² over bars t-2, t-1 (min 1 observed).
    # Bar 0 has no forecast, bar 4 no return: scored bars are 1, 2, 3, 5.
    h = {1: 1e-4, 2: 4e-4, 3: 1e-4, 5: 4e-4}
    base = {1: 1e-4, 2: 2.5e-4, 3: 2e-4, 5: 1e-4}
    r2 = {t: returns.iloc[t] ** 2 for t in h}
    assert out["n"] == 4
    assert out["qlike"] == pytest.approx(np.mean([math.log(h[t]) + r2[t] / h[t] for t in h]), rel=1e-12)
    assert out["qlike_baseline"] == pytest.approx(np.mean([math.log(base[t]) + r2[t] / base[t] for t in h]), rel=1e-12)
    assert out["qlike_diff"] == pytest.approx(out["qlike"] - out["qlike_baseline"], rel=1e-12)
    assert out["mse"] == pytest.approx(np.mean([(r2[t] - h[t]) ** 2 for t in h]), rel=1e-12)
    assert out["mse_baseline"] == pytest.approx(np.mean([(r2[t] - base[t]) ** 2 for t in h]), rel=1e-12)
    with pytest.raises(ValueError, match="index"):
        vol.forecast_losses(sigma.iloc[1:], returns)


def test_compute_volatility_table() -> None:
    bars = random_bars(24 * 200, seed=4, start="2023-01-01")
    bars.loc[[1_000, 1_001, 3_500], ["open", "high", "low", "close"]] = np.nan
    bars["missing"] = bars["close"].isna()
    schedule = FoldSchedule(warmup="120D", test="30D")
    table = vol.compute_volatility(bars, schedule, VolatilitySettings(train_window=2_400))
    assert list(table.columns) == ["timestamp", "log_return", *vol.REALIZED_COLUMNS, *vol.GARCH_COLUMNS]
    # NaN on the 3 missing bars and on the first bar after each of the 2 gaps (a multi-hour move)
    assert table.index[table["log_return"].isna()].tolist() == [1_000, 1_001, 1_002, 3_500, 3_501]
    assert table["log_return"].iloc[0] == 0.0
    refit_times = set(vol.garch_refits(table)["refit_time"])
    assert {f.test_start for f in schedule.folds_for(bars["timestamp"])} <= refit_times
    assert pd.Timestamp("2023-06-01", tz=UTC) in refit_times


# ---------------------------------------------------------------------------------------------- GARCH (real data)


@pytest.fixture(scope="module")
def real_grid() -> pd.DataFrame:
    if not PARQUET.exists():
        pytest.skip(f"real data not found at {PARQUET}")
    frame = pd.read_parquet(PARQUET).set_index("timestamp")
    grid = pd.date_range(frame.index[0], frame.index[-1], freq="h", unit=frame.index.unit)
    out = frame.reindex(grid)
    out.index.name = "timestamp"
    return out


@pytest.fixture(scope="module")
def real_returns(real_grid: pd.DataFrame) -> pd.Series:
    return np.log(real_grid["close"]).diff()  # NaN on missing hours and on the first bar after a gap


@pytest.fixture(scope="module")
def real_forecast(real_returns: pd.Series) -> tuple[pd.DataFrame, float]:
    """Default spec (GARCH, t, seasonal, monthly + fold refits, 2-year window) with DataScaleWarning as error."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataScaleWarning)
        out = vol.garch_forecast(real_returns, refit_points=FOLD_STARTS)
    return out, time.perf_counter() - start


@pytest.mark.realdata
def test_garch_real_refits_only_at_scheduled_points(real_returns: pd.Series, real_forecast) -> None:
    out, _ = real_forecast
    refits = vol.garch_refits(out)
    index = real_returns.index
    observed = real_returns.notna()
    months = pd.date_range(index[0].normalize(), index[-1], freq="MS")
    candidates = sorted({*months[months > index[0]], *FOLD_STARTS})
    expected = []
    for point in candidates:
        window = observed[(index < point) & (index >= point - pd.Timedelta(hours=TRAIN_WINDOW))]
        if window.sum() >= MIN_TRAIN:
            expected.append(point)
    assert list(refits["refit_time"]) == expected
    assert set(FOLD_STARTS) <= set(refits["refit_time"]) and len(refits) > 95
    assert (refits["train_end"] < refits["refit_time"]).all()
    assert (refits["train_start"] >= refits["refit_time"] - pd.Timedelta(hours=TRAIN_WINDOW)).all()
    assert (refits["n_obs"] >= MIN_TRAIN).all()
    # Row by row: refit k is in force from the first bar at/after its point until the next refit.
    starts = index.searchsorted(pd.DatetimeIndex(refits["refit_time"]))
    change = np.flatnonzero(np.diff(out["refit_id"].to_numpy())) + 1
    assert np.array_equal(change, starts)
    assert (out["refit_time"].iloc[starts].reset_index(drop=True) == refits["refit_time"]).all()
    assert out["sigma"].isna().to_numpy().nonzero()[0].max() == starts[0] - 1
    assert (out["refit_id"].iloc[: starts[0]] == -1).all()


@pytest.mark.realdata
def test_garch_real_parameters_plausible_and_fast(real_forecast) -> None:
    out, elapsed = real_forecast
    refits = vol.garch_refits(out)
    assert elapsed < 30, f"garch_forecast took {elapsed:.1f} s"
    assert refits["converged"].mean() > 0.9 and refits["warm_start"].mean() > 0.5
    assert (refits["omega"] > 0).all() and (refits["gamma"] == 0).all()
    assert refits["alpha"].between(0.01, 0.3).all() and refits["beta"].between(0.6, 0.999).all()
    # Hourly BTC sits at the integrated-GARCH boundary: α + β ≤ 1 up to SLSQP's constraint tolerance.
    assert (refits["persistence"] <= 1 + 1e-3).all() and refits["persistence"].median() > 0.95
    assert refits["alpha"].median() < 0.15 and refits["nu"].between(2.05, 10).all()
    assert ((refits["season_max"] > 1.3) & (refits["season_min"] < 0.8)).all()  # strong intraday seasonality
    sigma = out["sigma"].dropna()
    assert 0.2 < sigma.median() < 1.5 and np.isfinite(sigma).all()


@pytest.mark.realdata
def test_garch_beats_rolling_baseline_on_qlike(real_returns: pd.Series, real_forecast) -> None:
    out, _ = real_forecast
    losses = vol.forecast_losses(out["sigma_bar"], real_returns)
    assert losses["n"] > 70_000
    assert losses["qlike"] < losses["qlike_baseline"]
    assert losses["qlike_diff"] < -0.1 and losses["qlike_dm_t"] < -3
    assert losses["mse_ratio"] < 1.2


@pytest.mark.realdata
@pytest.mark.slow
def test_garch_real_causal_bit_exact_after_tail_perturbation(real_returns: pd.Series, real_forecast) -> None:
    out, _ = real_forecast
    cut = int(len(real_returns) * 0.7)
    noisy = real_returns.copy()
    noisy.iloc[cut:] += np.random.default_rng(9).normal(0, 0.01, len(noisy) - cut)
    moved = vol.garch_forecast(noisy, refit_points=FOLD_STARTS)
    assert np.array_equal(out["sigma"].to_numpy()[:cut], moved["sigma"].to_numpy()[:cut], equal_nan=True)
    assert np.array_equal(out["refit_id"].to_numpy(), moved["refit_id"].to_numpy())
    assert not np.array_equal(out["sigma"].to_numpy()[cut:], moved["sigma"].to_numpy()[cut:])
    a, b = vol.garch_refits(out), vol.garch_refits(moved)
    before = a["refit_time"] <= real_returns.index[cut]
    params = ["omega", "alpha", "beta", "nu", "mu", "scale"]
    assert a.loc[before, params].equals(b.loc[before, params])
    assert (a.loc[~before, "alpha"] != b.loc[~before, "alpha"]).all(), "later refits must see the perturbation"


@pytest.mark.realdata
def test_garch_refit_uses_only_data_before_its_point(real_returns: pd.Series) -> None:
    returns = real_returns["2019-01-01":"2021-03-31"]
    point = pd.Timestamp("2020-03-01", tz=UTC)
    kwargs = {"refit_points": [FOLD_STARTS[0]], "train_window": 8_760}
    out = vol.garch_forecast(returns, **kwargs)
    shocked = returns.copy()
    shocked[shocked.index >= point] *= np.random.default_rng(3).uniform(0.2, 3.0, (shocked.index >= point).sum())
    moved = vol.garch_forecast(shocked, **kwargs)
    row = returns.index.get_loc(point)
    assert np.array_equal(out["sigma"].to_numpy()[:row], moved["sigma"].to_numpy()[:row], equal_nan=True)
    assert not np.array_equal(out["sigma"].to_numpy()[row : row + 24], moved["sigma"].to_numpy()[row : row + 24])
    a, b = vol.garch_refits(out).set_index("refit_time"), vol.garch_refits(moved).set_index("refit_time")
    params = ["omega", "alpha", "beta", "nu", "mu", "scale", "season_max", "loglik"]
    assert a.loc[:point, params].equals(b.loc[:point, params])  # includes the refit at the point itself
    later = a.index > point
    assert later.sum() >= 12 and (a.loc[later, "loglik"] != b.loc[later, "loglik"]).all()


@pytest.mark.realdata
def test_gjr_skewt_selectable_and_well_scaled(real_returns: pd.Series) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataScaleWarning)
        out = vol.garch_forecast(
            real_returns, refit_every="QS", train_window=8_760, vol="GJR", dist="skewt", seasonal=False
        )
    refits = vol.garch_refits(out)
    assert len(refits) > 30 and refits["converged"].mean() > 0.9
    assert refits["gamma"].abs().max() > 0 and refits["gamma"].between(-0.2, 0.3).all()
    assert (refits["alpha"] + refits["gamma"] >= -1e-8).all()
    assert (refits["persistence"] <= 1 + 1e-3).all() and refits["nu"].between(2.05, 10).all()
    assert refits["lambda"].between(-0.5, 0.5).all()
    assert out.attrs["spec"]["vol"] == "gjr" and out.attrs["spec"]["dist"] == "skewt"


@pytest.mark.realdata
def test_unscaled_hourly_returns_would_trigger_data_scale_warning(real_returns: pd.Series) -> None:
    """The no-warning test above is not vacuous: raw hourly log returns are badly scaled for arch."""
    raw = real_returns.iloc[-3_000:].dropna().to_numpy()
    with pytest.warns(DataScaleWarning):
        ConstantMean(raw, volatility=GARCH(1, 0, 1), distribution=StudentsT()).fit(disp="off", show_warning=False)
