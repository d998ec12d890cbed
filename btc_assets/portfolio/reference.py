"""The plain, obviously-correct reference of the portfolio backtest: a slow pandas/python transcription of the
rules in :mod:`.engine`'s docstring, not used by the chain, only by the tests that hold the numba kernel
(:mod:`._kernel`) to it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from btc_assets.portfolio.engine import BookInputs, PortfolioParams, _as_params
from btc_assets.portfolio.layout import BAR_COLUMNS


def run_portfolio_reference(
    inputs: BookInputs,
    gating,
    params: PortfolioParams | np.ndarray,
    carry_col: int = -1,
    *,
    index=None,
    expert_names=None,
) -> pd.DataFrame:
    """Slow, literal transcription of the module docstring with pandas objects and Python floats (tests only).

    ``gating`` may also be one matrix per bar, shape (n, K, E): one run over concatenated pieces whose parameters
    differ, which the chained kernel runs (carried ``state``) are held to."""
    p = PortfolioParams.from_array(_as_params(params))
    experts = np.asarray(inputs.experts, dtype=float)
    if experts.ndim == 1:
        experts = experts.reshape(-1, 1)
    n, E = experts.shape
    names = [f"e{e}" for e in range(E)]
    bars = pd.DataFrame(
        {
            "open": np.asarray(inputs.open_, float),
            "close": np.asarray(inputs.close, float),
            "spot_open": np.asarray(inputs.spot_open, float),
            "spot_close": np.asarray(inputs.spot_close, float),
            "tradable": np.asarray(inputs.tradable, bool),
            "funding": np.asarray(inputs.funding, float),
            "sigma": np.asarray(inputs.sigma_hat, float),
            "slip_sigma": np.asarray(inputs.slip_sigma, float),
        }
    )
    X = pd.DataFrame(experts, columns=names)
    P = pd.DataFrame(np.asarray(inputs.probs, float))
    gating = np.asarray(gating, float)
    per_bar = gating.ndim == 3
    G = None if per_bar else pd.DataFrame(gating, columns=names)
    directional = [e for e in names if e != (names[carry_col] if carry_col >= 0 else None)]
    carry = names[carry_col] if carry_col >= 0 else None

    equity, peak, thr = 1.0, 1.0, 1.0
    d, c = 0.0, 0.0
    held_contrib = pd.Series(0.0, index=names)
    order: dict | None = None  # decided at the previous close: d, c, contributions, slippage rate
    ruined = False
    since, thr_at_fill = math.inf, 1.0  # the decision interval: closes since d's last fill, the throttle then
    since_c = math.inf  # and since the carry's
    rows: list[dict] = []
    for t in range(n):
        row = bars.iloc[t]
        turn = fee = slip = fund = ret = price = basis = borrow = carry_fee = carry_slip = 0.0
        if t > 0:
            prev = bars.iloc[t - 1]
            d_old, c_old = d, c
            if row["tradable"]:
                if order["d"] != d:
                    d = order["d"]
                    held_contrib = order["contrib"].copy()
                c = order["c"]
            turn = abs(d - d_old) + 2 * abs(c - c_old)
            if d != d_old:
                since, thr_at_fill = 0, thr
            if c != c_old:
                since_c = 0
            # fees per leg: the directional leg and the carry's perp leg at the perp rate, its spot leg at spot's
            carry_fee = abs(c - c_old) * (p.perp_fee_bps + p.spot_fee_bps) * 1e-4
            fee = abs(d - d_old) * p.perp_fee_bps * 1e-4 + carry_fee
            slip = turn * order["slip_rate"]
            carry_slip = 2 * abs(c - c_old) * order["slip_rate"]
            fund = -(d + c) * row["funding"]
            perp_gap, perp_bar = row["open"] / prev["close"] - 1, row["close"] / row["open"] - 1
            spot_gap, spot_bar = row["spot_open"] / prev["spot_close"] - 1, row["spot_close"] / row["spot_open"] - 1
            price = d_old * perp_gap + d * perp_bar
            basis = c_old * (perp_gap - spot_gap) + c * (perp_bar - spot_bar)  # long c perp, short c spot
            borrow = max(c, 0.0) * p.borrow_rate / 8760  # the short spot leg's margin interest, per hour
            ret = price + basis + fund - fee - slip - borrow
            equity = max(0.0, equity * (1 + ret))
            peak = max(peak, equity)
        since += 1
        since_c += 1
        dd = 1 - equity / peak
        ruined = ruined or equity < p.ruin_floor or equity <= 0
        if p.dd_max > 0:
            raw = min(1.0, max(p.k_min, 1 - dd / p.dd_max))
            thr = raw if (raw < thr or dd <= p.rearm * p.dd_max) else thr
        else:
            thr = 1.0

        pr = P.iloc[t]
        known = not pr.isna().any()
        if known:
            Gt = pd.DataFrame(gating[t], columns=names) if per_bar else G
            w = Gt.iloc[int(np.argmax(pr.to_numpy()))] if p.hard_switch else pr @ Gt
        else:
            w = pd.Series(np.nan, index=names)
        sig = row["sigma"]
        if p.vol_targeting:
            lev = min(p.lev_max, p.vol_target / sig) if sig > 0 else 0.0
            known = known and sig > 0
        else:
            lev = 1.0
        x = X.iloc[t].fillna(0.0)
        contrib = pd.Series(0.0, index=names)
        td = tc = 0.0
        if known and not ruined:
            contrib[directional] = w[directional] * x[directional] * (lev * thr)
            td = float((w[directional] * x[directional]).sum()) * (lev * thr)
            if abs(td) > p.lev_max:
                contrib = contrib * (p.lev_max / abs(td))
                td = float(np.sign(td)) * p.lev_max
            if carry is not None:
                tc = float(w[carry] * x[carry])
        gap_band = max(p.band, p.band_rel * abs(d))
        # the decision interval has passed, or a risk limit: the throttle's cut since the fill exceeds the band
        free = since >= p.decision_hours or abs(d) * (thr_at_fill - thr) > thr_at_fill * gap_band
        if td == 0 or (free and abs(td - d) > gap_band):
            order_d, order_contrib = td, contrib
        else:
            order_d, order_contrib = d, held_contrib.copy()
        cap = max(0.0, (p.lev_max - abs(order_d)) / 2)
        tc = min(cap, max(-cap, tc))
        free_c = since_c >= p.decision_hours
        trade_c = tc == 0 or abs(c) > cap or (free_c and abs(tc - c) > max(p.band, p.band_rel * abs(c)))
        order_c = tc if trade_c else c
        slip_sig = row["slip_sigma"]
        slip_bps = p.slip_bps + (0.0 if np.isnan(slip_sig) else p.slip_vol_coef * slip_sig)
        order = {"d": order_d, "c": order_c, "contrib": order_contrib, "slip_rate": slip_bps * 1e-4}

        rec = {
            "position": d,
            "carry_position": c,
            "turnover": turn,
            "fee_cost": fee,
            "slippage_cost": slip,
            "funding_pnl": fund,
            "bar_return": ret,
            "equity": equity,
            "drawdown": dd,
            "leverage": lev,
            "throttle": thr,
            "target_position": td,
            "target_carry": tc,
            "price_pnl": price,
            "basis_pnl": basis,
            "borrow_cost": borrow,
            "carry_fee_cost": carry_fee,
            "carry_slippage_cost": carry_slip,
        }
        shown = held_contrib.copy()
        if carry is not None:
            shown[carry] = c
        rec.update({f"contrib_{e}": shown[e] for e in names})
        rec.update({f"weight_{e}": w[e] for e in names})
        rows.append(rec)
    bar_cols = list(BAR_COLUMNS)
    out = pd.DataFrame(rows, columns=bar_cols + [f"contrib_{e}" for e in names] + [f"weight_{e}" for e in names])
    if n == 0:
        out = out.astype(float)
    out.index = index if index is not None else out.index
    out.insert(2, "gross_exposure", out["position"].abs() + 2 * out["carry_position"].abs())
    out.insert(3, "net_exposure", out["position"].to_numpy().copy())
    if expert_names is not None:
        out = out.rename(
            columns={
                f"{k}_{a}": f"{k}_{b}" for a, b in zip(names, expert_names, strict=True) for k in ("contrib", "weight")
            }
        )
    return out
