"""Volatility-targeted mixture-of-experts backtest on the hourly grid: a numba kernel and a pandas reference.

Units and conventions
* Bars t = 0 … n-1 are rows of the hourly grid. Equity starts at 1 (before bar 0) and compounds multiplicatively:
  equity_t = max(0, equity_{t-1} · (1 + r_t)). Bar 0 holds no position (r_0 = 0).
* Positions are exposures in units of equity (1.0 = notional equal to equity). A position is held as a *constant
  fraction* of equity between trades: the drift of the fraction within a bar is not traded nor charged, costs are
  paid only on changes of the target fraction.
* ``d`` is the directional (perp) position, priced on ``open_``/``close`` (the perp's own bars; the caller splices
  spot in where the perp did not trade yet). ``c`` is the carry position, signed as its perp leg: c < 0 is short
  perp + long spot (earns positive funding), c > 0 long perp + short spot (borrows the spot it sells). The carry
  has no directional exposure but is no perfect hedge: it earns the basis change, c·(perp return − spot return),
  with the spot leg priced on ``spot_open``/``spot_close``. Each leg pays its own venue's fee: the directional leg
  and the carry's perp leg ``perp_fee_bps``, the carry's spot leg ``spot_fee_bps`` (a carry trade moves 2·|Δc| of
  notional). A short spot leg (c > 0) pays ``borrow_rate`` (annual) / 8760 per hour on its notional c.
* Gross exposure = |d| + 2|c| (the notional of every leg), net exposure = d.

At the close of bar t (inputs at indices ≤ t and the equity at close t only)
1. Drawdown DD_t = 1 − equity_t / max_{s≤t} equity_s (the peak includes the initial equity 1).
2. Throttle (disabled, = 1, when dd_max ≤ 0): raw_t = min(1, max(k_min, 1 − DD_t/D_max)). Hysteresis: the throttle
   follows raw_t down at once (thr_t = min(thr_{t-1}, raw_t)); it may rise again (thr_t = raw_t) only once
   DD_t ≤ rearm · D_max. Initially thr = 1.
3. Gating weights w(t) = probs[t] @ gating (soft) or gating[argmax probs[t]] (hard; first maximum on ties).
   A row of ``probs`` with any NaN is unknown: both targets are 0 (flat).
4. Leverage lev_t = min(L_max, vol_target / sigma_hat_t) with vol targeting, 1 without. With vol targeting a
   NaN or non-positive sigma_hat_t means no position (both targets 0, lev_t reported as 0); without vol targeting
   sigma_hat is not used. ``sigma_hat`` is the caller's volatility for the holding horizon (the mixture passes
   ``PortfolioSettings.vol_forecast``'s: a daily-horizon forecast, not the next hour's).
5. Directional target d*_t = Σ_{e≠carry} w_e(t)·x_e(t) · lev_t · thr_t, clipped to ±L_max (x_e = experts[t, e],
   NaN read as 0: the expert abstains). The per-expert contributions w_e·x_e·lev·thr are scaled by the same clip
   factor, so they sum to d*_t.
6. Rebalance policy on d. A rebalance is *free* at the close of t when at least ``decision_hours`` closes have
   passed since d's last fill (counting the fill bar's own close; 1 = every bar; a fresh book is free), or when
   a risk limit demands it: the drawdown throttle has fallen since the close that sized the filled order
   (thr_fill → thr_t) by enough that it alone moves the position by more than the band, |d|·(thr_fill − thr_t) >
   thr_fill·max(band, band_rel·|d|). The new position is d*_t if d*_t == 0 (going flat is never held back)
   or, when free, |d*_t − d| > max(band, band_rel·|d|); otherwise d is kept.
7. Carry target c*_t = w_carry(t)·x_carry(t) (no leverage nor throttle), clipped to ±cap with
   cap = max(0, (L_max − |d_new|)/2) so that gross ≤ L_max (directional exposure has priority). Policy as in 6
   with the carry's own clock (closes since its last fill; no throttle, so no risk limit) and |c| in the relative
   band, and the carry is also traded whenever the current |c| exceeds cap.
8. Ruin: once equity_t < ruin_floor (fraction of initial equity) or equity_t ≤ 0, both targets are 0 from then on.

Carried state (one account over several runs): ``state`` (:func:`new_state`, ``S_*`` fields) is read at the start
and written at the end of a run. A fresh state is the flat book above (equity 1, throttle 1, no order, bar 0 earns
nothing). A state written by a run over bars ending at T, passed to a run starting at T + 1 h, continues that book:
equity, drawdown peak, throttle, positions, the pending order (with the slippage rate decided at the close of T),
the ruin flag, the last perp and spot closes and the decision interval's count carry over, so bar 0 fills the
pending order at its open and earns d_old·(open_0/close_T − 1) like any bar. Only the inputs (experts,
probabilities, gating) may change at the boundary; the rebalance this causes is charged like any trade. Chained
runs equal one run over the concatenated bars with the inputs of each piece, bit for bit.

Execution one bar after the signal: the new positions are filled at open_[t+1] if bar t+1 is tradable; otherwise
no trade happens on t+1 (positions and contributions carried) and the order is superseded by the one computed at the
close of t+1. With g = open_{t+1}/close_t − 1 and b = close_{t+1}/open_{t+1} − 1 (perp), g_s and b_s the same on
spot, bar t+1 earns
    price   = d_old·g + d_new·b
    basis   = c_old·(g − g_s) + c_new·(b − b_s)
    funding = −(d_new + c_new)·funding_{t+1}
    fees    = |Δd|·perp_fee + |Δc|·(perp_fee + spot_fee),   slippage = (|Δd| + 2|Δc|)·slip_bps_t·1e-4
    borrow  = max(c_new, 0)·borrow_rate / 8760
    r_{t+1} = price + basis + funding − fees − slippage − borrow
with slip_bps_t = slip_bps + slip_vol_coef·slip_sigma_t (``slip_sigma`` annualised, default ``sigma_hat``: the
hour-to-hour forecast with its seasonal factor belongs here; NaN adds nothing), known at the close of t.
``funding_{t+1}`` is the rate settled at the close of bar t+1: a long perp pays rate × notional. The two price
terms are added, not compounded (a position held through the open earns gap + intraday return, not
close_{t+1}/close_t − 1; the difference is the cross term, ~1e-5 per bar). Turnover is |Δd| + 2|Δc| (notional
traded, in equity units). Everything at row t of the outputs: positions held
during bar t (after the open fill), its P&L terms and costs, the equity and drawdown at its close, and the
lev / throttle / targets / weights computed at its close (which become positions at t+1).

Implementation: the kernel works in blocks of 256 bars; the path-independent part of a block (gating weights,
expert mix, leverage, price ratios, slippage rates) is computed first in vectorisable loops, then the sequential
equity loop runs over the block. Nothing of a block is used before its bar, so causality is exact. The score-only
kernel skips a block where no position can be taken (probabilities unknown, sigma invalid, ruin) when it is entered
flat with no pending order: its bars earn exactly ±0. Every float is computed as by the plain per-bar loop (same
operations in the same order, no fast-math), so the results are bit-identical to it.

:func:`run_portfolio` is the kernel behind a pandas frame; :func:`backtest_score` the same loop returning scalars
only (for optimisers); :func:`run_portfolio_reference` a slow pandas/python transcription of the rules above that the
tests hold the kernel to.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from numba import njit

# ------------------------------------------------------------------------------------------------------ parameters

P_VOL_TARGET = 0
P_LEV_MAX = 1
P_VOL_TARGETING = 2
P_DD_MAX = 3
P_K_MIN = 4
P_REARM = 5
P_BAND = 6
P_PERP_FEE_BPS = 7
P_SLIP_BPS = 8
P_SLIP_VOL_COEF = 9
P_HARD_SWITCH = 10
P_RUIN_FLOOR = 11
P_SPOT_FEE_BPS = 12
P_BORROW_RATE = 13
P_BAND_REL = 14
P_DECISION_HOURS = 15
N_PARAMS = 16


@dataclass(frozen=True)
class PortfolioParams:
    """Named view of the ``params`` array (field order = the ``P_*`` indices). Flags are 0/1 in the array.

    Fees are per leg and venue: ``perp_fee_bps`` on the directional leg and the carry's perp leg,
    ``spot_fee_bps`` on the carry's spot leg; ``borrow_rate`` (annual) is paid per hour on the notional of a
    short spot leg. ``band`` (absolute, equity units), ``band_rel`` (relative to the held position) and
    ``decision_hours`` (minimum hours between rebalances) are the rebalance policy (module docstring)."""

    vol_target: float = 0.4
    lev_max: float = 2.0
    vol_targeting: bool = True
    dd_max: float = 0.25
    k_min: float = 0.25
    rearm: float = 0.5
    band: float = 0.0
    perp_fee_bps: float = 5.0
    slip_bps: float = 1.0
    slip_vol_coef: float = 0.0
    hard_switch: bool = False
    ruin_floor: float = 0.5
    spot_fee_bps: float = 10.0
    borrow_rate: float = 0.0
    band_rel: float = 0.0
    decision_hours: float = 1.0

    def to_array(self) -> np.ndarray:
        return np.array([float(v) for v in astuple(self)], dtype=np.float64)

    @classmethod
    def from_array(cls, arr: np.ndarray) -> PortfolioParams:
        a = np.asarray(arr, dtype=np.float64)
        values = [float(v) for v in a]
        values[P_VOL_TARGETING] = bool(values[P_VOL_TARGETING])
        values[P_HARD_SWITCH] = bool(values[P_HARD_SWITCH])
        return cls(*values)


assert len(PortfolioParams.__dataclass_fields__) == N_PARAMS

# Columns of the per-bar output matrix of the kernel.
B_POSITION = 0
B_CARRY = 1
B_TURNOVER = 2
B_FEE = 3
B_SLIP = 4
B_FUNDING = 5
B_RETURN = 6
B_EQUITY = 7
B_DRAWDOWN = 8
B_LEVERAGE = 9
B_THROTTLE = 10
B_TARGET_POSITION = 11
B_TARGET_CARRY = 12
B_PRICE_PNL = 13
B_BASIS_PNL = 14
B_BORROW = 15
B_CARRY_FEE = 16
B_CARRY_SLIP = 17
N_BAR_COLS = 18
BAR_COLUMNS: tuple[str, ...] = (
    "position",
    "carry_position",
    "turnover",
    "fee_cost",
    "slippage_cost",
    "funding_pnl",
    "bar_return",
    "equity",
    "drawdown",
    "leverage",
    "throttle",
    "target_position",
    "target_carry",
    "price_pnl",
    "basis_pnl",
    "borrow_cost",
    "carry_fee_cost",
    "carry_slippage_cost",
)


class Score(NamedTuple):
    """Scalar summary of a run (:func:`backtest_score`)."""

    log_growth: float  # log(final equity); -inf when equity hit 0
    sum_return: float  # Σ r_t
    sum_sq_return: float  # Σ r_t²
    sum_sq_neg_return: float  # Σ min(r_t, 0)²
    max_drawdown: float
    turnover: float  # Σ (|Δd| + 2|Δc|)
    costs: float  # Σ fees + slippage + borrowing (fractions of equity, summed bar by bar)


# Fields of the carried state (:func:`new_state`); the held and pending per-expert contributions follow at
# ``N_STATE`` (E values each; full mode only).
S_STARTED = 0  # 0: a fresh book (bar 0 earns nothing); 1: continues the run that wrote it
S_EQUITY = 1
S_PEAK = 2
S_THROTTLE = 3
S_POSITION = 4  # d held
S_CARRY = 5  # c held
S_ORDER_POSITION = 6  # the order decided at the last close (filled at the next open)
S_ORDER_CARRY = 7
S_PENDING = 8  # 1 when the order differs from the held position
S_RUINED = 9
S_CLOSE = 10  # the last close
S_SIGMA = 11  # the slippage volatility at the last close (sets the slippage of the next fill)
S_SPOT_CLOSE = 12  # the last spot close (the carry's spot leg)
S_SINCE = 13  # closes since the directional leg's last fill, its own close included (decision interval)
S_THR_TRADE = 14  # the throttle the filled directional order was sized with (a lower one since: risk limit)
S_SINCE_CARRY = 15  # closes since the carry's last fill
N_STATE = 16
_NEVER = 1e300  # S_SINCE(_CARRY) of a fresh book: the first rebalance is never held back


def new_state(n_experts: int) -> np.ndarray:
    """A fresh, flat book (equity 1, throttle 1, no position, no order) for runs over ``n_experts`` columns."""
    state = np.zeros(N_STATE + 2 * int(n_experts))
    state[S_EQUITY] = state[S_PEAK] = state[S_THROTTLE] = state[S_THR_TRADE] = 1.0
    state[S_SINCE] = state[S_SINCE_CARRY] = _NEVER
    return state


# ----------------------------------------------------------------------------------------------------------- kernel


_BLOCK = 256  # bars per block: the path-independent pass over a block runs ahead of its sequential equity loop


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _gating_weights_row(probs, gating, t, hard, w):  # pragma: no cover - compiled
    """Write w(t) into ``w``; False (w untouched) when probs[t] has a NaN."""
    K = probs.shape[1]
    E = gating.shape[1]
    total = 0.0
    for k in range(K):
        total += probs[t, k]
    if math.isnan(total):
        return False
    if hard:
        best = 0
        for k in range(1, K):
            if probs[t, k] > probs[t, best]:
                best = k
        for e in range(E):
            w[e] = gating[best, e]
    else:
        for e in range(E):
            acc = 0.0
            for k in range(K):
                acc += probs[t, k] * gating[k, e]
            w[e] = acc
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def gating_weights(probs, gating, hard):  # pragma: no cover - compiled
    """(n, E) gating weights for every bar (NaN rows where probs is unknown)."""
    n = probs.shape[0]
    E = gating.shape[1]
    out = np.full((n, E), np.nan)
    w = np.empty(E)
    for t in range(n):
        if _gating_weights_row(probs, gating, t, hard, w):
            for e in range(E):
                out[t, e] = w[e]
    return out


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _transpose_fixed(src, t0, m, dst, J):  # pragma: no cover - compiled
    """:func:`_transpose_rows` for a literal J (a constant once inlined): the block is read as one flat run with a
    constant stride, which LLVM vectorises as interleaved loads (several times faster for J <= 7)."""
    blk = np.ascontiguousarray(src[t0 : t0 + m]).reshape(m * J)  # a view when src is C-contiguous
    for i in range(m):
        for j in range(J):
            dst[j, i] = blk[i * J + j]


@njit(cache=True, nogil=True, error_model="numpy")
def _transpose_rows(src, t0, m, dst):  # pragma: no cover - compiled
    """dst[j, i] = src[t0 + i, j] for i < m. Up to 7 columns: one pass with the column count as a constant;
    more: four columns per pass over the rows, so that the reads of a row stay adjacent and the passes are
    unrolled whatever the number of columns. Not inlined: compiled once for both arrays and both kernels (the
    numba-level inlining of the specialised passes is what makes compilation slow)."""
    J = src.shape[1]
    if J == 1:
        _transpose_fixed(src, t0, m, dst, 1)
    elif J == 2:
        _transpose_fixed(src, t0, m, dst, 2)
    elif J == 3:
        _transpose_fixed(src, t0, m, dst, 3)
    elif J == 4:
        _transpose_fixed(src, t0, m, dst, 4)
    elif J == 5:
        _transpose_fixed(src, t0, m, dst, 5)
    elif J == 6:
        _transpose_fixed(src, t0, m, dst, 6)
    elif J == 7:
        _transpose_fixed(src, t0, m, dst, 7)
    else:
        j = 0
        while j + 4 <= J:
            d0 = dst[j]
            d1 = dst[j + 1]
            d2 = dst[j + 2]
            d3 = dst[j + 3]
            for i in range(m):
                row = src[t0 + i]
                d0[i] = row[j]
                d1[i] = row[j + 1]
                d2[i] = row[j + 2]
                d3[i] = row[j + 3]
            j += 4
        while j < J:
            dj = dst[j]
            for i in range(m):
                dj[i] = src[t0 + i, j]
            j += 1


# Rows of the per-block scratch of the kernel (one column per bar of the block).
_R_SD = 0  # lev_t · Σ_{e≠carry} w_e·x_e; NaN when no position can be taken (probs unknown, sigma invalid)
_R_SC = 1  # carry signal w_carry·x_carry (0 when no position can be taken)
_R_LEV = 2  # lev_t
_R_GAP = 3  # open_t / close_{t-1} − 1
_R_BARF = 4  # (close_t / open_t − 1) − funding_t
_R_SLIP = 5  # slippage rate of a fill at t (decided at the close of t − 1)
_R_COST = 6  # fee rate + slippage rate of a fill at t
_R_KNOWN = 7  # the sum of the probabilities: NaN iff probs[t] has a NaN
_R_W = 8  # the weight row of one expert (score mode)
_R_PMAX = 9  # hard switch: the largest probability so far
_R_BEST = 10  # hard switch: its regime (as a float)
_R_GAPB = 11  # basis gap: (open_t / close_{t-1} − 1) − (spot_open_t / spot_close_{t-1} − 1)
_R_BARB = 12  # basis intrabar: (close_t / open_t − 1) − (spot_close_t / spot_open_t − 1)
_R_INTRA = 13  # close_t / open_t − 1 (the price P&L of the full outputs)
_N_ROWS = 14

# The block passes below compute everything that does not depend on the equity path, for the bars t of a block
# [t0, t0 + m) (column i = t − t0 of the ``buf`` rows ``_R_*``). No dependency across bars: the block is transposed
# into p_b (K, B) and x_b (E, B) so that the loops over bars run on contiguous rows (vectorised).


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _block_known(probs, sigma_hat, vol_targeting, t0, m, buf, p_b):  # pragma: no cover - compiled
    """Transpose probs into p_b and fill ``_R_KNOWN``; returns the number of bars where a position can be taken
    (probs known and, with vol targeting, sigma_hat > 0)."""
    K = probs.shape[1]
    _transpose_rows(probs, t0, m, p_b)
    known = buf[_R_KNOWN]
    for i in range(m):
        known[i] = 0.0
    k = 0
    while k + 4 <= K:  # four rows of probabilities per pass
        p0 = p_b[k]
        p1 = p_b[k + 1]
        p2 = p_b[k + 2]
        p3 = p_b[k + 3]
        for i in range(m):
            known[i] = (((known[i] + p0[i]) + p1[i]) + p2[i]) + p3[i]
        k += 4
    while k < K:
        pk = p_b[k]
        for i in range(m):
            known[i] += pk[i]
        k += 1
    sig_v = sigma_hat[t0 : t0 + m]
    count = 0
    for i in range(m):
        count += (known[i] == known[i]) & ((sig_v[i] > 0.0) | (not vol_targeting))
    return count


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _mix_row(we, xe, is_carry, m, sd, sc):  # pragma: no cover - compiled
    """Add w_e·x_e to ``sd`` (or set ``sc`` for the carry column); an abstaining expert (NaN) adds 0."""
    if is_carry:
        for i in range(m):
            x = xe[i]
            sc[i] = we[i] * x if x == x else 0.0
    else:
        for i in range(m):
            x = xe[i]
            sd[i] += we[i] * x if x == x else 0.0


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _soft_mix_fixed(p_b, gating, x_b, carry_col, m, buf, w_b, full, K):  # pragma: no cover - compiled
    """The soft case of :func:`_mix` for a literal number of regimes K (a constant once inlined): one pass over
    the bars per expert, the weight summed in a register."""
    sd = buf[_R_SD]
    sc = buf[_R_SC]
    for e in range(x_b.shape[0]):
        xe = x_b[e]
        we = w_b[e] if full else buf[_R_W]
        if e == carry_col:
            for i in range(m):
                w = 0.0
                for k in range(K):
                    w += p_b[k, i] * gating[k, e]
                if full:
                    we[i] = w
                x = xe[i]
                sc[i] = w * x if x == x else 0.0
        else:
            for i in range(m):
                w = 0.0
                for k in range(K):
                    w += p_b[k, i] * gating[k, e]
                if full:
                    we[i] = w
                x = xe[i]
                sd[i] += w * x if x == x else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _mix(p_b, x_b, gating, carry_col, hard, m, buf, w_b, full):  # pragma: no cover - compiled
    """Gating weights of the block (into w_b (E, B) with ``full``, else one scratch row at a time) and the mix:
    ``_R_SD`` = Σ_{e≠carry} w_e·x_e, ``_R_SC`` = w_carry·x_carry. Each weight is 0 + Σ_k p_k·g_ke in index
    order, as in :func:`_gating_weights_row`. Not inlined, like :func:`_transpose_rows`."""
    E = x_b.shape[0]
    K = gating.shape[0]
    sd = buf[_R_SD]
    sc = buf[_R_SC]
    for i in range(m):
        sd[i] = 0.0
        sc[i] = 0.0
    if hard:  # first maximum of each column, as selects over the rows (same comparisons as a scan of the row)
        pmax = buf[_R_PMAX]
        best = buf[_R_BEST]
        p0 = p_b[0]
        for i in range(m):
            pmax[i] = p0[i]
            best[i] = 0.0
        for k in range(1, K):
            pk = p_b[k]
            kf = float(k)
            for i in range(m):
                up = pk[i] > pmax[i]
                pmax[i] = pk[i] if up else pmax[i]
                best[i] = kf if up else best[i]
        for e in range(E):
            we = w_b[e] if full else buf[_R_W]
            g = gating[0, e]
            for i in range(m):
                we[i] = g
            for k in range(1, K):
                g = gating[k, e]
                kf = float(k)
                for i in range(m):
                    w = we[i]  # both loads unconditional: a select, which vectorises
                    we[i] = g if best[i] == kf else w
            _mix_row(we, x_b[e], e == carry_col, m, sd, sc)
    # soft: a specialised pass for the usual numbers of regimes, else passes of four regimes then single ones
    elif K == 1:
        _soft_mix_fixed(p_b, gating, x_b, carry_col, m, buf, w_b, full, 1)
    elif K == 2:
        _soft_mix_fixed(p_b, gating, x_b, carry_col, m, buf, w_b, full, 2)
    elif K == 3:
        _soft_mix_fixed(p_b, gating, x_b, carry_col, m, buf, w_b, full, 3)
    elif K == 4:
        _soft_mix_fixed(p_b, gating, x_b, carry_col, m, buf, w_b, full, 4)
    elif K == 5:
        _soft_mix_fixed(p_b, gating, x_b, carry_col, m, buf, w_b, full, 5)
    elif K == 6:
        _soft_mix_fixed(p_b, gating, x_b, carry_col, m, buf, w_b, full, 6)
    elif K == 7:
        _soft_mix_fixed(p_b, gating, x_b, carry_col, m, buf, w_b, full, 7)
    elif K == 8:
        _soft_mix_fixed(p_b, gating, x_b, carry_col, m, buf, w_b, full, 8)
    else:
        for e in range(E):
            we = w_b[e] if full else buf[_R_W]
            for i in range(m):
                we[i] = 0.0
            k = 0
            while k + 4 <= K:  # four regimes per pass, added one after the other as in the loop below
                p0 = p_b[k]
                p1 = p_b[k + 1]
                p2 = p_b[k + 2]
                p3 = p_b[k + 3]
                g0 = gating[k, e]
                g1 = gating[k + 1, e]
                g2 = gating[k + 2, e]
                g3 = gating[k + 3, e]
                for i in range(m):
                    we[i] = (((we[i] + p0[i] * g0) + p1[i] * g1) + p2[i] * g2) + p3[i] * g3
                k += 4
            while k < K:
                g = gating[k, e]
                pk = p_b[k]
                for i in range(m):
                    we[i] += pk[i] * g
                k += 1
            _mix_row(we, x_b[e], e == carry_col, m, sd, sc)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _block_signal(
    experts,
    gating,
    sigma_hat,
    carry_col,
    hard,
    vol_targeting,
    vol_target,
    lev_max,
    t0,
    m,
    buf,
    p_b,
    x_b,
    w_b,
    full,
    out_weights,
):  # pragma: no cover - compiled
    """Fill ``_R_SD``, ``_R_SC`` and ``_R_LEV`` (after :func:`_block_known`); with ``full`` the gating weights also
    go to ``out_weights`` (NaN rows when unknown)."""
    E = experts.shape[1]
    _transpose_rows(experts, t0, m, x_b)
    _mix(p_b, x_b, gating, carry_col, hard, m, buf, w_b, full)
    known = buf[_R_KNOWN]
    sd = buf[_R_SD]
    sc = buf[_R_SC]
    if full:
        for i in range(m):
            ok = not math.isnan(known[i])
            for e in range(E):
                out_weights[t0 + i, e] = w_b[e, i] if ok else np.nan
    # Views of the block indexed from 0 (a non-negative index needs no wrap-around, so the loops vectorise).
    lev_b = buf[_R_LEV]
    sig_v = sigma_hat[t0 : t0 + m]
    if vol_targeting:  # selects only (the division is harmless where its result is not used)
        for i in range(m):
            sig = sig_v[i]
            valid = sig > 0.0  # False for NaN
            lev = min(vol_target / sig, lev_max) if valid else 0.0
            ok = valid & (known[i] == known[i])
            lev_b[i] = lev
            sd[i] = sd[i] * lev if ok else np.nan
            sc[i] = sc[i] if ok else 0.0
    else:
        for i in range(m):
            ok = known[i] == known[i]
            lev_b[i] = 1.0
            sd[i] = sd[i] * 1.0 if ok else np.nan
            sc[i] = sc[i] if ok else 0.0


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _block_prices(
    open_, close, spot_open, spot_close, funding, slip_sigma, fee_rate, slip_bps, slip_coef, t0, m, buf
):  # pragma: no cover - compiled
    """Fill ``_R_GAP``, ``_R_BARF``, ``_R_GAPB``, ``_R_BARB``, ``_R_INTRA``, ``_R_SLIP`` and ``_R_COST`` (bar 0,
    which has no previous close nor fill, keeps its column unset)."""
    s = 1 if t0 == 0 else 0
    t1 = t0 + m
    open_v = open_[t0 + s : t1]
    close_v = close[t0 + s : t1]
    prev_v = close[t0 + s - 1 : t1 - 1]
    sopen_v = spot_open[t0 + s : t1]
    sclose_v = spot_close[t0 + s : t1]
    sprev_v = spot_close[t0 + s - 1 : t1 - 1]
    fund_v = funding[t0 + s : t1]
    sig_prev = slip_sigma[t0 + s - 1 : t1 - 1]  # the slippage of a fill at t is known at the close of t − 1
    gap_v = buf[_R_GAP, s:m]
    barf_v = buf[_R_BARF, s:m]
    gapb_v = buf[_R_GAPB, s:m]
    barb_v = buf[_R_BARB, s:m]
    intra_v = buf[_R_INTRA, s:m]
    slip_v = buf[_R_SLIP, s:m]
    cost_v = buf[_R_COST, s:m]
    for i in range(m - s):
        o = open_v[i]
        gap = o / prev_v[i] - 1.0
        intra = close_v[i] / o - 1.0
        so = sopen_v[i]
        gap_v[i] = gap
        intra_v[i] = intra
        barf_v[i] = intra - fund_v[i]
        gapb_v[i] = gap - (so / sprev_v[i] - 1.0)
        barb_v[i] = intra - (sclose_v[i] / so - 1.0)
        sig = sig_prev[i]
        slip = slip_bps
        if sig == sig:
            slip += slip_coef * sig
        slip_rate = slip * 1e-4
        slip_v[i] = slip_rate
        cost_v[i] = fee_rate + slip_rate


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _block_all_finite(funding, fee_rate, t0, m, buf):  # pragma: no cover - compiled
    """Whether the price, funding and cost terms of the block are all finite (and the fee rate): then a bar with
    no position, old or new, earns exactly ±0 and pays exactly 0."""
    fund_v = funding[t0 : t0 + m]
    gap_b = buf[_R_GAP]
    barf_b = buf[_R_BARF]
    gapb_b = buf[_R_GAPB]
    barb_b = buf[_R_BARB]
    slip_b = buf[_R_SLIP]
    cost_b = buf[_R_COST]
    bad = 0
    for i in range(m):
        s = (
            abs(gap_b[i])
            + abs(barf_b[i])
            + abs(fund_v[i])
            + abs(slip_b[i])
            + abs(cost_b[i])
            + abs(gapb_b[i])
            + abs(barb_b[i])
        )
        bad += not (s < math.inf)  # NaN or an infinity (or an overflowing sum: then only less is skipped)
    return bad == 0 and abs(fee_rate) < math.inf


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _simulate_impl(
    open_,
    close,
    spot_open,
    spot_close,
    tradable,
    funding,
    experts,
    probs,
    gating,
    sigma_hat,
    slip_sigma,
    params,
    carry_col,
    state,
    out_bar,
    out_contrib,
    out_weights,
    full,
):  # pragma: no cover - compiled
    """The per-bar loop (module docstring). Fills the outputs when ``full`` (a constant of each caller, so the
    score-only loop carries none of the output code). Starts from ``state`` and writes the final state into it.
    Returns the :class:`Score` fields as a tuple.
    """
    n = close.shape[0]
    E = experts.shape[1]
    vol_target = params[P_VOL_TARGET]
    lev_max = params[P_LEV_MAX]
    vol_targeting = params[P_VOL_TARGETING] != 0.0
    dd_max = params[P_DD_MAX]
    k_min = params[P_K_MIN]
    rearm_dd = params[P_REARM] * dd_max
    band = params[P_BAND]
    band_rel = params[P_BAND_REL]
    hold = params[P_DECISION_HOURS]
    fee_rate = params[P_PERP_FEE_BPS] * 1e-4  # the directional leg and the carry's perp leg
    spot_fee_rate = params[P_SPOT_FEE_BPS] * 1e-4  # the carry's spot leg
    half_fees = 0.5 * (fee_rate + spot_fee_rate)  # carry fee per unit of carry turnover (2·|Δc|)
    borrow_h = params[P_BORROW_RATE] / 8760.0  # per hour, on the notional of a short spot leg (c > 0)
    slip_bps = params[P_SLIP_BPS]
    slip_coef = params[P_SLIP_VOL_COEF]
    hard = params[P_HARD_SWITCH] != 0.0
    # equity (>= 0 or NaN) < ruin_level  <=>  equity < ruin_floor or equity <= 0 (5e-324: the smallest double > 0)
    ruin_level = params[P_RUIN_FLOOR] if params[P_RUIN_FLOOR] > 5e-324 else 5e-324
    throttled = dd_max > 0.0
    inv_dd_max = 1.0 / dd_max if throttled else 0.0

    buf = np.empty((_N_ROWS, _BLOCK))
    p_b = np.empty((probs.shape[1], _BLOCK))
    x_b = np.empty((E, _BLOCK))
    w_b = np.empty((E if full else 0, _BLOCK))
    comp = np.zeros(E)  # contributions of the pending order (full mode only)
    cur = np.zeros(E)  # contributions of the held position (full mode only)
    carried = state[S_STARTED] != 0.0
    equity = state[S_EQUITY]
    peak = state[S_PEAK]
    inv_peak = 1.0 / peak
    raw_base = 1.0 - inv_dd_max
    raw_slope = inv_peak * inv_dd_max
    thr = state[S_THROTTLE]
    d = state[S_POSITION]
    c = state[S_CARRY]
    new_d = state[S_ORDER_POSITION]
    new_c = state[S_ORDER_CARRY]
    pending = state[S_PENDING] != 0.0
    since = state[S_SINCE]
    since_c = state[S_SINCE_CARRY]
    thr_trade = state[S_THR_TRADE]
    if full and carried:
        for e in range(E):
            cur[e] = state[N_STATE + e]
            comp[e] = state[N_STATE + E + e]
    # Positions are finite when lev_max is (clipped to ±lev_max): a held position then earns the no-turnover sum.
    always_fill = full or not (abs(lev_max) < math.inf)
    ruined = state[S_RUINED] != 0.0
    if ruined:
        ruin_level = -math.inf
    sum_ret = 0.0
    sum_sq = 0.0
    sum_sq_neg = 0.0
    max_dd = 0.0
    total_turn = 0.0
    total_cost = 0.0

    for t0 in range(0, n, _BLOCK):
        t1 = min(n, t0 + _BLOCK)
        m = t1 - t0
        n_signal = _block_known(probs, sigma_hat, vol_targeting, t0, m, buf, p_b)
        _block_prices(
            open_, close, spot_open, spot_close, funding, slip_sigma, fee_rate, slip_bps, slip_coef, t0, m, buf
        )
        if t0 == 0 and carried:  # bar 0 continues the previous run: its gap and fill use the state's closes
            o = open_[0]
            gap = o / state[S_CLOSE] - 1.0
            intra = close[0] / o - 1.0
            so = spot_open[0]
            buf[_R_GAP, 0] = gap
            buf[_R_INTRA, 0] = intra
            buf[_R_BARF, 0] = intra - funding[0]
            buf[_R_GAPB, 0] = gap - (so / state[S_SPOT_CLOSE] - 1.0)
            buf[_R_BARB, 0] = intra - (spot_close[0] / so - 1.0)
            sig = state[S_SIGMA]
            slip = slip_bps
            if sig == sig:
                slip += slip_coef * sig
            slip_rate = slip * 1e-4
            buf[_R_SLIP, 0] = slip_rate
            buf[_R_COST, 0] = fee_rate + slip_rate
        # A block where no position can be taken, entered flat with no pending order, changes nothing (each bar
        # earns ±0: equity, peak, drawdown, throttle and the sums stay as they are; t0 > 0: bar 0 sets the
        # throttle; the decision interval's count only grows, and a flat book is never held back by it).
        # Skipped in the score mode when its terms are all finite (NaN · 0 is not 0).
        if (
            not full
            and t0 > 0
            and (n_signal == 0 or ruined)
            and d == 0.0
            and c == 0.0
            and new_d == 0.0
            and new_c == 0.0
            and _block_all_finite(funding, fee_rate, t0, m, buf)
        ):
            since += m
            since_c += m
            continue
        _block_signal(
            experts,
            gating,
            sigma_hat,
            carry_col,
            hard,
            vol_targeting,
            vol_target,
            lev_max,
            t0,
            m,
            buf,
            p_b,
            x_b,
            w_b,
            full,
            out_weights,
        )
        sd_b = buf[_R_SD]
        if ruined:  # no position can be taken any more
            sd_b[:] = np.nan
        sc_b = buf[_R_SC]
        gap_b = buf[_R_GAP]
        barf_b = buf[_R_BARF]
        gapb_b = buf[_R_GAPB]
        barb_b = buf[_R_BARB]
        slip_b = buf[_R_SLIP]
        cost_b = buf[_R_COST]
        tradable_v = tradable[t0:t1]
        funding_v = funding[t0:t1]
        first = 1 if (t0 == 0 and not carried) else 0  # bar 0 of a fresh book has no fill nor return
        for i in range(m):
            # Branch-free min / max below (data-dependent outcomes on the chain equity → drawdown → throttle →
            # target); the rebalance decisions further down are branches, which cut that chain when predicted.
            ret = 0.0
            turn = 0.0
            fee = 0.0
            slip = 0.0
            fund = 0.0
            borrow = 0.0
            carry_fee = 0.0
            carry_slip = 0.0
            price = 0.0
            basis = 0.0
            if i >= first:
                f_t = funding_v[i]
                slip_rate = slip_b[i]
                cost_rate = cost_b[i]
                if pending or always_fill:  # an order to fill (if tradable)
                    d_old = d
                    c_old = c
                    if tradable_v[i]:
                        if full and new_d != d:
                            for e in range(E):
                                cur[e] = comp[e]
                        d = new_d
                        c = new_c
                    turn_d = abs(d - d_old)
                    turn_c = 2.0 * abs(c - c_old)
                    turn = turn_d + turn_c
                    if turn_d > 0.0:  # a fill of a leg: its decision interval counts from here
                        since = 0.0
                        thr_trade = thr
                    if turn_c > 0.0:
                        since_c = 0.0
                    borrow = (c if c > 0.0 else 0.0) * borrow_h
                    # The docstring's sum, grouped so the carry leg (the end of the chain) enters last.
                    ret = (
                        (d_old * gap_b[i] + d * barf_b[i] - turn_d * cost_rate)
                        - (c * f_t + turn_c * (half_fees + slip_rate))
                    ) + ((c_old * gapb_b[i] + c * barb_b[i]) - borrow)
                    if full:
                        carry_fee = turn_c * half_fees
                        carry_slip = turn_c * slip_rate
                        fee = turn_d * fee_rate + carry_fee
                        slip = turn * slip_rate
                        price = d_old * gap_b[i] + d * buf[_R_INTRA, i]
                        basis = c_old * gapb_b[i] + c * barb_b[i]
                    else:
                        fee = turn_d * fee_rate + turn_c * half_fees
                        slip = turn * slip_rate
                else:  # the orders are the held positions (finite): the same sum with no turnover
                    fee = 0.0 * fee_rate
                    slip = 0.0 * slip_rate
                    borrow = (c if c > 0.0 else 0.0) * borrow_h
                    ret = ((d * gap_b[i] + d * barf_b[i] - 0.0 * cost_rate) - (c * f_t + 0.0 * cost_rate)) + (
                        (c * gapb_b[i] + c * barb_b[i]) - borrow
                    )
                equity = max(equity * (1.0 + ret), 0.0)
                if equity > peak:
                    peak = equity
                    inv_peak = 1.0 / peak
                    raw_slope = inv_peak * inv_dd_max
                if full:
                    fund = -(d + c) * f_t
            since += 1.0
            since_c += 1.0
            dd = 1.0 - equity * inv_peak
            if equity < ruin_level:  # ruin: the signal of this bar and the next ones is "no position"
                ruined = True
                ruin_level = -math.inf
                sd_b[i:] = np.nan
            # throttle with hysteresis: follows raw down at once, up only once dd <= rearm · dd_max
            if throttled:
                raw = min(1.0, max(k_min, raw_base + equity * raw_slope))  # = 1 − dd / dd_max
                thr = min(2.0 if dd <= rearm_dd else thr, raw)  # raw <= 1 < 2
            # targets at the close of t, and the orders: d then c
            sd = sd_b[i]
            if math.isnan(sd):  # flat: both targets (and orders) are 0
                td = 0.0
                tc = 0.0
                new_d = 0.0
                new_c = 0.0
                pending = (d != 0.0) | (c != 0.0)
                if full:
                    for e in range(E):
                        comp[e] = 0.0
            else:
                td_raw = sd * thr
                td = min(lev_max, max(-lev_max, td_raw))
                tc = sc_b[i]
                if full:
                    scale = buf[_R_LEV, i] * thr
                    if td != td_raw:
                        scale = scale * (lev_max / abs(td_raw))
                    t = t0 + i
                    for e in range(E):
                        x = experts[t, e]
                        comp[e] = 0.0 if (e == carry_col or math.isnan(x)) else out_weights[t, e] * x * scale
                # Rebalance policy, per leg: a rebalance is free once ``hold`` bars have closed since the leg's
                # last fill, or (directional leg) at once when the throttle's cut since that fill alone moves the
                # position by more than the band (a risk limit); it trades when the target moves by more than
                # max(band, band_rel · |held|).
                # Going flat is never held back. Decisions as branches, not selects: the usual outcome is
                # "keep", so the branch is predicted and the orders do not wait for the equity chain. A zero
                # order is the constant 0 (its sign changes no score) except in the full outputs. ``pending``:
                # an order differs from the held position (the next bar takes the fill path).
                gap_band = max(band, band_rel * abs(d))
                free = (since >= hold) | (abs(d) * (thr_trade - thr) > thr_trade * gap_band)
                if td == 0.0:
                    new_d = td if full else 0.0
                    pending = d != 0.0
                elif free and abs(td - d) > gap_band:
                    new_d = td
                    pending = True
                else:
                    new_d = d
                    pending = False
                    if full:
                        for e in range(E):
                            comp[e] = cur[e]
                cap = max(0.0, (lev_max - abs(new_d)) * 0.5)
                tc = min(cap, max(-cap, tc))
                if tc == 0.0:
                    new_c = tc if full else 0.0
                    pending |= c != 0.0
                elif abs(c) > cap or (since_c >= hold and abs(tc - c) > max(band, band_rel * abs(c))):
                    new_c = tc
                    pending = True
                else:
                    new_c = c

            sum_ret += ret
            sum_sq += ret * ret
            neg = min(ret, 0.0)
            sum_sq_neg += neg * neg
            max_dd = max(max_dd, dd)
            total_turn += turn
            total_cost += (fee + slip) + borrow
            if full:
                t = t0 + i
                out_bar[t, B_POSITION] = d
                out_bar[t, B_CARRY] = c
                out_bar[t, B_TURNOVER] = turn
                out_bar[t, B_FEE] = fee
                out_bar[t, B_SLIP] = slip
                out_bar[t, B_FUNDING] = fund
                out_bar[t, B_RETURN] = ret
                out_bar[t, B_EQUITY] = equity
                out_bar[t, B_DRAWDOWN] = dd
                out_bar[t, B_LEVERAGE] = buf[_R_LEV, i]
                out_bar[t, B_THROTTLE] = thr
                out_bar[t, B_TARGET_POSITION] = td
                out_bar[t, B_TARGET_CARRY] = tc
                out_bar[t, B_PRICE_PNL] = price
                out_bar[t, B_BASIS_PNL] = basis
                out_bar[t, B_BORROW] = borrow
                out_bar[t, B_CARRY_FEE] = carry_fee
                out_bar[t, B_CARRY_SLIP] = carry_slip
                for e in range(E):
                    out_contrib[t, e] = cur[e]
                if carry_col >= 0:
                    out_contrib[t, carry_col] = c
    if n > 0:
        state[S_STARTED] = 1.0
        state[S_EQUITY] = equity
        state[S_PEAK] = peak
        state[S_THROTTLE] = thr
        state[S_POSITION] = d
        state[S_CARRY] = c
        state[S_ORDER_POSITION] = new_d
        state[S_ORDER_CARRY] = new_c
        state[S_PENDING] = 1.0 if pending else 0.0
        state[S_RUINED] = 1.0 if ruined else 0.0
        state[S_CLOSE] = close[n - 1]
        state[S_SIGMA] = slip_sigma[n - 1]
        state[S_SPOT_CLOSE] = spot_close[n - 1]
        state[S_SINCE] = since
        state[S_SINCE_CARRY] = since_c
        state[S_THR_TRADE] = thr_trade
        if full:
            for e in range(E):
                state[N_STATE + e] = cur[e]
                state[N_STATE + E + e] = comp[e]
    log_growth = math.log(equity) if equity > 0.0 else -math.inf
    return log_growth, sum_ret, sum_sq, sum_sq_neg, max_dd, total_turn, total_cost


@njit(cache=True, nogil=True, error_model="numpy")
def _simulate_full(
    open_,
    close,
    spot_open,
    spot_close,
    tradable,
    funding,
    experts,
    probs,
    gating,
    sigma_hat,
    slip_sigma,
    params,
    carry_col,
    state,
    out_bar,
    out_contrib,
    out_weights,
):  # pragma: no cover - compiled
    """:func:`_simulate_impl` filling the per-bar outputs (n rows each)."""
    return _simulate_impl(
        open_,
        close,
        spot_open,
        spot_close,
        tradable,
        funding,
        experts,
        probs,
        gating,
        sigma_hat,
        slip_sigma,
        params,
        carry_col,
        state,
        out_bar,
        out_contrib,
        out_weights,
        True,
    )


@njit(cache=True, nogil=True, error_model="numpy")
def _simulate_score(
    open_,
    close,
    spot_open,
    spot_close,
    tradable,
    funding,
    experts,
    probs,
    gating,
    sigma_hat,
    slip_sigma,
    params,
    carry_col,
    state,
):  # pragma: no cover - compiled
    """:func:`_simulate_impl` returning the scalars only."""
    empty = np.empty((0, 0))
    return _simulate_impl(
        open_,
        close,
        spot_open,
        spot_close,
        tradable,
        funding,
        experts,
        probs,
        gating,
        sigma_hat,
        slip_sigma,
        params,
        carry_col,
        state,
        empty,
        empty,
        empty,
        False,
    )


# -------------------------------------------------------------------------------------------------------- wrappers


def _as_params(params: PortfolioParams | np.ndarray) -> np.ndarray:
    arr = params.to_array() if isinstance(params, PortfolioParams) else np.ascontiguousarray(params, dtype=np.float64)
    if arr.shape != (N_PARAMS,):
        raise ValueError(f"params must have shape ({N_PARAMS},), got {arr.shape}")
    return arr


def _prepare(
    open_,
    close,
    tradable,
    funding,
    experts,
    probs,
    gating,
    sigma_hat,
    params,
    carry_col,
    spot_open=None,
    spot_close=None,
    slip_sigma=None,
):
    """The kernel's positional arguments, converted and checked. Without spot prices the carry's spot leg is
    priced like its perp leg (no basis); without ``slip_sigma`` the slippage reads ``sigma_hat``."""
    f64 = np.float64
    if (spot_open is None) != (spot_close is None):
        raise ValueError("give both spot_open and spot_close, or neither (no basis)")
    close = np.ascontiguousarray(close, dtype=f64)
    n = close.shape[0]
    open_ = np.ascontiguousarray(open_, dtype=f64)
    spot_open = open_ if spot_open is None else np.ascontiguousarray(spot_open, dtype=f64)
    spot_close = close if spot_close is None else np.ascontiguousarray(spot_close, dtype=f64)
    tradable = np.ascontiguousarray(tradable, dtype=np.bool_)
    funding = np.ascontiguousarray(funding, dtype=f64)
    sigma_hat = np.ascontiguousarray(sigma_hat, dtype=f64)
    slip_sigma = sigma_hat if slip_sigma is None else np.ascontiguousarray(slip_sigma, dtype=f64)
    experts = np.ascontiguousarray(experts, dtype=f64)
    probs = np.ascontiguousarray(probs, dtype=f64)
    gating = np.ascontiguousarray(gating, dtype=f64)
    if experts.ndim == 1:
        experts = experts.reshape(-1, 1)
    for name, arr in (
        ("open_", open_),
        ("close", close),
        ("spot_open", spot_open),
        ("spot_close", spot_close),
        ("tradable", tradable),
        ("funding", funding),
        ("sigma_hat", sigma_hat),
        ("slip_sigma", slip_sigma),
    ):
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    E = experts.shape[1]
    if experts.shape[0] != n or probs.ndim != 2 or probs.shape[0] != n:
        raise ValueError("experts and probs must have n rows")
    if gating.shape != (probs.shape[1], E):
        raise ValueError(f"gating must have shape (K, E) = ({probs.shape[1]}, {E}), got {gating.shape}")
    carry_col = int(carry_col)
    if not -1 <= carry_col < E:
        raise ValueError(f"carry_col must be -1 or a column of experts, got {carry_col}")
    for name, arr in (("open_", open_), ("close", close), ("spot_open", spot_open), ("spot_close", spot_close)):
        if n and not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
            raise ValueError(f"{name} must be positive and finite (forward-fill missing hours)")
    if not np.all(np.isfinite(funding)):
        raise ValueError("funding must be finite (0 on bars without a settlement)")
    p = _as_params(params)
    if not p[P_DECISION_HOURS] >= 1.0 or not p[P_BAND_REL] >= 0.0 or not p[P_BORROW_RATE] >= 0.0:
        raise ValueError("decision_hours must be >= 1, band_rel and borrow_rate >= 0")
    return (
        open_,
        close,
        spot_open,
        spot_close,
        tradable,
        funding,
        experts,
        probs,
        gating,
        sigma_hat,
        slip_sigma,
        p,
        carry_col,
    )


def _check_state(state: np.ndarray | None, n_experts: int) -> np.ndarray:
    """A fresh state for ``None``; else ``state`` itself (updated in place by the run), checked."""
    if state is None:
        return new_state(n_experts)
    if not (
        isinstance(state, np.ndarray)
        and state.dtype == np.float64
        and state.shape == (N_STATE + 2 * n_experts,)
        and state.flags.c_contiguous
        and state.flags.writeable
    ):
        raise ValueError(f"state must be a writable float64 array of shape ({N_STATE + 2 * n_experts},): new_state(E)")
    if state[S_STARTED] != 0.0 and not all(state[i] > 0.0 and math.isfinite(state[i]) for i in (S_CLOSE, S_SPOT_CLOSE)):
        raise ValueError("a carried state needs the previous run's positive, finite last closes (perp and spot)")
    return state


def run_portfolio_arrays(
    open_,
    close,
    tradable,
    funding,
    experts,
    probs,
    gating,
    sigma_hat,
    params: PortfolioParams | np.ndarray,
    carry_col: int = -1,
    state: np.ndarray | None = None,
    *,
    spot_open=None,
    spot_close=None,
    slip_sigma=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Score]:
    """The kernel with full outputs: (bars (n, 18) in ``BAR_COLUMNS`` order, contributions (n, E),
    weights (n, E), :class:`Score`). ``open_``/``close`` price the directional leg and the carry's perp leg,
    ``spot_open``/``spot_close`` the carry's spot leg (default: the same prices, no basis); ``sigma_hat`` sets
    the leverage, ``slip_sigma`` (default ``sigma_hat``) the vol-proportional slippage. ``state``
    (:func:`new_state`) is the account to continue, updated in place; ``None`` runs a fresh book."""
    args = _prepare(
        open_,
        close,
        tradable,
        funding,
        experts,
        probs,
        gating,
        sigma_hat,
        params,
        carry_col,
        spot_open,
        spot_close,
        slip_sigma,
    )
    n, E = args[6].shape
    state = _check_state(state, E)
    bars = np.empty((n, N_BAR_COLS))
    contrib = np.empty((n, E))
    weights = np.empty((n, E))
    score = _simulate_full(*args, state, bars, contrib, weights)
    return bars, contrib, weights, Score(*score)


def _frame(bars: np.ndarray, contrib: np.ndarray, weights: np.ndarray, index, expert_names) -> pd.DataFrame:
    E = contrib.shape[1]
    names = list(expert_names) if expert_names is not None else [f"e{e}" for e in range(E)]
    if len(names) != E:
        raise ValueError("expert_names must have one name per expert column")
    out = pd.DataFrame(bars, columns=list(BAR_COLUMNS), index=index)
    out.insert(2, "gross_exposure", out["position"].abs() + 2.0 * out["carry_position"].abs())
    out.insert(3, "net_exposure", out["position"].to_numpy().copy())
    for e, name in enumerate(names):
        out[f"contrib_{name}"] = contrib[:, e]
    for e, name in enumerate(names):
        out[f"weight_{name}"] = weights[:, e]
    return out


def run_portfolio(
    open_,
    close,
    tradable,
    funding,
    experts,
    probs,
    gating,
    sigma_hat,
    params: PortfolioParams | np.ndarray,
    carry_col: int = -1,
    *,
    index=None,
    expert_names=None,
    state: np.ndarray | None = None,
    spot_open=None,
    spot_close=None,
    slip_sigma=None,
) -> pd.DataFrame:
    """Run the backtest; one row per bar (see the module docstring for what each row holds).

    Columns: position, carry_position, gross_exposure, net_exposure, turnover, fee_cost, slippage_cost,
    funding_pnl, bar_return, equity, drawdown, leverage, throttle, target_position, target_carry, price_pnl
    (directional leg), basis_pnl (carry), borrow_cost, carry_fee_cost and carry_slippage_cost (the carry legs'
    part of fee_cost and slippage_cost), contrib_<expert> (the part of the held position due to each expert; the
    carry column holds the carry position) and weight_<expert> (gating weights at the close). bar_return =
    price_pnl + basis_pnl + funding_pnl − fee_cost − slippage_cost − borrow_cost (up to rounding). The
    :class:`Score` is in ``attrs["score"]``. ``state`` and the spot / slippage inputs: see
    :func:`run_portfolio_arrays`.
    """
    bars, contrib, weights, score = run_portfolio_arrays(
        open_,
        close,
        tradable,
        funding,
        experts,
        probs,
        gating,
        sigma_hat,
        params,
        carry_col,
        state,
        spot_open=spot_open,
        spot_close=spot_close,
        slip_sigma=slip_sigma,
    )
    out = _frame(bars, contrib, weights, index, expert_names)
    out.attrs["score"] = score._asdict()
    return out


def backtest_score(
    open_,
    close,
    tradable,
    funding,
    experts,
    probs,
    gating,
    sigma_hat,
    params: PortfolioParams | np.ndarray,
    carry_col: int = -1,
    *,
    check: bool = True,
    state: np.ndarray | None = None,
    spot_open=None,
    spot_close=None,
    slip_sigma=None,
) -> Score:
    """Scalars only (no per-bar outputs). With ``check=False`` the inputs must already be C-contiguous arrays of
    the right dtypes and shapes (float64, tradable bool, params (16,)), spot prices and ``slip_sigma`` given:
    no conversion, no validation. ``state``: the account to continue, updated in place (fresh when ``None``; its
    contributions part is not kept)."""
    if check:
        args = _prepare(
            open_,
            close,
            tradable,
            funding,
            experts,
            probs,
            gating,
            sigma_hat,
            params,
            carry_col,
            spot_open,
            spot_close,
            slip_sigma,
        )
        state = _check_state(state, args[6].shape[1])
    else:
        args = (
            open_,
            close,
            spot_open,
            spot_close,
            tradable,
            funding,
            experts,
            probs,
            gating,
            sigma_hat,
            slip_sigma,
            params,
            carry_col,
        )
        if state is None:
            state = new_state(experts.shape[1])
    return Score(*_simulate_score(*args, state))


# ------------------------------------------------------------------------------------------------------- reference


def run_portfolio_reference(
    open_,
    close,
    tradable,
    funding,
    experts,
    probs,
    gating,
    sigma_hat,
    params: PortfolioParams | np.ndarray,
    carry_col: int = -1,
    *,
    index=None,
    expert_names=None,
    spot_open=None,
    spot_close=None,
    slip_sigma=None,
) -> pd.DataFrame:
    """Slow, literal transcription of the module docstring with pandas objects and Python floats (tests only).

    ``gating`` may also be one matrix per bar, shape (n, K, E): one run over concatenated pieces whose parameters
    differ, which the chained kernel runs (carried ``state``) are held to."""
    p = PortfolioParams.from_array(_as_params(params))
    experts = np.asarray(experts, dtype=float)
    if experts.ndim == 1:
        experts = experts.reshape(-1, 1)
    n, E = experts.shape
    names = [f"e{e}" for e in range(E)]
    bars = pd.DataFrame(
        {
            "open": np.asarray(open_, float),
            "close": np.asarray(close, float),
            "spot_open": np.asarray(open_ if spot_open is None else spot_open, float),
            "spot_close": np.asarray(close if spot_close is None else spot_close, float),
            "tradable": np.asarray(tradable, bool),
            "funding": np.asarray(funding, float),
            "sigma": np.asarray(sigma_hat, float),
            "slip_sigma": np.asarray(sigma_hat if slip_sigma is None else slip_sigma, float),
        }
    )
    X = pd.DataFrame(experts, columns=names)
    P = pd.DataFrame(np.asarray(probs, float))
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
