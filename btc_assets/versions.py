"""The one version mechanism: what a computation's results depend on, as a short hash.

A computation is named by the stage modules that compute it (``btc_assets.volatility``, ``btc_assets.wfa``, …).
Its *source digest* hashes the code of those modules and of every ``btc_assets`` module they import, transitively
(found by reading their ``import`` statements), so editing any of them changes it. The code is hashed as its
syntax tree without docstrings: comments, docstrings and formatting do not count, code does. The Dagster layer
(``btc_assets.defs``), the command line and the charts (``btc_assets.plots``) are never part of a computation: editing
them changes no result.

An asset's code version is that digest plus a hash of the settings sections it reads
(:func:`code_version`); the walk-forward checkpoints are keyed by the same digest, so a stale asset and a stale
checkpoint are one and the same thing.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from dataclasses import asdict, fields
from functools import cache
from pathlib import Path

PACKAGE = "btc_assets"
ROOT = Path(__file__).resolve().parent  # the package's folder: every module of it is a file there
NOT_COMPUTATION = ("btc_assets.defs", "btc_assets.cli", "btc_assets.plots", "btc_assets.__main__")


def _excluded(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in NOT_COMPUTATION)


@cache
def _source_file(name: str) -> Path | None:
    """The source file of module ``name`` of this package, found on disk (importing a module to find it would load
    what it imports: hmmlearn, arch, … in every process that builds the definitions), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE or not all(part.isidentifier() for part in parts):
        return None
    base = ROOT.joinpath(*parts[1:])
    for path in (base / "__init__.py", base.parent / f"{base.name}.py") if parts[1:] else (ROOT / "__init__.py",):
        if path.is_file():
            return path
    return None


def _is_module(name: str) -> bool:
    return _source_file(name) is not None


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


@cache
def _parsed(name: str) -> tuple[str, tuple[str, ...]]:
    """(the normalised code of module ``name``, the ``btc_assets`` modules it imports)."""
    path = _source_file(name)
    assert path is not None, name
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    imports: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package
                parts = name.split(".")
                base_parts = parts if is_package else parts[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            imports.add(base)
            imports.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    found = set()
    for imported in imports:
        if imported.split(".")[0] != PACKAGE or _excluded(imported):
            continue
        # a package's parents run when it is imported: count them too
        parts = imported.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if not _excluded(candidate) and _is_module(candidate):
                found.add(candidate)
    code = ast.dump(_strip_docstrings(tree), include_attributes=False)
    return code, tuple(sorted(found - {name}))


def dependencies(*modules: str) -> tuple[str, ...]:
    """``modules`` and every ``btc_assets`` module they import, transitively (sorted; never the Dagster layer, the
    command line or the charts)."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if _excluded(name):
            raise ValueError(f"{name} is not a computation (the Dagster layer, the CLI and the charts never are)")
        if not _is_module(name):
            raise ValueError(f"{name}: no such module")
        seen.add(name)
        todo.extend(_parsed(name)[1])
    return tuple(sorted(seen))


def source_digest(*modules: str) -> str:
    """A short hash of the code of ``modules`` and everything they import in ``btc_assets`` (see the module
    docstring)."""
    digest = hashlib.sha256()
    for name in dependencies(*modules):
        digest.update(name.encode())
        digest.update(_parsed(name)[0].encode())
    return digest.hexdigest()[:12]


def settings_hash(*sections: object) -> str:
    """A short stable hash of settings sections (dataclasses): every field but those whose metadata says
    ``result: False`` (``btc_assets.config.NO_RESULT``: how a result is computed, never what it is; changing one
    keeps the assets synced and the checkpoints resumable)."""

    def hashed(section: object) -> dict[str, object]:
        values = asdict(section)  # type: ignore[call-overload]
        for f in fields(section):  # type: ignore[arg-type]
            if not f.metadata.get("result", True):
                del values[f.name]
        return values

    text = repr([(type(s).__name__, hashed(s)) for s in sections])
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def code_version(modules: Iterable[str], *sections: object) -> str:
    """An asset's code version: the source digest of the modules that compute it, plus the hash of the settings
    sections it reads."""
    digest = source_digest(*modules)
    return f"{digest}-{settings_hash(*sections)}" if sections else digest


def clear_cache() -> None:
    """Forget the parsed sources (tests that edit a module's file call it)."""
    for cached in (_parsed, _source_file):
        getattr(cached, "cache_clear", lambda: None)()
