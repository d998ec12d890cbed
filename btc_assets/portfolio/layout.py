"""Column layouts of the portfolio backtest's arrays, shared by the numba kernel (:mod:`._kernel`) and its
wrappers (:mod:`.engine`): the ``params`` vector (``P_*``, :class:`~.engine.PortfolioParams`), the per-bar output
matrix (``B_*``, ``BAR_COLUMNS``) and the carried state (``S_*``, :func:`~.engine.new_state`).
"""

from __future__ import annotations

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
