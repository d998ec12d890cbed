"""Where the out-of-sample P&L comes from: a run's per-bar P&L and costs attributed to (expert, regime phase) cells.

Conventions
* Components of a cell, each in fractions of equity per year (0.05 = 5 %/yr): the sum over the bars of the per-bar
  amounts (fractions of that bar's starting equity, as the engine reports them) divided by the years (bars / 8760).
  ``gross`` is the directional price P&L (perp mark-to-market), ``basis`` the carry's basis P&L, ``funding`` the
  funding received (negative: paid), and ``fees``, ``slippage``, ``borrowing`` are costs, positive as the engine
  reports them: ``net`` = gross + basis + funding − fees − slippage − borrowing. Summed over every cell, the
  ``unallocated`` one included, ``net`` is the run's Σ bar_return / years (the arithmetic return per year, not the
  CAGR), to rounding.
* Engine columns and cells. Each engine column j (``contrib_<j>``: the part of the held position due to j; the carry
  column holds the carry position c) is split over its own cells by shares *decided at the close of the decision
  bar* τ of the held position: a fill at bar t (the position or a contribution changed) makes the held
  contributions those decided at the close of t − 1, kept until the next fill (so τ may lie in an earlier fold of
  a walk-forward book). A :class:`ColumnSplit` holds column j's shares at every close; rows with a NaN (unknown)
  or that do not sum to 1 leave the rest to the ``unallocated`` cell, as does a held contribution with no fill in
  the frame.
  - the default mixture (:func:`moe_splits`, columns = the experts): expert e's column is split over the phases by
    p_k·G[k, e] / Σ_j p_j·G[j, e] at τ (p the out-of-sample filtered probabilities; one-hot at the most probable
    phase with ``hard_switch``);
  - the walk-forward book (:func:`wfa_splits`, columns ``phase<k>`` and ``carry``): column phase k is phase k's
    directional mix m_k = Σ_e G[k, e]·x_e^k, split over the directional experts by G[k, e]·x_e^k(τ) / m_k(τ) with
    x_e^k recomputed from the parameters of the fold τ belongs to (the experts are causal); the carry column is
    split over the phases by p_k·G[k, carry] / Σ_j p_j·G[j, carry] at τ with p_k = weight_phase_k / risk_scale_k.
* Per bar, with P_c(t) = contrib_j(t)·share_c(τ(t)) the position held in cell c of column j,
  gap_t = open_t/close_{t−1} − 1 and intra_t = close_t/open_t − 1 (perp; ``spot_*`` the same on spot):
  gross_c = P_c(t−1)·gap_t + P_c(t)·intra_t (directional columns), basis_c = P_c(t−1)·(gap_t − spot_gap_t) +
  P_c(t)·(intra_t − spot_intra_t) and borrowing_c = borrow_cost_t·share_c (carry column), funding_c =
  −P_c(t)·funding_t (every column). gap and intra are recomputed from the price arrays the engine used
  (:func:`market_moves`; ``tables.price_arrays``): price_pnl alone cannot be split at a fill, where d_old·gap +
  d_new·intra has two unknowns. The directional fees and slippage (``fee_cost − carry_fee_cost``, ``slippage_cost −
  carry_slippage_cost``) go to the directional columns in proportion to |contrib_j(t) − contrib_j(t−1)| (if that
  is 0 while a cost is not, to |contrib_j(t)|), and within a column to its cells in proportion to |P_c(t) −
  P_c(t−1)| (else |P_c(t)|); the carry legs' fees and slippage to the carry column's cells alike. Whatever is
  left of the engine's per-bar totals (rounding, a cost with no position to carry it) goes to ``unallocated``,
  which is therefore ~0 (about 1e-16 per bar) when the prices match the engine's: a large value flags a mismatch.
* Tables: :func:`attribute` gives one run's cells (``expert``, ``phase``, the components, ``net``; the
  ``unallocated`` cell has phase ``none``); :func:`with_margins` adds per-expert (phase ``all``), per-phase (expert
  ``all``) and total rows; :func:`across_seeds` the median, 5 % and 95 % quantiles (linear interpolation) and the
  mean across seeds of every (expert, phase, component), margins computed per seed first (so a median of a sum is
  not a sum of medians; the means add up), and the share of time in each phase (component ``time_share``,
  expert ``all``: the share of bars whose most probable filtered phase is k, ``unknown`` where the probabilities
  are).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from btc_assets import experts
from btc_assets.config import EXPERTS, PortfolioSettings
from btc_assets.portfolio.metrics import BARS_PER_YEAR
from btc_assets.portfolio.tables import EngineInputs, price_arrays
from btc_assets.wfa.space import DIRECTIONAL, StrategyParams, column_names

COMPONENTS: tuple[str, ...] = ("gross", "basis", "funding", "fees", "slippage", "borrowing")
SIGNS = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])  # net = Σ sign · component
NET = "net"
TIME_SHARE = "time_share"
ALL = "all"  # margin rows
UNALLOCATED = "unallocated"  # the expert of the cell that takes what no share covers
NO_PHASE = "none"  # its phase
UNKNOWN_PHASE = "unknown"  # time share: bars without known probabilities
STATS: tuple[str, ...] = ("median", "p05", "p95", "mean")
Cell = tuple[str, str]  # (expert, phase)


@dataclass(frozen=True)
class MarketMoves:
    """The engine's per-bar market terms on a run's bars (:func:`market_moves`)."""

    gap: np.ndarray  # open_t / close_{t−1} − 1 on the perp
    intra: np.ndarray  # close_t / open_t − 1 on the perp
    spot_gap: np.ndarray
    spot_intra: np.ndarray
    funding: np.ndarray  # the rate settled at the close of t (a long perp pays rate × notional)


@dataclass(frozen=True)
class ColumnSplit:
    """How the contribution of one engine column, as decided at the close of each bar, divides into cells."""

    column: str  # engine column name: the frame's ``contrib_<column>``
    cells: tuple[Cell, ...]  # one per share column
    shares: np.ndarray  # (n, len(cells)): the shares decided at the close of bar t; NaN: unknown


@dataclass(frozen=True)
class Attribution:
    """One run's attribution: the cells (:func:`attribute`), the time share per phase and the years covered."""

    cells: pd.DataFrame
    time_share: pd.Series
    years: float


def phase_names(n_phases: int, names: Sequence[str] | None = None) -> list[str]:
    """Phase labels: ``names`` when given (one per phase, unique), else ``phase<k>``."""
    if names is not None and len(names) == n_phases and len(set(names)) == n_phases:
        return [str(n) for n in names]
    return [f"phase{k}" for k in range(n_phases)]


def market_moves(
    open_: np.ndarray,
    close: np.ndarray,
    funding: np.ndarray,
    spot_open: np.ndarray | None = None,
    spot_close: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> MarketMoves:
    """The gap, intrabar and funding terms of the bars ``rows`` of these arrays (default: all; the engine's own
    arrays, spot defaulting to the perp as in the engine). The gap of a row uses the previous row of the arrays; the
    arrays' first row has none and gets 0 (a fresh book holds nothing there)."""
    spot_open = open_ if spot_open is None else spot_open
    spot_close = close if spot_close is None else spot_close
    rows = np.arange(len(close)) if rows is None else np.asarray(rows, dtype=np.int64)

    def moves(o: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        o, c = np.asarray(o, dtype=np.float64), np.asarray(c, dtype=np.float64)
        prev = c[np.maximum(rows - 1, 0)]
        gap = np.where(rows > 0, o[rows] / prev - 1.0, 0.0)
        return gap, c[rows] / o[rows] - 1.0

    gap, intra = moves(open_, close)
    spot_gap, spot_intra = moves(spot_open, spot_close)
    return MarketMoves(gap, intra, spot_gap, spot_intra, np.asarray(funding, dtype=np.float64)[rows])


def _normalised(terms: np.ndarray) -> np.ndarray:
    """Rows of ``terms`` divided by their sum; NaN rows where the sum is 0 or not finite."""
    total = terms.sum(axis=1, keepdims=True)
    ok = np.isfinite(total) & (total != 0.0)
    return np.where(ok, terms / np.where(ok, total, 1.0), np.nan)


def _with_rest(shares: np.ndarray) -> np.ndarray:
    """Shares plus a last ``unallocated`` column: 1 − Σ shares on known rows, 1 (the rest zero) on unknown ones."""
    known = np.isfinite(shares).all(axis=1, keepdims=True)
    clean = np.where(known, shares, 0.0)
    return np.hstack([clean, 1.0 - clean.sum(axis=1, keepdims=True)])


def _previous(a: np.ndarray) -> np.ndarray:
    """Row t − 1 at row t, zeros at row 0 (the flat book before the frame)."""
    return np.concatenate([np.zeros((1, *a.shape[1:])), a[:-1]])


def decision_bars(fills: np.ndarray) -> np.ndarray:
    """For each bar, the close that decided the held position: the bar before the last fill at or before it; −1
    when there was none (or the fill is at bar 0: decided before the frame)."""
    n = len(fills)
    return np.maximum.accumulate(np.where(fills, np.arange(n) - 1, -1)) if n else np.zeros(0, dtype=np.int64)


def _proportional(first: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Row weights ∝ ``first``, or ∝ ``fallback`` where ``first`` sums to 0; all 0 where both do."""
    a, b = first.sum(axis=1, keepdims=True), fallback.sum(axis=1, keepdims=True)
    return np.where(a > 0, first / np.where(a > 0, a, 1.0), np.where(b > 0, fallback / np.where(b > 0, b, 1.0), 0.0))


def bar_attribution(
    frame: pd.DataFrame, moves: MarketMoves, splits: Sequence[ColumnSplit], carry: str | None = None
) -> tuple[list[Cell], np.ndarray]:
    """Per bar and cell, the components (module docstring) of one engine frame (:func:`run_portfolio`'s columns,
    starting from a flat book): (cells, array (n, cells, :data:`COMPONENTS`)); the last cell is ``unallocated``.
    ``carry``: the engine column that is the carry (None: no carry column)."""
    n = len(frame)
    cells: list[Cell] = []
    for split in splits:
        if len(set(split.cells)) != len(split.cells) or split.shares.shape != (n, len(split.cells)):
            raise ValueError(f"column {split.column}: the shares must be (bars, cells) with distinct cells")
        cells.extend(c for c in split.cells if c not in cells)
    cells.append((UNALLOCATED, NO_PHASE))
    where = {c: i for i, c in enumerate(cells)}
    rest = len(cells) - 1
    out = np.zeros((n, len(cells), len(COMPONENTS)))
    gross, basis, funding, fees, slippage, borrowing = range(len(COMPONENTS))

    def column(name: str) -> np.ndarray:
        return frame[name].to_numpy(dtype=np.float64)

    contrib = {s.column: column(f"contrib_{s.column}") for s in splits}
    directional = [s for s in splits if s.column != carry]
    carry_split = next((s for s in splits if s.column == carry), None)
    fills_d = column("position") != _previous(column("position"))
    for s in directional:
        fills_d |= contrib[s.column] != _previous(contrib[s.column])
    fills_c = column("carry_position") != _previous(column("carry_position"))
    if carry_split is not None:
        fills_c |= contrib[carry] != _previous(contrib[carry])

    held: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # column -> (targets, shares held, positions)
    for s in splits:
        decided = np.vstack(
            [_with_rest(np.asarray(s.shares, dtype=np.float64)), np.eye(1, len(s.cells) + 1, len(s.cells))]
        )  # last row: unknown (decided before)
        shares = decided[decision_bars(fills_c if s is carry_split else fills_d)]
        targets = np.array([where[c] for c in s.cells] + [rest])
        held[s.column] = (targets, shares, contrib[s.column][:, None] * shares)

    def add(component: int, targets: np.ndarray, values: np.ndarray) -> None:
        out[:, targets, component] += values

    def allocate(component: int, total: np.ndarray, columns: Sequence[ColumnSplit]) -> None:
        """``total`` over ``columns`` ∝ |Δcontrib| (else |contrib|), within a column ∝ |ΔP_c| (else |P_c|)."""
        if not columns:
            return
        c = np.column_stack([contrib[s.column] for s in columns])
        by_column = _proportional(np.abs(c - _previous(c)), np.abs(c))
        for j, s in enumerate(columns):
            targets, _, p = held[s.column]
            within = _proportional(np.abs(p - _previous(p)), np.abs(p))
            add(component, targets, (total * by_column[:, j])[:, None] * within)

    for s in directional:
        targets, _, p = held[s.column]
        add(gross, targets, _previous(p) * moves.gap[:, None] + p * moves.intra[:, None])
        add(funding, targets, -p * moves.funding[:, None])
    has_carry_costs = "carry_fee_cost" in frame
    fee_d = column("fee_cost") - (column("carry_fee_cost") if has_carry_costs else 0.0)
    slip_d = column("slippage_cost") - (column("carry_slippage_cost") if has_carry_costs else 0.0)
    allocate(fees, fee_d, directional)
    allocate(slippage, slip_d, directional)
    if carry_split is not None:
        targets, shares, p = held[carry]
        add(
            basis,
            targets,
            _previous(p) * (moves.gap - moves.spot_gap)[:, None] + p * (moves.intra - moves.spot_intra)[:, None],
        )
        add(funding, targets, -p * moves.funding[:, None])
        add(borrowing, targets, column("borrow_cost")[:, None] * shares)
        if has_carry_costs:
            allocate(fees, column("carry_fee_cost"), [carry_split])
            allocate(slippage, column("carry_slippage_cost"), [carry_split])
    totals = {
        gross: "price_pnl",
        basis: "basis_pnl",
        funding: "funding_pnl",
        fees: "fee_cost",
        slippage: "slippage_cost",
        borrowing: "borrow_cost",
    }
    for component, name in totals.items():  # what no share covers (rounding included) is unallocated
        out[:, rest, component] += column(name) - out[:, :, component].sum(axis=1)
    return cells, out


def attribute(
    frame: pd.DataFrame,
    moves: MarketMoves,
    splits: Sequence[ColumnSplit],
    carry: str | None = None,
    start: int = 0,
    bars_per_year: float = BARS_PER_YEAR,
) -> pd.DataFrame:
    """One run's attribution: a row per cell (``expert``, ``phase``), the :data:`COMPONENTS` and ``net`` in
    fractions of equity per year over the bars from ``start`` on (the frame is read from its first bar: positions
    decided earlier are followed)."""
    cells, values = bar_attribution(frame, moves, splits, carry)
    window = values[start:]
    years = window.shape[0] / bars_per_year
    sums = window.sum(axis=0) / years if years > 0 else np.zeros(values.shape[1:])
    table = pd.DataFrame(sums, columns=list(COMPONENTS))
    table.insert(0, "phase", [c[1] for c in cells])
    table.insert(0, "expert", [c[0] for c in cells])
    table[NET] = sums @ SIGNS
    return table


def with_margins(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells, then per expert over all phases (phase ``all``), per phase over the experts (expert ``all``; the
    ``unallocated`` cell in neither) and the total (``all``, ``all``)."""
    values = [*COMPONENTS, NET]
    real = cells[cells["expert"] != UNALLOCATED]
    by_expert = real.groupby("expert", sort=False)[values].sum().reset_index().assign(phase=ALL)
    by_phase = real.groupby("phase", sort=False)[values].sum().reset_index().assign(expert=ALL)
    total = cells[values].sum().to_frame().T.assign(expert=ALL, phase=ALL)
    out = pd.concat([cells, by_expert, by_phase, total], ignore_index=True)
    return out[["expert", "phase", *values]]


def phase_time_share(probs: np.ndarray, phases: Sequence[str]) -> pd.Series:
    """Share of the bars whose most probable phase (first maximum) is each phase; ``unknown`` where a probability
    is NaN."""
    probs = np.asarray(probs, dtype=np.float64)
    known = np.isfinite(probs).all(axis=1)
    best = np.argmax(np.where(known[:, None], probs, -np.inf), axis=1)
    n = max(len(probs), 1)
    shares = [float((known & (best == k)).sum() / n) for k in range(probs.shape[1])] + [float((~known).sum() / n)]
    return pd.Series(shares, index=[*phases, UNKNOWN_PHASE], name=TIME_SHARE)


def across_seeds(cells: Mapping[str, pd.DataFrame], time_shares: Mapping[str, pd.Series] | None = None) -> pd.DataFrame:
    """Median, p05, p95 and mean across seeds (and ``seeds``, how many) of every (expert, phase, component) of the
    seeds' :func:`attribute` tables with their margins, plus the time share per phase (component ``time_share``,
    expert ``all``). Long format: ``expert``, ``phase``, ``component``, the :data:`STATS`, ``seeds``."""
    parts = []
    for seed, table in cells.items():
        long = with_margins(table).melt(
            id_vars=["expert", "phase"], value_vars=[*COMPONENTS, NET], var_name="component"
        )
        parts.append(long.assign(seed=seed))
        if time_shares is not None and seed in time_shares:
            share = time_shares[seed]
            parts.append(
                pd.DataFrame(
                    {
                        "expert": ALL,
                        "phase": share.index.astype(str),
                        "component": TIME_SHARE,
                        "value": share.to_numpy(dtype=float),
                        "seed": seed,
                    }
                )
            )
    if not parts:
        raise ValueError("no seed to attribute")
    stacked = pd.concat(parts, ignore_index=True)
    grouped = stacked.groupby(["expert", "phase", "component"], sort=False)["value"]
    out = pd.DataFrame(
        {
            "median": grouped.median(),
            "p05": grouped.quantile(0.05),
            "p95": grouped.quantile(0.95),
            "mean": grouped.mean(),
            "seeds": grouped.size(),
        }
    )
    return out.reset_index()


def margins_view(table: pd.DataFrame, scale: float = 1.0) -> pd.DataFrame:
    """For display, from an :func:`across_seeds` table: the per-expert, per-phase, unallocated and total rows with
    the median of each component, the p05 and p95 of ``net`` and the median time share (phase rows), × ``scale``
    (100: percent)."""
    rows = table[(table["expert"] == ALL) | (table["phase"] == ALL) | (table["expert"] == UNALLOCATED)]
    keys = list(dict.fromkeys(zip(rows["expert"], rows["phase"], strict=True)))
    rank = {(False, True): 0, (False, False): 1, (True, False): 2, (True, True): 3}  # experts, rest, phases, total
    keys.sort(key=lambda key: rank[(key[0] == ALL, key[1] == ALL)])
    pivot = rows.pivot_table(index=["expert", "phase"], columns="component", values=list(STATS[:3]), sort=False)
    view = pd.DataFrame(index=pd.MultiIndex.from_tuples(keys, names=["expert", "phase"]))
    for component in (*COMPONENTS, NET):
        view[component] = pivot[("median", component)]
    view[f"{NET}_p05"] = pivot[("p05", NET)]
    view[f"{NET}_p95"] = pivot[("p95", NET)]
    if ("median", TIME_SHARE) in pivot:
        view[TIME_SHARE] = pivot[("median", TIME_SHARE)]
    return view.dropna(how="all") * scale


def net_grid(table: pd.DataFrame, stat: str = "median", scale: float = 1.0) -> pd.DataFrame:
    """``net`` per expert (rows) and phase (columns) from an :func:`across_seeds` table, with the margins."""
    rows = table[(table["component"] == NET) & (table["expert"] != UNALLOCATED)]
    return rows.pivot_table(index="expert", columns="phase", values=stat, sort=False) * scale


# ------------------------------------------------------------------------------------------- the default mixture


def moe_splits(
    probs: np.ndarray,
    gating: np.ndarray,
    names: Sequence[str],
    hard_switch: bool = False,
    phases: Sequence[str] | None = None,
) -> list[ColumnSplit]:
    """Engine columns = experts (``names``, gating K × E): expert e's column over the phases by p_k·G[k, e] /
    Σ_j p_j·G[j, e] (p one-hot at the first most probable phase with ``hard_switch``)."""
    probs = np.asarray(probs, dtype=np.float64)
    gating = np.asarray(gating, dtype=np.float64)
    labels = phase_names(gating.shape[0], phases)
    if hard_switch:
        known = np.isfinite(probs).all(axis=1, keepdims=True)
        one_hot = np.eye(probs.shape[1])[np.argmax(np.where(known, probs, -np.inf), axis=1)]
        probs = np.where(known, one_hot, np.nan)
    return [
        ColumnSplit(name, tuple((name, label) for label in labels), _normalised(probs * gating[:, e]))
        for e, name in enumerate(names)
    ]


def moe_attribution(
    frame: pd.DataFrame, inputs: EngineInputs, settings: PortfolioSettings, phases: Sequence[str] | None = None
) -> Attribution:
    """The attribution of the default mixture's run (``tables.compute_portfolio``'s frame over ``inputs``' grid) over
    its out-of-sample bars (from ``inputs.first_known``); columns = :data:`btc_assets.config.EXPERTS`."""
    start = inputs.first_known
    labels = phase_names(len(settings.gating), phases)
    book = inputs.book
    moves = market_moves(book.open_, book.close, book.funding, book.spot_open, book.spot_close)
    splits = moe_splits(book.probs, np.asarray(settings.gating), EXPERTS, settings.hard_switch, labels)
    cells = attribute(frame, moves, splits, carry="carry", start=start)
    n = len(frame) - start
    return Attribution(cells, phase_time_share(book.probs[start:], labels), n / BARS_PER_YEAR)


# ------------------------------------------------------------------------------------------- the walk-forward book


def grid_rows(bars: pd.DataFrame, timestamps: pd.Series) -> np.ndarray:
    """Positions of ``timestamps`` on the ``bars`` grid (a contiguous stretch of it)."""
    rows = pd.DatetimeIndex(bars["timestamp"]).get_indexer(pd.DatetimeIndex(timestamps))
    if (rows < 0).any() or not (np.diff(rows) == 1).all():
        raise ValueError("the out-of-sample bars must be a contiguous stretch of the bar grid")
    return rows


def fold_parameters(folds: pd.DataFrame) -> dict[int, StrategyParams]:
    """Each fold's final parameters (``wfa_folds.params``)."""
    return {
        int(f): StrategyParams.from_json(json.loads(text))
        for f, text in zip(folds["fold"], folds["params"], strict=True)
    }


def wfa_probabilities(oos: pd.DataFrame, params: Mapping[int, StrategyParams]) -> np.ndarray:
    """The phase probabilities the engine used at each close of a walk-forward book: p_k = weight_phase_k /
    risk_scale_k of the bar's fold (one-hot with hard switching; NaN where unknown or risk_scale_k ≤ 0)."""
    k_phases = len(next(iter(params.values())).phases)
    fold = oos["fold"].to_numpy()
    weights = oos[[f"weight_{c}" for c in column_names(k_phases)[:-1]]].to_numpy(dtype=np.float64)
    scale = np.full(weights.shape, np.nan)
    for f, p in params.items():
        scale[fold == f] = [ph.risk_scale if ph.risk_scale > 0 else np.nan for ph in p.phases]
    return weights / scale


def wfa_mix_terms(
    oos: pd.DataFrame, params: Mapping[int, StrategyParams], bars: pd.DataFrame, lines: experts.LineCache | None = None
) -> np.ndarray:
    """(K, bars, directional experts): G[k, e]·x_e^k(t) at every close of a walk-forward book, x_e^k from the
    parameters of the bar's fold on the ``bars`` grid (NaN read as 0, as ``SignalCache`` does); summed over the
    experts this is the engine's column ``phase<k>``. NaN on bars of a fold without parameters. ``lines``: a line
    cache to share across seeds."""
    rows = grid_rows(bars, oos["timestamp"])
    k_phases = len(next(iter(params.values())).phases)
    arrays = experts.BarArrays.from_market_bars(bars)
    lines = experts.LineCache(maxsize=256) if lines is None else lines
    stop = int(rows[-1]) + 1 if len(rows) else 0
    signals: dict[object, np.ndarray] = {}

    def signal(config: object) -> np.ndarray:
        if config not in signals:
            x = config.positions(arrays, lines, stop=stop)[rows]  # type: ignore[attr-defined]
            signals[config] = np.where(np.isnan(x), 0.0, x)
        return signals[config]

    fold = oos["fold"].to_numpy()
    terms = np.full((k_phases, len(oos), len(DIRECTIONAL)), np.nan)
    for f, p in params.items():
        sel = fold == f
        if sel.any():
            for k, phase in enumerate(p.phases):
                for i, name in enumerate(DIRECTIONAL):
                    terms[k, sel, i] = phase.gating[EXPERTS.index(name)] * signal(getattr(phase, name))[sel]
    return terms


def wfa_splits(
    oos: pd.DataFrame,
    params: Mapping[int, StrategyParams],
    bars: pd.DataFrame,
    phases: Sequence[str] | None = None,
    lines: experts.LineCache | None = None,
) -> list[ColumnSplit]:
    """Engine columns ``phase<k>`` and ``carry`` of a walk-forward book (module docstring): phase k's column over
    the directional experts by G[k, e]·x_e^k / m_k (:func:`wfa_mix_terms`), the carry over the phases by
    p_k·G[k, carry] / Σ_j p_j·G[j, carry] (:func:`wfa_probabilities`), G and x of the bar's fold."""
    k_phases = len(next(iter(params.values())).phases)
    labels = phase_names(k_phases, phases)
    terms = wfa_mix_terms(oos, params, bars, lines)
    fold = oos["fold"].to_numpy()
    carry_gate = np.full((len(oos), k_phases), np.nan)
    for f, p in params.items():
        carry_gate[fold == f] = [phase.gating[EXPERTS.index("carry")] for phase in p.phases]
    columns = column_names(k_phases)
    splits = [
        ColumnSplit(columns[k], tuple((name, labels[k]) for name in DIRECTIONAL), _normalised(terms[k]))
        for k in range(k_phases)
    ]
    carry_terms = wfa_probabilities(oos, params) * carry_gate
    splits.append(ColumnSplit(columns[-1], tuple(("carry", label) for label in labels), _normalised(carry_terms)))
    return splits


def wfa_attribution(
    oos: pd.DataFrame,
    folds: pd.DataFrame,
    bars: pd.DataFrame,
    portfolio: PortfolioSettings,
    phases: Sequence[str] | None = None,
    lines: experts.LineCache | None = None,
) -> Attribution:
    """The attribution of one seed's stitched out-of-sample book (``wfa_results``, its ``wfa_folds``) on the
    ``market_bars`` grid, with the prices and funding the engine used (``tables.price_arrays`` with ``portfolio``)."""
    oos = oos.sort_values("timestamp", kind="stable").reset_index(drop=True)
    params = fold_parameters(folds)
    labels = phase_names(len(next(iter(params.values())).phases), phases)
    rows = grid_rows(bars, oos["timestamp"])
    prices = price_arrays(bars, portfolio)
    moves = market_moves(prices.open_, prices.close, prices.funding, prices.spot_open, prices.spot_close, rows)
    splits = wfa_splits(oos, params, bars, labels, lines)
    cells = attribute(oos, moves, splits, carry=splits[-1].column)
    share = phase_time_share(wfa_probabilities(oos, params), labels)
    return Attribution(cells, share, len(oos) / BARS_PER_YEAR)
