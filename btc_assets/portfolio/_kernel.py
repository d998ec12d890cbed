"""The numba kernels of the portfolio backtest (the per-bar loop in blocks, the gating weights): the rules are
in :mod:`.engine`'s docstring, the wrappers that check the inputs in :mod:`.engine`, the plain reference the
tests hold these kernels to in :mod:`.reference`.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np
from numba import njit

from btc_assets.portfolio.layout import N_STATE, Bar, Param, State

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


class _Row(IntEnum):
    """Rows of the per-block scratch of the kernel (one column per bar of the block)."""

    SD = 0  # lev_t · Σ_{e≠carry} w_e·x_e; NaN when no position can be taken (probs unknown, sigma invalid)
    SC = 1  # carry signal w_carry·x_carry (0 when no position can be taken)
    LEV = 2  # lev_t
    GAP = 3  # open_t / close_{t-1} − 1
    BARF = 4  # (close_t / open_t − 1) − funding_t
    SLIP = 5  # slippage rate of a fill at t (decided at the close of t − 1)
    COST = 6  # fee rate + slippage rate of a fill at t
    KNOWN = 7  # the sum of the probabilities: NaN iff probs[t] has a NaN
    W = 8  # the weight row of one expert (score mode)
    PMAX = 9  # hard switch: the largest probability so far
    BEST = 10  # hard switch: its regime (as a float)
    GAPB = 11  # basis gap: (open_t / close_{t-1} − 1) − (spot_open_t / spot_close_{t-1} − 1)
    BARB = 12  # basis intrabar: (close_t / open_t − 1) − (spot_close_t / spot_open_t − 1)
    INTRA = 13  # close_t / open_t − 1 (the price P&L of the full outputs)


_N_ROWS = len(_Row)

# The block passes below compute everything that does not depend on the equity path, for the bars t of a block
# [t0, t0 + m) (column i = t − t0 of the ``buf`` rows, :class:`_Row`). No dependency across bars: the block is
# transposed into p_b (K, B) and x_b (E, B) so that the loops over bars run on contiguous rows (vectorised).


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _block_known(probs, sigma_hat, vol_targeting, t0, m, buf, p_b):  # pragma: no cover - compiled
    """Transpose probs into p_b and fill ``_Row.KNOWN``; returns the number of bars where a position can be taken
    (probs known and, with vol targeting, sigma_hat > 0)."""
    K = probs.shape[1]
    _transpose_rows(probs, t0, m, p_b)
    known = buf[_Row.KNOWN]
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
    sd = buf[_Row.SD]
    sc = buf[_Row.SC]
    for e in range(x_b.shape[0]):
        xe = x_b[e]
        we = w_b[e] if full else buf[_Row.W]
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
    ``_Row.SD`` = Σ_{e≠carry} w_e·x_e, ``_Row.SC`` = w_carry·x_carry. Each weight is 0 + Σ_k p_k·g_ke in index
    order, as in :func:`_gating_weights_row`. Not inlined, like :func:`_transpose_rows`."""
    E = x_b.shape[0]
    K = gating.shape[0]
    sd = buf[_Row.SD]
    sc = buf[_Row.SC]
    for i in range(m):
        sd[i] = 0.0
        sc[i] = 0.0
    if hard:  # first maximum of each column, as selects over the rows (same comparisons as a scan of the row)
        pmax = buf[_Row.PMAX]
        best = buf[_Row.BEST]
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
            we = w_b[e] if full else buf[_Row.W]
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
            we = w_b[e] if full else buf[_Row.W]
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
    """Fill the rows SD, SC and LEV of one book (after :func:`_block_known`, with the block's expert columns
    transposed into ``x_b``); with ``full`` the gating weights also go to ``out_weights`` (NaN rows when
    unknown)."""
    E = x_b.shape[0]
    _mix(p_b, x_b, gating, carry_col, hard, m, buf, w_b, full)
    known = buf[_Row.KNOWN]
    sd = buf[_Row.SD]
    sc = buf[_Row.SC]
    if full:
        for i in range(m):
            ok = not math.isnan(known[i])
            for e in range(E):
                out_weights[t0 + i, e] = w_b[e, i] if ok else np.nan
    # Views of the block indexed from 0 (a non-negative index needs no wrap-around, so the loops vectorise).
    lev_b = buf[_Row.LEV]
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
def _block_prices(inputs, fee_rate, slip_bps, slip_coef, t0, m, buf):  # pragma: no cover - compiled
    """Fill the rows GAP, BARF, GAPB, BARB, INTRA, SLIP and COST from the prices, funding and slippage volatility of
    ``inputs`` (bar 0, which has no previous close nor fill, keeps its column unset)."""
    open_, close, spot_open, spot_close, funding, slip_sigma = (
        inputs.open_,
        inputs.close,
        inputs.spot_open,
        inputs.spot_close,
        inputs.funding,
        inputs.slip_sigma,
    )
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
    gap_v = buf[_Row.GAP, s:m]
    barf_v = buf[_Row.BARF, s:m]
    gapb_v = buf[_Row.GAPB, s:m]
    barb_v = buf[_Row.BARB, s:m]
    intra_v = buf[_Row.INTRA, s:m]
    slip_v = buf[_Row.SLIP, s:m]
    cost_v = buf[_Row.COST, s:m]
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
    gap_b = buf[_Row.GAP]
    barf_b = buf[_Row.BARF]
    gapb_b = buf[_Row.GAPB]
    barb_b = buf[_Row.BARB]
    slip_b = buf[_Row.SLIP]
    cost_b = buf[_Row.COST]
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
    inputs,
    gatings,
    params,
    carry_col,
    states,
    column,
    column_at,
    column_start,
    out_scores,
    out_bar,
    out_contrib,
    out_weights,
    full,
    out_ret,
    returns,
):  # pragma: no cover - compiled
    """The per-bar loop (module docstring) over ``inputs`` (a :class:`~.engine.BookInputs`) for B books at once:
    book b has its own gating ``gatings[b]`` (K, E), parameters ``params[b]`` and state ``states[b]`` (started
    from, the final state written into it), and with ``column_at`` >= 0 its own expert column ``column_at``:
    ``column[b, column_start + t]`` for bar t (the column of ``inputs.experts`` is then not read). Each book's
    :class:`~.engine.Score` fields go to ``out_scores[b]``. The books share what does not depend on a book (the
    price, probability and cost terms of a block, the transposed expert columns), so the parameters those read
    (vol targeting, vol target, lev_max, perp fee, slippage, hard switch) and a carried book's last closes are
    book 0's: :func:`~.engine.backtest_scores` checks that the books agree on them. Every float of a book is
    computed as in a run of that book alone (same operations, same order).

    With ``full`` (one book, no own column) the per-bar outputs are filled; with ``returns`` only each bar's return
    (``out_ret[b, t]``): constants of each caller, so the score-only loop carries none of the output code.
    """
    open_, close, spot_open, spot_close, tradable, funding, experts, probs, sigma_hat, slip_sigma = inputs
    n = close.shape[0]
    E = experts.shape[1]
    B = states.shape[0]
    # what the books share: book 0's (the block passes read these)
    vol_target = params[0, Param.VOL_TARGET]
    lev_max = params[0, Param.LEV_MAX]
    vol_targeting = params[0, Param.VOL_TARGETING] != 0.0
    fee_rate = params[0, Param.PERP_FEE_BPS] * 1e-4  # the directional leg and the carry's perp leg
    slip_bps = params[0, Param.SLIP_BPS]
    slip_coef = params[0, Param.SLIP_VOL_COEF]
    hard = params[0, Param.HARD_SWITCH] != 0.0
    # Positions are finite when lev_max is (clipped to ±lev_max): a held position then earns the no-turnover sum.
    always_fill = full or not (abs(lev_max) < math.inf)

    buf = np.empty((_N_ROWS, _BLOCK))
    p_b = np.empty((probs.shape[1], _BLOCK))
    x_b = np.empty((E, _BLOCK))
    w_b = np.empty((E if full else 0, _BLOCK))
    comp = np.zeros(E)  # contributions of the pending order (full mode only)
    cur = np.zeros(E)  # contributions of the held position (full mode only)
    carried = np.empty(B, dtype=np.bool_)
    for b in range(B):
        carried[b] = states[b, State.STARTED] != 0.0
        for j in range(7):
            out_scores[b, j] = 0.0
    if full and carried[0]:
        for e in range(E):
            cur[e] = states[0, N_STATE + e]
            comp[e] = states[0, N_STATE + E + e]

    for t0 in range(0, n, _BLOCK):
        t1 = min(n, t0 + _BLOCK)
        m = t1 - t0
        n_signal = _block_known(probs, sigma_hat, vol_targeting, t0, m, buf, p_b)
        _block_prices(inputs, fee_rate, slip_bps, slip_coef, t0, m, buf)
        if t0 == 0 and carried[0]:  # bar 0 continues the previous run: its gap and fill use the state's closes
            o = open_[0]
            gap = o / states[0, State.CLOSE] - 1.0
            intra = close[0] / o - 1.0
            so = spot_open[0]
            buf[_Row.GAP, 0] = gap
            buf[_Row.INTRA, 0] = intra
            buf[_Row.BARF, 0] = intra - funding[0]
            buf[_Row.GAPB, 0] = gap - (so / states[0, State.SPOT_CLOSE] - 1.0)
            buf[_Row.BARB, 0] = intra - (spot_close[0] / so - 1.0)
            sig = states[0, State.SIGMA]
            slip = slip_bps
            if sig == sig:
                slip += slip_coef * sig
            slip_rate = slip * 1e-4
            buf[_Row.SLIP, 0] = slip_rate
            buf[_Row.COST, 0] = fee_rate + slip_rate
        _transpose_rows(experts, t0, m, x_b)
        all_finite = -1  # whether the block's terms are all finite (computed when a book first asks)
        for b in range(B):
            par = params[b]
            state = states[b]
            dd_max = par[Param.DD_MAX]
            k_min = par[Param.K_MIN]
            rearm_dd = par[Param.REARM] * dd_max
            band = par[Param.BAND]
            band_rel = par[Param.BAND_REL]
            hold = par[Param.DECISION_HOURS]
            spot_fee_rate = par[Param.SPOT_FEE_BPS] * 1e-4  # the carry's spot leg
            half_fees = 0.5 * (fee_rate + spot_fee_rate)  # carry fee per unit of carry turnover (2·|Δc|)
            borrow_h = par[Param.BORROW_RATE] / 8760.0  # per hour, on the notional of a short spot leg (c > 0)
            # equity (>= 0 or NaN) < ruin_level <=> equity < ruin_floor or equity <= 0 (5e-324: the smallest double > 0)
            ruin_level = par[Param.RUIN_FLOOR] if par[Param.RUIN_FLOOR] > 5e-324 else 5e-324
            throttled = dd_max > 0.0
            inv_dd_max = 1.0 / dd_max if throttled else 0.0
            equity = state[State.EQUITY]
            peak = state[State.PEAK]
            inv_peak = 1.0 / peak
            raw_base = 1.0 - inv_dd_max
            raw_slope = inv_peak * inv_dd_max
            thr = state[State.THROTTLE]
            d = state[State.POSITION]
            c = state[State.CARRY]
            new_d = state[State.ORDER_POSITION]
            new_c = state[State.ORDER_CARRY]
            pending = state[State.PENDING] != 0.0
            since = state[State.SINCE]
            since_c = state[State.SINCE_CARRY]
            thr_trade = state[State.THR_TRADE]
            ruined = state[State.RUINED] != 0.0
            if ruined:
                ruin_level = -math.inf
            # A block where no position can be taken, entered flat with no pending order, changes nothing (each
            # bar earns ±0: equity, peak, drawdown, throttle and the sums stay as they are; t0 > 0: bar 0 sets the
            # throttle; the decision interval's count only grows, and a flat book is never held back by it).
            # Skipped in the score mode when its terms are all finite (NaN · 0 is not 0).
            if (
                not full
                and not returns
                and t0 > 0
                and (n_signal == 0 or ruined)
                and d == 0.0
                and c == 0.0
                and new_d == 0.0
                and new_c == 0.0
            ):
                if all_finite < 0:
                    all_finite = 1 if _block_all_finite(funding, fee_rate, t0, m, buf) else 0
                if all_finite == 1:
                    state[State.SINCE] = since + m
                    state[State.SINCE_CARRY] = since_c + m
                    continue
            if column_at >= 0:  # the book's own column
                xk = x_b[column_at]
                own = column[b, column_start + t0 : column_start + t1]
                for i in range(m):
                    xk[i] = own[i]
            sum_ret = out_scores[b, 1]
            sum_sq = out_scores[b, 2]
            sum_sq_neg = out_scores[b, 3]
            max_dd = out_scores[b, 4]
            total_turn = out_scores[b, 5]
            total_cost = out_scores[b, 6]
            _block_signal(
                gatings[b],
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
            sd_b = buf[_Row.SD]
            if ruined:  # no position can be taken any more
                sd_b[:] = np.nan
            sc_b = buf[_Row.SC]
            gap_b = buf[_Row.GAP]
            barf_b = buf[_Row.BARF]
            gapb_b = buf[_Row.GAPB]
            barb_b = buf[_Row.BARB]
            slip_b = buf[_Row.SLIP]
            cost_b = buf[_Row.COST]
            tradable_v = tradable[t0:t1]
            funding_v = funding[t0:t1]
            first = 1 if (t0 == 0 and not carried[b]) else 0  # bar 0 of a fresh book has no fill nor return
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
                            price = d_old * gap_b[i] + d * buf[_Row.INTRA, i]
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
                        scale = buf[_Row.LEV, i] * thr
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
                if returns:
                    out_ret[b, t0 + i] = ret
                sum_sq += ret * ret
                neg = min(ret, 0.0)
                sum_sq_neg += neg * neg
                max_dd = max(max_dd, dd)
                total_turn += turn
                total_cost += (fee + slip) + borrow
                if full:
                    t = t0 + i
                    out_bar[t, Bar.POSITION] = d
                    out_bar[t, Bar.CARRY_POSITION] = c
                    out_bar[t, Bar.TURNOVER] = turn
                    out_bar[t, Bar.FEE_COST] = fee
                    out_bar[t, Bar.SLIPPAGE_COST] = slip
                    out_bar[t, Bar.FUNDING_PNL] = fund
                    out_bar[t, Bar.BAR_RETURN] = ret
                    out_bar[t, Bar.EQUITY] = equity
                    out_bar[t, Bar.DRAWDOWN] = dd
                    out_bar[t, Bar.LEVERAGE] = buf[_Row.LEV, i]
                    out_bar[t, Bar.THROTTLE] = thr
                    out_bar[t, Bar.TARGET_POSITION] = td
                    out_bar[t, Bar.TARGET_CARRY] = tc
                    out_bar[t, Bar.PRICE_PNL] = price
                    out_bar[t, Bar.BASIS_PNL] = basis
                    out_bar[t, Bar.BORROW_COST] = borrow
                    out_bar[t, Bar.CARRY_FEE_COST] = carry_fee
                    out_bar[t, Bar.CARRY_SLIPPAGE_COST] = carry_slip
                    for e in range(E):
                        out_contrib[t, e] = cur[e]
                    if carry_col >= 0:
                        out_contrib[t, carry_col] = c
            state[State.EQUITY] = equity
            state[State.PEAK] = peak
            state[State.THROTTLE] = thr
            state[State.POSITION] = d
            state[State.CARRY] = c
            state[State.ORDER_POSITION] = new_d
            state[State.ORDER_CARRY] = new_c
            state[State.PENDING] = 1.0 if pending else 0.0
            state[State.RUINED] = 1.0 if ruined else 0.0
            state[State.SINCE] = since
            state[State.SINCE_CARRY] = since_c
            state[State.THR_TRADE] = thr_trade
            out_scores[b, 1] = sum_ret
            out_scores[b, 2] = sum_sq
            out_scores[b, 3] = sum_sq_neg
            out_scores[b, 4] = max_dd
            out_scores[b, 5] = total_turn
            out_scores[b, 6] = total_cost
    for b in range(B):
        state = states[b]
        if n > 0:
            state[State.STARTED] = 1.0
            state[State.CLOSE] = close[n - 1]
            state[State.SIGMA] = slip_sigma[n - 1]
            state[State.SPOT_CLOSE] = spot_close[n - 1]
            if full:
                for e in range(E):
                    state[N_STATE + e] = cur[e]
                    state[N_STATE + E + e] = comp[e]
        equity = state[State.EQUITY]
        out_scores[b, 0] = math.log(equity) if equity > 0.0 else -math.inf


@njit(cache=True, nogil=True, error_model="numpy")
def _simulate_full(
    inputs, gating, params, carry_col, state, out_bar, out_contrib, out_weights
):  # pragma: no cover - compiled
    """:func:`_simulate_impl` for one book (``gating`` (K, E), ``params`` and ``state`` 1-D) filling the per-bar
    outputs (n rows each); returns the :class:`~.engine.Score` fields as a tuple."""
    scores = np.empty((1, 7))
    _simulate_impl(
        inputs,
        gating.reshape((1, gating.shape[0], gating.shape[1])),
        params.reshape((1, params.shape[0])),
        carry_col,
        state.reshape((1, state.shape[0])),
        np.empty((0, 0)),
        -1,
        0,
        scores,
        out_bar,
        out_contrib,
        out_weights,
        True,
        np.empty((0, 0)),
        False,
    )
    s = scores[0]
    return s[0], s[1], s[2], s[3], s[4], s[5], s[6]


@njit(cache=True, nogil=True, error_model="numpy")
def _simulate_score(
    inputs, gatings, params, carry_col, states, column, column_at, column_start, out_scores
):  # pragma: no cover - compiled
    """:func:`_simulate_impl` for B books (2-D ``params`` and ``states``, 3-D ``gatings``), the scalars only."""
    empty = np.empty((0, 0))
    _simulate_impl(
        inputs,
        gatings,
        params,
        carry_col,
        states,
        column,
        column_at,
        column_start,
        out_scores,
        empty,
        empty,
        empty,
        False,
        empty,
        False,
    )


@njit(cache=True, nogil=True, error_model="numpy")
def _simulate_returns(
    inputs, gatings, params, carry_col, states, column, column_at, column_start, out_scores, out_ret
):  # pragma: no cover - compiled
    """:func:`_simulate_score` writing each bar's return into ``out_ret[b]`` (n values per book) too: the score
    loop's arithmetic on every bar (no block skipped), so each return is the full outputs' ``bar_return``."""
    empty = np.empty((0, 0))
    _simulate_impl(
        inputs,
        gatings,
        params,
        carry_col,
        states,
        column,
        column_at,
        column_start,
        out_scores,
        empty,
        empty,
        empty,
        False,
        out_ret,
        True,
    )
