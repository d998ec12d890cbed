"""The position to hold now: per seed, the orders its out-of-sample book decided at its last close.

Each seed's stitched out-of-sample book (``wfa_results``) runs its latest fold's parameters up to its last bar; at
that bar's close the engine decides the orders filled at the next open (``order_position`` / ``order_carry`` of
the last ``wfa_folds`` row: the rebalance policy applied, so they can differ from the raw targets). Those are the
positions to hold in the bar after it, in equity units (1 = 100 % of equity); the directional leg is a long
(positive) or short perp, the carry leg is long perp / short spot of the same notional. BTC amounts are for
``capital`` (USDT) at the latest close in ``market_bars`` (the perp's where it trades). Research advice, nothing
more: no order is sent.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from btc_assets.config import PortfolioSettings
from btc_assets.evaluation.summary import spread
from btc_assets.folds import out_of_sample
from btc_assets.portfolio.tables import price_arrays

STATS = ("median", "p05", "p95", "std")


def latest_positions(
    results: Mapping[str, pd.DataFrame],
    folds: Mapping[str, pd.DataFrame],
    bars: pd.DataFrame,
    regime_probabilities: pd.DataFrame,
    portfolio: PortfolioSettings,
    capital: float,
) -> pd.DataFrame:
    """One row per seed and one per statistic across the seeds (``row``: ``seed_00`` …, ``median``, ``p05``,
    ``p95``, ``std``). Columns: ``timestamp`` (the bar the position is for: one hour after the book's last bar),
    ``decided_at``, ``stale_hours`` (how far that bar lies behind the bar after the last one of ``bars``: 0 when the
    book is current), ``fold``, ``directional`` and ``carry`` (equity units), ``directional_btc`` and ``carry_btc``
    (BTC for ``capital``), ``perp_close`` and ``spot_close`` (the latest closes, the prices used),
    ``target_position`` and ``target_carry`` (before the rebalance policy), ``leverage``, ``throttle``, the gating
    weights at that close (``weight_<column>``) and the regime probabilities (``p_<k>``, the last fold's model,
    filtered)."""
    if not results:
        raise ValueError("no seed has out-of-sample results yet: materialise some wfa_results partitions first")
    if not capital > 0:
        raise ValueError(f"[position] capital must be positive, got {capital}")
    index = pd.DatetimeIndex(bars["timestamp"])
    prices = price_arrays(bars, portfolio)
    probs = out_of_sample(regime_probabilities).set_index("timestamp")
    p_columns = [c for c in probs.columns if c.startswith("p_")]
    now = index[-1] + pd.Timedelta(hours=1)
    perp, spot = float(prices.close[-1]), float(prices.spot_close[-1])  # the latest closes: what a trade costs now
    rows = []
    for seed in sorted(results):
        if not {"order_position", "order_carry"} <= set(folds[seed].columns):
            raise ValueError(
                f"{seed}: its wfa_folds has no order_position / order_carry (written by an older version): "
                "materialise the seed again"
            )
        book, last_fold = results[seed], folds[seed].iloc[-1]
        last = book.iloc[-1]
        decided_at = pd.Timestamp(last["timestamp"])
        if pd.Timestamp(last_fold["test_end"]) != decided_at + pd.Timedelta(hours=1):
            raise ValueError(f"{seed}: wfa_folds' last fold does not end at wfa_results' last bar ({decided_at})")
        if index.get_indexer([decided_at])[0] < 0:
            raise ValueError(f"{seed}: its last bar {decided_at} is not in market_bars")
        directional, carry = float(last_fold["order_position"]), float(last_fold["order_carry"])
        rows.append(
            {
                "row": seed,
                "timestamp": decided_at + pd.Timedelta(hours=1),
                "decided_at": decided_at,
                "stale_hours": (now - decided_at - pd.Timedelta(hours=1)) / pd.Timedelta(hours=1),
                "fold": int(last_fold["fold"]),
                "directional": directional,
                "carry": carry,
                "directional_btc": capital * directional / perp,
                "carry_btc": capital * carry / perp,
                "perp_close": perp,
                "spot_close": spot,
                "target_position": float(last["target_position"]),
                "target_carry": float(last["target_carry"]),
                "leverage": float(last["leverage"]),
                "throttle": float(last["throttle"]),
                **{c: float(last[c]) for c in book.columns if c.startswith("weight_")},
                **{c: float(probs.loc[decided_at, c]) if decided_at in probs.index else np.nan for c in p_columns},
            }
        )
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c not in ("row", "timestamp", "decided_at", "fold")]
    stats = spread(table[numeric], STATS).reset_index(names="row")
    for column in ("timestamp", "decided_at"):
        stats[column] = table[column].max()
    stats["fold"] = int(table["fold"].max())
    return pd.concat([table, stats[table.columns]], ignore_index=True)
