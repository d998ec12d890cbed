"""One (fold, phase) Optuna study worked on by several processes (machines) at once through one PostgreSQL storage.

:class:`SharedStudies` is the distributed implementation of :class:`btc_assets.wfa.study.PhaseStudies` (the local
one is :class:`~btc_assets.wfa.study.LocalStudies`: same :class:`~btc_assets.wfa.study.PhaseStudy` in, same
records out: the ``n_trials`` completed trials as :class:`TrialRecord`, ordered by index) on a storage opened with
:func:`open_shared_storage`. Any number of workers may run the same study at the same time, and any of them may
die at any moment; every worker that returns returns the same records.

Protocol (everything lives in the Optuna tables; no other table is created):

* **Slots.** Index i (0 … n-1, the trial's user attribute ``"index"``, as in ``LocalStudies``) is a *slot*: a
  WAITING trial carrying the index (and, for index 0, the incumbent as ``fixed_params``, as ``enqueue_trial``
  does; the first worker stores it in the study system attribute :data:`INCUMBENT_ATTR`, so a re-queued slot 0
  gets the same) and the system attribute :data:`SLOT_ATTR`. Slots are created only while holding a PostgreSQL advisory
  transaction lock on (:data:`LOCK_NAMESPACE`, study id), and only for an index that has no WAITING, RUNNING or
  COMPLETE trial (:func:`_reconcile`). Since FAIL is terminal in Optuna and no other transition makes an index
  "covered", an index never has two live trials: **no index is ever completed twice**. The first worker to
  arrive creates all n slots; later workers find nothing missing. The lock is transaction scoped, so a worker
  that dies while holding it releases it with its connection.
* **Claims.** A worker claims the lowest-index WAITING slot with ``storage.set_trial_state_values(trial_id,
  RUNNING)``: RDBStorage reads the trial row ``SELECT … FOR UPDATE`` and returns False unless it is still WAITING
  (``optuna/storages/_rdb/storage.py``, ``set_trial_state_values``: ``find_or_raise_by_id(trial_id, session,
  for_update=True)`` then ``if state == TrialState.RUNNING and trial.state != TrialState.WAITING: return False``),
  so exactly one worker wins each slot. It records a heartbeat *before* claiming (Optuna ignores RUNNING trials
  without any heartbeat row when it looks for stale ones) and keeps a heartbeat thread alive while it works.
* **Parameters.** Slot i's parameters are sampled by ``make_sampler(sampler, derive_seed(*seed_parts, i),
  n_startup_trials)`` on an in-memory mirror holding the study's COMPLETE trials at claim time, ordered by index
  (as in ``LocalStudies``), and written onto the claimed trial (``set_trial_param``, plus the sampler's trial
  system attributes, e.g. CMA-ES's state). Then the trial is evaluated, its scores written and it is set COMPLETE.
* **Dead workers.** A RUNNING slot whose heartbeat is older than the storage's grace period is set FAIL by
  ``optuna.storages.fail_stale_trials`` (one worker wins: the state change is the same row-locked update); its
  index is then uncovered and the next reconciliation puts it back as a new WAITING slot. A worker that was
  wrongly declared dead (a pause longer than the grace period) finds its trial FAIL when it writes
  (``UpdateFinishedTrialError``) and drops its result. A worker that raises marks its trial FAIL and re-raises.
* **Waiting.** A worker with nothing to claim polls (every :data:`POLL_SECONDS`; it also fails stale trials and
  reconciles) until all n indices are COMPLETE, then returns the records read from the storage, so all workers
  return the same records and may write the same phase record. If no trial completes for :data:`WAIT_TIMEOUT`
  seconds while it waits, it raises ``TimeoutError``.

Determinism: with the ``random`` sampler the parameters of index i depend only on (seed_parts, i), so any number of
workers (and any deaths) give exactly the records of ``LocalStudies`` with the same seed_parts. With one worker
the mirror holds exactly what ``LocalStudies``'s holds, so every sampler gives its records. With several
workers and ``tpe`` / ``cmaes``, the trials a slot's sampler sees depend on which others had completed at claim
time: the records are valid but depend on timing (not reproducible run to run).

Cost: a trial makes about 4 + (number of parameters) small transactions (heartbeat, claim, one per parameter,
scores, COMPLETE) plus a read of the study; ``set_trial_param`` is Optuna's only public way to put parameters on an
existing trial. On this project's 22-parameter blocks that is ~0.1–0.2 s per trial on a loaded local PostgreSQL
(``LocalStudies`` on the same database: ~half; on the journal file: ~2 ms). Sharing one seed between machines
pays only when trials are expensive or there are more cores than seeds.

Requirements: an :class:`optuna.storages.RDBStorage` on PostgreSQL with a heartbeat (:func:`open_shared_storage`);
the study is written only through :class:`SharedStudies` (trials that ``LocalStudies`` left COMPLETE are accepted, and
its RUNNING zombies, which carry no slot attribute, are set FAIL and their indices re-queued).
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState, create_trial

from btc_assets.wfa.journal import LOCK_NAMESPACE, open_rdb
from btc_assets.wfa.samplers import derive_seed, make_sampler
from btc_assets.wfa.study import PhaseStudy, TrialRecord, _record, evaluated

SLOT_ATTR = "btc_assets:slot"  # trial system attribute marking a slot created by this protocol
INCUMBENT_ATTR = "btc_assets:incumbent"  # study system attribute: index 0's fixed parameters
POLL_SECONDS = 0.5  # how often a worker with nothing to claim looks again
WAIT_TIMEOUT = 3600.0  # seconds without any newly completed trial after which a waiting worker gives up
LOCK_TIMEOUT = "300s"  # PostgreSQL lock_timeout while waiting for a slot lock
LOCK_IDLE_TIMEOUT = "120s"  # idle_in_transaction_session_timeout of the lock holder (a vanished holder's lock)


def open_shared_storage(url: str, heartbeat_interval: int = 10, grace_period: int = 60) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage on PostgreSQL for :class:`SharedStudies`.

    Workers record a heartbeat every ``heartbeat_interval`` seconds while they evaluate a trial; a trial whose last
    heartbeat is older than ``grace_period`` seconds is declared dead, set FAIL and its index re-queued. Sessions
    are pinned to UTC (heartbeats are compared as naive database timestamps, so every worker must store them in the
    same time zone) and use TCP keepalives on both ends and ``pool_pre_ping``. Creating Optuna's tables on a fresh
    database is serialised by an advisory lock, so workers on several machines may start at the same moment
    (``RDBStorage.__init__`` runs ``metadata.create_all`` and stamps alembic's version: two at once can collide).
    A ``postgresql://`` URL without a driver gets psycopg2 (SQLAlchemy 2.1 would pick psycopg 3, not installed).
    """
    url = _with_installed_driver(url)
    if heartbeat_interval <= 0 or grace_period <= heartbeat_interval:
        raise ValueError("need 0 < heartbeat_interval < grace_period")
    # client and server TCP keepalives: a vanished machine's session (and any advisory lock it held) ends in ~1 min
    connect_args = {
        "options": "-c timezone=UTC -c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3",
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return open_rdb(url, connect_args, heartbeat_interval=heartbeat_interval, grace_period=grace_period)


def _with_installed_driver(url: str) -> str:
    """``url`` checked to be PostgreSQL; ``postgresql://`` gets the psycopg2 driver when psycopg (3), SQLAlchemy
    2.1's default PostgreSQL driver, is not installed (the project installs psycopg2-binary)."""
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"a shared study needs a PostgreSQL storage URL (postgresql+psycopg2://…), got {url!r}")
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None:
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


class SharedStudies:
    """Phase studies worked on by any number of workers through one PostgreSQL storage (the module docstring
    gives the protocol and its guarantees); ``storage`` must come from :func:`open_shared_storage`."""

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self.storage = _require_shared(storage)

    def run(
        self,
        study: PhaseStudy,
        *,
        on_trial: Callable[[int, float], None] | None = None,
        say: Callable[[str], None] = print,
    ) -> list[TrialRecord]:
        """Work on ``study`` with the other workers until it holds exactly ``n_trials`` COMPLETE trials with indices
        0 … n-1 (each once); return them ordered by index (see :meth:`btc_assets.wfa.study.PhaseStudies.run`)."""
        rdb, name, n_trials = self.storage, study.name, study.n_trials
        durable = optuna.create_study(study_name=name, storage=rdb, direction="maximize", load_if_exists=True)
        if n_trials <= 0:
            return []
        interval = int(rdb.get_heartbeat_interval() or 0)
        grace = float(rdb.grace_period or 2 * interval)
        mirror = _Mirror()
        view = _View(durable.get_trials(deepcopy=False), n_trials)
        if view.complete:
            say(f"{name}: {len(view.complete)}/{n_trials} trials already done")
        last_stale_check = time.monotonic()
        last_progress = (len(view.complete), time.monotonic())
        ran = 0
        while True:
            view = _View(durable.get_trials(deepcopy=False), n_trials)
            if len(view.complete) == n_trials:
                break
            if view.missing or view.foreign_running:
                _reconcile(rdb, durable, n_trials, study.incumbent, say)
                continue
            slot = next((t for t in view.waiting if _claim(rdb, t)), None)
            if slot is not None:
                record = _run_slot(rdb, slot, view.complete, mirror, study, interval=interval, say=say)
                if record is not None:
                    ran += 1
                    if on_trial is not None:
                        best = max([record.fit, *(float(t.value) for t in view.complete.values())])
                        on_trial(len(view.complete) + 1, best)
                if time.monotonic() - last_stale_check >= grace:  # now and then, even while busy
                    _fail_stale_trials(durable)
                    last_stale_check = time.monotonic()
                continue
            # nothing to claim: the remaining indices are RUNNING elsewhere; wait for them or their workers' death
            now = time.monotonic()
            if len(view.complete) != last_progress[0]:
                last_progress = (len(view.complete), now)
            elif now - last_progress[1] > WAIT_TIMEOUT:
                raise TimeoutError(
                    f"{name}: no trial completed for {WAIT_TIMEOUT:.0f} s while waiting for indices "
                    f"{sorted(view.running_indices)} (running elsewhere)"
                )
            _fail_stale_trials(durable)
            last_stale_check = now
            time.sleep(POLL_SECONDS)
        if ran:
            say(f"{name}: {ran} of the {n_trials} trials run by this worker")
        return [
            _record(i, float(t.value), t.user_attrs["scores"], dict(t.params)) for i, t in sorted(view.complete.items())
        ]


# -------------------------------------------------------------------------------------------------------- internals


def _fail_stale_trials(study: optuna.Study) -> None:
    """``optuna.storages.fail_stale_trials`` (RUNNING trials whose heartbeat is older than the grace period become
    FAIL; concurrent callers are safe: the state change is a row-locked update that only one wins)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _require_shared(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage:
    if not isinstance(storage, optuna.storages.RDBStorage) or storage.engine.dialect.name != "postgresql":
        raise TypeError("SharedStudies needs an RDBStorage on PostgreSQL: open it with open_shared_storage")
    if storage.get_heartbeat_interval() is None:
        raise ValueError("SharedStudies needs a storage with a heartbeat: open it with open_shared_storage")
    return storage


class _View:
    """The study's trials as slots: COMPLETE by index, claimable WAITING slots, what is missing."""

    def __init__(self, trials: list[FrozenTrial], n_trials: int) -> None:
        self.complete: dict[int, FrozenTrial] = {}
        self.waiting: list[FrozenTrial] = []
        self.running_indices: set[int] = set()
        self.foreign_running: list[FrozenTrial] = []
        covered: set[int] = set()
        for t in sorted(trials, key=lambda t: t.number):
            index = t.user_attrs.get("index")
            if t.state == TrialState.RUNNING and SLOT_ATTR not in t.system_attrs:
                self.foreign_running.append(t)  # a zombie of LocalStudies (no heartbeat): never stale by itself
                continue
            if not isinstance(index, int) or not 0 <= index < n_trials:
                continue
            if t.state == TrialState.COMPLETE:
                self.complete.setdefault(index, t)  # (two only if the study was also written some other way)
            elif t.state == TrialState.WAITING and SLOT_ATTR in t.system_attrs:
                self.waiting.append(t)
            elif t.state == TrialState.RUNNING:
                self.running_indices.add(index)
            else:
                continue
            covered.add(index)
        self.waiting.sort(key=lambda t: (t.user_attrs["index"], t.number))
        self.missing = sorted(set(range(n_trials)) - covered)


@contextlib.contextmanager
def _slot_lock(rdb: optuna.storages.RDBStorage, study_id: int) -> Iterator[Callable[[], None]]:
    """Hold the PostgreSQL advisory transaction lock (LOCK_NAMESPACE, study id) on a connection of its own; it is
    released when the transaction ends, including by the death of this process (its connection closes) or of its
    machine (server-side TCP keepalives, see :func:`open_shared_storage`). A holder idle for LOCK_IDLE_TIMEOUT is
    cut off by the server (a frozen holder cannot block the others for ever); the yielded ``check`` raises if that
    happened, and also restarts the idle clock: call it before every write made under the lock."""
    with rdb.engine.connect() as conn, conn.begin():
        conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        conn.execute(sqlalchemy.text(f"SET LOCAL idle_in_transaction_session_timeout = '{LOCK_IDLE_TIMEOUT}'"))
        conn.execute(
            sqlalchemy.text("SELECT pg_advisory_xact_lock(:ns, :study)"), {"ns": LOCK_NAMESPACE, "study": study_id}
        )

        def check() -> None:
            conn.execute(sqlalchemy.text("SELECT 1"))  # fails if the server ended the session (lock released)

        yield check


def _reconcile(
    rdb: optuna.storages.RDBStorage,
    study: optuna.Study,
    n_trials: int,
    incumbent: dict[str, Any],
    say: Callable[[str], None],
) -> None:
    """Under the study's slot lock: set foreign RUNNING zombies FAIL and create a WAITING slot for every index that
    has no WAITING, RUNNING or COMPLETE trial. Only this function creates trials, and only under the lock, so two
    workers never create a slot for the same index. Index 0's fixed parameters are stored once per study (study
    system attribute :data:`INCUMBENT_ATTR`, written by the first worker), so a re-queued slot 0 gets the same."""
    with _slot_lock(rdb, study._study_id) as still_held:
        trials = study.get_trials(deepcopy=False)  # re-read under the lock: authoritative for creation
        view = _View(trials, n_trials)
        for zombie in view.foreign_running:
            still_held()
            with contextlib.suppress(UpdateFinishedTrialError):
                rdb.set_trial_state_values(zombie._trial_id, TrialState.FAIL)
        if view.foreign_running:
            say(
                f"{study.study_name}: marked {len(view.foreign_running)} interrupted trial(s) without a heartbeat "
                f"as failed: {', '.join(str(t.number) for t in view.foreign_running)}"
            )
            trials = study.get_trials(deepcopy=False)
            view = _View(trials, n_trials)
        if not view.missing:
            return
        stored = rdb.get_study_system_attrs(study._study_id).get(INCUMBENT_ATTR)
        if stored is None:
            still_held()
            rdb.set_study_system_attr(study._study_id, INCUMBENT_ATTR, incumbent)
            stored = incumbent
        elif stored != incumbent:
            say(
                f"{study.study_name}: WARNING: this worker's incumbent differs from the study's (workers disagree "
                "on the previous phases); using the study's"
            )
        fresh = not any(SLOT_ATTR in t.system_attrs for t in trials)
        for index in view.missing:
            system: dict[str, Any] = {SLOT_ATTR: True}
            if index == 0:
                system["fixed_params"] = stored
            still_held()
            rdb.create_new_trial(
                study._study_id,
                template_trial=create_trial(state=TrialState.WAITING, user_attrs={"index": index}, system_attrs=system),
            )
        if fresh:
            say(f"{study.study_name}: created {len(view.missing)} slot(s)")
        else:
            say(f"{study.study_name}: re-queued index(es) {', '.join(map(str, view.missing))} (their worker stopped)")


def _claim(rdb: optuna.storages.RDBStorage, slot: FrozenTrial) -> bool:
    """Heartbeat, then the atomic WAITING → RUNNING transition; False if another worker claimed it first."""
    rdb.record_heartbeat(slot._trial_id)  # before the claim: a RUNNING trial without heartbeat is never stale
    try:
        return rdb.set_trial_state_values(slot._trial_id, TrialState.RUNNING)
    except UpdateFinishedTrialError:
        return False


class _Heartbeat:
    """Records the trial's heartbeat every ``interval`` seconds in a thread until stopped."""

    def __init__(self, rdb: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(rdb, trial_id, interval), daemon=True, name=f"heartbeat-{trial_id}"
        )
        self._thread.start()

    def _beat(self, rdb: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat only risks a false "dead" (handled)
                rdb.record_heartbeat(trial_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _Mirror:
    """In-memory study holding the shared study's COMPLETE trials ordered by index (the sampler's view)."""

    def __init__(self) -> None:
        self.study = optuna.create_study(direction="maximize")
        self.indices: list[int] = []
        self.dirty = False

    def sync(self, complete: dict[int, FrozenTrial]) -> None:
        new = sorted(set(complete) - set(self.indices))
        if self.dirty or (new and self.indices and new[0] < self.indices[-1]) or not set(self.indices) <= set(complete):
            self.study = optuna.create_study(direction="maximize")
            self.indices = []
            self.dirty = False
            new = sorted(complete)
        self.study.add_trials([complete[i] for i in new])
        self.indices.extend(new)


def _run_slot(
    rdb: optuna.storages.RDBStorage,
    slot: FrozenTrial,
    complete: dict[int, FrozenTrial],
    mirror: _Mirror,
    study: PhaseStudy,
    *,
    interval: int,
    say: Callable[[str], None],
) -> TrialRecord | None:
    """Sample, write, evaluate and complete a claimed slot. None if the slot was declared dead meanwhile."""
    trial_id, index = slot._trial_id, int(slot.user_attrs["index"])
    heartbeat = _Heartbeat(rdb, trial_id, interval)
    try:
        mirror.sync(complete)  # the COMPLETE trials at claim time
        mirror.study.sampler = make_sampler(
            study.sampler, derive_seed(*study.seed_parts, index), study.n_startup_trials, study.distributions
        )
        if "fixed_params" in slot.system_attrs:
            mirror.study.enqueue_trial(slot.system_attrs["fixed_params"], skip_if_exists=False)
        trial = mirror.study.ask()
        mirror.dirty = True  # until the trial is told COMPLETE below
        params = study.suggest(trial)
        distributions = study.distributions
        for key, value in params.items():
            rdb.set_trial_param(trial_id, key, distributions[key].to_internal_repr(value), distributions[key])
        for key, value in mirror.study.get_trials(deepcopy=False)[-1].system_attrs.items():
            if slot.system_attrs.get(key) != value:  # the sampler's state (e.g. CMA-ES's optimiser)
                rdb.set_trial_system_attr(trial_id, key, value)
        fit, scores = evaluated(study.evaluate, params)
        rdb.set_trial_user_attr(trial_id, "scores", scores)
        rdb.set_trial_state_values(trial_id, TrialState.COMPLETE, [fit])
    except UpdateFinishedTrialError:
        say(
            f"{study.name}: index {index} was declared dead by another worker (no heartbeat for the grace period); "
            "result dropped, the index is re-run"
        )
        return None
    except BaseException:
        with contextlib.suppress(Exception):
            rdb.set_trial_state_values(trial_id, TrialState.FAIL)
        raise
    finally:
        heartbeat.stop()
    trial.set_user_attr("index", index)
    trial.set_user_attr("scores", scores)
    mirror.study.tell(trial, fit)
    if not mirror.indices or index > mirror.indices[-1]:
        mirror.indices.append(index)
        mirror.dirty = False
    return _record(index, fit, scores, params)
