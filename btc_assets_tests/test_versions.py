"""The one version mechanism: an asset's code version is the source digest of the modules that compute it plus its
settings; editing a stage module makes exactly that stage unsynced (Dagster propagates it downstream), editing the
charts, the command line or the Dagster wiring makes nothing unsynced, and the seeds' checkpoints are keyed by the
same digest."""

from __future__ import annotations

import shutil
from dataclasses import fields, make_dataclass, replace
from pathlib import Path

import pytest

import btc_assets
from btc_assets import versions
from btc_assets.config import NO_RESULT, get_profile
from btc_assets.defs import COMPUTED_BY, asset_code_version
from btc_assets_tests.conftest import definitions

PACKAGE = Path(btc_assets.__file__).parent


@pytest.fixture
def copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package's source that the version mechanism reads instead of the installed one."""
    root = tmp_path / "btc_assets"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    real = versions._source_file

    def in_copy(name: str) -> Path | None:
        path = real(name)
        return None if path is None else root / path.relative_to(PACKAGE)

    versions.clear_cache()
    monkeypatch.setattr(versions, "_source_file", in_copy)
    yield root
    versions.clear_cache()


def all_versions() -> dict[str, str]:
    profile = get_profile("quick")
    versions._parsed.cache_clear()
    return {name: asset_code_version(name, profile) for name in COMPUTED_BY}


def changed_by(edit: Path, text: str, *, append: bool = True) -> set[str]:
    before = all_versions()
    edit.write_text(edit.read_text() + text if append else text)
    after = all_versions()
    return {name for name in before if before[name] != after[name]}


def test_every_asset_has_a_computation_and_a_code_version(tmp_path: Path) -> None:
    defs = definitions(tmp_path)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == set(COMPUTED_BY)
    for spec in defs.resolve_all_asset_specs():
        assert spec.code_version == asset_code_version(spec.key.to_user_string(), get_profile("quick"))


def test_editing_volatility_changes_exactly_volatility(copy: Path) -> None:
    assert changed_by(copy / "volatility.py", "\n\ndef _edited() -> int:\n    return 1\n") == {"volatility"}


def test_comments_docstrings_and_formatting_do_not_count(copy: Path) -> None:
    path = copy / "volatility.py"
    source = path.read_text()
    edited = source.replace('"""', '"""Edited docstring. ', 1) + "\n# a comment\n\n\n"
    assert edited != source
    assert changed_by(path, edited, append=False) == set()


@pytest.mark.parametrize("module", ["plots.py", "cli.py", "defs/volatility.py", "defs/__init__.py"])
def test_charts_cli_and_wiring_change_nothing(copy: Path, module: str) -> None:
    assert changed_by(copy / module, "\n\ndef _edited() -> int:\n    return 1\n") == set()


def test_the_optimiser_changes_the_seeds_and_the_ablation(copy: Path) -> None:
    changed = changed_by(copy / "wfa" / "space.py", "\n\ndef _edited() -> int:\n    return 1\n")
    # the attribution (moe_portfolio's metadata, wfa_attribution) reads fold parameters through wfa.space
    expected = {"wfa_results", "wfa_folds", "wfa_trials", "ablation_oos", "ablation_trials", "ablation"}
    assert changed == expected | {"ablation_seeds", "moe_portfolio", "wfa_attribution"}


def test_the_engine_changes_everything_that_trades(copy: Path) -> None:
    changed = changed_by(copy / "portfolio" / "engine.py", "\n\ndef _edited() -> int:\n    return 1\n")
    assert {"moe_portfolio", "wfa_results", "wfa_summary", "wfa_attribution", "ablation"} <= changed
    assert not changed & {"raw_ohlcv", "market_bars", "volatility", "regime_probabilities", "expert_signals"}


def test_a_setting_changes_the_stages_that_read_it() -> None:
    profile = get_profile("quick")
    changed = replace(profile, volatility=replace(profile.volatility, horizon=12))
    moved = {n for n in COMPUTED_BY if asset_code_version(n, profile) != asset_code_version(n, changed)}
    assert moved == {"volatility"}


def test_a_setting_that_changes_no_result_changes_no_version() -> None:
    """Fields marked ``NO_RESULT`` (where and how a seed runs) are left out of the hash: the versions are those of
    the section without them; every other field counts."""
    profile = get_profile("full")
    changes = {"storage": "sqlite:///x.db", "shared": True, "progress_every": 5.0, "shared_lines": False}
    elsewhere = replace(profile, wfa=replace(profile.wfa, lines_resident_mb=64, **changes))
    assert all(asset_code_version(n, profile) == asset_code_version(n, elsewhere) for n in COMPUTED_BY)
    marked = {f.name for f in fields(profile.wfa) if f.metadata == NO_RESULT}
    assert marked == {"lines_resident_mb", *changes}
    values = {f.name: getattr(profile.wfa, f.name) for f in fields(profile.wfa) if f.name not in marked}
    without = make_dataclass("WfaSettings", list(values))(**values)  # the section without the marked fields
    assert versions.settings_hash(without) == versions.settings_hash(profile.wfa)
    assert versions.settings_hash(replace(profile.wfa, n_trials=7)) != versions.settings_hash(profile.wfa)


def test_the_checkpoint_is_keyed_by_the_seed_assets_code_version() -> None:
    from btc_assets.wfa.run import code_digest, config_hash

    profile = get_profile("quick")
    expected = f"{code_digest()}-{config_hash(profile.wfa, profile.portfolio, profile.schedule, profile.experts)}"
    assert asset_code_version("wfa_results", profile) == expected


def test_unknown_or_excluded_modules_are_errors() -> None:
    with pytest.raises(ValueError, match="not a computation"):
        versions.dependencies("btc_assets.plots")
    with pytest.raises(ValueError, match="no such module"):
        versions.dependencies("btc_assets.nowhere")


def test_module_files_are_found_on_disk_as_importlib_finds_them(tmp_path: Path) -> None:
    """Every module of the package is found at the file importlib finds (names that are not modules: None), and
    building the definitions, which computes every digest, imports none of the fitting or plotting libraries (a
    fresh process: this one has them loaded)."""
    import importlib.util
    import subprocess
    import sys

    versions.clear_cache()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join((PACKAGE.name, *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        assert versions._source_file(name) == Path(importlib.util.find_spec(name).origin), name
    for name in ("btc_assets.regimes.StudentTHMM", "btc_assets.nowhere", "numpy", "btc_assets.py"):
        assert versions._source_file(name) is None, name
    code = (
        "import sys; from btc_assets.defs import build_definitions; build_definitions(sys.argv[1], 'quick'); "
        "print(sorted(m for m in ('arch', 'hmmlearn', 'sklearn', 'matplotlib', 'scipy.stats') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
