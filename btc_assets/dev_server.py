"""Supervise ``dagster dev``: stop it and every process under it promptly on Ctrl-C / SIGTERM, leave nothing behind.

``dagster dev`` starts the webserver and the daemon; they and ``dagster dev``'s code-server manager start the code
server(s) (and run workers). None of them starts a new session, so they all share ``dagster dev``'s process group.
:func:`run_dagster_dev` starts ``dagster dev`` in a session and process group of its own (so a terminal's Ctrl-C
reaches only this supervisor), and on SIGINT or SIGTERM interrupts ``dagster dev`` alone (SIGINT; it turns SIGINT /
SIGTERM into a ``KeyboardInterrupt``, writes "SHUTDOWN" down the webserver's and the daemon's shutdown pipes, waits
for them, then stops its code servers). Not the whole group: a code server interrupted directly exits early and
``dagster dev``'s code-server manager restarts it in the middle of the shutdown, which then overruns. What has not
exited after ``grace`` seconds is SIGKILLed: the process group, the session, and every descendant seen while it ran
(found in ``/proc``; a process that escaped into a session of its own is still found as a descendant, if seen).
When ``dagster dev`` exits by itself, whatever it left behind gets SIGINT, then SIGKILL after ``grace``. A second
signal kills at once. Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

DEFAULT_GRACE = 7.0
"""Seconds ``dagster dev`` gets to stop by itself after the interrupt; the whole stop stays under 10 s."""

KILL_WAIT = 1.5
"""Seconds to wait for SIGKILLed processes to disappear."""

POLL = 0.1
SNAPSHOT_EVERY = 1.0

Proc = tuple[int, int]
"""A process as ``(pid, start time in clock ticks)``: the start time tells a reused pid from the original."""


def _stat(pid: int) -> tuple[str, int, int, int, int] | None:
    """``(state, ppid, pgrp, session, start time)`` of ``pid`` from ``/proc/<pid>/stat``; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name (in parentheses) may contain spaces
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])


def _all_stats() -> dict[int, tuple[str, int, int, int, int]]:
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            out[int(entry.name)] = stat
    return out


def process_tree(root: int) -> set[Proc]:
    """``root``'s live descendants plus every live process in the session or process group ``root`` leads.

    Zombies are left out: they hold nothing and only their parent (or init) can remove them."""
    stats = {pid: s for pid, s in _all_stats().items() if s[0] != "Z"}
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, *_rest) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found = {pid for pid, (_, _, pgrp, session, _) in stats.items() if pid != root and root in (pgrp, session)}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return {(pid, stats[pid][4]) for pid in found}


def alive(procs: Iterable[Proc]) -> set[Proc]:
    """The processes of ``procs`` that still run (same pid and start time, not a zombie)."""
    out = set()
    for pid, start in procs:
        stat = _stat(pid)
        if stat is not None and stat[4] == start and stat[0] != "Z":
            out.add((pid, start))
    return out


def _kill(procs: Iterable[Proc], sig: int) -> None:
    for pid, _ in alive(procs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def exit_code(returncode: int) -> int:
    """A ``Popen.returncode`` as a shell would report it: the exit status, or 128 + N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class _Signals:
    """SIGINT / SIGTERM handlers that only record what arrived (restored on exit; main thread only)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_dagster_dev(argv: list[str], env: dict[str, str] | None = None, grace: float = DEFAULT_GRACE) -> int:
    """Run ``argv`` (the ``dagster dev`` command) until it exits or this process gets SIGINT / SIGTERM.

    On a signal: SIGINT to the child, up to ``grace`` seconds for it and everything under it to exit, then SIGKILL
    to its group, its session and every descendant seen (a second signal skips the wait). When the child exits by
    itself, whatever it left running is stopped the same way. Returns the child's exit code: its exit status
    (``dagster dev`` exits 0 after a clean interrupt), or 128 + N if it died from signal N (137: SIGKILLed).
    """
    with _Signals() as signals:
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        seen: set[Proc] = set()
        next_snapshot = 0.0
        while proc.poll() is None and not signals.received:
            if time.monotonic() >= next_snapshot:  # remember descendants: an orphan's parent link is lost
                seen = alive(seen) | process_tree(proc.pid)
                next_snapshot = time.monotonic() + SNAPSHOT_EVERY
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=POLL)
        _stop(proc, seen, signals, grace)
    return exit_code(proc.returncode)


def _stop(proc: subprocess.Popen[bytes], seen: set[Proc], signals: _Signals, grace: float) -> None:
    """Interrupt the child (or, if it is gone, what it left), wait up to ``grace`` s for all of it to exit, SIGKILL
    the rest, reap."""
    deadline = time.monotonic() + grace
    pgid = proc.pid  # start_new_session: the child leads its session and its process group
    seen = alive(seen) | process_tree(pgid)
    interrupted = len(signals.received)
    if proc.poll() is None:  # dagster dev stops its services in order (see the module docstring)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
    else:  # it exited by itself: interrupt what it left behind
        _killpg(pgid, signal.SIGINT)
        _kill(seen, signal.SIGINT)
    while time.monotonic() < deadline and len(signals.received) <= interrupted:
        proc.poll()
        seen = alive(seen) | process_tree(pgid)
        if proc.returncode is not None and not seen:
            return
        time.sleep(POLL)
    for _ in range(int(KILL_WAIT / POLL)):
        seen = alive(seen) | process_tree(pgid)
        _killpg(pgid, signal.SIGKILL)
        _kill(seen, signal.SIGKILL)
        if proc.poll() is not None and not alive(seen):
            return
        time.sleep(POLL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=POLL)
