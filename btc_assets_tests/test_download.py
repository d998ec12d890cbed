"""Offline tests for ``btc_assets.ingestion.download``.

A real ``ThreadingHTTPServer`` on 127.0.0.1 serves recorded files written in exactly the Binance archive
layout (headerless 12-column spot klines, microsecond timestamps from 2025-01, headed funding CSVs, zips +
CHECKSUM files) and a tiny emulation of the Binance REST endpoints ccxt calls (exchangeInfo, klines,
fundingRate). Nothing here touches the real network; an autouse guard fails any non-loopback connection.
"""

from __future__ import annotations

import calendar
import csv
import datetime
import functools
import hashlib
import io
import json
import random
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from btc_assets.ingestion import download as dl
from btc_assets.ingestion.download import (
    DownloadError,
    DownloadResult,
    download_binance_archive,
    download_ccxt,
)

SYMBOL = "BTCUSDT"
HOUR_MS = 3_600_000
TODAY = datetime.date(2025, 3, 4)  # "current" month 2025-03 -> daily files 01..03
KLINE_MONTHS = ["2017-08", "2017-09", "2024-11", "2024-12", "2025-01", "2025-02"]
FUNDING_MONTHS = ["2024-11", "2024-12", "2025-01", "2025-02"]
CURRENT_DAYS = ["2025-03-01", "2025-03-02", "2025-03-03"]
LISTING_MS = 1502942400000  # 2017-08-17 04:00 UTC, first BTCUSDT spot kline


# ------------------------------------------------------------------------------------- recorded archive


def _ms(day: datetime.date) -> int:
    return calendar.timegm(day.timetuple()) * 1000


def _kline_rows(start_ms: int, end_ms: int, seed: int) -> str:
    """Headerless 12-column spot kline CSV, hourly bars in [start_ms, end_ms); µs from 2025-01-01."""
    rng = random.Random(seed)
    price = 4300.0 if start_ms < 1_600_000_000_000 else 95000.0
    lines = []
    for open_ms in range(max(start_ms, LISTING_MS), end_ms, HOUR_MS):
        o = price
        c = max(1.0, o * (1 + rng.gauss(0, 0.006)))
        h = max(o, c) * (1 + abs(rng.gauss(0, 0.002)))
        low = min(o, c) * (1 - abs(rng.gauss(0, 0.002)))
        vol = rng.uniform(50, 2500)
        taker = vol * rng.uniform(0.3, 0.7)
        trades = rng.randint(1000, 90000)
        price = c
        micro = open_ms >= 1735689600000  # 2025-01-01: the archive switched spot timestamps to µs
        unit = 1000 if micro else 1
        open_t = open_ms * unit
        close_t = open_t + HOUR_MS * unit - 1
        lines.append(
            f"{open_t},{o:.8f},{h:.8f},{low:.8f},{c:.8f},{vol:.8f},{close_t},{vol * (o + c) / 2:.8f},"
            f"{trades},{taker:.8f},{taker * (o + c) / 2:.8f},0"
        )
    return "\n".join(lines) + "\n"


def _funding_rows(start_ms: int, end_ms: int, seed: int) -> str:
    """Funding CSV with the archive header; calc_time carries the few-ms jitter seen in real files."""
    rng = random.Random(seed)
    lines = ["calc_time,funding_interval_hours,last_funding_rate"]
    for t in range(start_ms, end_ms, 8 * HOUR_MS):
        lines.append(f"{t + rng.choice([0, 0, 0, 1, 2, 5])},8,{rng.gauss(0.0001, 0.00005):.8f}")
    return "\n".join(lines) + "\n"


def _write_zip(directory: Path, name: str, csv_text: str, bad_checksum: bool = False) -> Path:
    """Write ``name``.zip (one CSV inside, like the archive) and its ``.CHECKSUM`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}.csv", csv_text)
    data = buf.getvalue()
    path = directory / f"{name}.zip"
    path.write_bytes(data)
    digest = hashlib.sha256(b"tampered" if bad_checksum else data).hexdigest()
    (directory / f"{name}.zip.CHECKSUM").write_text(f"{digest}  {name}.zip\n")
    return path


def _month_bounds(label: str) -> tuple[int, int]:
    year, month = map(int, label.split("-"))
    nxt = datetime.date(year + month // 12, month % 12 + 1, 1)
    return _ms(datetime.date(year, month, 1)), _ms(nxt)


def _build_archive(root: Path) -> None:
    spot_m = root / "data/spot/monthly/klines" / SYMBOL / "1h"
    spot_d = root / "data/spot/daily/klines" / SYMBOL / "1h"
    fund_m = root / "data/futures/um/monthly/fundingRate" / SYMBOL
    for i, label in enumerate(KLINE_MONTHS):
        _write_zip(spot_m, f"{SYMBOL}-1h-{label}", _kline_rows(*_month_bounds(label), seed=i))
    for i, label in enumerate(FUNDING_MONTHS):
        _write_zip(fund_m, f"{SYMBOL}-fundingRate-{label}", _funding_rows(*_month_bounds(label), seed=100 + i))
    for i, day in enumerate(CURRENT_DAYS):
        _add_daily(spot_d, day, seed=200 + i)


def _add_daily(spot_d: Path, day: str, seed: int) -> None:
    start = _ms(datetime.date.fromisoformat(day))
    _write_zip(spot_d, f"{SYMBOL}-1h-{day}", _kline_rows(start, start + 24 * HOUR_MS, seed=seed))


PERP_MONTHS = ["2024-11", "2024-12", "2025-01", "2025-02"]
PERP_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"
)


def _perp_kline_rows(start_ms: int, end_ms: int, seed: int, placeholder: int = 0) -> str:
    """A USD-M kline CSV as archived: ms timestamps, the header from 2022-05 on (none before), and optionally
    ``placeholder`` flat zero-volume 10,000.00 bars first, as the real BTCUSDT perp's listing has."""
    lines = _kline_rows(start_ms, end_ms, seed).splitlines()
    for i in range(placeholder):
        f = lines[i].split(",")
        lines[i] = ",".join([f[0], *["10000.00"] * 4, "0.000", f[6], "0.0", "0", "0.000", "0.0", "0"])
    header = [PERP_HEADER] if start_ms >= _ms(datetime.date(2022, 5, 1)) else []
    return "\n".join(header + lines) + "\n"


def _add_perp_archive(
    root: Path, months: list[str] = PERP_MONTHS, days: list[str] = CURRENT_DAYS, placeholder: int = 0
) -> None:
    """USD-M perpetual klines beside the spot ones: monthly files for ``months``, daily ones for ``days``."""
    monthly = root / "data/futures/um/monthly/klines" / SYMBOL / "1h"
    daily = root / "data/futures/um/daily/klines" / SYMBOL / "1h"
    for i, label in enumerate(months):
        _write_zip(
            monthly,
            f"{SYMBOL}-1h-{label}",
            _perp_kline_rows(*_month_bounds(label), seed=400 + i, placeholder=placeholder if i == 0 else 0),
        )
    for i, day in enumerate(days):
        start = _ms(datetime.date.fromisoformat(day))
        _write_zip(daily, f"{SYMBOL}-1h-{day}", _perp_kline_rows(start, start + 24 * HOUR_MS, seed=500 + i))


@dataclass
class Server:
    """A running local HTTP server plus its request log and injectable failures."""

    url: str
    root: Path
    requests: list[str] = field(default_factory=list)
    failures: dict[str, list[int]] = field(default_factory=dict)  # path -> status codes to answer, in order


def _serve(handler: type[BaseHTTPRequestHandler] | functools.partial[Any]) -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Server]:
    """The recorded archive served over real HTTP."""
    root = tmp_path / "server"
    _build_archive(root)
    state = Server(url="", root=root)
    lock = threading.Lock()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            with lock:
                state.requests.append(path)
                pending = state.failures.get(path)
                code = pending.pop(0) if pending else None
            if code is not None:
                self.send_error(code)
                return
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    for httpd in _serve(functools.partial(Handler, directory=str(root))):
        state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        yield state


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No retry sleeps, and any connection or DNS lookup beyond 127.0.0.1 fails the test."""
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to reach the network: {address}")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", "::1", None):
            raise AssertionError(f"test tried to resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _checksum_of(path: Path) -> str:
    return path.with_name(path.name + ".CHECKSUM").read_text().split()[0]


def _read_zip_csv(path: Path) -> list[list[str]]:
    with zipfile.ZipFile(path) as zf:
        (name,) = zf.namelist()
        return list(csv.reader(io.StringIO(zf.read(name).decode())))


def _leftovers(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]


def _download(archive: Server, tmp_path: Path, **kwargs: Any) -> DownloadResult:
    """Run the archive downloader against the local server into ``tmp_path/dest``."""
    kwargs.setdefault("start", "2024-11")
    kwargs.setdefault("today", TODAY)
    return download_binance_archive(tmp_path / "dest", base_url=archive.url, **kwargs)


# -------------------------------------------------------------------------------------- archive tests


def test_full_download_verifies_and_keeps_files_as_downloaded(archive: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    messages: list[str] = []
    result = _download(archive, tmp_path, progress=messages.append)

    kline_dir = dest / "spot/klines" / SYMBOL / "1h"
    funding_dir = dest / "futures/um/fundingRate" / SYMBOL
    expected_klines = [f"{SYMBOL}-1h-{m}.zip" for m in KLINE_MONTHS[2:]] + [
        f"{SYMBOL}-1h-{d}.zip" for d in CURRENT_DAYS
    ]
    assert result.ohlcv_files == sorted(kline_dir / n for n in expected_klines)
    assert result.funding_files == [funding_dir / f"{SYMBOL}-fundingRate-{m}.zip" for m in FUNDING_MONTHS]
    assert (result.fetched, result.cached, result.missing) == (len(expected_klines) + 4, 0, [])

    server_files = {p.name: p for p in archive.root.rglob("*.zip")}
    for path in result.ohlcv_files + result.funding_files:
        assert path.read_bytes() == server_files[path.name].read_bytes()  # kept exactly as downloaded
        assert hashlib.sha256(path.read_bytes()).hexdigest() == _checksum_of(path)
        assert path.with_name(path.name + ".CHECKSUM").read_text().split()[1] == path.name

    dec = _read_zip_csv(kline_dir / f"{SYMBOL}-1h-2024-12.zip")
    jan = _read_zip_csv(kline_dir / f"{SYMBOL}-1h-2025-01.zip")
    assert len(dec) == 31 * 24 and all(len(r) == 12 for r in dec)
    assert dec[0][0] == "1733011200000" and dec[0][6] == "1733014799999"  # ms, no header
    assert jan[0][0] == "1735689600000000" and jan[0][6] == "1735693199999999"  # µs from 2025-01
    funding = _read_zip_csv(funding_dir / f"{SYMBOL}-fundingRate-2025-01.zip")
    assert funding[0] == ["calc_time", "funding_interval_hours", "last_funding_rate"]
    assert len(funding) == 1 + 31 * 3

    assert "klines 2024-11 ok (fetched)" in messages
    assert "klines 2025-03-03 ok (fetched)" in messages
    assert any(m.startswith("funding 2025-03 skipped") for m in messages)
    assert _leftovers(dest) == []


def test_second_call_is_served_from_cache_without_network(archive: Server, tmp_path: Path) -> None:
    first = _download(archive, tmp_path)
    n_requests = len(archive.requests)
    messages: list[str] = []
    second = _download(archive, tmp_path, progress=messages.append)

    assert len(archive.requests) == n_requests  # not a single request
    assert second.fetched == 0 and second.cached == first.fetched
    assert second.ohlcv_files == first.ohlcv_files and second.funding_files == first.funding_files
    assert "klines 2024-12 ok (cached)" in messages and "funding 2024-12 ok (cached)" in messages


def test_corrupted_local_zip_is_refetched(archive: Server, tmp_path: Path) -> None:
    _download(archive, tmp_path)
    target = tmp_path / "dest/spot/klines" / SYMBOL / "1h" / f"{SYMBOL}-1h-2024-12.zip"
    good = target.read_bytes()
    target.write_bytes(good[:-7] + b"garbage")
    archive.requests.clear()

    result = _download(archive, tmp_path)

    base = f"/data/spot/monthly/klines/{SYMBOL}/1h/{SYMBOL}-1h-2024-12.zip"
    assert archive.requests == [base + ".CHECKSUM", base]
    assert target.read_bytes() == good
    assert result.fetched == 1 and result.cached == len(result.ohlcv_files) + len(result.funding_files) - 1


def test_missing_local_checksum_file_triggers_refetch(archive: Server, tmp_path: Path) -> None:
    _download(archive, tmp_path)
    target = tmp_path / "dest/futures/um/fundingRate" / SYMBOL / f"{SYMBOL}-fundingRate-2025-02.zip"
    target.with_name(target.name + ".CHECKSUM").unlink()
    archive.requests.clear()

    result = _download(archive, tmp_path, start="2025-02", end="2025-02")

    assert result.fetched == 1 and result.cached == 1  # klines cached, funding re-fetched
    assert _checksum_of(target) == hashlib.sha256(target.read_bytes()).hexdigest()


def test_server_checksum_mismatch_raises_and_leaves_no_file(archive: Server, tmp_path: Path) -> None:
    server_dir = archive.root / "data/spot/monthly/klines" / SYMBOL / "1h"
    _write_zip(server_dir, f"{SYMBOL}-1h-2024-12", _kline_rows(*_month_bounds("2024-12"), seed=1), True)
    served = (server_dir / f"{SYMBOL}-1h-2024-12.zip").read_bytes()

    with pytest.raises(DownloadError) as excinfo:
        _download(archive, tmp_path, funding=False)

    message = str(excinfo.value)
    assert f"{archive.url}/data/spot/monthly/klines/{SYMBOL}/1h/{SYMBOL}-1h-2024-12.zip" in message
    assert hashlib.sha256(b"tampered").hexdigest() in message  # the published hash
    assert hashlib.sha256(served).hexdigest() in message  # the hash of what arrived
    kline_dir = tmp_path / "dest/spot/klines" / SYMBOL / "1h"
    assert not (kline_dir / f"{SYMBOL}-1h-2024-12.zip").exists()
    assert not (kline_dir / f"{SYMBOL}-1h-2024-12.zip.CHECKSUM").exists()
    assert (kline_dir / f"{SYMBOL}-1h-2024-11.zip").exists()  # earlier months stay verified
    assert _leftovers(tmp_path / "dest") == []


def test_404_months_before_listing_are_reported_missing(archive: Server, tmp_path: Path) -> None:
    messages: list[str] = []
    result = _download(archive, tmp_path, start="2017-06", end="2017-09", progress=messages.append)

    kline_url = f"{archive.url}/data/spot/monthly/klines/{SYMBOL}/1h"
    funding_url = f"{archive.url}/data/futures/um/monthly/fundingRate/{SYMBOL}"
    assert result.missing == [
        f"{kline_url}/{SYMBOL}-1h-2017-06.zip",
        f"{funding_url}/{SYMBOL}-fundingRate-2017-06.zip",
        f"{kline_url}/{SYMBOL}-1h-2017-07.zip",
        f"{funding_url}/{SYMBOL}-fundingRate-2017-07.zip",
        f"{funding_url}/{SYMBOL}-fundingRate-2017-08.zip",
        f"{funding_url}/{SYMBOL}-fundingRate-2017-09.zip",
    ]
    assert [p.name for p in result.ohlcv_files] == [f"{SYMBOL}-1h-2017-08.zip", f"{SYMBOL}-1h-2017-09.zip"]
    assert result.funding_files == [] and result.fetched == 2
    first_row = _read_zip_csv(result.ohlcv_files[0])[0]
    assert int(first_row[0]) == LISTING_MS
    assert any("klines 2017-06 missing (404" in m for m in messages)
    assert _leftovers(tmp_path / "dest") == []

    # a settled month's 404 is final: a fully cached second call makes no request at all
    archive.requests.clear()
    again = _download(archive, tmp_path, start="2017-06", end="2017-09")
    assert archive.requests == []
    assert again.missing == result.missing and again.cached == 2


def test_current_month_uses_daily_files_up_to_yesterday(archive: Server, tmp_path: Path) -> None:
    result = _download(archive, tmp_path, start="2025-03", end=None)

    assert [p.name for p in result.ohlcv_files] == [f"{SYMBOL}-1h-{d}.zip" for d in CURRENT_DAYS]
    assert result.funding_files == [] and result.missing == []
    daily = f"/data/spot/daily/klines/{SYMBOL}/1h/{SYMBOL}-1h-"
    assert archive.requests == [f"{daily}{d}.zip{ext}" for d in CURRENT_DAYS for ext in (".CHECKSUM", "")]
    rows = [r for p in result.ohlcv_files for r in _read_zip_csv(p)]
    assert len(rows) == 72 and rows[0][0] == str(_ms(datetime.date(2025, 3, 1)) * 1000)


def test_end_after_current_month_is_capped(archive: Server, tmp_path: Path) -> None:
    result = _download(archive, tmp_path, start="2025-02", end="2025-12", funding=False)
    assert [p.name for p in result.ohlcv_files] == [f"{SYMBOL}-1h-2025-02.zip"] + [
        f"{SYMBOL}-1h-{d}.zip" for d in CURRENT_DAYS
    ]
    assert not any("2025-04" in r for r in archive.requests)


def test_previous_month_falls_back_to_daily_files_until_published(archive: Server, tmp_path: Path) -> None:
    server_m = archive.root / "data/spot/monthly/klines" / SYMBOL / "1h"
    (server_m / f"{SYMBOL}-1h-2025-02.zip").unlink()
    (server_m / f"{SYMBOL}-1h-2025-02.zip.CHECKSUM").unlink()
    spot_d = archive.root / "data/spot/daily/klines" / SYMBOL / "1h"
    feb = [f"2025-02-{d:02d}" for d in range(1, 29)]
    for i, day in enumerate(feb):
        _add_daily(spot_d, day, seed=300 + i)

    result = _download(archive, tmp_path, start="2025-02", funding=False, today=datetime.date(2025, 3, 2))

    names = [p.name for p in result.ohlcv_files]
    assert names == sorted([f"{SYMBOL}-1h-{d}.zip" for d in feb] + [f"{SYMBOL}-1h-2025-03-01.zip"])
    assert result.missing == [f"{archive.url}/data/spot/monthly/klines/{SYMBOL}/1h/{SYMBOL}-1h-2025-02.zip"]


def test_transient_server_error_is_retried(archive: Server, tmp_path: Path) -> None:
    path = f"/data/spot/monthly/klines/{SYMBOL}/1h/{SYMBOL}-1h-2024-11.zip"
    archive.failures[path] = [503]
    archive.failures[path + ".CHECKSUM"] = [500]
    result = _download(archive, tmp_path, start="2024-11", end="2024-11", funding=False)
    assert result.fetched == 1 and archive.requests.count(path) == 2
    assert archive.requests.count(path + ".CHECKSUM") == 2
    assert _leftovers(tmp_path / "dest") == []


def test_persistent_http_errors_raise(archive: Server, tmp_path: Path) -> None:
    path = f"/data/spot/monthly/klines/{SYMBOL}/1h/{SYMBOL}-1h-2024-11.zip"
    archive.failures[path] = [500] * 10
    with pytest.raises(DownloadError, match="after 3 attempts"):
        _download(archive, tmp_path, start="2024-11", end="2024-11", funding=False)
    assert archive.requests.count(path) == dl.HTTP_ATTEMPTS
    assert _leftovers(tmp_path / "dest") == [] and not list((tmp_path / "dest").rglob("*.zip"))

    archive.failures[path + ".CHECKSUM"] = [403]
    with pytest.raises(DownloadError, match="HTTP 403"):
        _download(archive, tmp_path, start="2024-11", end="2024-11", funding=False)


def test_base_url_from_environment(archive: Server, tmp_path: Path) -> None:
    """``BTC_ASSETS_BINANCE_URL`` is read once, into the resolved source settings; a child process gets it back
    from :func:`environment` (the assets take it from ``market_source``: next test)."""
    from btc_assets.ingestion import SourceSettings
    from btc_assets.settings import environment, resolve_settings

    settings = resolve_settings(
        tmp_path / "home", source=SourceSettings(source="download"), env={"BTC_ASSETS_BINANCE_URL": archive.url + "/"}
    )
    assert settings.source.binance_url == archive.url + "/"
    assert environment(settings)["BTC_ASSETS_BINANCE_URL"] == archive.url + "/"
    result = download_binance_archive(
        tmp_path / "dest", base_url=settings.source.binance_url, start="2025-01", end="2025-01", today=TODAY
    )
    assert result.fetched == 2 and archive.requests


def test_perp_klines_fetched_verified_and_cached(archive: Server, tmp_path: Path) -> None:
    """``perp=True`` mirrors the USD-M perpetual's klines like the spot ones (monthly, then daily files for the
    current month), into their own folder; without it nothing under futures/um/klines is asked for."""
    from btc_assets.ingestion import load_perp_ohlcv

    _add_perp_archive(archive.root)
    dest = tmp_path / "dest"
    messages: list[str] = []
    result = _download(archive, tmp_path, perp=True, progress=messages.append)

    perp_dir = dest / "futures/um/klines" / SYMBOL / "1h"
    names = [f"{SYMBOL}-1h-{m}.zip" for m in PERP_MONTHS] + [f"{SYMBOL}-1h-{d}.zip" for d in CURRENT_DAYS]
    assert result.perp_files == sorted(perp_dir / n for n in names)
    assert all(p.parent == dest / "spot/klines" / SYMBOL / "1h" for p in result.ohlcv_files)
    assert result.missing == [] and result.fetched == 2 * len(names) + len(FUNDING_MONTHS)
    served = archive.root / "data/futures/um/monthly/klines" / SYMBOL / "1h"
    for path in result.perp_files[:4]:
        assert path.read_bytes() == (served / path.name).read_bytes()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == _checksum_of(path)
    assert f"/data/futures/um/daily/klines/{SYMBOL}/1h/{SYMBOL}-1h-2025-03-03.zip" in archive.requests
    assert "perp klines 2024-11 ok (fetched)" in messages
    bars = load_perp_ohlcv(result.perp_files).frame  # headed ms files read like any kline file
    assert bars["timestamp"].iloc[0] == pd.Timestamp("2024-11-01", tz="UTC")
    assert len(bars) == (30 + 31 + 31 + 28 + 3) * 24

    archive.requests.clear()
    again = _download(archive, tmp_path, perp=True)
    assert archive.requests == [] and again.perp_files == result.perp_files and again.fetched == 0
    assert not _download(archive, tmp_path).perp_files  # perp klines only when asked for
    assert not any("/futures/um/" in r and "/klines/" in r for r in archive.requests)


def test_next_day_fetches_only_that_days_files(archive: Server, tmp_path: Path) -> None:
    """The daily update: a day later, ``download`` (and the ``download`` source) asks the archive only for the one
    new day of spot and perp klines (two zips and their checksums) and serves everything else from its cache."""
    _add_perp_archive(archive.root)
    first = _download(archive, tmp_path, perp=True)
    new_day = "2025-03-04"
    _add_daily(archive.root / "data/spot/daily/klines" / SYMBOL / "1h", new_day, seed=900)
    _add_perp_archive(archive.root, months=[], days=[new_day])
    archive.requests.clear()
    later = _download(archive, tmp_path, perp=True, today=datetime.date(2025, 3, 5))
    name = f"{SYMBOL}-1h-{new_day}.zip"
    assert sorted(archive.requests) == sorted(
        f"/data/{market}/daily/klines/{SYMBOL}/1h/{name}{ext}"
        for market in ("spot", "futures/um")
        for ext in ("", ".CHECKSUM")
    )
    assert later.fetched == 2 and later.cached == first.fetched
    assert [p.name for p in later.ohlcv_files][-1] == [p.name for p in later.perp_files][-1] == name


def test_perp_klines_before_listing_are_missing_and_placeholder_flagged(archive: Server, tmp_path: Path) -> None:
    """Months before the perp's listing answer 404 (reported in ``missing``); the listing month's headerless file
    opens with the placeholder bars, which the perp loader flags."""
    from btc_assets.ingestion import load_perp_ohlcv

    _add_perp_archive(archive.root, months=["2019-09"], days=[], placeholder=2)
    result = _download(archive, tmp_path, start="2019-08", end="2019-09", funding=False, perp=True)
    perp_url = f"{archive.url}/data/futures/um/monthly/klines/{SYMBOL}/1h"
    assert f"{perp_url}/{SYMBOL}-1h-2019-08.zip" in result.missing
    assert f"{perp_url}/{SYMBOL}-1h-2019-09.zip" not in result.missing
    assert [p.name for p in result.perp_files] == [f"{SYMBOL}-1h-2019-09.zip"]
    assert _read_zip_csv(result.perp_files[0])[0][0] == str(_ms(datetime.date(2019, 9, 1)))  # no header
    loaded = load_perp_ohlcv(result.perp_files)
    assert loaded.reports[0].flagged == {"perp-placeholder": [1, 2]}
    assert loaded.frame["timestamp"].iloc[0] == pd.Timestamp("2019-09-01 02:00", tz="UTC")


@pytest.mark.parametrize(("start", "end"), [("2024-13", None), ("2024/01", None), ("2025-02", "2025-01")])
def test_invalid_month_arguments(tmp_path: Path, start: str, end: str | None) -> None:
    with pytest.raises(ValueError):
        download_binance_archive(tmp_path, start=start, end=end, base_url="http://127.0.0.1:9", today=TODAY)


# ------------------------------------------------------------------------------------------------- ccxt

CCXT_START_MS = _ms(datetime.date(2024, 1, 1))
N_CANDLES = 2500  # 3 pages of at most 1000
N_FUNDING = 1200  # 2 pages of at most 1000
SPOT_INFO = {
    "timezone": "UTC",
    "serverTime": CCXT_START_MS,
    "rateLimits": [],
    "exchangeFilters": [],
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "baseAsset": "BTC",
            "baseAssetPrecision": 8,
            "quoteAsset": "USDT",
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": True,
            "permissions": [],
            "permissionSets": [["SPOT", "MARGIN"]],
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.01",
                    "maxPrice": "1000000.00",
                    "tickSize": "0.01",
                },
                {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00", "stepSize": "0.00001"},
                {"filterType": "NOTIONAL", "minNotional": "5.00", "maxNotional": "9000000.00"},
            ],
        }
    ],
}
FUTURES_INFO = {
    "timezone": "UTC",
    "serverTime": CCXT_START_MS,
    "rateLimits": [],
    "exchangeFilters": [],
    "assets": [],
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "pair": "BTCUSDT",
            "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000,
            "status": "TRADING",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "marginAsset": "USDT",
            "pricePrecision": 2,
            "quantityPrecision": 3,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "556.80",
                    "maxPrice": "4529764",
                    "tickSize": "0.10",
                },
                {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
                {"filterType": "MIN_NOTIONAL", "notional": "100"},
            ],
            "orderTypes": ["LIMIT", "MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        }
    ],
}


def _recorded_klines() -> list[list[Any]]:
    """``GET /api/v3/klines`` rows as Binance returns them (strings for decimals)."""
    rows = []
    for line in _kline_rows(CCXT_START_MS, CCXT_START_MS + N_CANDLES * HOUR_MS, seed=7).splitlines():
        f = line.split(",")
        rows.append([int(f[0]), f[1], f[2], f[3], f[4], f[5], int(f[6]), f[7], int(f[8]), f[9], f[10], f[11]])
    return rows


def _recorded_perp_klines() -> list[list[Any]]:
    """``GET /fapi/v1/klines`` rows (the USD-M perpetual's own candles)."""
    rows = []
    for line in _kline_rows(CCXT_START_MS, CCXT_START_MS + N_CANDLES * HOUR_MS, seed=8).splitlines():
        f = line.split(",")
        rows.append([int(f[0]), f[1], f[2], f[3], f[4], f[5], int(f[6]), f[7], int(f[8]), f[9], f[10], f[11]])
    return rows


def _recorded_funding() -> list[dict[str, Any]]:
    """``GET /fapi/v1/fundingRate`` rows as Binance returns them."""
    rng = random.Random(11)
    return [
        {
            "symbol": "BTCUSDT",
            "fundingTime": CCXT_START_MS + i * 8 * HOUR_MS,
            "fundingRate": f"{rng.gauss(0.0001, 0.00005):.8f}",
            "markPrice": f"{42000 + i:.8f}",
        }
        for i in range(N_FUNDING)
    ]


@dataclass
class FakeBinance:
    exchange: Any
    requests: list[tuple[str, dict[str, str]]]
    klines: list[list[Any]]
    funding: list[dict[str, Any]]
    perp_klines: list[list[Any]] = field(default_factory=list)

    def calls(self, path: str) -> list[dict[str, str]]:
        return [q for p, q in self.requests if p == path]


@pytest.fixture
def fake_binance() -> Iterator[FakeBinance]:
    """A real ``ccxt.binance()`` whose REST base URLs point at a local server answering recorded JSON."""
    ccxt = pytest.importorskip("ccxt")
    klines, funding, perp_klines = _recorded_klines(), _recorded_funding(), _recorded_perp_klines()
    requests: list[tuple[str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            requests.append((url.path, query))
            start = int(query.get("startTime", 0))
            end = int(query.get("endTime", 2**62))
            limit = min(int(query.get("limit", 500)), 1000)
            if url.path == "/api/v3/exchangeInfo":
                body: Any = SPOT_INFO
            elif url.path == "/fapi/v1/exchangeInfo":
                body = FUTURES_INFO
            elif url.path == "/api/v3/klines" and query.get("symbol") == "BTCUSDT":
                body = [k for k in klines if start <= k[0] <= end][:limit]
            elif url.path == "/fapi/v1/klines" and query.get("symbol") == "BTCUSDT":
                body = [k for k in perp_klines if start <= k[0] <= end][:limit]
            elif url.path == "/fapi/v1/fundingRate" and query.get("symbol") == "BTCUSDT":
                body = [f for f in funding if start <= f["fundingTime"] <= end][:limit]
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    for httpd in _serve(Handler):
        local = f"http://127.0.0.1:{httpd.server_address[1]}"
        exchange = ccxt.binance({"enableRateLimit": False, "options": {"fetchMarkets": {"types": ["spot", "linear"]}}})
        # urls['api'] maps every API group (public, fapiPublic, sapi, ...) to an absolute base URL such as
        # https://api.binance.com/api/v3 or https://fapi.binance.com/fapi/v1: keep the path, swap the host.
        for name, base in list(exchange.urls["api"].items()):
            exchange.urls["api"][name] = local + urlsplit(base).path
        yield FakeBinance(exchange, requests, klines, funding, perp_klines)


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_ccxt_paginates_and_writes_canonical_csvs(fake_binance: FakeBinance, tmp_path: Path) -> None:
    result = download_ccxt(tmp_path, since="2024-01-01", until="2025-06-01", exchange=fake_binance.exchange)

    ohlcv_path = tmp_path / "ccxt" / "BTC_USDT_1h.csv"
    funding_path = tmp_path / "ccxt" / "BTC_USDT_USDT_funding.csv"
    assert result == DownloadResult([ohlcv_path], [funding_path], fetched=2, cached=0, missing=[])
    # markets came from the local exchangeInfo answers, not from the internet
    assert fake_binance.calls("/api/v3/exchangeInfo") and fake_binance.calls("/fapi/v1/exchangeInfo")

    kline_calls = fake_binance.calls("/api/v3/klines")
    assert [int(q["startTime"]) for q in kline_calls] == [
        CCXT_START_MS,
        CCXT_START_MS + 1000 * HOUR_MS,
        CCXT_START_MS + 2000 * HOUR_MS,
    ]
    assert all(q["limit"] == "1000" and q["interval"] == "1h" for q in kline_calls)
    funding_calls = fake_binance.calls("/fapi/v1/fundingRate")
    assert [int(q["startTime"]) for q in funding_calls] == [
        CCXT_START_MS,
        CCXT_START_MS + 999 * 8 * HOUR_MS + 1,
    ]

    rows = _read_csv(ohlcv_path)
    assert rows[0] == ["timestamp", "open", "high", "low", "close", "volume"]
    assert len(rows) == 1 + N_CANDLES
    first = fake_binance.klines[0]
    assert [int(rows[1][0]), *map(float, rows[1][1:])] == [first[0], *(float(v) for v in first[1:6])]
    assert [int(r[0]) for r in rows[1:]] == [CCXT_START_MS + i * HOUR_MS for i in range(N_CANDLES)]

    frows = _read_csv(funding_path)
    assert frows[0] == ["timestamp", "funding_rate"] and len(frows) == 1 + N_FUNDING
    assert float(frows[-1][1]) == float(fake_binance.funding[-1]["fundingRate"])
    assert _leftovers(tmp_path) == []


def test_ccxt_until_is_exclusive_and_resume_appends(fake_binance: FakeBinance, tmp_path: Path) -> None:
    ex = fake_binance.exchange
    first = download_ccxt(tmp_path, since="2024-01-01", until="2024-02-01", exchange=ex)
    ohlcv_path = first.ohlcv_files[0]
    rows = _read_csv(ohlcv_path)
    assert len(rows) == 1 + 31 * 24 and int(rows[-1][0]) == _ms(datetime.date(2024, 2, 1)) - HOUR_MS
    assert len(_read_csv(first.funding_files[0])) == 1 + 31 * 3
    before = ohlcv_path.read_text()
    fake_binance.requests.clear()

    second = download_ccxt(tmp_path, since="2024-01-01", until="2025-06-01", exchange=ex)

    feb_ms = _ms(datetime.date(2024, 2, 1))
    assert int(fake_binance.calls("/api/v3/klines")[0]["startTime"]) == feb_ms  # last + 1 h
    assert int(fake_binance.calls("/fapi/v1/fundingRate")[0]["startTime"]) == feb_ms - 8 * HOUR_MS + HOUR_MS
    assert second.fetched == 2
    text = ohlcv_path.read_text()
    assert text.startswith(before)  # earlier rows untouched
    stamps = [int(r[0]) for r in _read_csv(ohlcv_path)[1:]]
    assert stamps == sorted(set(stamps)) and len(stamps) == N_CANDLES
    fstamps = [int(r[0]) for r in _read_csv(second.funding_files[0])[1:]]
    assert fstamps == sorted(set(fstamps)) and len(fstamps) == N_FUNDING

    third = download_ccxt(tmp_path, since="2024-01-01", until="2025-06-01", exchange=ex)
    assert (third.fetched, third.cached) == (0, 2)
    assert ohlcv_path.read_text() == text


def test_ccxt_resume_deduplicates_overlapping_rows(fake_binance: FakeBinance, tmp_path: Path) -> None:
    path = tmp_path / "ccxt" / "BTC_USDT_1h.csv"
    path.parent.mkdir(parents=True)
    k = fake_binance.klines
    # a file whose rows are out of order and duplicated, e.g. after a manual merge
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        + "".join(f"{r[0]},{r[1]},{r[2]},{r[3]},{r[4]},{r[5]}\n" for r in (k[1], k[0], k[1]))
    )
    download_ccxt(tmp_path, since="2024-01-01", until="2024-01-02", exchange=fake_binance.exchange)
    stamps = [int(r[0]) for r in _read_csv(path)[1:]]
    assert stamps == [CCXT_START_MS + i * HOUR_MS for i in range(24)]


def test_ccxt_perp_klines(fake_binance: FakeBinance, tmp_path: Path) -> None:
    """``perp=True``: the perpetual's own 1h candles too, paginated like spot's, into ``<perp symbol>_1h.csv``."""
    ex = fake_binance.exchange
    result = download_ccxt(tmp_path, since="2024-01-01", until="2025-06-01", exchange=ex, perp=True)
    perp_path = tmp_path / "ccxt" / "BTC_USDT_USDT_1h.csv"
    assert result.perp_files == [perp_path] and (result.fetched, result.cached) == (3, 0)
    calls = fake_binance.calls("/fapi/v1/klines")
    assert [int(q["startTime"]) for q in calls] == [CCXT_START_MS + i * 1000 * HOUR_MS for i in range(3)]
    rows = _read_csv(perp_path)
    assert rows[0] == list(dl.OHLCV_HEADER) and len(rows) == 1 + N_CANDLES
    first = fake_binance.perp_klines[0]
    assert [int(rows[1][0]), *map(float, rows[1][1:])] == [first[0], *(float(v) for v in first[1:6])]
    assert rows[1:] != _read_csv(tmp_path / "ccxt" / "BTC_USDT_1h.csv")[1:]  # its own candles, not spot's
    again = download_ccxt(tmp_path, since="2024-01-01", until="2025-06-01", exchange=ex, perp=True)
    assert (again.fetched, again.cached) == (0, 3)
    assert not download_ccxt(tmp_path, since="2024-01-01", until="2025-06-01", exchange=ex).perp_files


# ------------------------------------------------------------------------------ through the pipeline


def test_download_source_materialises_market_bars(
    archive: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``source=download`` fetches into raw/binance, then ingests the archived zips like any user file, the perp's
    klines included (its listing placeholder flagged and left out)."""
    import dagster as dg

    from btc_assets_tests.conftest import definitions

    _add_perp_archive(archive.root, days=[], placeholder=2)
    defs = definitions(tmp_path / "home", source="download", start="2024-11", binance_url=archive.url)
    monkeypatch.setenv("BTC_ASSETS_BINANCE_URL", "http://127.0.0.1:9")  # nothing reads it at run time
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            defs.assets, resources=defs.resources, instance=instance, selection=dg.AssetSelection.groups("ingestion")
        )
    assert result.success
    bars = pd.read_parquet(tmp_path / "home" / "warehouse" / "market_bars" / "data.parquet")
    assert bars["timestamp"].iloc[0] == pd.Timestamp("2024-11-01", tz="UTC")
    assert bars["timestamp"].iloc[-1] == pd.Timestamp("2025-02-28 23:00", tz="UTC")  # µs 2025 files included
    assert bars["funding_time"].notna().sum() > 0
    assert (tmp_path / "home" / "raw" / "binance" / "spot" / "klines" / SYMBOL / "1h").is_dir()
    assert (tmp_path / "home" / "raw" / "binance" / "futures" / "um" / "klines" / SYMBOL / "1h").is_dir()
    assert bars["perp_close"].iloc[:2].isna().all() and bars["perp_close"].iloc[2:].notna().all()
    meta = result.asset_materializations_for_node("raw_perp_ohlcv")[0].metadata
    assert meta["flagged_bars"].value == 2 and "perp-placeholder" in meta["repairs"].value
