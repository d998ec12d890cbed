"""Churn and cost drag on the real data: the default ``moe_portfolio`` and, given a finished study, the optimised
seeds out of sample. Target (issue 13): each turns over < 50× equity a year and pays < 3 %/yr in costs.

The chain (volatility, regimes, default expert signals) is computed at the ``full`` profile's settings on the real
spot, funding and perp files, as ``btc-assets run --profile full`` does; the portfolio then runs at the default
``PortfolioSettings`` and at the old policy (next-hour leverage volatility, band 0.2 only) for comparison. With
``--home DIR`` (a ``BTC_ASSETS_HOME`` whose seeds were optimised, e.g. ``bench_full_profile.py --keep``) every
seed's stitched out-of-sample book (``wfa_results``) is measured too. Costs: fees + slippage + borrowing + funding
paid, per year, as fractions of equity (``portfolio_metrics``' ``cost_drag``).

Run: python3 benchmarks/bench_churn.py [--home DIR]   (needs ../shared/data; the chain takes a few minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd
from reference import real_market_bars

TURNOVER_TARGET = 50.0
COST_TARGET = 0.03


def verdict(turnover: float, cost: float) -> str:
    ok = turnover < TURNOVER_TARGET and cost < COST_TARGET
    return "meets the target" if ok else "MISSES the target"


def default_portfolio() -> None:
    from btc_assets import experts
    from btc_assets.config import PROFILES
    from btc_assets.portfolio.tables import compute_portfolio, prepare_inputs
    from btc_assets.regimes import compute_regimes
    from btc_assets.volatility import compute_volatility

    profile = PROFILES["full"]
    start = time.perf_counter()
    bars = real_market_bars()
    vol = compute_volatility(bars, profile.schedule, profile.volatility)
    probs = compute_regimes(bars, vol, profile.schedule, profile.regimes).probabilities
    arrays = experts.BarArrays.from_market_bars(bars)
    positions = experts.expert_positions(arrays, experts.DEFAULT_CONFIGS)
    signals = pd.DataFrame(positions, columns=list(experts.EXPERT_NAMES))
    print(f"chain on the real data (spot + funding + perp): {time.perf_counter() - start:.0f} s")
    settings = profile.portfolio
    old = dataclasses.replace(settings, vol_forecast="next_hour", band_rel=0.0, decision_hours=1)
    for label, s in (("default policy", settings), ("old policy (next-hour sigma, band only)", old)):
        run = compute_portfolio(prepare_inputs(bars, vol, probs, signals, s), s)
        for row in ("strategy", "vol_targeted_buy_and_hold"):
            m = run.metrics.loc[row]
            name = "moe_portfolio" if row == "strategy" else row
            print(
                f"{label:40s} {name:26s} turnover {m['turnover_annual']:6.1f}×/yr  costs {m['cost_drag']:6.2%}/yr"
                f"  CAGR {m['cagr']:7.2%}  Sharpe {m['sharpe']:5.2f}"
                + (f"  -> {verdict(m['turnover_annual'], m['cost_drag'])}" if row == "strategy" else "")
            )


def optimised_seeds(home: Path) -> None:
    from btc_assets.portfolio.metrics import frame_metrics

    folder = home / "warehouse" / "wfa_results"
    parts = sorted(folder.glob("partition=*/data.parquet"))
    if not parts:
        raise SystemExit(f"no wfa_results partitions under {folder}")
    rows = []
    for part in parts:
        frame = pd.read_parquet(part).set_index("timestamp")
        m = frame_metrics(frame)
        rows.append(
            {
                "seed": part.parent.name.removeprefix("partition="),
                "turnover": m["turnover_annual"],
                "cost_drag": m["cost_drag"],
                "cagr": m["cagr"],
                "sharpe": m["sharpe"],
            }
        )
    table = pd.DataFrame(rows).set_index("seed")
    print(table.to_string(float_format="%.3f"))
    worst_turn, worst_cost = table["turnover"].max(), table["cost_drag"].max()
    meets = int(((table["turnover"] < TURNOVER_TARGET) & (table["cost_drag"] < COST_TARGET)).sum())
    print(
        f"{len(table)} optimised seeds out of sample: turnover median {table['turnover'].median():.1f}×/yr "
        f"(max {worst_turn:.1f}), costs median {table['cost_drag'].median():.2%}/yr (max {worst_cost:.2%}); "
        f"{meets} of {len(table)} seeds meet the target"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, help="a BTC_ASSETS_HOME with optimised seeds (wfa_results)")
    args = parser.parse_args()
    print(f"targets: turnover < {TURNOVER_TARGET:.0f}× equity a year and costs < {COST_TARGET:.0%} a year")
    default_portfolio()
    if args.home:
        optimised_seeds(args.home)


if __name__ == "__main__":
    main()
