"""``btc-assets ui`` stops ``dagster dev`` and every process under it within 10 s of SIGTERM or Ctrl-C (SIGINT),
and leaves nothing holding the port or the instance."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from btc_assets_tests.test_ui import free_port
from btc_assets_tests.ui_support import DagsterUI, is_descendant

pytestmark = pytest.mark.slow

STOP_WITHIN = 10.0
SERVICES = ("dagster_webserver", "dagster._daemon", "code-server")  # what dagster dev runs under it


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` (tells a reused pid apart); None if it is gone or a zombie (which holds nothing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_tree(root: int) -> dict[int, tuple[int, str]]:
    """``root`` and its live descendants: pid → (start time, command line)."""
    tree = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and is_descendant(pid := int(entry.name), root):
            start = start_time(pid)
            if start is not None:
                tree[pid] = (start, command_line(pid))
    return tree


def still_running(tree: dict[int, tuple[int, str]]) -> dict[int, str]:
    return {pid: cmd for pid, (start, cmd) in tree.items() if start_time(pid) == start}


def files_open_under(folder: Path) -> list[str]:
    """``pid: path`` for every file under ``folder`` some process holds open (the instance's SQLite files, logs)."""
    held = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                for fd in os.scandir(f"/proc/{entry.name}/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd.path)
                        if target.startswith(f"{folder}/"):
                            held.append(f"{entry.name}: {target}")
    return held


def port_is_free(port: int) -> bool:
    """Whether a new server could listen on ``port`` (SO_REUSEADDR, as servers do: TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_stops_everything_under_it(tmp_path: Path, sig: signal.Signals) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    ui = DagsterUI(home, port, tmp_path / "ui.log")
    tree: dict[int, tuple[int, str]] = {}
    try:

        def served() -> bool:
            with urllib.request.urlopen(f"{ui.url}/server_info", timeout=5) as response:
                return response.status == 200

        ui.wait_for("the webserver to answer HTTP", served, timeout=240, every=1.0)

        def services_up() -> dict[int, tuple[int, str]] | None:
            found = process_tree(ui.proc.pid)
            return found if all(any(s in cmd for _, cmd in found.values()) for s in SERVICES) else None

        tree = ui.wait_for(f"{', '.join(SERVICES)} to run", services_up, timeout=60, every=0.5)

        # a terminal's Ctrl-C, or a service manager's stop, goes to the command's process group
        started = time.monotonic()
        os.killpg(ui.proc.pid, sig)
        try:
            code = ui.proc.wait(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            raise ui.fail(f"btc-assets ui still runs {STOP_WITHIN:.0f} s after {sig.name}") from None
        took = time.monotonic() - started

        assert took < STOP_WITHIN
        assert code in (0, 128 + signal.SIGKILL), str(ui.fail(f"exit code {code} after {sig.name}"))
        left = still_running(tree)
        assert not left, str(ui.fail(f"still running {took:.1f} s after {sig.name}: {left}"))
        assert port_is_free(port), str(ui.fail(f"port {port} is still held after {sig.name}"))
        held = files_open_under(home)
        assert not held, str(ui.fail(f"files in the home still open after {sig.name}: {held}"))
    finally:  # never leave the UI running, even when an assertion failed
        ui.stop()
        for pid in still_running(tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
