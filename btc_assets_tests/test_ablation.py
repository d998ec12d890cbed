"""The ablation: variant settings differ one step at a time, the narrowed search spaces, Gaussian-HMM filtering,
and the statistics across seeds (intervals, paired tests). The run itself is in test_dagster_defs."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import optuna
import pandas as pd
import pytest
from hmmlearn.hmm import GaussianHMM
from scipy import stats

from btc_assets import experts, plots
from btc_assets.config import ABLATION_VARIANTS, EXPERTS, PortfolioSettings, WfaSettings, get_profile
from btc_assets.evaluation.ablation import (
    REFERENCES,
    SAMPLER,
    ablation_table,
    bootstrap_mean_pvalue,
    needs_gaussian_regimes,
    reference_of,
    t_interval,
    variant_profile,
)
from btc_assets.regimes.gaussian import gaussian_filter_proba
from btc_assets.wfa.journal import open_storage
from btc_assets.wfa.run import phase_of
from btc_assets.wfa.space import (
    PhaseParams,
    StrategyParams,
    complete_phase,
    fixed_phase,
    phase_distributions,
    suggest_phase,
)
from btc_assets.wfa.study import LocalStudies, PhaseStudy


def changed(a: object, b: object) -> dict[str, tuple[object, object]]:
    da, db = asdict(a), asdict(b)  # type: ignore[call-overload]
    return {k: (da[k], db[k]) for k in da if da[k] != db[k]}


def test_each_variant_changes_exactly_its_step() -> None:
    """Each variant differs from its reference (the one before it in the chain; ``mixture_soft`` for the side
    variants) in exactly its own settings, whatever the profile says about the settings the ablation varies."""
    base = get_profile("quick")
    p = {v: variant_profile(v, base) for v in ABLATION_VARIANTS}
    original = p["original"]
    assert original.regimes.emission == "gaussian" and original.wfa.experts == ("trend",)
    assert not original.portfolio.vol_targeting and original.portfolio.dd_max == 0.0  # no throttle
    assert not original.wfa.search_risk_scale
    steps = {  # variant: (its reference, what changes in portfolio, regimes, wfa)
        "vol_targeting": ("original", {"vol_targeting", "dd_max"}, set(), {"search_risk_scale"}),
        "student_t_hmm": ("vol_targeting", set(), {"emission"}, set()),
        "mixture_soft": ("student_t_hmm", set(), set(), {"experts"}),
        "hard_switch": ("mixture_soft", {"hard_switch"}, set(), set()),
        "gating_only": ("mixture_soft", set(), set(), {"search_experts"}),
        "mixture_soft_tpe": ("mixture_soft", set(), set(), {"sampler"}),
    }
    assert set(REFERENCES) == set(ABLATION_VARIANTS) and REFERENCES["original"] is None
    assert ABLATION_VARIANTS[-2:] == ("gating_only", "mixture_soft_tpe")
    for b, (a, portfolio, regimes, wfa) in steps.items():
        assert REFERENCES[b] == a, b
        assert set(changed(p[a].portfolio, p[b].portfolio)) == portfolio, (a, b)
        assert set(changed(p[a].regimes, p[b].regimes)) == regimes, (a, b)
        assert set(changed(p[a].wfa, p[b].wfa)) == wfa, (a, b)
        assert p[a].schedule == p[b].schedule and p[a].ablation == p[b].ablation
    assert not p["gating_only"].wfa.search_experts and p["mixture_soft_tpe"].wfa.sampler == "tpe"
    assert all(p[v].wfa.sampler == SAMPLER == "random" for v in ABLATION_VARIANTS if v != "mixture_soft_tpe")
    # the full system is the study's own configuration, but for the sampler: random search (the full profile's)
    assert p["mixture_soft"].portfolio == base.portfolio and p["mixture_soft"].wfa == replace(base.wfa, sampler=SAMPLER)
    assert p["mixture_soft"].regimes == base.regimes
    full = get_profile("full")
    assert variant_profile("mixture_soft", full).wfa == full.wfa
    # a profile that sets the varied settings otherwise gives the same variants
    other = replace(
        base,
        wfa=replace(
            base.wfa, sampler="cmaes", search_experts=False, search_risk_scale=False, experts=("carry", "trend")
        ),
    )
    assert all(variant_profile(v, other) == p[v] for v in ABLATION_VARIANTS)
    assert needs_gaussian_regimes(["original"]) and not needs_gaussian_regimes(["student_t_hmm", "hard_switch"])
    assert not needs_gaussian_regimes(["gating_only", "mixture_soft_tpe"])
    with pytest.raises(ValueError, match="unknown ablation variant"):
        variant_profile("nope", base)


def test_narrowed_search_space_is_trend_only_with_fixed_rest() -> None:
    settings = WfaSettings(experts=("trend",), search_risk_scale=False)
    dists = phase_distributions(settings)
    assert dists and all(name.startswith("trend.") for name in dists)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    searched = suggest_phase(trial, settings)
    assert set(searched) == set(dists)
    phase = PhaseParams.from_flat(complete_phase(searched, settings))
    assert phase.gating == (1.0, 0.0, 0.0, 0.0) and phase.risk_scale == 1.0
    assert phase.trend.tenkan == searched["trend.tenkan"]
    default = StrategyParams.default(PortfolioSettings(), settings)
    assert all(ph.gating == (1.0, 0.0, 0.0, 0.0) and ph.risk_scale == 1.0 for ph in default.phases)
    assert all(g[EXPERTS.index("carry")] == 0.0 for g in (ph.gating for ph in default.phases))
    # the full space is untouched: every expert's gate, the vol-target multiple, all directional parameters
    full = WfaSettings()
    assert fixed_phase(full) == {}
    assert {"gate.carry", "risk_scale", "breakout.atr_short"} <= set(phase_distributions(full))
    two = WfaSettings(experts=("trend", "breakout"))
    assert {n for n in phase_distributions(two) if n.startswith("gate.")} == {"gate.trend", "gate.breakout"}
    with pytest.raises(ValueError, match="subset"):
        phase_distributions(WfaSettings(experts=("trend", "momentum")))


GATING = {f"gate.{e}" for e in EXPERTS} | {"risk_scale"}
DEFAULT_EXPERTS = {
    "trend": experts.TrendExpert(),
    "mean_reversion": experts.MeanReversionExpert(),
    "breakout": experts.BreakoutExpert(),
}


def test_gating_only_space_is_the_gates_and_risk_scale_with_default_experts() -> None:
    settings = WfaSettings(search_experts=False)
    assert set(phase_distributions(settings)) == GATING  # 5 of the 22 parameters per phase
    assert len(phase_distributions(WfaSettings())) == 22
    fixed = fixed_phase(settings)
    assert not set(fixed) & GATING
    assert fixed == {f"{name}.{k}": v for name, e in DEFAULT_EXPERTS.items() for k, v in asdict(e).items()}
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2)).ask()
    searched = suggest_phase(trial, settings)
    assert set(searched) == GATING == set(trial.params)
    phase = PhaseParams.from_flat(complete_phase(searched, settings))
    assert (phase.trend, phase.mean_reversion, phase.breakout) == tuple(DEFAULT_EXPERTS.values())
    default = StrategyParams.default(PortfolioSettings(), settings)
    assert default == StrategyParams.default(PortfolioSettings())  # the prior's experts are the defaults already
    # with one expert, no vol-target multiple and no expert search there is nothing left to search
    assert set(phase_distributions(WfaSettings(experts=("trend",), search_experts=False))) == {"risk_scale"}
    with pytest.raises(ValueError, match="nothing to search"):
        phase_distributions(WfaSettings(experts=("trend",), search_experts=False, search_risk_scale=False))


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_gating_only_study_varies_only_the_gates_and_risk_scale(tmp_path, sampler: str) -> None:
    """A gating-only study (``random``: the block sampler drawing ``phase_distributions``; ``tpe``) records and
    varies only ``gate.*`` and ``risk_scale``; every trial's expert parameters are the classes' defaults."""
    settings = replace(get_profile("quick").wfa, search_experts=False, sampler=sampler)
    dists = phase_distributions(settings)
    incumbent = {k: v for k, v in StrategyParams.default(PortfolioSettings()).phases[1].flat().items() if k in dists}
    seen: list[PhaseParams] = []

    def evaluate(flat: dict) -> tuple:
        from btc_assets.wfa.objective import TrialScores

        phase = phase_of(flat, settings)
        seen.append(phase)
        return TrialScores(-abs(phase.risk_scale - 1.3), phase.gating[0], 0.0, 0.0)

    spec = PhaseStudy(
        name="s",
        n_trials=12,
        sampler=sampler,
        n_startup_trials=4,
        seed_parts=(1, 2, 3),
        incumbent=incumbent,
        suggest=lambda t: suggest_phase(t, settings),
        evaluate=evaluate,
        distributions=dists,
    )
    records = LocalStudies(lambda name: open_storage(None, str(tmp_path / "s.journal"))).run(spec, say=lambda m: None)
    assert len(records) == len(seen) == 12 and all(set(r.params) == GATING for r in records)
    frame = pd.DataFrame([r.params for r in records])
    assert (frame.nunique() == 12).all()  # every searched parameter varies
    for phase in seen:
        assert (phase.trend, phase.mean_reversion, phase.breakout) == tuple(DEFAULT_EXPERTS.values())
    stored = optuna.load_study(study_name="s", storage=open_storage(None, str(tmp_path / "s.journal")))
    assert all(set(t.params) == GATING for t in stored.get_trials())


@pytest.fixture(scope="module")
def gaussian_model() -> tuple[GaussianHMM, np.ndarray]:
    rng = np.random.default_rng(5)
    states = np.repeat(rng.integers(0, 3, 60), 25)
    x = rng.normal(states[:, None] * 1.5, 1.0, (states.size, 2))
    model = GaussianHMM(3, covariance_type="full", n_iter=30, random_state=0).fit(x)
    return model, x


def test_gaussian_filter_is_causal_and_equals_hmmlearn_at_each_prefix_end(gaussian_model) -> None:
    model, x = gaussian_model
    filtered = gaussian_filter_proba(model, x)
    np.testing.assert_allclose(filtered.sum(axis=1), 1.0, atol=1e-12)
    for t in (1, 17, 400, len(x)):
        # at the last bar of a prefix, hmmlearn's smoothed posterior is the filtered probability
        np.testing.assert_allclose(filtered[t - 1], model.predict_proba(x[:t])[-1], atol=1e-8)
        assert np.array_equal(gaussian_filter_proba(model, x[:t]), filtered[:t])  # no look-ahead, bit for bit
    perturbed = x.copy()
    perturbed[800:] += 50.0
    assert np.array_equal(gaussian_filter_proba(model, perturbed)[:800], filtered[:800])


def test_t_interval_and_bootstrap_pvalue() -> None:
    values = [0.1, 0.4, -0.2, 0.3, 0.25]
    mean, low, high = t_interval(values, 0.95)
    assert mean - low == pytest.approx(high - mean)
    half = stats.t.ppf(0.975, 4) * np.std(values, ddof=1) / np.sqrt(5)
    assert mean == pytest.approx(np.mean(values)) and high - mean == pytest.approx(half)
    assert np.isnan(t_interval([1.0], 0.95)[1])
    rng = np.random.default_rng(0)
    assert bootstrap_mean_pvalue(rng.normal(0.5, 1.0, 400), 10, 1000, 0) < 0.01  # planted difference
    nulls = [bootstrap_mean_pvalue(rng.normal(0.0, 1.0, 400), 10, 500, s) for s in range(20)]
    assert 0.2 < float(np.median(nulls)) < 0.8  # no difference: p spread over (0, 1)


def oos_frame(returns: np.ndarray, start: str = "2024-01-01") -> pd.DataFrame:
    n = returns.size
    zeros = np.zeros(n)
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(start, periods=n, freq="h"),
            "bar_return": returns,
            "equity": np.cumprod(1 + returns),
            "turnover": np.full(n, 0.01),
            "fee_cost": np.full(n, 1e-5),
            "slippage_cost": zeros,
            "gross_exposure": np.ones(n),
        }
    )


def test_ablation_table_finds_a_planted_step_and_not_a_null_one() -> None:
    profile = get_profile("quick")
    profile = profile.__class__(
        **{
            **profile.__dict__,
            "ablation": profile.ablation.__class__(
                seeds=(0, 1, 2, 3, 4, 5), variants=("original", "vol_targeting", "student_t_hmm")
            ),
        }
    )
    rng = np.random.default_rng(3)
    n = 24 * 365
    results = {}
    for s in profile.ablation.seeds:
        base = rng.normal(0.0, 0.004, n)
        results[("original", s)] = oos_frame(base)
        results[("vol_targeting", s)] = oos_frame(base + 0.0004 + rng.normal(0, 0.001, n))  # planted skill
        results[("student_t_hmm", s)] = oos_frame(
            results[("vol_targeting", s)]["bar_return"].to_numpy() + rng.normal(0, 0.001, n)
        )  # noise only
    table, per_seed = ablation_table(results, profile, reps=500)
    assert list(table["variant"]) == ["original", "vol_targeting", "student_t_hmm"]
    assert len(per_seed) == 18 and (table["n_seeds"] == 6).all()
    step, null = table.iloc[1], table.iloc[2]
    assert step["versus"] == "original" and step["d_sharpe"] > 0 and step["d_sharpe_lo"] > 0
    assert step["p_sharpe_t"] < 0.01 and step["p_daily_bootstrap"] < 0.01
    assert null["p_daily_bootstrap"] > 0.05 and null["d_sharpe_lo"] < 0 < null["d_sharpe_hi"]
    assert table["sharpe_lo"].iloc[0] < table["sharpe"].iloc[0] < table["sharpe_hi"].iloc[0]


def test_side_variants_are_compared_with_the_full_system_not_the_row_before() -> None:
    """hard_switch loses a planted edge; gating_only and mixture_soft_tpe are mixture_soft plus noise. Compared with
    mixture_soft (their reference) they show no difference, although the row before gating_only is hard_switch."""
    variants = ("student_t_hmm", "mixture_soft", "hard_switch", "gating_only", "mixture_soft_tpe")
    profile = get_profile("quick")
    profile = replace(profile, ablation=replace(profile.ablation, seeds=tuple(range(6)), variants=variants))
    rng = np.random.default_rng(4)
    n = 24 * 365
    results = {}
    for s in profile.ablation.seeds:
        base = rng.normal(0.0, 0.004, n)
        edge = base + 0.0004  # planted edge of the full system; each variant below adds its own noise
        results[("student_t_hmm", s)] = oos_frame(base + rng.normal(0, 0.001, n))
        results[("hard_switch", s)] = oos_frame(base + rng.normal(0, 0.001, n))  # the edge lost
        for variant in ("mixture_soft", "gating_only", "mixture_soft_tpe"):
            results[(variant, s)] = oos_frame(edge + rng.normal(0, 0.001, n))
    table, per_seed = ablation_table(results, profile, reps=300)
    rows = table.set_index("variant")
    assert rows["versus"].dropna().to_dict() == {
        "mixture_soft": "student_t_hmm",
        "hard_switch": "mixture_soft",
        "gating_only": "mixture_soft",
        "mixture_soft_tpe": "mixture_soft",
    }
    assert pd.isna(rows.loc["student_t_hmm", "versus"]) and pd.isna(rows.loc["student_t_hmm", "d_sharpe"])
    assert rows.loc["mixture_soft", "p_daily_bootstrap"] < 0.01 and rows.loc["mixture_soft", "d_sharpe_lo"] > 0
    assert rows.loc["hard_switch", "d_sharpe_hi"] < 0 and rows.loc["hard_switch", "p_daily_bootstrap"] < 0.01
    sharpe = per_seed.pivot(index="seed", columns="variant", values="sharpe")
    for side in ("gating_only", "mixture_soft_tpe"):
        assert rows.loc[side, "d_sharpe"] == pytest.approx((sharpe[side] - sharpe["mixture_soft"]).mean())
        assert abs(rows.loc[side, "d_sharpe"]) < 1.0  # against hard_switch (the row before) it would be about +9
        assert abs(rows.loc[side, "d_daily_mean_ann"]) < 0.5 * abs(rows.loc["hard_switch", "d_daily_mean_ann"])
    assert plots.ablation_chart(table, per_seed)[:4] == b"\x89PNG"
    # a reference that is not configured: the nearest configured one up the chain
    assert reference_of("gating_only", ("original", "gating_only")) == "original"
    assert reference_of("student_t_hmm", ("original", "student_t_hmm")) == "original"
    assert reference_of("mixture_soft_tpe", ("mixture_soft_tpe",)) is None
    assert [reference_of(v, ABLATION_VARIANTS) for v in ABLATION_VARIANTS] == [REFERENCES[v] for v in ABLATION_VARIANTS]


def synthetic_trials(
    rng: np.random.Generator, skill: bool, n_folds: int = 4, n_phases: int = 5, n_trials: int = 30
) -> pd.DataFrame:
    """A walk-forward trials frame: the winner is the best fit score; with ``skill`` the test score follows the
    fit score (what is good in sample stays good), without it the test score is independent noise."""
    rows = []
    for fold in range(n_folds):
        for phase in range(n_phases):
            fit = rng.normal(size=n_trials)
            test = (fit if skill else 0.0) + rng.normal(size=n_trials) * (0.3 if skill else 1.0)
            for i in range(n_trials):
                rows.append(
                    {
                        "fold": fold,
                        "phase": phase,
                        "trial": i,
                        "fit": fit[i],
                        "validation": fit[i],
                        "test": test[i],
                        "winner": i == int(np.argmax(fit)),
                    }
                )
    return pd.DataFrame(rows)


def test_ablation_table_walk_forward_pbo_per_variant() -> None:
    profile = get_profile("quick")
    seeds = tuple(range(6))
    profile = profile.__class__(
        **{
            **profile.__dict__,
            "ablation": profile.ablation.__class__(seeds=seeds, variants=("original", "vol_targeting")),
        }
    )
    rng = np.random.default_rng(9)
    results = {(v, s): oos_frame(rng.normal(0.0, 0.004, 24 * 60)) for v in profile.ablation.variants for s in seeds}
    trials = {("original", s): synthetic_trials(rng, skill=False) for s in seeds}
    trials |= {("vol_targeting", s): synthetic_trials(rng, skill=True) for s in seeds}
    table, _ = ablation_table(results, profile, reps=100, trials=trials)
    null, skilled = table.set_index("variant").loc["original"], table.set_index("variant").loc["vol_targeting"]
    assert null["pbo_walk_forward_studies"] == skilled["pbo_walk_forward_studies"] == 6 * 4 * 5  # pooled over seeds
    assert 0.35 < null["pbo_walk_forward"] < 0.65 and abs(null["pbo_walk_forward_logit"]) < 0.5
    assert skilled["pbo_walk_forward"] < 0.05 and skilled["pbo_walk_forward_logit"] > 1.5
    # without the runs' trials frames the columns are there, NaN
    bare, _ = ablation_table(results, profile, reps=100)
    assert bare["pbo_walk_forward"].isna().all() and (bare["pbo_walk_forward_studies"] == 0).all()
