"""``btc-assets ui`` starts ``dagster dev`` on this project with the persistent instance inside BTC_ASSETS_HOME."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from btc_assets_tests.test_cli import EXE

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_ui_serves_the_project_on_the_persistent_instance(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BTC_ASSETS_", "DAGSTER_"))}
    env["BTC_ASSETS_HOME"] = str(tmp_path)
    proc = subprocess.Popen(
        [EXE, "ui", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline, keys = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            try:
                answer = graphql(port, "{ assetNodes { assetKey { path } } instance { info } }")
                keys = {"/".join(n["assetKey"]["path"]) for n in answer["data"]["assetNodes"]}
                if keys:
                    break
            except OSError:
                time.sleep(1)
        assert keys and {"raw_ohlcv", "raw_funding", "market_bars"} <= keys, keys
        assert str(tmp_path / "dagster") in answer["data"]["instance"]["info"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
