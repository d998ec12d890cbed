"""Crash-proof checkpoints of one seed's walk-forward study, at three levels.

Layout (``<checkpoints>/<seed_key>/``)::

    fingerprint.json           what the checkpoint was made from: configuration, code version, seed
    journal/<study>.journal       Optuna journal storage of one (fold, phase) study, compressed frames
                                  (:class:`~btc_assets.wfa.journal.FrameJournal`; or an RDB URL)
    phases/fold03_phase2.json.gz  one atomic record per finished (fold, phase): its data key, winner, scores, trials
    progress.json                 fold, phase, trial x/N, best so far, ETA; read by ``btc-assets status``

* Trial level: the Optuna storage. Completed trials are written in batches (``BATCH_TRIALS``, one journal frame
  each), so a crash loses at most one batch; the lost trials are run again. The sampler for trial i (i = number of
  completed trials) is built from a seed derived from (seed, fold, phase, i) and the completed trials only, so a
  resumed study makes exactly the choices an uninterrupted one would have. A study's journal is its own file: a
  resume replays the one study it continues, never the seed's whole history.
* (Fold, phase) level: the records above, written atomically (temp file + rename); a restart skips what is done.
* Seed level: a finished seed is a materialised Dagster partition (and ``progress.json`` says ``done``).

The seed's fingerprint is a hash of the configuration, the code version, the seed and the data's origin (the rows
before the first fold's training end). If it does not match, the old checkpoint is moved aside
(``<seed_key>.stale-<UTC time>``), the run starts fresh and says so. Past the origin the data are keyed per
(fold, phase), by what that study read (:class:`PrefixKeys`): the input rows up to the fold's training end and
the parameters it started from. Appending bars leaves every earlier study's key unchanged, so only the studies of
new folds run; a changed earlier bar changes the keys of every study that read it, and those start afresh (their
Optuna study names carry the key) with a message that says so. A record also keeps the key of the rows up to its
fold's test end: when only that changes (the test window grew), the trials' out-of-sample scores are recomputed
and nothing is re-optimised.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from btc_assets.atomic import atomic_path


def atomic_write_json(data: Any, path: Path) -> None:
    """Write JSON to ``path`` atomically (temp file in the same folder, fsync, rename); gzip'd compact JSON when the
    name ends in ``.gz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        text = json.dumps(data, separators=(",", ":"), sort_keys=True, default=str).encode()
        with atomic_path(path) as tmp:
            tmp.write_bytes(gzip.compress(text, compresslevel=4, mtime=0))
        return
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True, default=str)


def read_json(path: Path) -> Any | None:
    """The JSON at ``path`` (gzip'd when the name ends in ``.gz``); None when there is no such file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    return json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)


@dataclass(frozen=True)
class Fingerprint:
    """What a seed's checkpoint was made from: the configuration, the code, the seed, and the data's origin (the
    key of the rows before the first fold's training end: unchanged when bars are appended, changed when the data
    were replaced or the warm-up edited). Everything after the origin is keyed per study (:class:`PrefixKeys`)."""

    config: str
    code: str
    seed: int
    data: str

    @property
    def key(self) -> str:
        return hashlib.sha256(repr({k: v for k, v in asdict(self).items() if k != "data"}).encode()).hexdigest()[:12]

    def differences(self, other: Fingerprint) -> list[str]:
        return [name for name in ("data", "config", "code", "seed") if getattr(self, name) != getattr(other, name)]


class PrefixKeys:
    """Content keys of the leading rows of time-ordered frames: the rows before a cut time, of each frame.

    Row hashes (``pandas.util.hash_pandas_object``, values only) are computed once per frame, so a key costs a
    hash over 8 bytes a row. A frame given with a ``fold`` column contributes only that fold's rows (the regime
    table holds one stretch per fold's refit). Column names and dtypes are part of every key."""

    def __init__(self, frames: dict[str, pd.DataFrame]) -> None:
        self._parts: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray | None]] = []
        for name in sorted(frames):
            frame = frames[name]
            schema = repr([(c, str(frame[c].dtype)) for c in frame.columns])
            rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
            ts = pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8
            folds = frame["fold"].to_numpy() if "fold" in frame.columns else None
            self._parts.append((name, schema, rows, ts, folds))

    def key(self, fold: int, cut: pd.Timestamp) -> str:
        """The key of every frame's rows with ``timestamp < cut`` (of ``fold`` only, in a frame with folds)."""
        digest = hashlib.sha256()
        cut_ns = pd.Timestamp(cut).as_unit("ns").value
        for name, schema, rows, ts, folds in self._parts:
            chosen = ts < cut_ns if folds is None else (folds == fold) & (ts < cut_ns)
            digest.update(f"{name}|{schema}|{int(chosen.sum())}|".encode())
            digest.update(np.ascontiguousarray(rows[chosen]).tobytes())
        return digest.hexdigest()[:16]


class SeedCheckpoint:
    """One seed's checkpoint folder."""

    def __init__(self, root: Path, seed_key: str, fingerprint: Fingerprint, say: Callable[[str], None] = print) -> None:
        self.root = Path(root)
        self.seed_key = seed_key
        self.dir = self.root / seed_key
        self.fingerprint = fingerprint
        self.say = say
        self.started_fresh = False
        self.moved_aside: Path | None = None
        self._open()

    def _open(self) -> None:
        """Check the fingerprint under an exclusive lock on ``<root>/<seed_key>.lock``: processes that open the same
        seed at once (several workers sharing a seed, or a launch repeated by mistake) see one consistent folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{self.seed_key}.lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                self._open_locked()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _open_locked(self) -> None:
        stored = read_json(self.dir / "fingerprint.json")
        if stored is not None:
            old = Fingerprint(**stored)
            if old == self.fingerprint:
                self.say(f"{self.seed_key}: resuming from the checkpoint in {self.dir}")
                return
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            aside = self.root / f"{self.seed_key}.stale-{stamp}-{uuid.uuid4().hex[:4]}"
            os.replace(self.dir, aside)
            self.moved_aside = aside
            self.say(
                f"{self.seed_key}: the checkpoint was made from different "
                f"{', '.join(old.differences(self.fingerprint))}; kept aside at {aside}; starting fresh"
            )
        elif self.dir.exists() and any(self.dir.iterdir()):
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            aside = self.root / f"{self.seed_key}.stale-{stamp}-{uuid.uuid4().hex[:4]}"
            os.replace(self.dir, aside)
            self.moved_aside = aside
            self.say(f"{self.seed_key}: a checkpoint without a fingerprint was kept aside at {aside}; starting fresh")
        else:
            self.say(f"{self.seed_key}: no checkpoint; starting fresh")
        self.started_fresh = True
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "phases").mkdir(exist_ok=True)
        (self.dir / "journal").mkdir(exist_ok=True)
        atomic_write_json(asdict(self.fingerprint), self.dir / "fingerprint.json")

    # -- Optuna storage ------------------------------------------------------------------------------------------

    def storage_url(self, configured: str) -> str | None:
        """The configured RDB URL, or None for the journal file in this folder."""
        return configured or None

    def journal_path(self, study_name: str) -> Path:
        """The journal file of one study (its own file: opening it replays that study only)."""
        return self.dir / "journal" / f"{study_name}.journal"

    def study_name(self, fold: int, phase: int, data_key: str) -> str:
        """Study names carry the fingerprint key and the study's data key (:class:`PrefixKeys`), so neither a
        shared RDB nor a grown journal ever mixes checkpoints."""
        return f"{self.seed_key}-{self.fingerprint.key}-fold{fold:02d}-phase{phase}-{data_key}"

    # -- (fold, phase) records -----------------------------------------------------------------------------------

    def phase_path(self, fold: int, phase: int) -> Path:
        return self.dir / "phases" / f"fold{fold:02d}_phase{phase}.json.gz"

    def phase_record(self, fold: int, phase: int) -> dict[str, Any] | None:
        stored = read_json(self.phase_path(fold, phase))
        return None if stored is None else {**stored, "trials": _rows(stored["trials"])}

    def write_phase_record(self, fold: int, phase: int, record: dict[str, Any]) -> None:
        """Written with its trials as columns (one list per score and per parameter): a fifth smaller gzip'd."""
        atomic_write_json({**record, "trials": _columns(record["trials"])}, self.phase_path(fold, phase))

    # -- progress ------------------------------------------------------------------------------------------------

    def write_progress(self, **fields: Any) -> None:
        fields = {
            "seed": self.seed_key,
            "fingerprint": self.fingerprint.key,
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "pid": os.getpid(),
            **fields,
        }
        atomic_write_json(fields, self.dir / "progress.json")


def _columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Trial rows (each with a ``params`` mapping) as columns; :func:`_rows` inverts it exactly."""
    names = [k for k in rows[0] if k != "params"] if rows else []
    params = list(rows[0]["params"]) if rows else []
    return {
        "n": len(rows),
        "order": names,
        "columns": {k: [r[k] for r in rows] for k in names},
        "params": {k: [r["params"][k] for r in rows] for k in params},
        "param_order": params,
    }


def _rows(columns: dict[str, Any]) -> list[dict[str, Any]]:
    cols, params = columns["columns"], columns["params"]
    return [
        {**{k: cols[k][i] for k in columns["order"]}, "params": {k: params[k][i] for k in columns["param_order"]}}
        for i in range(columns["n"])
    ]


def read_progress(root: Path) -> dict[str, dict[str, Any]]:
    """Every seed's latest progress record under ``root`` (the checkpoints folder), by seed key."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(root).glob("seed_*/progress.json")):
        record = read_json(path)
        if record is not None:
            out[path.parent.name] = record
    return out


class ProgressClock:
    """Decides when to write a progress record: at least every ``every`` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            return True
        return False

    def reset(self) -> None:
        self.last = time.monotonic()
