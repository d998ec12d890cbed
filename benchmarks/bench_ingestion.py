"""Ingestion speed: validate the real 2017–2026 hourly BTC files and build the grid; generate the demo market.

Run: python3 benchmarks/bench_ingestion.py   (needs ../shared/data beside the checkout for the real part)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from btc_assets.ingestion import build_market_bars, load_funding, load_ohlcv
from btc_assets.ingestion.demo import generate_demo_market

T = TypeVar("T")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def best_of(n: int, fn: Callable[[], T]) -> tuple[float, T]:
    times: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out  # type: ignore[possibly-undefined]


def main() -> None:
    t, market = best_of(3, generate_demo_market)
    print(f"demo market: {len(market.ohlcv):,} bars, {len(market.funding):,} settlements in {t * 1000:.0f} ms")
    if not (DATA / "btcusdt_1h.parquet").exists():
        print(f"real data not found at {DATA}; skipped")
        return
    t_o, ohlcv = best_of(3, lambda: load_ohlcv([DATA / "btcusdt_1h.parquet"]))
    t_f, funding = best_of(3, lambda: load_funding([DATA / "btcusdt_funding_8h.parquet"]))
    t_b, built = best_of(3, lambda: build_market_bars(ohlcv.frame, funding.frame))
    print(
        f"real BTCUSDT: read+validate {len(ohlcv.frame):,} bars {t_o * 1000:.0f} ms; "
        f"funding {len(funding.frame):,} rows {t_f * 1000:.0f} ms; grid {len(built.bars):,} h {t_b * 1000:.0f} ms; "
        f"{len(built.gaps)} gaps / {int(built.gaps['hours'].sum())} missing hours"
    )


if __name__ == "__main__":
    main()
