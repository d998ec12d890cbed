"""Column layouts of the portfolio backtest's arrays, shared by the numba kernel (:mod:`._kernel`) and its
wrappers (:mod:`.engine`): the ``params`` vector (:class:`Param`, :class:`~.engine.PortfolioParams`), the per-bar
output matrix (:class:`Bar`, ``BAR_COLUMNS``) and the carried state (:class:`State`, :func:`~.engine.new_state`).

``IntEnum`` members index the arrays in numpy and inside ``@njit`` code alike (numba reads them as integer constants;
it does not mix them with floats, nor take ``int()`` of them).
"""

from __future__ import annotations

from enum import IntEnum


class Param(IntEnum):
    """Entries of the ``params`` vector: the fields of :class:`~.engine.PortfolioParams`, in order (upper case)."""

    VOL_TARGET = 0
    LEV_MAX = 1
    VOL_TARGETING = 2
    DD_MAX = 3
    K_MIN = 4
    REARM = 5
    BAND = 6
    PERP_FEE_BPS = 7
    SLIP_BPS = 8
    SLIP_VOL_COEF = 9
    HARD_SWITCH = 10
    RUIN_FLOOR = 11
    SPOT_FEE_BPS = 12
    BORROW_RATE = 13
    BAND_REL = 14
    DECISION_HOURS = 15


N_PARAMS = len(Param)


class Bar(IntEnum):
    """Columns of the kernel's per-bar output matrix; each is named after its frame column (``BAR_COLUMNS``)."""

    POSITION = 0
    CARRY_POSITION = 1
    TURNOVER = 2
    FEE_COST = 3
    SLIPPAGE_COST = 4
    FUNDING_PNL = 5
    BAR_RETURN = 6
    EQUITY = 7
    DRAWDOWN = 8
    LEVERAGE = 9
    THROTTLE = 10
    TARGET_POSITION = 11
    TARGET_CARRY = 12
    PRICE_PNL = 13
    BASIS_PNL = 14
    BORROW_COST = 15
    CARRY_FEE_COST = 16
    CARRY_SLIPPAGE_COST = 17


N_BAR_COLS = len(Bar)
BAR_COLUMNS: tuple[str, ...] = tuple(column.name.lower() for column in Bar)


class State(IntEnum):
    """Fields of the carried state (:func:`~.engine.new_state`); the held and pending per-expert contributions
    follow at ``N_STATE`` (E values each; full mode only)."""

    STARTED = 0  # 0: a fresh book (bar 0 earns nothing); 1: continues the run that wrote it
    EQUITY = 1
    PEAK = 2
    THROTTLE = 3
    POSITION = 4  # d held
    CARRY = 5  # c held
    ORDER_POSITION = 6  # the order decided at the last close (filled at the next open)
    ORDER_CARRY = 7
    PENDING = 8  # 1 when the order differs from the held position
    RUINED = 9
    CLOSE = 10  # the last close
    SIGMA = 11  # the slippage volatility at the last close (sets the slippage of the next fill)
    SPOT_CLOSE = 12  # the last spot close (the carry's spot leg)
    SINCE = 13  # closes since the directional leg's last fill, its own close included (decision interval)
    THR_TRADE = 14  # the throttle the filled directional order was sized with (a lower one since: risk limit)
    SINCE_CARRY = 15  # closes since the carry's last fill


N_STATE = len(State)
