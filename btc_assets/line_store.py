"""Rolling lines shared by every seed process: computed once per data version into files, memory-mapped read-only.

Every seed of a study searches the same expert windows over the same bars, so it asks for the same few thousand
rolling lines (~0.6 MB each on the real history). Kept in each process, they cost every seed ~1.3 GB; here they are
written once per data version (the bars' fingerprint) as one ``.npy`` matrix per line kind and window range::

    <folder>/<fingerprint>-<code>/<kind>_<low>_<high>.npy     row w - low = the line of window w

and every process maps them read-only: the page cache holds one copy per machine, whatever the number of seeds.
A process's resident set holds only what it touched lately: once the lines handed out since the last release
reach ``resident_budget`` bytes, every map is released (``madvise(MADV_DONTNEED)``: the process's page-table
entries go, the pages stay in the page cache, a later read maps them again from there, no disk read), so a seed
process holds at most about that much of the files however many lines its search reads.
``<code>`` is the source digest of the code that builds the lines (``version``), so an edited line builder never
reads lines an older one wrote.
The first process builds what is missing under an exclusive lock (the others wait for it); each file is written
atomically, so a crash mid-build leaves no partial file. The values are the computed lines, bit for bit.
New data (a daily update) or new line code makes a new set; opening one deletes the sets beyond the
``KEEP_SETS`` most recently opened (never one another process is building or opening: it holds that set's lock). A
process that still maps a deleted set's files reads them on: the files go when the last map does.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from btc_assets.atomic import atomic_path

UNBOUNDED = 2**62  # a resident budget no process reaches
KEEP_SETS = 2  # line sets kept in a folder: the one just opened and the one opened before it (~1.25 GB each)


def _map_npy(path: Path) -> tuple[mmap.mmap, np.ndarray]:
    """The ``.npy`` file at ``path`` mapped read-only: (the map, a plain read-only ndarray over it). A plain array,
    not a ``np.memmap``: a row of a memmap costs ~3 µs more per read."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise ValueError(f"{path}: .npy format {version} is not one SharedLines writes (1.0 or 2.0)")
        shape, fortran, dtype = read_header[version](f)
        offset = f.tell()
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    count = int(np.prod(shape))
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
    return buffer, array.reshape(shape, order="F" if fortran else "C")


class SharedLines:
    """The lines of ``windows`` (kind → window range) for the bars with ``fingerprint``, memory-mapped from
    ``folder`` (built there first with ``compute(kind, window)`` when missing), kept apart per ``version`` of the
    code that computes them; at most about ``resident_budget`` bytes of them stay mapped (module docstring)."""

    def __init__(
        self,
        folder: str | Path,
        fingerprint: str,
        windows: Mapping[str, range],
        compute: Callable[[str, int], np.ndarray],
        version: str = "",
        resident_budget: int = UNBOUNDED,
    ) -> None:
        self.fingerprint = fingerprint
        key = f"{fingerprint}-{version}" if version else fingerprint
        self.dir = Path(folder) / key
        self.built: list[str] = []  # files this process wrote
        self._maps: dict[str, tuple[int, int, np.ndarray]] = {}
        self._buffers: list[mmap.mmap] = []
        self.resident_budget = resident_budget
        self.releases = 0  # times the maps were released
        self._handed = 0  # bytes of lines handed out since the last release
        self._lock = threading.Lock()
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(Path(folder) / f"{key}.lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                # under the lock: another process's pruning (which takes it) cannot delete the set meanwhile, and the
                # set counts as the most recently opened before the lock is released
                self.dir.mkdir(exist_ok=True)
                os.utime(self.dir)
                for kind, span in windows.items():
                    if not span:
                        continue
                    low, high = span.start, span.stop - 1
                    path = self.dir / f"{kind}_{low}_{high}.npy"
                    if not path.exists():
                        first = compute(kind, low)
                        with atomic_path(path) as tmp:
                            matrix = np.lib.format.open_memmap(tmp, "w+", np.float64, (high - low + 1, len(first)))
                            matrix[0] = first
                            for w in range(low + 1, high + 1):
                                matrix[w - low] = compute(kind, w)
                            matrix.flush()
                            del matrix
                        self.built.append(path.name)
                    buffer, matrix = _map_npy(path)
                    self._buffers.append(buffer)
                    self._maps[kind] = (low, high, matrix)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        self.pruned = _prune(Path(folder), self.dir, KEEP_SETS)  # sets this process deleted

    def line(self, fingerprint: str, kind: str, window: int) -> np.ndarray | None:
        """The stored line (a read-only view of the mapped file), or None when it is not stored."""
        if fingerprint != self.fingerprint:
            return None
        entry = self._maps.get(kind)
        if entry is None or not entry[0] <= window <= entry[1]:
            return None
        line = entry[2][window - entry[0]]
        with self._lock:
            self._handed += line.nbytes
            if self._handed > self.resident_budget:
                self.release()
                self._handed = line.nbytes
        return line

    def release(self) -> None:
        """Drop every mapped page from this process's resident set (they stay in the page cache; the values read
        later are the same: the files are read-only)."""
        for buffer in self._buffers:
            buffer.madvise(mmap.MADV_DONTNEED)
        self.releases += 1

    @property
    def nbytes(self) -> int:
        """Bytes of the mapped files."""
        return sum(m.nbytes for _, _, m in self._maps.values())


def _prune(folder: Path, current: Path, keep: int) -> list[str]:
    """Delete the line sets in ``folder`` beyond the ``keep`` most recently opened ones (``current`` among them),
    skipping any whose lock another process holds; returns their names."""
    sets = sorted((d for d in folder.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime_ns, reverse=True)
    removed = []
    for old in [d for d in sets if d != current][max(keep - 1, 0) :]:
        with open(folder / f"{old.name}.lock", "a+") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built or opened: in use
            try:
                shutil.rmtree(old, ignore_errors=True)
                removed.append(old.name)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return removed
