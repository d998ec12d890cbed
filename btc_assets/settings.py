"""Everything a run is configured by, resolved once.

:func:`resolve_settings` is the one place that reads the environment and the user's settings file:

* the home: the argument, else ``BTC_ASSETS_HOME``, else ``./data``;
* the profile: the argument, else ``BTC_ASSETS_PROFILE``, else ``quick`` (``btc_assets.config.PROFILES``);
* the settings file: ``BTC_ASSETS_CONFIG``, else ``<home>/config.toml`` if it exists (the resolved home's, so a
  test home never sees a user's file), applied over the profile;
* the walk-forward sampler: the argument, else ``BTC_ASSETS_SAMPLER``, else the profile's;
* the market source: the arguments, else ``BTC_ASSETS_SOURCE`` / ``_OHLCV`` / ``_FUNDING`` / ``_PERP`` /
  ``_SYMBOL`` / ``_START`` / ``_BINANCE_URL`` (``btc_assets.ingestion.SourceSettings``), file paths made absolute.

``btc_assets.defs.build_definitions`` and the command line receive the resulting :class:`Settings`; nothing reads
the environment or the file again at run time, so the settings an asset computes with are the ones its code version
was made from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from btc_assets.config import (
    DEFAULT_HOME,
    DEFAULT_PROFILE,
    Paths,
    Profile,
    get_profile,
    read_settings_file,
    with_sampler,
)
from btc_assets.ingestion.sources import SourceSettings


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one home: where its state lives, the study profile with the settings file
    applied, and where market data comes from."""

    paths: Paths
    profile: Profile
    source: SourceSettings
    settings_file: Path | None = None

    def describe(self) -> str:
        file = f"settings file {self.settings_file}" if self.settings_file else "no settings file"
        return f"home {self.paths.home}; profile {self.profile.name}; {file}; source {self.source.describe()}"


def _absolute(spec: str) -> str:
    """Comma-separated paths or globs made absolute (the UI's code server runs in another working directory)."""
    return ",".join(os.path.abspath(os.path.expanduser(v.strip())) for v in spec.split(",") if v.strip())


def resolve_settings(
    home: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    *,
    source: SourceSettings | None = None,
    sampler: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the home, profile, settings file, sampler and market source once (see the module docstring);
    ``env`` defaults to ``os.environ``."""
    env = os.environ if env is None else env
    paths = Paths.at(home or env.get("BTC_ASSETS_HOME") or DEFAULT_HOME)
    chosen = get_profile(profile or env.get("BTC_ASSETS_PROFILE") or DEFAULT_PROFILE)
    settings_file: Path | None = None
    named = env.get("BTC_ASSETS_CONFIG")
    if named:
        settings_file = Path(named).expanduser()
        if not settings_file.is_file():
            raise FileNotFoundError(f"BTC_ASSETS_CONFIG={named}: no such file")
    elif (paths.home / "config.toml").is_file():
        settings_file = paths.home / "config.toml"
    if settings_file is not None:
        chosen = read_settings_file(chosen, settings_file)
        if chosen.experts.defaults or chosen.experts.ranges:
            from btc_assets.experts import check_settings  # the parameter names live with the expert classes

            check_settings(chosen.experts, str(settings_file))
    if sampler:
        chosen = with_sampler(chosen, sampler, "--sampler")
    elif env.get("BTC_ASSETS_SAMPLER"):
        chosen = with_sampler(chosen, env["BTC_ASSETS_SAMPLER"], "BTC_ASSETS_SAMPLER")
    resolved = (source or SourceSettings()).resolved(env)
    resolved = replace(
        resolved, ohlcv=_absolute(resolved.ohlcv), funding=_absolute(resolved.funding), perp=_absolute(resolved.perp)
    )
    return Settings(paths, chosen, resolved, settings_file)


def environment(settings: Settings) -> dict[str, str]:
    """The environment variables that make a child process (a seed's, the UI's code server) resolve the same
    settings: the home, profile, settings file, sampler and source, and ``DAGSTER_HOME``."""
    out = {
        "BTC_ASSETS_HOME": str(settings.paths.home),
        "BTC_ASSETS_PROFILE": settings.profile.name,
        "BTC_ASSETS_SAMPLER": settings.profile.wfa.sampler,
        "DAGSTER_HOME": str(settings.paths.dagster_home),
        "BTC_ASSETS_SOURCE": settings.source.source,
        "BTC_ASSETS_SYMBOL": settings.source.symbol,
        "BTC_ASSETS_START": settings.source.start,
    }
    if settings.settings_file is not None:
        out["BTC_ASSETS_CONFIG"] = str(settings.settings_file)
    for name, value in (
        ("BTC_ASSETS_OHLCV", settings.source.ohlcv),
        ("BTC_ASSETS_FUNDING", settings.source.funding),
        ("BTC_ASSETS_PERP", settings.source.perp),
        ("BTC_ASSETS_BINANCE_URL", settings.source.binance_url),
    ):
        if value:
            out[name] = value
    return out
