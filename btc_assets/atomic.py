"""Atomic file writes: the one temp-file + fsync + ``os.replace`` mechanism every stage uses.

A reader, or a crash at any moment, sees either the old file or the complete new one, never a torn one:

* the new content goes to a temp file beside the target (same folder, so same filesystem and the rename is
  atomic), named ``.<target name>.<pid>.<random>.tmp``;
* on success the temp file is fsync'd, renamed over the target with :func:`os.replace` and the folder is fsync'd
  (so the rename itself survives a power cut);
* on any exception the temp file is removed and the exception re-raised; an :class:`OSError` (``ENOSPC``, ``EIO``
  ...) is re-raised with a message naming the target path and the original ``errno`` (the original error is
  chained as ``__cause__``).

Parent folders are not created: that stays the caller's decision. This module imports nothing from
``btc_assets``, so any stage may import it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic"]

_TARGET_ATTR = "_atomic_write_target"  # marks an OSError already re-raised for some target: not wrapped twice


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # pragma: no cover - folders cannot be opened (or fsync'd) on Windows
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` re-raisable with the target ``path`` in its message and the same errno (and errno subclass)."""
    if hasattr(exc, _TARGET_ATTR):
        return exc
    if type(exc).__module__ != "builtins":
        # A library's own OSError subclass (urllib's URLError, ...): keep its type for the callers' ``except``.
        exc.add_note(f"while writing {path} atomically")
        setattr(exc, _TARGET_ATTR, str(path))
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    message = f"cannot write {path}: {reason}"
    new = type(exc)(exc.errno, message) if exc.errno is not None else type(exc)(message)
    setattr(new, _TARGET_ATTR, str(path))
    return new


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path``; write it inside the block, and it replaces ``path`` atomically on exit.

    The temp file does not exist yet: open it (or hand it to a pandas / pyarrow / zipfile / DuckDB writer) and
    close it before the block ends. ``mode`` (e.g. ``0o644``) is applied with :func:`os.chmod` before the rename;
    by default the file keeps what its writer created it with. If the block raises, nothing is renamed, the temp
    file is removed and the exception propagates (an OSError naming ``path``, see the module docstring).
    """
    target = Path(path)
    tmp = _temp_beside(target)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        error = _naming(exc, target)
        if error is exc:
            raise
        raise error from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    target = Path(path)
    with atomic_path(target, mode=mode) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return target


def write_text_atomic(
    path: str | os.PathLike[str],
    text: str,
    *,
    encoding: str = "utf-8",
    newline: str | None = None,
    mode: int | None = None,
) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``.

    ``encoding`` and ``newline`` mean what they mean for :func:`open` (the default, like
    :meth:`pathlib.Path.write_text`, translates ``"\\n"`` to :data:`os.linesep`).
    """
    target = Path(path)
    with atomic_path(target, mode=mode) as tmp, open(tmp, "w", encoding=encoding, newline=newline) as handle:
        handle.write(text)
    return target
