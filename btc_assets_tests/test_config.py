"""Settings resolved once (``btc_assets.settings.resolve_settings``): the profile, the home's settings file
(``config.toml``: typed, wrong keys named), the environment and the market source, in one object that the
definitions and the command line receive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from btc_assets.config import PROFILES, get_profile
from btc_assets.defs import build_definitions
from btc_assets.ingestion import SourceSettings
from btc_assets.settings import environment, resolve_settings
from btc_assets.versions import settings_hash

SETTINGS = (
    "[portfolio]\nband = 0.3\nperp_fee_bps = 4\nmaker = true\ndecision_hours = 12\n"
    "gating = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]\n"
    '[ablation]\nseeds = [0, 3]\n[wfa]\nexperts = ["trend", "carry"]\n'
)


def test_settings_file_in_home_overrides_the_profile(tmp_path: Path) -> None:
    base = get_profile("quick")
    (tmp_path / "config.toml").write_text(SETTINGS)
    settings = resolve_settings(tmp_path, "quick", env={})
    profile = settings.profile
    assert settings.settings_file == tmp_path / "config.toml" and settings.paths.home == tmp_path
    assert profile.portfolio.band == 0.3 and profile.portfolio.perp_fee_bps == 4.0 and profile.portfolio.maker
    assert profile.portfolio.decision_hours == 12 and profile.portfolio.fees_bps == (2.0, 10.0)  # maker fees
    assert profile.portfolio.gating[1] == (0.0, 1.0, 0.0, 0.0)
    assert profile.ablation.seeds == (0, 3) and profile.wfa.experts == ("trend", "carry")
    assert profile.regimes == base.regimes and profile.volatility == base.volatility  # only what was named
    assert settings_hash(profile.portfolio) != settings_hash(base.portfolio)
    assert get_profile("quick") == base == PROFILES["quick"]  # the code's profiles never see a file


def test_a_home_reads_its_own_settings_file_never_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is the resolved home's: a settings file in the working directory's ``./data`` (a developer's) or
    in ``BTC_ASSETS_HOME`` is not read for another home."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "config.toml").write_text("[portfolio]\nband = 0.9\n")
    (tmp_path / "envhome").mkdir()
    (tmp_path / "envhome" / "config.toml").write_text("[portfolio]\nband = 0.8\n")
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    assert resolve_settings(mine, "quick", env={"BTC_ASSETS_HOME": str(tmp_path / "envhome")}).settings_file is None
    assert resolve_settings(None, "quick", env={}).profile.portfolio.band == 0.9  # ./data, the default home
    env = {"BTC_ASSETS_HOME": str(tmp_path / "envhome")}
    assert resolve_settings(None, "quick", env=env).profile.portfolio.band == 0.8


def test_the_environment_is_read_once_into_the_settings(tmp_path: Path) -> None:
    spot = tmp_path / "spot.csv"
    env = {
        "BTC_ASSETS_HOME": str(tmp_path),
        "BTC_ASSETS_PROFILE": "full",
        "BTC_ASSETS_SAMPLER": "cmaes",
        "BTC_ASSETS_OHLCV": "spot.csv",
    }
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        settings = resolve_settings(env=env)
    finally:
        os.chdir(cwd)
    assert settings.profile.name == "full" and settings.profile.wfa.sampler == "cmaes"
    assert (settings.source.source, settings.source.ohlcv) == ("files", str(spot))  # absolute
    # explicit arguments win over the environment
    explicit = resolve_settings(tmp_path, "quick", sampler="random", source=SourceSettings(source="demo"), env=env)
    assert (explicit.profile.name, explicit.profile.wfa.sampler, explicit.source.source) == ("quick", "random", "demo")
    # a child process given environment(settings) resolves the very same settings
    assert resolve_settings(env=environment(settings)) == settings
    with pytest.raises(ValueError, match="unknown sampler 'grid'"):
        resolve_settings(tmp_path, "quick", env={"BTC_ASSETS_SAMPLER": "grid"})
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        resolve_settings(tmp_path, "huge", env={})


def test_definitions_compute_with_the_settings_they_are_versioned_with(tmp_path: Path) -> None:
    """The ``study`` resource is the resolved object itself, and the code versions come from the same profile: a
    setting in the home's file changes both (the old split: versions from the import-time profile, computation
    from a run-time re-read)."""
    plain = build_definitions(str(tmp_path / "a"), "quick")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.toml").write_text("[volatility]\nhorizon = 12\n")
    edited = build_definitions(str(tmp_path / "b"), "quick")
    assert edited.resources["study"].profile.volatility.horizon == 12
    assert plain.resources["study"].profile.volatility.horizon == 24

    def version(defs, key: str) -> str:
        return next(s.code_version for s in defs.resolve_all_asset_specs() if s.key.to_user_string() == key)

    assert version(plain, "volatility") != version(edited, "volatility")
    assert version(plain, "market_bars") == version(edited, "market_bars")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[portfolio]\nbandx = 1\n", "[portfolio] has no setting 'bandx'"),
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ('[portfolio]\nband = "wide"\n', "[portfolio] band: expected float"),
        ("[wfa]\nn_trials = 1.5\n", "[wfa] n_trials: expected int"),
        ("[portfolio\n", "not valid TOML"),
        ('[experts.defaults]\n"trend.tenkn" = 12\n', "[experts.defaults] trend.tenkn: no such expert parameter"),
        ('[experts.defaults]\n"trend.tenkan" = 9.5\n', "[experts.defaults] trend.tenkan: expected int"),
        ('[experts.defaults]\n"trend.chikou" = 1\n', "[experts.defaults] trend.chikou: expected bool"),
        ('[experts.defaults]\n"mean_reversion.oversold" = 80\n', "need 0 <= oversold < overbought"),
        ('[experts.ranges]\n"trend.chikou" = [0, 1]\n', "[experts.ranges] trend.chikou: not a searched int"),
        ('[experts.ranges]\n"trend.tenkan" = [30, 5]\n', "[experts.ranges] trend.tenkan: expected [low, high]"),
        ('[experts.ranges]\n"trend.tenkan" = [5.5, 30]\n', "an int parameter needs integer bounds"),
        ("[experts]\ntenkan = 12\n", "[experts] takes the tables [experts.defaults] and [experts.ranges]"),
    ],
)
def test_bad_settings_file_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        resolve_settings(tmp_path, "quick", env={"BTC_ASSETS_CONFIG": str(path)})
    assert str(path) in str(err.value) and message in str(err.value)
    with pytest.raises(FileNotFoundError, match="BTC_ASSETS_CONFIG"):
        resolve_settings(tmp_path, "quick", env={"BTC_ASSETS_CONFIG": str(tmp_path / "missing.toml")})


def test_expert_defaults_and_search_ranges_from_the_settings_file(tmp_path: Path) -> None:
    """``[experts.defaults]`` reach ``expert_signals`` (its code version too), the optimiser's starting point and
    the experts it does not search; ``[experts.ranges]`` its search space. Both key the seeds' checkpoints."""
    from btc_assets import experts
    from btc_assets.config import WfaSettings
    from btc_assets.wfa.run import config_hash
    from btc_assets.wfa.space import StrategyParams, fixed_phase, phase_distributions

    (tmp_path / "config.toml").write_text(
        '[experts.defaults]\n"trend.tenkan" = 12\nbreakout.stop_atr = 3\n'  # quoted or dotted keys alike
        '[experts.ranges]\n"breakout.window" = [48, 336]\n"mean_reversion.bb_k" = [1.5, 2.5]\n'
    )
    profile = resolve_settings(tmp_path, "quick", env={}).profile
    assert profile.experts.defaults == (("breakout.stop_atr", 3), ("trend.tenkan", 12))
    configs = experts.configured(profile.experts)
    assert configs.trend.tenkan == 12 and configs.breakout.stop_atr == 3.0
    assert configs.trend.kijun == experts.TrendExpert().kijun and configs.carry == experts.CarryExpert()
    dists = phase_distributions(profile.wfa, profile.experts)
    assert (dists["breakout.window"].low, dists["breakout.window"].high) == (48, 336)
    assert (dists["mean_reversion.bb_k"].low, dists["mean_reversion.bb_k"].high) == (1.5, 2.5)
    assert dists["trend.tenkan"] == phase_distributions(profile.wfa)["trend.tenkan"]  # no range named: the class's
    start = StrategyParams.default(profile.portfolio, profile.wfa, profile.experts)
    assert {p.trend.tenkan for p in start.phases} == {12} and {p.breakout.stop_atr for p in start.phases} == {3.0}
    unsearched = fixed_phase(WfaSettings(search_experts=False), profile.experts)
    assert unsearched["trend.tenkan"] == 12 and unsearched["breakout.stop_atr"] == 3.0
    plain = get_profile("quick")
    assert config_hash(profile.wfa, profile.portfolio, profile.schedule, profile.experts) != config_hash(
        plain.wfa, plain.portfolio, plain.schedule, plain.experts
    )

    edited, base = (
        build_definitions(settings=resolve_settings(tmp_path, "quick", env={})),
        build_definitions(str(tmp_path / "plain"), "quick"),
    )

    def version(defs, key: str) -> str:
        return next(s.code_version for s in defs.resolve_all_asset_specs() if s.key.to_user_string() == key)

    for key in ("expert_signals", "wfa_results", "ablation_oos"):
        assert version(edited, key) != version(base, key), key
    for key in ("market_bars", "volatility", "regime_probabilities"):
        assert version(edited, key) == version(base, key), key


def test_expert_signals_materialise_with_the_configured_defaults(tmp_path: Path) -> None:
    """``expert_signals`` computes the trend expert with ``[experts.defaults]`` (its metadata says so) and its
    column differs from the class defaults' on the same bars; the other experts' columns are unchanged."""
    import dagster as dg
    import pandas as pd

    from btc_assets_tests.conftest import definitions

    frames = {}
    for name, text in (("plain", ""), ("edited", '[experts.defaults]\n"trend.tenkan" = 20\n"trend.kijun" = 60\n')):
        home = tmp_path / name
        home.mkdir()
        (home / "config.toml").write_text(text)
        defs = definitions(home)
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                defs.assets,
                resources=defs.resources,
                instance=instance,
                selection=dg.AssetSelection.groups("ingestion") | dg.AssetSelection.assets("expert_signals"),
            )
        assert result.success
        meta = result.asset_materializations_for_node("expert_signals")[0].metadata
        assert meta["configs"].value["trend"]["tenkan"] == (20 if name == "edited" else 9)
        frames[name] = pd.read_parquet(home / "warehouse" / "expert_signals" / "data.parquet")
    plain, edited = frames["plain"], frames["edited"]
    assert not plain["trend"].equals(edited["trend"])
    for column in ("mean_reversion", "breakout", "carry"):
        pd.testing.assert_series_equal(plain[column], edited[column])
