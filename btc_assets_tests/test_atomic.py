"""The one atomic-write mechanism: temp file beside the target, fsync, os.replace, fsync the folder."""

from __future__ import annotations

import ast
import errno
import os
import stat
import urllib.error
from pathlib import Path

import pytest

from btc_assets import atomic
from btc_assets.atomic import atomic_path, write_bytes_atomic, write_text_atomic


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_write_bytes_and_text(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    assert write_bytes_atomic(target, b"\x00new bytes") == target
    assert target.read_bytes() == b"\x00new bytes"
    write_bytes_atomic(target, b"replaced")
    assert target.read_bytes() == b"replaced"
    text = tmp_path / "summary.json"
    write_text_atomic(text, '{"é": 1}\n')
    assert text.read_text(encoding="utf-8") == '{"é": 1}\n'
    assert _leftovers(tmp_path) == []


def test_temp_lives_in_the_target_folder_and_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "data.parquet"
    target.parent.mkdir()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(f".{target.name}.") and tmp.name.endswith(".tmp")
        assert not tmp.exists()  # the writer creates it (pandas / pyarrow / zipfile / DuckDB)
        tmp.write_bytes(b"payload")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_bytes() == b"payload"
    assert len(synced) == 2  # the file, then its folder
    assert _leftovers(target.parent) == []


def test_mode_is_applied(tmp_path: Path) -> None:
    target = tmp_path / "a.zip"
    write_bytes_atomic(target, b"x", mode=0o640)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_exception_in_block_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "data.parquet"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a fi")
        raise ValueError("boom")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_keyboard_interrupt_also_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "progress.json"
    target.write_text("{}")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise KeyboardInterrupt
    assert target.read_text() == "{}"
    assert _leftovers(tmp_path) == []


def test_enospc_while_writing_names_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    class FullDisk:
        """A file handle whose second write fails like a full disk."""

        def __init__(self, real: object) -> None:
            self.real, self.calls = real, 0

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.real.close()  # type: ignore[attr-defined]

        def write(self, data: bytes) -> int:
            self.calls += 1
            if self.calls > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.real.write(data)  # type: ignore[attr-defined,no-any-return]

    real_open = open

    def full_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        handle = real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]
        return FullDisk(handle) if "w" in mode else handle

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(OSError) as info, atomic_path(target) as tmp, open(tmp, "wb") as handle:
        handle.write(b"first chunk")
        handle.write(b"second chunk")
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert str(target) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_enospc_on_fsync_names_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device") as info:
        write_bytes_atomic(target, b"new")
    assert info.value.errno == errno.ENOSPC
    assert str(target) in str(info.value)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_errno_subclass_is_kept(tmp_path: Path) -> None:
    missing = tmp_path / "no such folder" / "data.bin"
    with pytest.raises(FileNotFoundError) as info:
        write_bytes_atomic(missing, b"x")
    assert info.value.errno == errno.ENOENT and str(missing) in str(info.value)


def test_library_oserror_subclass_keeps_its_type(tmp_path: Path) -> None:
    target = tmp_path / "a.zip"
    with pytest.raises(urllib.error.URLError) as info, atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise urllib.error.URLError("connection reset")
    assert any(str(target) in note for note in info.value.__notes__)
    assert _leftovers(tmp_path) == []


def test_nested_writes_are_not_wrapped_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outer, inner = tmp_path / "outer.zip", tmp_path / "inner.CHECKSUM"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as info, atomic_path(outer) as tmp:
        tmp.write_bytes(b"zip")
        monkeypatch.setattr(os, "fsync", full)
        write_bytes_atomic(inner, b"sum")
    assert str(inner) in str(info.value) and str(outer) not in str(info.value)
    assert str(info.value).count("cannot write") == 1
    assert _leftovers(tmp_path) == []


def test_leaf_module_imports_nothing_from_the_project() -> None:
    tree = ast.parse(Path(atomic.__file__).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and not [name for name in imported if name.split(".")[0] == "btc_assets"]
