"""The studies' durable Optuna storage: the configured RDB storage or a crash-tolerant journal file
(:class:`PeriodicSyncJournal`, fsync'd every 2 s and at every phase end)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.storages.journal._file import get_lock_file


class PeriodicSyncJournal(JournalFileBackend):
    """Optuna's journal file, fsync'd at most every ``sync_every`` seconds instead of after every append.

    Appends still go to the file at once under the journal's lock (one ``write`` per append), so a killed
    process loses nothing: the page cache outlives it. Only a power loss or kernel crash can lose the appends of the
    last ``sync_every`` seconds, and the torn tail it may leave is dropped on the next open
    (:func:`open_storage`). On a loaded disk this cuts the storage cost of a trial from ~5 ms to ~0.7 ms.
    """

    def __init__(self, file_path: str, lock_obj: Any = None, sync_every: float = 2.0) -> None:
        super().__init__(file_path, lock_obj=lock_obj)
        self.sync_every = sync_every
        self._last_sync = time.monotonic()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append under the lock; an OS error (a full disk) names the journal, and what it may have written of
        the append (a line cut short, never a whole line) is dropped on the next open."""
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        try:
            with get_lock_file(self._lock), open(self._file_path, "ab") as handle:
                handle.write(text.encode("utf-8"))
                handle.flush()
                if time.monotonic() - self._last_sync >= self.sync_every:
                    os.fsync(handle.fileno())
                    self._last_sync = time.monotonic()
        except OSError as err:
            raise OSError(err.errno, f"{err.strerror}: appending to the Optuna journal {self._file_path}") from err

    def sync(self) -> None:
        """fsync now (at every phase end, before its record is written)."""
        with open(self._file_path, "ab") as handle:
            os.fsync(handle.fileno())
        self._last_sync = time.monotonic()


LOCK_NAMESPACE = 0x62746361  # first key of every PostgreSQL advisory lock the project takes ("btca")
CREATE_LOCK_TIMEOUT = "300s"


def open_rdb(url: str, connect_args: dict[str, Any] | None = None, **storage_kwargs: Any) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url`` (``pool_pre_ping``: a connection the server dropped is replaced). On
    PostgreSQL, opening it is serialised by the advisory lock (:data:`LOCK_NAMESPACE`, 0): ``RDBStorage.__init__``
    creates Optuna's tables (and enum types) and stamps alembic's version, and two processes doing that at once on a
    fresh database collide (seen with two seeds starting together)."""
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if connect_args:
        engine_kwargs["connect_args"] = connect_args
    if sqlalchemy.engine.make_url(url).get_backend_name() != "postgresql":
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **storage_kwargs)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args or {})
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{CREATE_LOCK_TIMEOUT}'"))
            # key (namespace, 0): study ids start at 1, so it never meets a shared study's slot lock
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:ns, 0)"), {"ns": LOCK_NAMESPACE})
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **storage_kwargs)
    finally:
        engine.dispose()


def open_storage(url: str | None, journal_path: str) -> optuna.storages.BaseStorage:
    """The configured RDB storage, or a journal file (the default, :class:`PeriodicSyncJournal`).

    A journal lock left by a killed process is broken after 5 s (appends hold it for milliseconds), and a last
    line cut short by a crash (a power loss: SIGKILL cannot split one append) is dropped, so the journal stays
    readable after any crash.
    """
    if url:
        return open_rdb(url)
    _drop_partial_last_line(Path(journal_path))
    lock = JournalFileOpenLock(journal_path, grace_period=5)
    return optuna.storages.JournalStorage(PeriodicSyncJournal(journal_path, lock_obj=lock))


def connection_lost(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a lost or refused database connection: the RDB server restarted or
    went away, not a bad statement. Optuna wraps the driver's errors (``StorageInternalError``)."""
    import sqlalchemy.exc

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def sync_storage(storage: optuna.storages.BaseStorage) -> None:
    """Make everything written so far durable (a no-op for RDB storages, which commit per write)."""
    backend = getattr(storage, "_backend", None)
    if isinstance(backend, PeriodicSyncJournal):
        backend.sync()


def _drop_partial_last_line(path: Path) -> None:
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return
    with open(path, "r+b") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        tail_start = max(0, size - (1 << 20))
        handle.seek(tail_start)
        tail = handle.read()
        handle.truncate(tail_start + tail.rfind(b"\n") + 1)
