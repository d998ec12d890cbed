"""Per-fold data and the objective: a parameter set → training score, validation score, test run.

A fold's bars are cut in three causal pieces, all with the regime probabilities of *that fold's* refit (fitted on
its training window, filtered forward):

* ``fit``:        training window minus its last ``validation`` span. Optuna maximises the score here;
* ``validation``: the last ``FoldSchedule.validation`` span of the training window (inner validation slice): the
                  phase winner is the best validation score among the ``select_top`` best fit scores. The regime
                  model was fitted on ``fit`` only (the refit's ``train`` segment) and filters forward over it;
* ``test``:       the fold's test window, run once with the fold's final parameters (out of sample), continuing
                  the account of the previous fold's test window (:meth:`FoldObjective.test_frame`): the stitched
                  test windows are one book. Every trial is also scored on it as an independent book
                  (:meth:`FoldObjective.test_scores`), for the walk-forward PBO only: nothing selects by it.

The fit and validation pieces (and each trial's test score) are independent backtests that start flat with equity
1 (signals and GARCH forecasts come from the full causal series, so indicators are warm). The score (higher is
better)::

    score = Sharpe_ann − turnover_penalty · turnover_per_year − drawdown_penalty · max_drawdown
            − cost_budget_penalty · max(0, cost_per_year − cost_budget)

with Sharpe_ann = mean / std of hourly returns × √8760 (0 for a book that never trades) and ``-10`` for a book that
is ruined (equity below the ruin floor), and cost_per_year the piece's fees + slippage + borrowing per year as a
fraction of equity: the search's cost budget, a steep hinge, so a book over budget is chosen only when every
candidate is, and then the cheapest. Costs (fees per leg, slippage, funding, borrowing) are in the returns,
as always.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from numba import njit

from btc_assets import experts
from btc_assets.config import EXPERTS, PortfolioSettings, WfaSettings
from btc_assets.portfolio.engine import (
    Score,
    backtest_returns,
    backtest_score,
    backtest_scores,
    new_state,
    run_portfolio,
)
from btc_assets.portfolio.layout import Param
from btc_assets.portfolio.tables import EngineInputs, engine_params
from btc_assets.wfa.space import DIRECTIONAL, PhaseParams, StrategyParams, column_names

HOURS_PER_YEAR = 8760.0
BOOKS_PER_PASS = 32  # books scored side by side by FoldObjective.scores_many (a pass's own columns: 32 × 8 B a bar)
RUINED_SCORE = -10.0


class TrialScores(NamedTuple):
    """What one parameter set scores: the objective on the fit and validation pieces, and the plain per-bar Sharpe
    ratio of each (mean / std of hourly returns, not annualised; for the deflated Sharpe ratio's trial variance).
    With ``test`` (:meth:`FoldObjective.scores`), also the score and per-bar Sharpe ratio on the fold's test window
    as a fresh book: kept with the trial for the walk-forward PBO, never seen by the sampler nor the selection."""

    fit: float
    validation: float
    fit_sharpe: float
    validation_sharpe: float
    test: float = math.nan
    test_sharpe: float = math.nan


def per_bar_sharpe(s: Score, n_bars: int) -> float:
    """Mean / standard deviation (population) of the per-bar returns; 0 for a book that never moves."""
    if n_bars < 2:
        return 0.0
    mean = s.sum_return / n_bars
    var = max(s.sum_sq_return / n_bars - mean * mean, 0.0)
    return mean / math.sqrt(var) if var > 1e-20 else 0.0


def score_of(s: Score, n_bars: int, settings: WfaSettings, ruin_floor: float) -> float:
    """The objective of one backtest (see the module docstring)."""
    if n_bars < 2 or not math.isfinite(s.log_growth) or s.log_growth < math.log(ruin_floor):
        return RUINED_SCORE if n_bars >= 2 else 0.0
    sharpe = per_bar_sharpe(s, n_bars) * math.sqrt(HOURS_PER_YEAR)
    turnover_per_year = s.turnover / n_bars * HOURS_PER_YEAR
    over_budget = max(0.0, s.costs / n_bars * HOURS_PER_YEAR - settings.cost_budget)
    return (
        sharpe
        - settings.turnover_penalty * turnover_per_year
        - settings.drawdown_penalty * s.max_drawdown
        - settings.cost_budget_penalty * over_budget
    )


@njit(cache=True, nogil=True)
def mix_into(columns, k, a, w0, x0, w1, x1, w2, x2):  # pragma: no cover - compiled
    """columns[i, k] = w0·x0[a+i] + w1·x1[a+i] + w2·x2[a+i] in one pass (see :func:`mix_reference`)."""
    for i in range(columns.shape[0]):
        columns[i, k] = w0 * x0[a + i] + w1 * x1[a + i] + w2 * x2[a + i]


@njit(cache=True, nogil=True)
def nan_to_zero(x):  # pragma: no cover - compiled
    """x[x != x] = 0 in place, one pass (see :func:`nan_to_zero_reference`)."""
    for i in range(x.shape[0]):
        if x[i] != x[i]:
            x[i] = 0.0


def nan_to_zero_reference(x: np.ndarray) -> None:
    """The plain version of :func:`nan_to_zero`."""
    np.copyto(x, 0.0, where=np.isnan(x))


def mix_reference(n: int, a: int, weights: list[float], signals: list[np.ndarray]) -> np.ndarray:
    """The plain version of :func:`mix_into`."""
    return sum(w * x[a : a + n] for w, x in zip(weights, signals, strict=True))


@dataclass(frozen=True)
class Piece:
    """Row range [start, stop) of the fold's arrays."""

    name: str
    start: int
    stop: int

    @property
    def n(self) -> int:
        return self.stop - self.start


class SignalCache:
    """Expert targets per expert config, NaN (abstain) stored as 0; an optimiser revisits configs.

    ``get(config, stop)`` computes only the first ``stop`` bars (a fold never reads past its end; the experts are
    causal, so that prefix equals the full run's, bit for bit). A cached array at least ``stop`` long is reused.
    """

    def __init__(self, bars: experts.BarArrays, max_entries: int = 64, lines: experts.LineCache | None = None) -> None:
        self.bars = bars
        # every line the search space can ask for (~2,200 windows × kinds, ~0.6 MB each on the real history): the
        # shared memory-mapped ones (btc_assets.line_store) when given, else all kept in this process
        self.lines = experts.LineCache(maxsize=4096) if lines is None else lines
        # a random search rarely asks for an expert config twice: the current phases' and the carry's are reused
        self.max_entries = max_entries
        self._signals: OrderedDict[object, np.ndarray] = OrderedDict()

    def get(self, config: object, stop: int | None = None) -> np.ndarray:
        need = len(self.bars) if stop is None else min(int(stop), len(self.bars))
        hit = self._signals.get(config)
        if hit is not None and len(hit) >= need:
            self._signals.move_to_end(config)
            return hit
        values = config.positions(self.bars, self.lines, stop=need)  # type: ignore[attr-defined]
        if not getattr(config, "NAN_FREE", False):
            nan_to_zero(values)
        values.setflags(write=False)
        self._signals[config] = values
        self._signals.move_to_end(config)
        if len(self._signals) > self.max_entries:
            self._signals.popitem(last=False)
        return values


class FoldObjective:
    """Everything one fold needs to score parameter sets quickly (arrays sliced once, columns swapped in place)."""

    def __init__(
        self,
        inputs: EngineInputs,
        probabilities: pd.DataFrame,
        fold: int,
        signals: SignalCache,
        portfolio: PortfolioSettings,
        settings: WfaSettings,
    ) -> None:
        rows = probabilities[probabilities["fold"] == fold]
        k = len(portfolio.gating)
        ts = pd.DatetimeIndex(rows["timestamp"])
        pos = inputs.index.get_indexer(ts)
        if (pos < 0).any():
            raise ValueError(f"fold {fold}: its regime probabilities have timestamps outside the bar grid")
        a, b = int(pos.min()), int(pos.max()) + 1
        self.index = inputs.index[a:b]
        segment = pd.Series(np.asarray(rows["segment"], dtype=object), index=pos - a)
        train = np.sort(segment.index[segment == "train"].to_numpy())
        validation = np.sort(segment.index[segment == "validation"].to_numpy())
        test = np.sort(segment.index[segment == "test"].to_numpy())
        if not len(train) or not len(validation) or not len(test):
            raise ValueError(f"fold {fold}: its regime probabilities have no train, validation or test rows")
        self.pieces = {
            "fit": Piece("fit", int(train.min()), int(train.max()) + 1),
            "validation": Piece("validation", int(validation.min()), int(validation.max()) + 1),
            "test": Piece("test", int(test.min()), int(test.max()) + 1),
        }
        self.fold = fold
        self.a, self.b = a, b
        probs = np.full((b - a, k), np.nan)
        probs[pos - a] = rows[[f"p_{j}" for j in range(k)]].to_numpy(dtype=np.float64)
        self.params = engine_params(portfolio).to_array()
        self.ruin_floor = portfolio.ruin_floor
        self.settings = settings
        self.signals = signals
        self.n_phases = k
        self.columns = np.zeros((b - a, k + 1))
        # the fold's rows (views), with the fold's regime probabilities and its expert columns (swapped in place)
        self.book = inputs.book.rows(a, b)._replace(experts=self.columns, probs=probs)
        self._piece_books = {name: self.book.rows(p.start, p.stop) for name, p in self.pieces.items()}
        # the last fit run of scores(): its per-bar returns and final account, and the (parameters, phase) it was for;
        # the training book starts as the fit book, so training_returns continues it over the validation piece
        self._fit_returns = np.zeros(self.pieces["fit"].n)
        self._last_fit: tuple[StrategyParams, int | None, np.ndarray] | None = None

    def cut(self, piece: str) -> pd.Timestamp:
        """The end of a piece (exclusive, a bar time): whatever the fold computes up to that piece's end reads
        only bars before it (``validation``: the training end; ``test``: the test end)."""
        return self.index[self.pieces[piece].stop - 1] + pd.Timedelta(hours=1)

    # -- columns -------------------------------------------------------------------------------------------------

    def _set_phase_column(self, k: int, phase: PhaseParams, piece: Piece | None = None) -> None:
        """Column k = phase k's directional mix Σ_e G[k, e] · x_e^k over the fold's rows (only ``piece``'s rows
        when given: the other rows are then stale until the next full refresh)."""
        w = [phase.gating[EXPERTS.index(name)] for name in DIRECTIONAL]
        x = [self.signals.get(getattr(phase, name), self.b) for name in DIRECTIONAL]
        start, stop = (0, len(self.columns)) if piece is None else (piece.start, piece.stop)
        if piece is not None or (self._last_fit is not None and self._last_fit[1] != k):
            # column k is now stale outside the piece, or another phase's column than the last fit run's changed:
            # training_returns runs the window again, exactly as it would without the shortcut
            self._last_fit = None
        mix_into(self.columns[start:stop], k, self.a + start, w[0], x[0], w[1], x[1], w[2], x[2])

    def load(self, params: StrategyParams) -> np.ndarray:
        """Put every phase's column for ``params`` in place; returns the gating matrix."""
        self._last_fit = None
        for k, phase in enumerate(params.phases):
            self._set_phase_column(k, phase)
        self.columns[:, -1] = self.signals.get(params.carry, self.b)[self.a : self.b]
        return params.gating_matrix()

    # -- scoring -------------------------------------------------------------------------------------------------

    def engine_params(self, params: StrategyParams) -> np.ndarray:
        """The engine's parameter array for ``params``: the portfolio's, with its searched policy if it has one."""
        if params.policy is None:
            return self.params
        out = self.params.copy()
        out[Param.BAND_REL] = params.policy.band_rel
        out[Param.DECISION_HOURS] = float(params.policy.decision_hours)
        return out

    def _run(self, piece: Piece, gating: np.ndarray, engine: np.ndarray) -> Score:
        """The engine's scalars on one of :attr:`pieces` (no conversion nor check: the hot path)."""
        return backtest_score(self._piece_books[piece.name], gating, engine, self.columns.shape[1] - 1, check=False)

    def scores(self, params: StrategyParams, k: int | None = None, test: bool = False) -> TrialScores:
        """Scores on the fit and validation pieces (and, with ``test``, on the test window: what
        :meth:`test_scores` gives, from the column already in place). With ``k`` only phase k's column is refreshed
        (the others are assumed loaded by :meth:`load`)."""
        if k is None:
            gating = self.load(params)
        else:
            self._set_phase_column(k, params.phases[k])
            gating = params.gating_matrix()
        fit, val = self.pieces["fit"], self.pieces["validation"]
        engine = self.engine_params(params)
        # the fit piece with each bar's return kept (the same scalars as the score loop's, bit for bit)
        state = new_state(self.columns.shape[1])
        _, on_fit = backtest_returns(
            self._piece_books["fit"], gating, engine, self.columns.shape[1] - 1, check=False, state=state,
            out=self._fit_returns,
        )  # fmt: skip
        self._last_fit = (params, k, state)
        on_val = self._run(val, gating, engine)
        out = TrialScores(
            score_of(on_fit, fit.n, self.settings, self.ruin_floor),
            score_of(on_val, val.n, self.settings, self.ruin_floor),
            per_bar_sharpe(on_fit, fit.n),
            per_bar_sharpe(on_val, val.n),
        )
        if not test:
            return out
        piece = self.pieces["test"]
        on_test = self._run(piece, gating, engine)
        return out._replace(
            test=score_of(on_test, piece.n, self.settings, self.ruin_floor),
            test_sharpe=per_bar_sharpe(on_test, piece.n),
        )

    def scores_many(
        self, trials: list[StrategyParams], k: int, keep: list[bool] | None = None
    ) -> tuple[list[TrialScores], list[pd.Series | None]]:
        """:meth:`scores` with ``test`` of each of ``trials`` (which differ from the loaded parameters in phase k's
        block and the policy only), bit for bit, and with ``keep[i]`` also trial i's :meth:`training_returns`
        (else None): the books run side by side, :data:`BOOKS_PER_PASS` per pass over each piece's bars
        (:func:`~btc_assets.portfolio.engine.backtest_scores`), each with its own column k. The loaded columns are
        not changed."""
        keep = keep or [False] * len(trials)
        scores: list[TrialScores] = []
        returns: list[pd.Series | None] = []
        # the passes' own columns: made per call and let go after it (a fold's objective outlives its studies)
        column = np.empty((min(len(trials), BOOKS_PER_PASS), len(self.columns)))
        for start in range(0, len(trials), BOOKS_PER_PASS):
            part = slice(start, start + BOOKS_PER_PASS)
            got, kept = self._scores_pass(trials[part], k, keep[part], column)
            scores += got
            returns += kept
        return scores, returns

    def _scores_pass(
        self, trials: list[StrategyParams], k: int, keep: list[bool], column: np.ndarray
    ) -> tuple[list[TrialScores], list[pd.Series | None]]:
        """:meth:`scores_many` for one pass of at most :data:`BOOKS_PER_PASS` books (their columns in the first rows
        of ``column``)."""
        n_books, carry = len(trials), self.columns.shape[1] - 1
        # the kept trials' books first: every run below takes a slice of the books (views, no copy)
        order = [b for b in range(n_books) if keep[b]] + [b for b in range(n_books) if not keep[b]]
        n_kept = sum(keep)
        column = column[:n_books]
        for row, b in enumerate(order):
            phase = trials[b].phases[k]
            w = [phase.gating[EXPERTS.index(name)] for name in DIRECTIONAL]
            x = [self.signals.get(getattr(phase, name), self.b) for name in DIRECTIONAL]
            mix_into(column.T, row, self.a, w[0], x[0], w[1], x[1], w[2], x[2])  # as _set_phase_column's whole fold
        gatings = np.stack([trials[b].gating_matrix() for b in order])
        engines = np.stack([self.engine_params(trials[b]) for b in order])

        def run(start: int, stop: int, books: slice, states=None, returns=None) -> list[list[float]]:
            """The scalars of the books in ``books`` (rows of ``order``) over rows [start, stop) (fresh books unless
            ``states``)."""
            if books.start == books.stop:
                return []
            return backtest_scores(
                self.book.rows(start, stop), gatings[books], engines[books], carry, column=column[books],
                column_at=k, column_start=start, states=states, returns=returns, check=False,
            ).tolist()  # fmt: skip

        fit, val, test = (self.pieces[name] for name in ("fit", "validation", "test"))
        kept, others = slice(0, n_kept), slice(n_kept, n_books)
        on_fit = run(fit.start, fit.stop, others)
        training: list[pd.Series | None] = [None] * n_books
        if n_kept:  # the fit run with each bar's return, continued over the validation piece (training_returns)
            states = np.stack([new_state(carry + 1) for _ in range(n_kept)])
            on_fit_ret = np.zeros((n_kept, fit.n))
            on_fit = run(fit.start, fit.stop, kept, states, on_fit_ret) + on_fit
            if fit.stop == val.start:
                on_val_ret = np.zeros((n_kept, val.n))
                run(val.start, val.stop, kept, states, on_val_ret)
                on_train = np.concatenate([on_fit_ret, on_val_ret], axis=1)
            else:
                on_train = np.zeros((n_kept, val.stop - fit.start))
                run(fit.start, val.stop, kept, None, on_train)
            index = self.index[fit.start : val.stop]
            for row in range(n_kept):
                training[order[row]] = pd.Series(on_train[row], index=index)
        everyone = slice(0, n_books)
        on_val = run(val.start, val.stop, everyone)
        on_test = run(test.start, test.stop, everyone)
        out: list[TrialScores] = [None] * n_books  # type: ignore[list-item]
        for row, b in enumerate(order):
            f, v, t = Score(*on_fit[row]), Score(*on_val[row]), Score(*on_test[row])
            out[b] = TrialScores(
                score_of(f, fit.n, self.settings, self.ruin_floor),
                score_of(v, val.n, self.settings, self.ruin_floor),
                per_bar_sharpe(f, fit.n),
                per_bar_sharpe(v, val.n),
                score_of(t, test.n, self.settings, self.ruin_floor),
                per_bar_sharpe(t, test.n),
            )
        return out, training

    def test_scores(self, params: StrategyParams, k: int) -> tuple[float, float]:
        """(score, per-bar Sharpe) of ``params`` on the test window as a fresh book, with phase k's column
        refreshed on the test rows only (the others loaded): the out-of-sample rank of a trial, for the walk-forward
        PBO. Leaves column k stale outside the test rows: :meth:`scores` and :meth:`load` refresh it whole."""
        test = self.pieces["test"]
        self._set_phase_column(k, params.phases[k], test)
        on_test = self._run(test, params.gating_matrix(), self.engine_params(params))
        return score_of(on_test, test.n, self.settings, self.ruin_floor), per_bar_sharpe(on_test, test.n)

    def training_returns(self, params: StrategyParams, k: int) -> pd.Series:
        """Hourly returns of ``params`` over the whole training window (fit + validation, one run), with phase k's
        column refreshed; indexed by bar time."""
        last = self._last_fit
        self._set_phase_column(k, params.phases[k])
        gating = params.gating_matrix()
        fit, val = self.pieces["fit"], self.pieces["validation"]
        s = slice(fit.start, val.stop)
        engine, carry = self.engine_params(params), self.columns.shape[1] - 1
        if last is not None and last[1] == k and fit.stop == val.start and last[0] == params:
            # right after scores() of the same trial: the training book is its fit book continued over the
            # validation piece (chained runs equal one run, bit for bit), so only the validation bars are run
            tail, _ = backtest_returns(
                self._piece_books["validation"], gating, engine, carry, check=False, state=last[2].copy()
            )
            returns = np.concatenate([self._fit_returns, tail])
        else:
            returns, _ = backtest_returns(self.book.rows(s.start, s.stop), gating, engine, carry, check=False)
        return pd.Series(returns, index=self.index[s])

    def test_frame(self, params: StrategyParams, state: np.ndarray) -> pd.DataFrame:
        """The out-of-sample run of the test window with ``params``: one row per bar (the engine's frame). It
        continues the account in ``state`` (``new_state`` for the first fold; updated in place for the next)."""
        gating = self.load(params)
        piece = self.pieces["test"]
        s = slice(piece.start, piece.stop)
        names = column_names(self.n_phases)
        return run_portfolio(
            self._piece_books["test"],
            gating,
            self.engine_params(params),
            len(names) - 1,
            index=self.index[s],
            expert_names=names,
            state=state,
        )
