"""Volatility + regimes on the real 2017–2026 hourly BTC data, default (full-profile) settings.

Target (issue 3): both assets together in under a minute on 2 cores. Prints the wall time of each stage, the
GARCH refit count and the per-refit HMM fit times.

Run: python3 benchmarks/bench_regimes_volatility.py   (needs ../shared/data beside the checkout)
"""

from __future__ import annotations

import time
from pathlib import Path

from btc_assets.config import get_profile
from btc_assets.ingestion import build_market_bars, load_funding, load_ohlcv
from btc_assets.regimes import compute_regimes
from btc_assets.volatility import compute_volatility, garch_refits

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    profile = get_profile("full")
    bars = build_market_bars(
        load_ohlcv([DATA / "btcusdt_1h.parquet"]).frame, load_funding([DATA / "btcusdt_funding_8h.parquet"]).frame
    ).bars
    print(f"bars: {len(bars):,} hours, {len(profile.schedule.folds_for(bars['timestamp']))} folds")
    start = time.perf_counter()
    vol = compute_volatility(bars, profile.schedule, profile.volatility)
    t_vol = time.perf_counter() - start
    print(f"volatility: {t_vol:.1f} s ({len(garch_refits(vol))} GARCH refits)")
    start = time.perf_counter()
    fit = compute_regimes(bars, vol, profile.schedule, profile.regimes)
    t_reg = time.perf_counter() - start
    refits = fit.refits
    print(
        f"regimes: {t_reg:.1f} s for {len(refits)} refits (K={profile.regimes.n_states}, "
        f"{profile.regimes.covariance_type}, {profile.regimes.n_restarts} restarts on the first)"
    )
    for row in refits.itertuples():
        print(
            f"  fold {row.fold:2d}: {row.n_train:6d} bars, {row.iterations:3d} iterations, {row.seconds:5.2f} s, "
            f"BIC t-HMM {row.bic:.0f} vs Gaussian {row.gaussian_bic:.0f}; {row.phase_names}"
        )
    print(f"volatility + regimes: {t_vol + t_reg:.1f} s (target < 60 s)")


if __name__ == "__main__":
    main()
