"""One seed's walk-forward optimisation, end to end and resumable (see ``btc_assets.wfa``)."""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from btc_assets import experts
from btc_assets.config import ExpertSettings, PortfolioSettings, WfaSettings
from btc_assets.folds import FoldSchedule
from btc_assets.line_store import UNBOUNDED, SharedLines
from btc_assets.overfitting import study_cscv, unselected_trials
from btc_assets.portfolio.engine import new_state
from btc_assets.portfolio.layout import State
from btc_assets.portfolio.metrics import frame_metrics
from btc_assets.portfolio.tables import prepare_inputs
from btc_assets.versions import settings_hash, source_digest
from btc_assets.wfa.checkpoint import Fingerprint, PrefixKeys, ProgressClock, SeedCheckpoint
from btc_assets.wfa.distributed import SharedStudies, open_shared_storage
from btc_assets.wfa.journal import connection_lost, open_storage
from btc_assets.wfa.objective import FoldObjective, SignalCache, TrialScores
from btc_assets.wfa.space import (
    PhaseParams,
    StrategyParams,
    complete_phase,
    incumbent_of,
    phase_distributions,
    suggest_phase,
    with_trial,
)
from btc_assets.wfa.study import LocalStudies, PhaseStudies, PhaseStudy, Stopwatch, TrialRecord, select_winner

P = ParamSpec("P")
R = TypeVar("R")


def code_digest() -> str:
    """The source digest of everything a seed's results depend on (``btc_assets.wfa`` and all it imports; see
    :mod:`btc_assets.versions`): the code part of the checkpoint fingerprint, and of the seed assets' code
    version, so an edit of any of those modules never resumes an old checkpoint and makes the seeds unsynced."""
    return source_digest("btc_assets.wfa")


@dataclass(frozen=True)
class WfaResult:
    """One seed's results."""

    oos: pd.DataFrame  # stitched out-of-sample bars: timestamp, fold, engine columns, stitched equity/drawdown
    folds: pd.DataFrame  # one row per fold: windows, final parameters (JSON), out-of-sample metrics
    trials: pd.DataFrame  # every trial: fold, phase, trial, fit, validation, fit/validation Sharpe, winner, params
    fingerprint: Fingerprint
    resumed: bool  # some studies came from the checkpoint
    trials_run: int  # trials evaluated by this call (0 when everything came from the checkpoint)
    trials_from_checkpoint: int = 0  # trials read back from the checkpoint (finished studies, and a cut-off one's)
    studies_retested: int = 0  # studies taken from the checkpoint whose trials were re-scored on a grown test window


def config_hash(
    settings: WfaSettings,
    portfolio: PortfolioSettings,
    schedule: FoldSchedule,
    expert_settings: ExpertSettings | None = None,
) -> str:
    """The settings part of the checkpoint key: the same hash as the seed assets' code version."""
    return settings_hash(settings, portfolio, schedule, expert_settings or ExpertSettings())


def _fold_ids(probabilities: pd.DataFrame, settings: WfaSettings) -> list[int]:
    """The ids of the folds to optimise (``Fold.index``: the regime tables' ``fold``), the last ``max_folds``."""
    ids = sorted(int(f) for f in probabilities["fold"].unique())
    return ids[-settings.max_folds :] if settings.max_folds else ids


def one_thread(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with every BLAS and OpenMP pool loaded at call time capped at one thread. A seed is one core's
    work and seeds run side by side, one process each: the pools' threads (numpy's and scipy's OpenBLAS, OpenMP,
    each a thread per core in every seed process) migrate the seeds between the cores (measured on 2 cores, two
    seeds at once: 57.5 s each with the pools, 48.5–49.7 s with one thread each)."""

    @functools.wraps(fn)
    def capped(*args: P.args, **kwargs: P.kwargs) -> R:
        with threadpool_limits(limits=1):
            return fn(*args, **kwargs)

    return capped


@one_thread
def run_seed(
    seed: int,
    seed_key: str,
    bars: pd.DataFrame,
    volatility: pd.DataFrame,
    regime_probabilities: pd.DataFrame,
    *,
    settings: WfaSettings,
    portfolio: PortfolioSettings,
    schedule: FoldSchedule,
    checkpoints: str,
    say: Callable[[str], None] = print,
    expert_settings: ExpertSettings | None = None,
    lines: str | None = None,
) -> WfaResult:
    """Optimise every fold (phases in turn), run each fold's winner on its test window, stitch the tests. With
    ``lines`` (a folder) and ``settings.shared_lines``, the rolling lines of the search space are memory-mapped from
    files shared by every seed process (:class:`~btc_assets.line_store.SharedLines`, built there once per data
    version) instead of kept in this process."""
    keys = PrefixKeys({"bars": bars, "volatility": volatility, "regimes": regime_probabilities})
    config, code = config_hash(settings, portfolio, schedule, expert_settings), code_digest()
    fingerprint = Fingerprint(config, code, seed, data_origin(keys, regime_probabilities))
    ckpt = SeedCheckpoint(checkpoints, seed_key, fingerprint, say)
    if settings.shared and not settings.storage:
        raise ValueError('[wfa] shared = true needs [wfa] storage = "postgresql+psycopg2://…"')
    opened: list[PhaseStudies] = []

    def studies() -> PhaseStudies:
        """Where the studies run, opened for the first study not in the checkpoint (opening a journal replays it
        whole: a seed whose studies are all recorded, or that only gained a fold, skips or defers that)."""
        if not opened:
            if settings.shared:  # several workers (machines) cooperate on this seed through one PostgreSQL storage
                opened.append(SharedStudies(open_shared_storage(settings.storage)))
            else:
                if settings.storage:
                    rdb = open_storage(settings.storage, "")
                    opened.append(LocalStudies(lambda name: rdb))
                else:
                    opened.append(LocalStudies(lambda name: open_storage(None, str(ckpt.journal_path(name)))))
        return opened[0]

    arrays = experts.BarArrays.from_market_bars(bars)
    shared = lines is not None and settings.shared_lines
    signals = SignalCache(
        arrays, lines=shared_lines(arrays, lines, expert_settings, settings.lines_resident_mb) if shared else None
    )
    # expert columns are built per phase by the fold objective; the portfolio's own signal table is not used
    inputs = prepare_inputs(bars, volatility, regime_probabilities, _no_signals(len(bars)), portfolio)
    fold_ids = _fold_ids(regime_probabilities, settings)
    k_phases = len(portfolio.gating)
    total = len(fold_ids) * k_phases * settings.n_trials
    distributions = phase_distributions(settings, expert_settings)
    clock = ProgressClock(settings.progress_every)
    watch = Stopwatch()
    counters = {"run": 0, "done_before": 0, "retested": 0}
    current = StrategyParams.default(portfolio, settings, expert_settings)
    fold_params: list[tuple[int, StrategyParams, FoldObjective]] = []
    trial_rows: list[dict[str, object]] = []

    def progress(state: str, fold: int, phase: int, trial: int, best: float | None) -> None:
        """A progress record; ``fold`` is the fold's id, ``phase`` 0-based, ``trial`` the trials done in it."""
        done = counters["done_before"] + counters["run"]
        rate = counters["run"] / watch.elapsed if watch.elapsed > 0 and counters["run"] else None
        eta = (total - done) / rate if rate else None
        ckpt.write_progress(
            state=state,
            fold=fold,
            fold_position=fold_ids.index(fold) + 1,
            n_folds=len(fold_ids),
            phase=phase,
            n_phases=k_phases,
            trial=trial,
            n_trials=settings.n_trials,
            best=best,
            trials_done=done,
            trials_total=total,
            elapsed_s=round(watch.elapsed, 1),
            eta_s=None if eta is None else round(eta, 1),
        )

    def test_scores(objective: FoldObjective, base: StrategyParams, k: int, trials: list[dict]) -> None:
        """Every trial's score on the fold's test window (out of sample, never used to select), in place."""
        for row in trials:
            row["test"], row["test_sharpe"] = objective.test_scores(
                with_trial(base, k, row["params"], settings, expert_settings), k
            )

    for position, fold in enumerate(fold_ids):
        objective = FoldObjective(inputs, regime_probabilities, fold, signals, portfolio, settings)
        train_cut, test_cut = objective.cut("validation"), objective.cut("test")
        train_data, test_data = keys.key(fold, train_cut), keys.key(fold, test_cut)
        for k in range(k_phases):
            base = current
            key = study_key(train_data, base, k)
            record = ckpt.phase_record(fold, k)
            if record is not None and record.get("key") != key:
                why = (
                    f"different data before {train_cut}"
                    if record.get("data") != train_data
                    else "different starting parameters (an earlier study changed)"
                )
                say(f"{seed_key}: fold {fold} phase {k}: the checkpoint's study was made from {why}; optimising afresh")
                record = None
            if record is None:

                def evaluate(
                    flat: dict[str, object],
                    base: StrategyParams = base,
                    k: int = k,
                    objective: FoldObjective = objective,
                ) -> TrialScores:
                    counters["run"] += 1
                    # the test window's score too, from the column in place (kept for the walk-forward PBO only)
                    return objective.scores(with_trial(base, k, flat, settings, expert_settings), k, test=True)

                pbo_pick = set(unselected_trials(range(settings.n_trials), settings.pbo_trials, (seed, fold, k)))
                pbo_returns: dict[int, pd.Series] = {}

                def keep_returns(
                    i: int,
                    flat: dict[str, object],
                    base: StrategyParams = base,
                    k: int = k,
                    objective: FoldObjective = objective,
                    pick: set[int] = pbo_pick,
                    kept: dict[int, pd.Series] = pbo_returns,
                ) -> None:
                    """The training returns of a trial the study's PBO will use, while its signals are at hand."""
                    if i in pick:
                        kept[i] = objective.training_returns(with_trial(base, k, flat, settings, expert_settings), k)

                def evaluate_many(
                    indices: list[int],
                    flats: list[dict[str, object]],
                    base: StrategyParams = base,
                    k: int = k,
                    objective: FoldObjective = objective,
                    pick: set[int] = pbo_pick,
                    kept: dict[int, pd.Series] = pbo_returns,
                ) -> list[TrialScores]:
                    """``evaluate`` and ``keep_returns`` of several trials, their books run side by side."""
                    counters["run"] += len(flats)
                    trials = [with_trial(base, k, flat, settings, expert_settings) for flat in flats]
                    scores, returns = objective.scores_many(trials, k, [i in pick for i in indices])
                    kept.update((i, r) for i, r in zip(indices, returns, strict=True) if r is not None)
                    return scores

                def on_trial(n: int, best: float, fold: int = fold, k: int = k) -> None:
                    if clock.due():
                        progress("running", fold, k, n, best)

                study = PhaseStudy(
                    name=ckpt.study_name(fold, k, key),
                    n_trials=settings.n_trials,
                    sampler=settings.sampler,
                    n_startup_trials=settings.n_startup_trials,
                    seed_parts=(seed, fold, k),
                    incumbent=incumbent_of(current, k, settings, portfolio, expert_settings),
                    suggest=lambda trial: suggest_phase(trial, settings, expert_settings),
                    evaluate=evaluate,
                    distributions=distributions,
                    after_trial=keep_returns,
                    evaluate_many=evaluate_many,
                )
                where = f"{seed_key}: fold {fold} phase {k}"
                objective.load(base)  # the other phases' columns (a study refreshes only column k)
                records = run_study(studies(), study, on_trial, say, where, settings)
                winner = select_winner(records, settings.select_top)
                trials = [r.as_dict() for r in records]
                record = {
                    "fold": fold,
                    "phase": k,
                    "key": key,
                    "data": train_data,
                    "test_data": test_data,
                    "winner": winner.index,
                    "fit": winner.fit,
                    "validation": winner.validation,
                    "params": winner.params,
                    "pbo": study_pbo(
                        objective,
                        base,
                        k,
                        records,
                        settings,
                        seed=seed,
                        expert_settings=expert_settings,
                        kept=pbo_returns,
                    ),
                    "trials": trials,
                }
                ckpt.write_phase_record(fold, k, record)
                clock.reset()
                progress("running", fold, k, settings.n_trials, winner.fit)
            else:
                counters["done_before"] += len(record["trials"])
                if record.get("test_data") != test_data:  # the test window grew (or changed): re-score it only
                    objective.load(base)
                    test_scores(objective, base, k, record["trials"])
                    record["test_data"] = test_data
                    ckpt.write_phase_record(fold, k, record)
                    counters["retested"] += 1
            # the columns are loaded when a study or a re-scoring needs them (a recorded phase needs none)
            current = with_trial(current, k, record["params"], settings, expert_settings)
            for row in record["trials"]:
                trial_rows.append(
                    {
                        "fold": fold,
                        "phase": k,
                        **row,
                        "winner": row["trial"] == record["winner"],
                        "study_pbo": record["pbo"]["pbo"],
                        "study_rho": record["pbo"]["rho"],
                        "fit_bars": record["pbo"]["fit_bars"],
                        "validation_bars": record["pbo"]["validation_bars"],
                        "params": json.dumps(row["params"], sort_keys=True),
                    }
                )
        fold_params.append((fold, current, objective))
        say(f"{seed_key}: fold {fold} ({position + 1}/{len(fold_ids)}) optimised")

    oos, folds = _out_of_sample(fold_params, portfolio)
    progress("done", fold_ids[-1], k_phases - 1, settings.n_trials, None)
    trials = pd.DataFrame(trial_rows)
    first = ["fold", "phase", "trial", "fit", "validation"]
    last = ["winner", "study_pbo", "study_rho", "params"]
    trials = trials[first + sorted(set(trials.columns) - {*first, *last}) + last]
    # every trial of the seed's studies was either evaluated by this call or read back from the checkpoint (finished
    # studies, and the completed trials of a study cut off mid-way)
    from_checkpoint = max(0, len(trials) - counters["run"])
    say(
        f"{seed_key}: {counters['run']:,} trials run now, {from_checkpoint:,} from the checkpoint"
        + (f", {counters['retested']} studies re-scored on a grown test window" if counters["retested"] else "")
    )
    return WfaResult(
        oos,
        folds,
        trials,
        fingerprint,
        resumed=from_checkpoint > 0,
        trials_run=counters["run"],
        trials_from_checkpoint=from_checkpoint,
        studies_retested=counters["retested"],
    )


def shared_lines(
    arrays: experts.BarArrays, folder: str, expert_settings: ExpertSettings | None = None, resident_mb: int = 0
) -> experts.LineCache:
    """A line cache that reads the search space's lines from the memory-mapped files in ``folder`` (built first
    when missing) and keeps only the few others (windows outside the ranges) in this process; at most
    ``resident_mb`` MB of the files stay mapped in it (0: no bound; ``[wfa] lines_resident_mb``)."""
    builder = experts.LineCache(maxsize=8)
    store = SharedLines(
        folder,
        arrays.fingerprint,
        experts.line_windows(expert_settings),
        lambda k, w: builder.get(arrays, k, w),
        version=source_digest("btc_assets.experts"),  # an edited line builder writes its own files
        resident_budget=resident_mb * 2**20 if resident_mb > 0 else UNBOUNDED,
    )
    return experts.LineCache(maxsize=256, shared=store)


def data_origin(keys: PrefixKeys, probabilities: pd.DataFrame) -> str:
    """The key of the data before the first fold's training end (its validation slice's end): every study reads
    it, appending bars never changes it."""
    first = int(probabilities["fold"].min())
    rows = probabilities[(probabilities["fold"] == first) & (probabilities["segment"] == "validation")]
    return keys.key(first, pd.Timestamp(rows["timestamp"].max()) + pd.Timedelta(hours=1))


# seconds between attempts when the Optuna storage's database connection is lost (a restart takes a few seconds)
STORAGE_RETRY_WAITS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


class StorageUnavailable(RuntimeError):
    """The Optuna storage's database stayed unreachable through every retry."""


def run_study(
    studies: PhaseStudies,
    study: PhaseStudy,
    on_trial: Callable[[int, float], None],
    say: Callable[[str], None],
    where: str,
    settings: WfaSettings,
) -> list[TrialRecord]:
    """``studies.run(study)``, resumed after a lost database connection (:func:`connection_lost`: the server
    restarted) after :data:`STORAGE_RETRY_WAITS`. A resumed study makes exactly the choices of an uninterrupted one
    (its completed trials are in the storage; a trial cut off is marked failed and sampled again as the same
    index), so a retry changes no result. Past the last wait: :class:`StorageUnavailable`, naming the storage."""
    for attempt, wait in enumerate((*STORAGE_RETRY_WAITS, None), start=1):
        try:
            return studies.run(study, on_trial=on_trial, say=say)
        except Exception as err:
            if not connection_lost(err):
                raise
            reason = _root_reason(err)
            url = _without_password(settings.storage)
            if wait is None:
                raise StorageUnavailable(
                    f"{where}: the Optuna storage {url} is unreachable ({reason}) after {attempt} attempts; the "
                    "trials done so far are stored: run the same command again to resume"
                ) from err
            say(f"{where}: lost the Optuna storage {url} ({reason}); resuming in {wait:g} s (attempt {attempt})")
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _root_reason(err: BaseException) -> str:
    """The first line of the innermost cause (the driver's own words, not Optuna's generic wrapper)."""
    seen = {id(err)}
    while True:
        inner = getattr(err, "orig", None) or err.__cause__ or err.__context__  # SQLAlchemy keeps the driver's in orig
        if not isinstance(inner, BaseException) or id(inner) in seen:
            break
        seen.add(id(inner))
        err = inner
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]


def _without_password(url: str) -> str:
    import sqlalchemy.engine

    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True) if url else "(journal file)"


def study_key(data: str, base: StrategyParams, phase: int) -> str:
    """The key of one (fold, phase) study: the data it read (:meth:`PrefixKeys.key` up to its fold's training
    end), the parameters it started from (the incumbent and the other phases' blocks) and the phase."""
    start = json.dumps(base.to_json(), sort_keys=True)
    return hashlib.sha256(f"{data}|{phase}|{start}".encode()).hexdigest()[:16]


def study_pbo(
    objective: FoldObjective,
    base: StrategyParams,
    k: int,
    records: list[TrialRecord],
    settings: WfaSettings,
    *,
    seed: int = 0,
    expert_settings: ExpertSettings | None = None,
    kept: dict[int, pd.Series] | None = None,
) -> dict[str, float]:
    """Probability of backtest overfitting of one (fold, phase) study by CSCV over trials the score did not select
    (:func:`btc_assets.overfitting.study_cscv`).

    Convention: the configurations are ``pbo_trials`` of the study's trials drawn at random without looking at any
    score (a numpy Generator seeded from (``seed``, fold, phase) and the study's trial indices: the same study always
    gets the same subset; all trials when the study has no more than ``pbo_trials``); the rows are their returns over
    the training window (fit + validation, one run per trial) compounded per 7-day bin; ``pbo_blocks`` blocks (fewer,
    even, when the window has too few weeks). NaN with fewer than 2 trials or 8 weeks. The best trials by the fit
    score would bias the PBO upwards by construction (about 0.86 instead of 0.5 on pure noise).

    Also ``rho``, the mean pairwise correlation of those trials' weekly returns (the study's effective number of
    trials), ``n_trials`` (trials in the CSCV), ``n_study_trials``, ``n_weeks``, ``n_blocks``, and the bar counts
    ``fit_bars`` / ``validation_bars`` of the pieces (for the per-study deflated Sharpe ratio)."""
    by_index = {r.index: r for r in records}

    def returns_of(index: int) -> pd.Series:
        if kept and index in kept:  # computed during the study (identical: the same parameters on the same columns)
            return kept[index]
        return objective.training_returns(with_trial(base, k, by_index[index].params, settings, expert_settings), k)

    try:
        out = study_cscv(
            list(by_index),
            returns_of,
            n_trials=settings.pbo_trials,
            n_blocks=settings.pbo_blocks,
            seed=(seed, objective.fold, k),
        )
    finally:
        objective.load(base)  # put the base parameters back
    out["fit_bars"] = float(objective.pieces["fit"].n)
    out["validation_bars"] = float(objective.pieces["validation"].n)
    return out


def phase_of(
    searched: dict[str, object], settings: WfaSettings, expert_settings: ExpertSettings | None = None
) -> PhaseParams:
    """A phase block from a trial's searched parameters (the fixed ones of the search space added)."""
    return PhaseParams.from_flat(complete_phase(searched, settings, expert_settings))


def _no_signals(n: int) -> pd.DataFrame:
    from btc_assets.config import EXPERTS

    return pd.DataFrame(np.zeros((n, len(EXPERTS))), columns=list(EXPERTS))


def _out_of_sample(
    fold_params: list[tuple[int, StrategyParams, FoldObjective]], portfolio: PortfolioSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test windows run as one account: the engine's state (equity, positions, pending order, drawdown peak,
    throttle, ruin) carries from the last bar of fold f into fold f + 1; only the parameters and the regime model
    change at the boundary, and the rebalance that causes is charged like any trade. Per-fold metrics are of that
    one path over the fold's bars (equity relative to its value at the fold's start)."""
    frames, rows = [], []
    state = new_state(fold_params[0][2].columns.shape[1]) if fold_params else None
    previous_end: pd.Timestamp | None = None
    for fold, params, objective in fold_params:
        test = objective.pieces["test"]
        start = objective.index[test.start]
        if previous_end is not None and start != previous_end:
            raise ValueError(
                f"fold {fold}: its test window starts at {start}, not where the previous one ended "
                f"({previous_end}); the out-of-sample book must be contiguous"
            )
        previous_end = objective.index[test.stop - 1] + pd.Timedelta(hours=1)
        equity_before = float(state[State.EQUITY])
        frame = objective.test_frame(params, state)
        own = frame.assign(equity=frame["equity"] / equity_before)
        metrics = frame_metrics(own, portfolio.ruin_floor)
        rows.append(
            {
                "fold": fold,
                "test_start": start,
                "test_end": previous_end,
                "equity_start": equity_before,
                # the orders decided at the fold's last close, filled at the next open (the next fold's first bar;
                # for the last fold: the position to hold now, btc_assets.evaluation.position)
                "order_position": float(state[State.ORDER_POSITION]),
                "order_carry": float(state[State.ORDER_CARRY]),
                "params": json.dumps(params.to_json(), sort_keys=True),
                **metrics,
            }
        )
        frames.append(frame.assign(fold=fold))
    oos = pd.concat(frames)
    oos.index.name = "timestamp"
    return oos.reset_index(), pd.DataFrame(rows)
