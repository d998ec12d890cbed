"""One (fold, phase) Optuna study: resumable trial by trial, with choices that do not depend on crashes.

Random search draws trial i's block from its own seed (no Optuna trial at all: the draws are those of
:class:`~btc_assets.wfa.samplers.BlockRandomSampler`), so the trials up to the next storage write are drawn at once
and evaluated together (:attr:`PhaseStudy.evaluate_many`: their books run side by side); the model-based samplers
sample on an in-memory mirror of the study (no storage round trip per suggested parameter), one trial at a time.
Completed trials (parameters, fit value, every score) are written to the durable Optuna storage (a journal file per
study, or RDB) in batches of :data:`BATCH_TRIALS`, one write and one compressed journal frame per batch; the journal
is fsync'd every 2 s and at the end of the study (:mod:`btc_assets.wfa.journal`).

Determinism: trial i (i = number of completed trials so far) is sampled by a fresh sampler seeded from
(seed, fold, phase, i) over the completed trials only. After a crash (at most one batch lost) the mirror is rebuilt
from the durable COMPLETE trials and the lost ones are sampled again as the same indices, so trial i is sampled
exactly as in an uninterrupted run. RUNNING trials (left by a writer of older versions) are marked FAIL and never
seen by the sampler. Trial 0 is the incumbent (the current best parameters), so the study's best
*training* (fit) score is never below the incumbent's. The winner (:func:`select_winner`) is the best validation
score among the ``top`` best fit scores, so it can score below the incumbent on training (it did in 9 of 30
measured studies), and, when the incumbent is not among those ``top`` trials, also on validation. Nothing
guarantees a winner is no worse than the incumbent on either piece.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import optuna
from optuna.trial import FixedTrial, TrialState

from btc_assets.wfa.journal import Completed, sync_storage, write_completed
from btc_assets.wfa.samplers import derive_seed, make_sampler, plain_space, random_block

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass(frozen=True)
class TrialRecord:
    """One completed trial: its index in the study, objective value (fit), the other scores, parameters."""

    index: int
    fit: float
    validation: float
    params: dict[str, Any]
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.index,
            "fit": self.fit,
            "validation": self.validation,
            **self.extra,
            "params": self.params,
        }


@dataclass(frozen=True)
class PhaseStudy:
    """What one (fold, phase) study is, wherever it runs.

    ``suggest`` samples flat parameters from a trial (from ``distributions``), ``evaluate`` maps them to a named
    tuple whose first two fields are the fit score (the objective) and the validation score; the other fields are
    kept with the trial. Trial i is sampled by a sampler seeded from ``(*seed_parts, i)``; trial 0 is
    ``incumbent``.
    """

    name: str
    n_trials: int
    sampler: str
    n_startup_trials: int
    seed_parts: tuple[int, ...]
    incumbent: dict[str, Any]
    suggest: Callable[[optuna.Trial], dict[str, Any]]
    evaluate: Callable[[dict[str, Any]], tuple[float, ...]]
    distributions: dict[str, optuna.distributions.BaseDistribution]
    # called with (trial index, params) right after this process evaluates a trial, while what ``evaluate`` left in
    # place is still that trial's (e.g. to keep the returns the study's PBO will ask for); optional, never changes
    # a result
    after_trial: Callable[[int, dict[str, Any]], None] | None = None
    # evaluates several trials at once: (trial indices, their params) → what ``evaluate`` gives each, bit for bit,
    # having done what ``after_trial`` does for each; optional (random search hands it the trials of a storage batch)
    evaluate_many: Callable[[list[int], list[dict[str, Any]]], list[tuple[float, ...]]] | None = None


class PhaseStudies(Protocol):
    """Where phase studies run: :class:`LocalStudies` (one writer on a journal file or any RDB storage) or
    :class:`btc_assets.wfa.distributed.SharedStudies` (any number of workers on one PostgreSQL study). Both give
    the same records for the same :class:`PhaseStudy`."""

    storage: optuna.storages.BaseStorage

    def run(
        self,
        study: PhaseStudy,
        *,
        on_trial: Callable[[int, float], None] | None = None,
        say: Callable[[str], None] = print,
    ) -> list[TrialRecord]:
        """Run (or resume) ``study`` until it holds ``study.n_trials`` completed trials; return them in order.
        ``on_trial(completed, best_fit)`` is called after each trial this process completes."""
        ...


BATCH_TRIALS = 100  # completed trials written to the storage at once (a crash loses at most this many)


class LocalStudies:
    """Phase studies with one writer (this process): ``storage_for(study name)`` gives each study's storage (a
    journal file of its own, or the one RDB storage)."""

    def __init__(
        self,
        storage_for: Callable[[str], optuna.storages.BaseStorage],
        batch: int | None = None,
    ) -> None:
        self.storage_for = storage_for
        self.batch = batch  # None: BATCH_TRIALS

    def run(
        self,
        study: PhaseStudy,
        *,
        on_trial: Callable[[int, float], None] | None = None,
        say: Callable[[str], None] = print,
    ) -> list[TrialRecord]:
        """See :meth:`PhaseStudies.run`. Completed trials reach the storage in batches of ``batch`` (one
        journal frame each); random search draws trial i from its own seed (:func:`random_block`) without an
        in-memory study, the other samplers ask a mirror of the completed trials."""
        name, n_trials = study.name, study.n_trials
        storage = self.storage_for(name)
        durable = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
        zombies = durable.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for z in zombies:
            storage.set_trial_state_values(z._trial_id, TrialState.FAIL)
        if zombies:
            say(
                f"{name}: marked {len(zombies)} interrupted trial(s) as failed: "
                f"{', '.join(str(z.number) for z in zombies)} (not re-run)"
            )
        done = sorted(
            durable.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.user_attrs["index"]
        )
        records = [_record(t.user_attrs["index"], float(t.value), t.user_attrs["scores"], dict(t.params)) for t in done]
        if records:
            say(f"{name}: {len(records)}/{n_trials} trials already done")
        independent = study.sampler == "random" and plain_space(study.distributions)
        mirror = None if independent else optuna.create_study(direction="maximize")
        if mirror is not None:
            mirror.add_trials(done)
        best = max((r.fit for r in records), default=-math.inf)
        pending: list[Completed] = []
        batch = self.batch or BATCH_TRIALS
        i = len(done)
        while i < n_trials:
            started = datetime.now(UTC)
            if mirror is None:  # the trials up to the next storage write, drawn in the space's order from their seeds
                indices = list(range(i, min(n_trials, i + batch - len(pending))))
                chunk = [
                    study.suggest(FixedTrial(study.incumbent))
                    if t == 0
                    else random_block(study.distributions, derive_seed(*study.seed_parts, t))
                    for t in indices
                ]
                results = evaluated_many(study, indices, chunk)
                sampler_states: list[dict[str, Any]] = [{} for _ in indices]
            else:
                indices = [i]
                mirror.sampler = make_sampler(
                    study.sampler, derive_seed(*study.seed_parts, i), study.n_startup_trials, study.distributions
                )
                if i == 0:
                    mirror.enqueue_trial(study.incumbent, skip_if_exists=False)
                trial = mirror.ask()
                chunk = [study.suggest(trial)]
                sampler_states = [dict(mirror.get_trials(deepcopy=False)[-1].system_attrs)]  # e.g. CMA-ES's
                results = evaluated_many(study, indices, chunk)
                fit, scores = results[0]
                trial.set_user_attr("index", i)
                trial.set_user_attr("scores", scores)
                mirror.tell(trial, fit)
            finished = datetime.now(UTC)
            for t, params, (fit, scores), sampler_state in zip(indices, chunk, results, sampler_states, strict=True):
                pending.append(Completed(params, fit, {"index": t, "scores": scores}, sampler_state, started, finished))
                records.append(_record(t, fit, scores, params))
                best = max(best, fit)
                if on_trial is not None:
                    on_trial(t + 1, best)
            i = indices[-1] + 1
            if len(pending) >= batch or i == n_trials:
                write_trials(storage, durable._study_id, study.distributions, pending)
        sync_storage(storage)
        return records


def write_trials(
    storage: optuna.storages.BaseStorage,
    study_id: int,
    distributions: dict[str, optuna.distributions.BaseDistribution],
    trials: list[Completed],
) -> None:
    """Completed trials into the storage: one journal frame (:func:`write_completed`); ``trials`` is emptied."""
    write_completed(storage, study_id, distributions, trials)
    flush = getattr(getattr(storage, "_backend", None), "flush", None)
    if flush is not None:
        flush()
    trials.clear()


def evaluated(
    evaluate: Callable[[dict[str, Any]], tuple[float, ...]], params: dict[str, Any]
) -> tuple[float, dict[str, float]]:
    """The fit score (the objective) and every named score of ``evaluate(params)``."""
    return _named(evaluate(params))


def evaluated_many(
    study: PhaseStudy, indices: list[int], chunk: list[dict[str, Any]]
) -> list[tuple[float, dict[str, float]]]:
    """:func:`evaluated` of trials ``indices`` (params ``chunk``): by ``study.evaluate_many`` when it has one and
    there are several, else one by one with ``study.after_trial`` after each."""
    if study.evaluate_many is not None and len(chunk) > 1:
        return [_named(result) for result in study.evaluate_many(indices, chunk)]
    out = []
    for t, params in zip(indices, chunk, strict=True):
        out.append(evaluated(study.evaluate, params))
        if study.after_trial is not None:
            study.after_trial(t, params)
    return out


def _named(result: tuple[float, ...]) -> tuple[float, dict[str, float]]:
    return float(result[0]), {k: float(v) for k, v in result._asdict().items()}  # type: ignore[attr-defined]


def _record(index: int, fit: float, scores: dict[str, float], params: dict[str, Any]) -> TrialRecord:
    extra = {k: v for k, v in scores.items() if k not in ("fit", "validation")}
    return TrialRecord(index, fit, float(scores["validation"]), params, extra)


def select_winner(records: list[TrialRecord], top: int) -> TrialRecord:
    """The best validation score among the ``top`` best fit scores (ties: the earlier trial)."""
    ranked = sorted(records, key=lambda r: (-r.fit, r.index))[: max(1, top)]
    return max(ranked, key=lambda r: (r.validation, -r.index))


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start
