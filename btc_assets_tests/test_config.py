"""The user's settings file (``config.toml``): applied over the profile, typed, and wrong keys named."""

from __future__ import annotations

from pathlib import Path

import pytest

from btc_assets.config import get_profile, settings_hash


def test_settings_file_in_home_overrides_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BTC_ASSETS_CONFIG", raising=False)
    monkeypatch.setenv("BTC_ASSETS_HOME", str(tmp_path))
    base = get_profile("quick")
    (tmp_path / "config.toml").write_text(
        "[portfolio]\nband = 0.3\nperp_fee_bps = 4\nmaker = true\ndecision_hours = 12\n"
        "gating = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]]\n"
        "[ablation]\nseeds = [0, 3]\n[wfa]\nexperts = [\"trend\", \"carry\"]\n")
    profile = get_profile("quick")
    assert profile.portfolio.band == 0.3 and profile.portfolio.perp_fee_bps == 4.0 and profile.portfolio.maker
    assert profile.portfolio.decision_hours == 12 and profile.portfolio.fees_bps == (2.0, 10.0)  # maker fees
    assert profile.portfolio.gating[1] == (0.0, 1.0, 0.0, 0.0)
    assert profile.ablation.seeds == (0, 3) and profile.wfa.experts == ("trend", "carry")
    assert profile.regimes == base.regimes and profile.volatility == base.volatility  # only what was named
    assert settings_hash(profile.portfolio) != settings_hash(base.portfolio)


@pytest.mark.parametrize(("text", "message"), [
    ("[portfolio]\nbandx = 1\n", "[portfolio] has no setting 'bandx'"),
    ("[nope]\nx = 1\n", "unknown section [nope]"),
    ("[portfolio]\nband = \"wide\"\n", "[portfolio] band: expected float"),
    ("[wfa]\nn_trials = 1.5\n", "[wfa] n_trials: expected int"),
    ("[portfolio\n", "not valid TOML"),
])
def test_bad_settings_file_names_file_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                              message: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    monkeypatch.setenv("BTC_ASSETS_CONFIG", str(path))
    with pytest.raises(ValueError) as err:
        get_profile("quick")
    assert str(path) in str(err.value) and message in str(err.value)
