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

Carried state (one account over several runs): ``state`` (:func:`new_state`, :class:`State` fields) is read at the start
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

The per-bar arrays travel as one :class:`BookInputs` (built and checked by :meth:`BookInputs.from_arrays`);
``gating``, ``params``, ``carry_col`` and ``state`` are the run's other arguments. :func:`run_portfolio` is the kernel
behind a pandas frame; :func:`backtest_score` the same loop returning scalars only (for optimisers), and
:func:`backtest_returns` with each bar's return too; :func:`backtest_scores` runs several books over the same bars in
one pass (an optimiser's trials: each its own gating, parameters, state and one expert column of its own), sharing
the path-independent block passes and reading the inputs once, each book's floats those of its run alone;
:func:`run_portfolio_reference` a slow pandas/python transcription of the rules above that the tests hold the kernel
to.

Modules: this one holds :class:`PortfolioParams`, :class:`BookInputs`, the state and the public wrappers; the numba
kernels are in :mod:`btc_assets.portfolio._kernel`, the reference in :mod:`btc_assets.portfolio.reference`, the
array layouts (:class:`Param`, :class:`Bar`, :class:`State`, ``BAR_COLUMNS``) in :mod:`btc_assets.portfolio.layout`.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields
from typing import NamedTuple

import numpy as np
import pandas as pd

from btc_assets.portfolio._kernel import _simulate_full, _simulate_returns, _simulate_score
from btc_assets.portfolio.layout import BAR_COLUMNS, N_BAR_COLS, N_PARAMS, N_STATE, Param, State

# ------------------------------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class PortfolioParams:
    """Named view of the ``params`` array (field order = :class:`Param`). Flags are 0/1 in the array.

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
        values[Param.VOL_TARGETING] = bool(values[Param.VOL_TARGETING])
        values[Param.HARD_SWITCH] = bool(values[Param.HARD_SWITCH])
        return cls(*values)


assert tuple(f.name.upper() for f in fields(PortfolioParams)) == tuple(p.name for p in Param)


class Score(NamedTuple):
    """Scalar summary of a run (:func:`backtest_score`)."""

    log_growth: float  # log(final equity); -inf when equity hit 0
    sum_return: float  # Σ r_t
    sum_sq_return: float  # Σ r_t²
    sum_sq_neg_return: float  # Σ min(r_t, 0)²
    max_drawdown: float
    turnover: float  # Σ (|Δd| + 2|Δc|)
    costs: float  # Σ fees + slippage + borrowing (fractions of equity, summed bar by bar)


# ----------------------------------------------------------------------------------------------------------- state

_NEVER = 1e300  # State.SINCE(_CARRY) of a fresh book: the first rebalance is never held back


def new_state(n_experts: int) -> np.ndarray:
    """A fresh, flat book (equity 1, throttle 1, no position, no order) for runs over ``n_experts`` columns."""
    state = np.zeros(N_STATE + 2 * int(n_experts))
    state[State.EQUITY] = state[State.PEAK] = state[State.THROTTLE] = state[State.THR_TRADE] = 1.0
    state[State.SINCE] = state[State.SINCE_CARRY] = _NEVER
    return state


# ---------------------------------------------------------------------------------------------------------- inputs


class BookInputs(NamedTuple):
    """The per-bar arrays of one backtest (n rows each), passed to the kernels as one argument.

    :meth:`from_arrays` converts and checks them. The plain constructor and :meth:`rows` do neither: for arrays
    already in the kernels' types (C-contiguous float64, ``tradable`` bool, ``experts`` and ``probs`` 2-D).
    """

    open_: np.ndarray  # the perp: the directional leg and the carry's perp leg
    close: np.ndarray
    spot_open: np.ndarray  # spot: the carry's spot leg
    spot_close: np.ndarray
    tradable: np.ndarray  # bool: whether the open of the bar can fill an order
    funding: np.ndarray  # the rate settled at the close of the bar (finite; 0 without a settlement)
    experts: np.ndarray  # (n, E) the experts' targets (NaN: the expert abstains)
    probs: np.ndarray  # (n, K) the regime probabilities (a row with a NaN: unknown, flat)
    sigma_hat: np.ndarray  # annualised volatility that sets the leverage
    slip_sigma: np.ndarray  # annualised volatility of the vol-proportional slippage

    @classmethod
    def from_arrays(
        cls,
        open_,
        close,
        tradable,
        funding,
        experts,
        probs,
        sigma_hat,
        *,
        spot_open=None,
        spot_close=None,
        slip_sigma=None,
    ) -> BookInputs:
        """The arrays converted to the kernels' types and checked (ValueError). Without spot prices the carry's
        spot leg is priced like its perp leg (no basis); without ``slip_sigma`` the slippage reads ``sigma_hat``."""
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
        if experts.ndim == 1:
            experts = experts.reshape(-1, 1)
        out = cls(open_, close, spot_open, spot_close, tradable, funding, experts, probs, sigma_hat, slip_sigma)
        for name in ("open_", "close", "spot_open", "spot_close", "tradable", "funding", "sigma_hat", "slip_sigma"):
            arr = getattr(out, name)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
        if experts.shape[0] != n or probs.ndim != 2 or probs.shape[0] != n:
            raise ValueError("experts and probs must have n rows")
        for name in ("open_", "close", "spot_open", "spot_close"):
            arr = getattr(out, name)
            if n and not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
                raise ValueError(f"{name} must be positive and finite (forward-fill missing hours)")
        if not np.all(np.isfinite(funding)):
            raise ValueError("funding must be finite (0 on bars without a settlement)")
        return out

    @property
    def n_experts(self) -> int:
        return self.experts.shape[1]

    def rows(self, start: int, stop: int) -> BookInputs:
        """Rows [start, stop) of every array (views: no copy, no check)."""
        return self._make(a[start:stop] for a in self)


# -------------------------------------------------------------------------------------------------------- wrappers


def _as_params(params: PortfolioParams | np.ndarray) -> np.ndarray:
    arr = params.to_array() if isinstance(params, PortfolioParams) else np.ascontiguousarray(params, dtype=np.float64)
    if arr.shape != (N_PARAMS,):
        raise ValueError(f"params must have shape ({N_PARAMS},), got {arr.shape}")
    return arr


def _checked(
    inputs: BookInputs, gating, params: PortfolioParams | np.ndarray, carry_col: int
) -> tuple[BookInputs, np.ndarray, np.ndarray, int]:
    """The kernel's arguments converted and checked (:meth:`BookInputs.from_arrays` on ``inputs``)."""
    inputs = BookInputs.from_arrays(**inputs._asdict())
    gating = np.ascontiguousarray(gating, dtype=np.float64)
    E = inputs.n_experts
    if gating.shape != (inputs.probs.shape[1], E):
        raise ValueError(f"gating must have shape (K, E) = ({inputs.probs.shape[1]}, {E}), got {gating.shape}")
    carry_col = int(carry_col)
    if not -1 <= carry_col < E:
        raise ValueError(f"carry_col must be -1 or a column of experts, got {carry_col}")
    p = _as_params(params)
    if not p[Param.DECISION_HOURS] >= 1.0 or not p[Param.BAND_REL] >= 0.0 or not p[Param.BORROW_RATE] >= 0.0:
        raise ValueError("decision_hours must be >= 1, band_rel and borrow_rate >= 0")
    return inputs, gating, p, carry_col


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
    if state[State.STARTED] != 0.0 and not all(
        state[i] > 0.0 and math.isfinite(state[i]) for i in (State.CLOSE, State.SPOT_CLOSE)
    ):
        raise ValueError("a carried state needs the previous run's positive, finite last closes (perp and spot)")
    return state


def run_portfolio_arrays(
    inputs: BookInputs,
    gating,
    params: PortfolioParams | np.ndarray,
    carry_col: int = -1,
    state: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Score]:
    """The kernel with full outputs: (bars (n, 18) in ``BAR_COLUMNS`` order, contributions (n, E),
    weights (n, E), :class:`Score`). ``gating`` is (K, E); ``carry_col`` the carry's column of ``inputs.experts``
    (-1: none). ``state`` (:func:`new_state`) is the account to continue, updated in place; ``None`` runs a fresh
    book."""
    inputs, gating, params, carry_col = _checked(inputs, gating, params, carry_col)
    n, E = inputs.experts.shape
    state = _check_state(state, E)
    bars = np.empty((n, N_BAR_COLS))
    contrib = np.empty((n, E))
    weights = np.empty((n, E))
    score = _simulate_full(inputs, gating, params, carry_col, state, bars, contrib, weights)
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
    inputs: BookInputs,
    gating,
    params: PortfolioParams | np.ndarray,
    carry_col: int = -1,
    *,
    index=None,
    expert_names=None,
    state: np.ndarray | None = None,
) -> pd.DataFrame:
    """Run the backtest; one row per bar (see the module docstring for what each row holds).

    Columns: position, carry_position, gross_exposure, net_exposure, turnover, fee_cost, slippage_cost,
    funding_pnl, bar_return, equity, drawdown, leverage, throttle, target_position, target_carry, price_pnl
    (directional leg), basis_pnl (carry), borrow_cost, carry_fee_cost and carry_slippage_cost (the carry legs'
    part of fee_cost and slippage_cost), contrib_<expert> (the part of the held position due to each expert; the
    carry column holds the carry position) and weight_<expert> (gating weights at the close). bar_return =
    price_pnl + basis_pnl + funding_pnl − fee_cost − slippage_cost − borrow_cost (up to rounding). The
    :class:`Score` is in ``attrs["score"]``. The arguments and ``state``: see :func:`run_portfolio_arrays`.
    """
    bars, contrib, weights, score = run_portfolio_arrays(inputs, gating, params, carry_col, state)
    out = _frame(bars, contrib, weights, index, expert_names)
    out.attrs["score"] = score._asdict()
    return out


def _scalar_args(inputs, gating, params, carry_col: int, check: bool, state: np.ndarray | None):
    """The arguments of the score-mode kernels: converted and checked with ``check``, as given without (and a fresh
    account when ``state`` is None)."""
    if check:
        inputs, gating, params, carry_col = _checked(inputs, gating, params, carry_col)
        return inputs, gating, params, carry_col, _check_state(state, inputs.n_experts)
    return inputs, gating, params, carry_col, new_state(inputs.n_experts) if state is None else state


def backtest_score(
    inputs: BookInputs,
    gating,
    params: PortfolioParams | np.ndarray,
    carry_col: int = -1,
    *,
    check: bool = True,
    state: np.ndarray | None = None,
) -> Score:
    """Scalars only (no per-bar outputs). With ``check=False`` ``inputs`` must already be in the kernels' types
    (:class:`BookInputs`), ``gating`` a C-contiguous float64 (K, E) array and ``params`` a (16,) one: no
    conversion, no validation. ``state``: the account to continue, updated in place (fresh when ``None``; its
    contributions part is not kept)."""
    inputs, gating, params, carry_col, state = _scalar_args(inputs, gating, params, carry_col, check, state)
    scores = np.empty((1, len(Score._fields)))
    g, p, st = _one_book(gating, params, state)
    _simulate_score(inputs, g, p, carry_col, st, *_NO_COLUMN, scores)
    return Score(*scores[0].tolist())


def backtest_returns(
    inputs: BookInputs,
    gating,
    params: PortfolioParams | np.ndarray,
    carry_col: int = -1,
    *,
    check: bool = True,
    state: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, Score]:
    """Each bar's return (the full outputs' ``bar_return``, bit for bit) and the scalars, without the other per-bar
    outputs: what a statistic over a book's returns needs (the PBO's), at about the score's cost; the scalars are
    :func:`backtest_score`'s. Arguments as :func:`backtest_score`; ``out``: a float64 array of n values to write the
    returns into (a new one when ``None``)."""
    inputs, gating, params, carry_col, state = _scalar_args(inputs, gating, params, carry_col, check, state)
    n = inputs.close.shape[0]
    if out is None:
        out = np.zeros(n)
    elif out.shape != (n,) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous float64 array of {n} values")
    scores = np.empty((1, len(Score._fields)))
    g, p, st = _one_book(gating, params, state)
    _simulate_returns(inputs, g, p, carry_col, st, *_NO_COLUMN, scores, out.reshape(1, n))
    return out, Score(*scores[0].tolist())


_NO_COLUMN = (np.empty((0, 0)), -1, 0)  # the kernels' (column, column_at, column_start) when no book has its own


def _one_book(gating: np.ndarray, params: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gatings, params, states) of the batch kernels for one book: views, so the state is updated in place."""
    return gating.reshape(1, *gating.shape), params.reshape(1, -1), state.reshape(1, -1)


# the parameters every book of a batch shares (the kernels' block passes read book 0's)
SHARED_PARAMS = (
    Param.VOL_TARGET,
    Param.LEV_MAX,
    Param.VOL_TARGETING,
    Param.PERP_FEE_BPS,
    Param.SLIP_BPS,
    Param.SLIP_VOL_COEF,
    Param.HARD_SWITCH,
)


def backtest_scores(
    inputs: BookInputs,
    gatings: np.ndarray,
    params: np.ndarray,
    carry_col: int = -1,
    *,
    column: np.ndarray | None = None,
    column_at: int = -1,
    column_start: int = 0,
    states: np.ndarray | None = None,
    returns: np.ndarray | None = None,
    check: bool = True,
) -> np.ndarray:
    """B books over the same bars in one pass: ``gatings`` (B, K, E), ``params`` (B, 16), ``states`` (B, S) (fresh
    books when ``None``; updated in place). With ``column_at`` >= 0, book b reads its own expert column
    ``column_at`` from ``column[b, column_start:column_start + n]`` instead of ``inputs.experts``. Returns the
    (B, 7) :class:`Score` fields, each row what :func:`backtest_score` gives for that book alone, bit for bit (with
    ``returns``, a (B, n) array, each bar's return as :func:`backtest_returns`). The books must agree on
    :data:`SHARED_PARAMS` and, when carried, on their last closes. ``check=False``: arguments as given (kernel
    types), no validation."""
    if check:
        inputs, _, _, carry_col = _checked(inputs, gatings[0], params[0], carry_col)
        gatings = np.ascontiguousarray(gatings, dtype=np.float64)
        params = np.ascontiguousarray(params, dtype=np.float64)
        B = params.shape[0] if params.ndim == 2 else -1
        n, E = inputs.experts.shape
        if gatings.shape[0] != B or B < 1:
            raise ValueError(f"gatings and params need one row per book, got {gatings.shape} and {params.shape}")
        for b in range(B):
            _checked(inputs, gatings[b], params[b], carry_col)
        shared = list(SHARED_PARAMS)
        if not np.array_equal(params[:, shared], np.broadcast_to(params[0, shared], (B, len(shared))), equal_nan=True):
            raise ValueError(f"the books must agree on {', '.join(p.name.lower() for p in SHARED_PARAMS)}")
        if states is None:
            states = np.stack([new_state(E) for _ in range(B)])
        elif states.shape[0] != B or not states.flags.c_contiguous or not states.flags.writeable:
            raise ValueError("states must be a writable C-contiguous array with one row per book")
        for b in range(B):
            _check_state(states[b], E)
        started = states[:, State.STARTED] != 0.0
        closes = states[:, [State.CLOSE, State.SPOT_CLOSE, State.SIGMA]]
        if started.any() and not np.array_equal(
            closes[started], np.broadcast_to(closes[0], closes[started].shape), equal_nan=True
        ):
            raise ValueError("carried books must share their last closes (perp, spot) and slippage volatility")
        if started.any() and not started[0]:
            raise ValueError("book 0 must be carried when any book is (the block passes read its last closes)")
        if column_at >= 0:
            if not column_at < E or column is None or column.ndim != 2 or column.shape[0] != B:
                raise ValueError(f"column_at must be a column of experts and column a (B, ...) array, B = {B}")
            if not 0 <= column_start <= column.shape[1] - n:
                raise ValueError(f"column[:, {column_start}:{column_start + n}] is out of bounds")
            column = np.ascontiguousarray(column, dtype=np.float64)
        else:
            column, column_at, column_start = _NO_COLUMN
        if returns is not None and (
            returns.shape != (B, n) or returns.dtype != np.float64 or not returns.flags.c_contiguous
        ):
            raise ValueError(f"returns must be a contiguous float64 array of shape ({B}, {n})")
    elif states is None:
        states = np.stack([new_state(inputs.n_experts) for _ in range(params.shape[0])])
    if column is None:
        column, column_at, column_start = _NO_COLUMN
    scores = np.empty((params.shape[0], len(Score._fields)))
    if returns is None:
        _simulate_score(inputs, gatings, params, carry_col, states, column, column_at, column_start, scores)
    else:
        _simulate_returns(inputs, gatings, params, carry_col, states, column, column_at, column_start, scores, returns)
    return scores
