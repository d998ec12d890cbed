"""Real-data downloaders: the Binance public data archive (primary) and ccxt (alternative).

Archive facts this module relies on (checked against public sources, not guessed):

* URL layout ``<base>/data/spot/monthly/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-<YYYY>-<MM>.zip``,
  a ``.CHECKSUM`` file beside every zip (checked with ``sha256sum -c``), daily files uploaded the next day and
  monthly files early in the next month -- binance/binance-public-data ``README.md`` ("Where do I access it",
  "CHECKSUM").
* Spot kline CSVs have 12 columns (open time ... ignore), no header -- same README, "Klines" table; a
  third-party reconciliation of ``BTCUSDT-1h-2026-07`` describes the spot file as "headerless; microsecond
  timestamps" and the USD-M kline file as "headered; millisecond timestamps".
* From 2025-01-01 spot timestamps are in microseconds -- README note "The timestamp for SPOT Data from January
  1st 2025 onwards will be in microseconds"; binance/binance-public-data issues #386 and #387 (2025-01-08).
* ``fundingRate`` exists only as monthly files (no daily ones) under ``data/futures/um/monthly/fundingRate``;
  the CSV has the header ``calc_time,funding_interval_hours,last_funding_rate``, ``calc_time`` in epoch ms and
  not always exactly on the hour (e.g. ``1780272000001``) -- several independent projects that parse these
  files (found with code search) show the header and such values.
* USD-M futures (perpetual) klines use the same file names under ``data/futures/um/monthly/klines/<SYMBOL>/<interval>``
  and ``data/futures/um/daily/klines/...``, with the same 12 columns in ms; files from about 2022-05 on carry the
  header ``open_time,open,...``, earlier ones have none -- binance/binance-public-data issues #246 (2023-06-12,
  "the header row is added after that date, earlier files don't contain the header") and #283 (2023-10-28).

This module only downloads and verifies; parsing the zips into canonical frames is the reader's job. It has no
Dagster dependency and uses only the standard library for HTTP.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from btc_assets.atomic import atomic_path, write_bytes_atomic

if TYPE_CHECKING:  # pragma: no cover - typing only; ccxt is imported lazily (slow import)
    import ccxt

NOT_PUBLISHED = "not_published.json"  # zip URLs that answered 404 for a settled month
DEFAULT_BASE_URL = "https://data.binance.vision"
INTERVAL = "1h"

HTTP_TIMEOUT_S = 60.0
HTTP_ATTEMPTS = 3
RETRY_BACKOFF_S = 1.0  # doubled after every failed attempt; tests set it to 0
_CHUNK = 1 << 16
_USER_AGENT = "btc_assets-downloader/1.0 (+urllib)"
_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_HOUR_MS = 3_600_000

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DownloadResult:
    """What a download call produced."""

    ohlcv_files: list[Path]  # sorted, every verified kline file of the requested range (monthly + daily)
    funding_files: list[Path]  # sorted, every verified funding file of the requested range
    fetched: int  # files fetched over the network this call
    cached: int  # files already present and verified (or, for ccxt, already up to date)
    missing: list[str]  # URLs that answered 404
    perp_files: list[Path] = field(default_factory=list)  # sorted, every verified perp kline file (when asked for)


class DownloadError(RuntimeError):
    """A download failed in a way that must not be ignored (HTTP error, checksum mismatch, bad payload)."""


# --------------------------------------------------------------------------------------------- HTTP helpers


def _http_get(url: str, sink: Callable[[bytes], None] | None = None) -> bytes | None:
    """GET ``url``; return the body (or stream it to ``sink`` and return b""), ``None`` on HTTP 404.

    Transient failures (connection errors, timeouts, HTTP 5xx/429) are retried ``HTTP_ATTEMPTS`` times with
    exponential backoff; other HTTP errors raise :class:`DownloadError` at once.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    last_error: Exception | None = None
    for attempt in range(HTTP_ATTEMPTS):
        if attempt:
            time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                if sink is None:
                    return response.read()
                while chunk := response.read(_CHUNK):
                    sink(chunk)
                return b""
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code < 500 and exc.code != 429:
                raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
            last_error = exc
        except OSError as exc:  # URLError, timeouts, connection resets
            last_error = exc
        if sink is not None:
            # A partially streamed body cannot be resumed by the sink: let the caller restart cleanly.
            raise _RetryStream(last_error)
    raise DownloadError(f"GET {url} failed after {HTTP_ATTEMPTS} attempts: {last_error}") from last_error


class _NotFound(Exception):
    """Internal: the streamed GET answered 404 (the partial download is discarded)."""


class _RetryStream(Exception):
    """Internal: a streamed download failed after (possibly) writing bytes; the caller restarts it."""

    def __init__(self, cause: Exception | None) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_checksum(text: str, url: str) -> str:
    """The lower-case sha256 hex from a ``<sha256>  <filename>`` CHECKSUM body."""
    parts = text.split()
    if not parts or not _SHA256_RE.match(parts[0]):
        raise DownloadError(f"malformed CHECKSUM at {url}: {text[:120]!r}")
    return parts[0].lower()


_DATA_MODE = 0o644  # downloaded data is ordinary readable data, whatever the umask


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    write_bytes_atomic(path, data, mode=_DATA_MODE)


# ------------------------------------------------------------------------------------------ archive files


def _cached_ok(zip_path: Path) -> bool:
    """True when ``zip_path`` and its CHECKSUM exist and the zip's sha256 matches the stored one."""
    checksum_path = zip_path.with_name(zip_path.name + ".CHECKSUM")
    if not (zip_path.is_file() and checksum_path.is_file()):
        return False
    try:
        text = checksum_path.read_text(encoding="utf-8", errors="replace")
        expected = _parse_checksum(text, str(checksum_path))
    except DownloadError:
        return False
    return _sha256_file(zip_path) == expected


class _HashingSink:
    """Writes chunks to a file while hashing them."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()

    def __call__(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.fh.write(chunk)


def _fetch_verified(url: str, zip_path: Path) -> bool:
    """Download ``url`` (+ ``.CHECKSUM``) into ``zip_path`` atomically; False if either answered 404."""
    checksum_url = url + ".CHECKSUM"
    body = _http_get(checksum_url)
    if body is None:
        return False
    expected = _parse_checksum(body.decode("utf-8", errors="replace"), checksum_url)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(HTTP_ATTEMPTS):
        try:
            with atomic_path(zip_path, mode=_DATA_MODE) as tmp:
                with open(tmp, "wb") as fh:
                    sink = _HashingSink(fh)
                    found = _http_get(url, sink=sink)
                if found is None:
                    raise _NotFound  # leaves the block: the temp file is removed, nothing renamed
                actual = sink.digest.hexdigest()
                if actual != expected:
                    raise DownloadError(
                        f"checksum mismatch for {url}: expected sha256 {expected} (from {checksum_url}), got {actual}"
                    )
                # CHECKSUM first (the zip is renamed when the block ends): a crash between the two renames
                # leaves no zip, so the month is re-fetched.
                _atomic_write_bytes(zip_path.with_name(zip_path.name + ".CHECKSUM"), body)
            return True
        except _NotFound:
            return False
        except _RetryStream as exc:
            if attempt == HTTP_ATTEMPTS - 1:
                raise DownloadError(f"GET {url} failed after {HTTP_ATTEMPTS} attempts: {exc.cause}") from exc
            time.sleep(RETRY_BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _parse_month(text: str, name: str) -> tuple[int, int]:
    match = _MONTH_RE.match(text)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"{name} must be a YYYY-MM month, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _months(first: tuple[int, int], last: tuple[int, int]) -> Iterator[tuple[int, int]]:
    year, month = first
    while (year, month) <= last:
        yield year, month
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def _days(year: int, month: int, before: datetime.date) -> Iterator[datetime.date]:
    day = datetime.date(year, month, 1)
    while day.month == month and day < before:
        yield day
        day += datetime.timedelta(days=1)


def download_binance_archive(
    dest: Path,
    symbol: str = "BTCUSDT",
    start: str = "2017-08",
    end: str | None = None,
    base_url: str | None = None,
    funding: bool = True,
    progress: Callable[[str], None] | None = None,
    today: datetime.date | None = None,
    perp: bool = False,
) -> DownloadResult:
    """Mirror BTCUSDT-style 1h spot klines and USD-M funding history (and, with ``perp``, the USD-M perpetual's
    own 1h klines) from the Binance archive into ``dest``.

    ``start``/``end`` are inclusive ``YYYY-MM`` months; ``end`` defaults to (and is capped at) the current
    UTC month, which -- not having a monthly file yet -- is covered by daily kline files up to yesterday.
    Funding has no daily files, so the current month's funding is not available from the archive. If the
    previous month's monthly kline file is not published yet (early in a month), its daily files are used.

    Perp klines follow the spot klines' rules (monthly files, daily files for the current month and for a previous
    month not published yet).

    Files are kept byte-for-byte as downloaded under ``dest/spot/klines/<SYMBOL>/1h``,
    ``dest/futures/um/klines/<SYMBOL>/1h`` (perp) and ``dest/futures/um/fundingRate/<SYMBOL>``, each with its
    ``.CHECKSUM``. A file already present and
    matching its stored checksum is not requested again. HTTP 404 (e.g. months before the symbol was listed)
    is reported in ``missing`` (the zip URL); every other failure raises :class:`DownloadError`.
    """
    dest = Path(dest)
    symbol = symbol.upper()
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    today = today or datetime.datetime.now(datetime.UTC).date()
    current = (today.year, today.month)
    first = _parse_month(start, "start")
    last = _parse_month(end, "end") if end is not None else current
    if first > last:
        raise ValueError(f"start {start} is after end {end}")
    last = min(last, current)
    report: Progress = progress or (lambda _msg: None)

    kline_dir = dest / "spot" / "klines" / symbol / INTERVAL
    funding_dir = dest / "futures" / "um" / "fundingRate" / symbol
    perp_dir = dest / "futures" / "um" / "klines" / symbol / INTERVAL
    kline_url = f"{base}/data/spot/monthly/klines/{symbol}/{INTERVAL}"
    kline_daily_url = f"{base}/data/spot/daily/klines/{symbol}/{INTERVAL}"
    funding_url = f"{base}/data/futures/um/monthly/fundingRate/{symbol}"
    perp_url = f"{base}/data/futures/um/monthly/klines/{symbol}/{INTERVAL}"
    perp_daily_url = f"{base}/data/futures/um/daily/klines/{symbol}/{INTERVAL}"

    ohlcv_files: list[Path] = []
    funding_files: list[Path] = []
    perp_files: list[Path] = []
    missing: list[str] = []
    counts = {"fetched": 0, "cached": 0}

    # A 404 for a month older than last month is final (e.g. before the listing): remember it, ask once.
    not_published_file = dest / NOT_PUBLISHED
    not_published = set(json.loads(not_published_file.read_text())) if not_published_file.exists() else set()
    settled_before = _previous_month(*current)

    def get(kind: str, label: str, url: str, path: Path) -> bool:
        if url in not_published:
            missing.append(url)
            report(f"{kind} {label} not published (known 404, not asked again)")
            return False
        if _cached_ok(path):
            counts["cached"] += 1
            report(f"{kind} {label} ok (cached)")
            return True
        if path.exists():
            report(f"{kind} {label} local file fails its checksum; re-fetching")
        if _fetch_verified(url, path):
            counts["fetched"] += 1
            report(f"{kind} {label} ok (fetched)")
            return True
        missing.append(url)
        report(f"{kind} {label} missing (404: {url})")
        if _parse_month(label[:7], "label") < settled_before:
            not_published.add(url)
            not_published_file.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write_bytes(not_published_file, json.dumps(sorted(not_published), indent=1).encode())
        return False

    def get_daily(
        kind: str, daily_url: str, directory: Path, files: list[Path], year: int, month: int, before: datetime.date
    ) -> None:
        for day in _days(year, month, before):
            name = f"{symbol}-{INTERVAL}-{day.isoformat()}.zip"
            if get(kind, day.isoformat(), f"{daily_url}/{name}", directory / name):
                files.append(directory / name)

    def get_klines(
        kind: str, monthly_url: str, daily_url: str, directory: Path, files: list[Path], year: int, month: int
    ) -> None:
        label = f"{year:04d}-{month:02d}"
        if (year, month) == current:
            get_daily(kind, daily_url, directory, files, year, month, today)
        else:
            name = f"{symbol}-{INTERVAL}-{label}.zip"
            if get(kind, label, f"{monthly_url}/{name}", directory / name):
                files.append(directory / name)
            elif (year, month) == _previous_month(*current):
                report(f"{kind} {label}: monthly file not published yet, using daily files")
                get_daily(kind, daily_url, directory, files, year, month, datetime.date(*current, 1))

    for year, month in _months(first, last):
        label = f"{year:04d}-{month:02d}"
        get_klines("klines", kline_url, kline_daily_url, kline_dir, ohlcv_files, year, month)
        if perp:
            get_klines("perp klines", perp_url, perp_daily_url, perp_dir, perp_files, year, month)
        if not funding:
            continue
        if (year, month) == current:
            report(f"funding {label} skipped (current month; the archive has monthly funding files only)")
            continue
        name = f"{symbol}-fundingRate-{label}.zip"
        if get("funding", label, f"{funding_url}/{name}", funding_dir / name):
            funding_files.append(funding_dir / name)

    return DownloadResult(
        ohlcv_files=sorted(ohlcv_files),
        funding_files=sorted(funding_files),
        fetched=counts["fetched"],
        cached=counts["cached"],
        missing=missing,
        perp_files=sorted(perp_files),
    )


# -------------------------------------------------------------------------------------------------- ccxt

OHLCV_HEADER = ("timestamp", "open", "high", "low", "close", "volume")
FUNDING_HEADER = ("timestamp", "funding_rate")


def _to_ms(text: str) -> int:
    """Epoch ms of an ISO date/datetime (naive = UTC)."""
    value = datetime.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return int(value.timestamp() * 1000)


def _safe(symbol: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", symbol).strip("_")


def _read_rows(path: Path) -> dict[int, list[str]]:
    """Existing CSV rows keyed by their integer timestamp (header skipped)."""
    rows: dict[int, list[str]] = {}
    if not path.is_file():
        return rows
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for row in reader:
            if row:
                rows[int(row[0])] = row
    return rows


def _write_rows(path: Path, header: tuple[str, ...], rows: dict[int, list[str]]) -> None:
    """Write ``rows`` sorted by timestamp to ``path`` via a temp file + atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, mode=_DATA_MODE) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for ts in sorted(rows):
            writer.writerow(rows[ts])


def _num(value: Any) -> str:
    return repr(float(value)) if value is not None else ""


def _paginate(
    fetch: Callable[[int], list[Any]],
    start_ms: int,
    stop_ms: int,
    timestamp: Callable[[Any], int],
    limit: int,
    step_ms: int,
) -> Iterator[Any]:
    """Yield items with ``start_ms <= ts < stop_ms`` page by page until a short/empty page or ``stop_ms``.

    The next page starts ``step_ms`` after the newest item seen (1 h for candles, 1 ms for funding).
    """
    since = start_ms
    while since < stop_ms:
        page = fetch(since)
        newest = since - 1
        for item in page:
            ts = timestamp(item)
            newest = max(newest, ts)
            if since <= ts < stop_ms:
                yield item
        if len(page) < limit or newest < since:
            return
        since = newest + step_ms


def download_ccxt(
    dest: Path,
    symbol: str = "BTC/USDT",
    perp_symbol: str = "BTC/USDT:USDT",
    since: str = "2017-08-17",
    until: str | None = None,
    exchange: ccxt.Exchange | None = None,
    progress: Callable[[str], None] | None = None,
    perp: bool = False,
) -> DownloadResult:
    """Download 1h OHLCV of ``symbol`` and funding of ``perp_symbol`` (and, with ``perp``, the 1h OHLCV of
    ``perp_symbol`` itself) via ccxt into CSVs under ``dest/ccxt``.

    Writes ``<safe symbol>_1h.csv`` (``timestamp,open,high,low,close,volume``, epoch ms bar open time),
    ``<safe perp_symbol>_funding.csv`` (``timestamp,funding_rate``) and with ``perp`` ``<safe perp_symbol>_1h.csv``
    (the OHLCV layout), e.g. ``BTC_USDT_1h.csv``, ``BTC_USDT_USDT_funding.csv`` and ``BTC_USDT_USDT_1h.csv``.
    ``since`` is inclusive, ``until`` an exclusive ISO date/datetime (UTC; default now); only closed candles are
    stored. An existing CSV is resumed from its last timestamp + 1 h and
    rewritten de-duplicated via temp file + rename. ``fetched`` counts CSVs that gained rows, ``cached`` those
    already up to date; ``missing`` is always empty. Default exchange: ``ccxt.binance()``.
    """
    if exchange is None:
        import ccxt

        exchange = ccxt.binance({"enableRateLimit": True})
    report: Progress = progress or (lambda _msg: None)
    out_dir = Path(dest) / "ccxt"
    now_ms = int(time.time() * 1000)
    start_ms = _to_ms(since)
    stop_ms = min(_to_ms(until), now_ms) if until is not None else now_ms
    limit = 1000
    counts = {"fetched": 0, "cached": 0}

    def resume_from(rows: dict[int, list[str]]) -> int:
        return max(start_ms, max(rows) + _HOUR_MS) if rows else start_ms

    # --- OHLCV: only closed bars (open + 1 h <= now), so a resumed file never keeps a partial candle.
    bar_stop = min(stop_ms, now_ms - _HOUR_MS + 1)

    def candles(market: str) -> Path:
        path = out_dir / f"{_safe(market)}_1h.csv"
        rows = _read_rows(path)

        def fetch_ohlcv(since_ms: int) -> list[Any]:
            page = exchange.fetch_ohlcv(market, "1h", since=since_ms, limit=limit, params={"until": bar_stop - 1})
            report(f"ccxt {market} 1h: {len(page)} candles from {since_ms}")
            return page

        new = 0
        for candle in _paginate(fetch_ohlcv, resume_from(rows), bar_stop, lambda c: int(c[0]), limit, _HOUR_MS):
            ts = int(candle[0])
            new += ts not in rows
            rows[ts] = [str(ts), *(_num(v) for v in candle[1:6])]
        counts["fetched" if new else "cached"] += 1
        if new or not path.exists():
            _write_rows(path, OHLCV_HEADER, rows)
        report(f"ccxt {market} 1h: {new} new rows, {len(rows)} total -> {path}")
        return path

    ohlcv_path = candles(symbol)
    perp_files = [candles(perp_symbol)] if perp else []

    # --- funding
    funding_path = out_dir / f"{_safe(perp_symbol)}_funding.csv"
    frows = _read_rows(funding_path)
    first_ms = resume_from(frows)

    def fetch_funding(since_ms: int) -> list[Any]:
        page = exchange.fetch_funding_rate_history(
            perp_symbol, since=since_ms, limit=limit, params={"until": stop_ms - 1}
        )
        report(f"ccxt {perp_symbol} funding: {len(page)} rates from {since_ms}")
        return page

    new = 0
    for item in _paginate(fetch_funding, first_ms, stop_ms, lambda r: int(r["timestamp"]), limit, 1):
        ts = int(item["timestamp"])
        new += ts not in frows
        frows[ts] = [str(ts), _num(item["fundingRate"])]
    counts["fetched" if new else "cached"] += 1
    if new or not funding_path.exists():
        _write_rows(funding_path, FUNDING_HEADER, frows)
    report(f"ccxt {perp_symbol} funding: {new} new rows, {len(frows)} total -> {funding_path}")

    return DownloadResult(
        ohlcv_files=[ohlcv_path],
        funding_files=[funding_path],
        fetched=counts["fetched"],
        cached=counts["cached"],
        missing=[],
        perp_files=perp_files,
    )
