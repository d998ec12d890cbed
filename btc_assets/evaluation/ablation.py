"""Ablation: does each improvement of the mission help? The same walk-forward, data, costs and seeds for seven
variants: a chain of four, each one step away from the one before it, and three side variants, each one step away
from the full system ``mixture_soft`` (no Dagster in here).

=====================  =================  ==================================================================
variant                reference          what changes (relative to its reference)
=====================  =================  ==================================================================
``original``           (none)             the original design: Ichimoku trend only (its parameters
                                          re-optimised per phase), Gaussian HMM regimes, no vol targeting, no
                                          drawdown throttle (position = the signal, leverage 1)
``vol_targeting``      ``original``       + volatility targeting (GARCH forecast) with a per-phase
                                          vol-target multiple, and the drawdown throttle
``student_t_hmm``      ``vol_targeting``  + Student-t HMM regimes instead of Gaussian
``mixture_soft``       ``student_t_hmm``  + the mixture of experts (trend, mean reversion, breakout, carry)
                                          soft-switched by the regime probabilities: the full system
``hard_switch``        ``mixture_soft``   hard switching (the most probable phase's row only) instead of soft
``gating_only``        ``mixture_soft``   the search covers the gating rows (``gate.*``) and ``risk_scale``
                                          per phase only; every expert keeps its class defaults
                                          (``WfaSettings.search_experts = False``): 5 searched parameters per
                                          phase instead of 22, to see how much of the gap between training and
                                          out-of-sample scores is the search overfitting the experts'
                                          parameters
``mixture_soft_tpe``   ``mixture_soft``   Optuna's multivariate TPE sampler instead of random search
                                          (``WfaSettings.sampler = "tpe"``, the profile's
                                          ``n_startup_trials``): does the smarter sampler overfit more
                                          (``pbo_walk_forward``)?
=====================  =================  ==================================================================

Every variant runs :func:`btc_assets.wfa.run_seed` with its own settings (and its own resumable checkpoint under
``<checkpoints>/ablation/<variant>/``); only the settings named above differ (:data:`REFERENCES`). Every variant
sets all the settings the ablation varies, whatever the profile says: in particular every variant but
``mixture_soft_tpe`` searches at random (:data:`SAMPLER`, the full profile's sampler; the quick and integration
profiles' own studies use TPE), so ``mixture_soft_tpe`` differs from ``mixture_soft`` on every profile, and every
variant but ``gating_only`` searches its experts' parameters. Costs are always on.

Statistics (per variant, across the seeds; ``confidence`` = 0.95 by default):

* each out-of-sample metric (``btc_assets.portfolio.metrics.frame_metrics``): the mean across seeds and a
  Student-t confidence interval mean ± t_{(1+c)/2, n−1} · s / √n (NaN with one seed);
* paired tests of each variant against its *reference* (column ``versus``; :func:`reference_of`): the variant
  one step before it in the chain for ``vol_targeting``, ``student_t_hmm`` and ``mixture_soft``, and
  ``mixture_soft`` for the side variants, never merely the row listed before it. When the reference is not among
  the configured variants, its own reference stands in (and so on up the chain; ``versus`` names the one used, so
  the difference then spans several steps); with none configured the row has no paired tests. Seed by seed: the
  mean difference of the per-seed Sharpe ratio (and of the compounded ``monthly_return``) with its t interval, the
  paired t-test p-value and the Wilcoxon signed-rank p-value (exact for small n; with two seeds it cannot go below
  0.5, which is the honest answer);
* a paired test over time: d_t = the seed-averaged daily return of the variant minus that of its reference, on
  the same days; the p-value of H0: E[d] = 0 from a stationary bootstrap (``arch.bootstrap.StationaryBootstrap``,
  mean block length ``block_days``, ``reps`` replications, fixed seed): the share of centred bootstrap means at
  least as far from 0 as the observed mean (two-sided). ``d_daily_mean_ann`` is E[d] × 365;
* the walk-forward PBO of each variant (``ablation_table(..., trials=...)``; columns ``pbo_walk_forward``,
  ``pbo_walk_forward_logit``, ``pbo_walk_forward_studies``): :func:`btc_assets.overfitting.walk_forward_pbo`
  pooled over every (seed, fold, phase) study of the variant: the share of studies whose selected trial ranks in
  the bottom half of the study's trials on the fold's test window, and the mean logit of that rank;
* data snooping across the designs (:func:`design_snooping`): Hansen's SPA and White's Reality Check with the
  variants as the M candidates (each one's seed-averaged daily out-of-sample return series) against
  ``buy_and_hold_spot`` on the same days. The seeds are replications of a design, averaged (their dispersion is in
  the intervals above), never candidates. H0: no design beats spot buy-and-hold in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from btc_assets.config import ABLATION_VARIANTS, Profile, seed_key
from btc_assets.evaluation.summary import daily_returns
from btc_assets.overfitting import reality_check, spa_test, walk_forward_pbo
from btc_assets.portfolio.metrics import frame_metrics

DESCRIPTIONS = {
    "original": "Ichimoku only, per phase; Gaussian HMM; no vol targeting, no throttle",
    "vol_targeting": "+ vol targeting and drawdown throttle",
    "student_t_hmm": "+ Student-t HMM regimes",
    "mixture_soft": "+ mixture of experts, soft switching (the full system)",
    "hard_switch": "hard switching instead of soft",
    "gating_only": "only gating and risk scale searched; experts at their defaults",
    "mixture_soft_tpe": "TPE sampler instead of random search",
}
CHAIN = ("original", "vol_targeting", "student_t_hmm", "mixture_soft")  # each one step from the one before
# what each variant is one step away from (the paired tests compare with it); the side variants all hang off the full
# system
REFERENCES: dict[str, str | None] = {
    "original": None,
    "vol_targeting": "original",
    "student_t_hmm": "vol_targeting",
    "mixture_soft": "student_t_hmm",
    "hard_switch": "mixture_soft",
    "gating_only": "mixture_soft",
    "mixture_soft_tpe": "mixture_soft",
}
SAMPLER = "random"  # every variant's sampler but mixture_soft_tpe's (the full profile's: the 30-seed study's)
METRICS = [
    "sharpe",
    "monthly_return",
    "cagr",
    "sortino",
    "max_drawdown",
    "turnover_annual",
    "cost_drag",
    "cost_share_of_gross",
    "survival",
]
PAIRED = ["sharpe", "monthly_return"]
# the columns a person reads first (the table metadata in the UI, the command line)
SHOWN = [
    "variant",
    "n_seeds",
    "sharpe",
    "sharpe_lo",
    "sharpe_hi",
    "monthly_return",
    "max_drawdown",
    "survival",
    "versus",
    "d_sharpe",
    "p_sharpe_t",
    "p_sharpe_wilcoxon",
    "d_daily_mean_ann",
    "p_daily_bootstrap",
    "pbo_walk_forward",
]


def variant_profile(name: str, profile: Profile) -> Profile:
    """The profile of one variant: the study's profile with the variant's settings (see the module docstring).
    Every variant sets all the settings the ablation varies, so the variants are the same whatever the profile
    says (its sampler and ``search_experts`` included)."""
    if name not in ABLATION_VARIANTS:
        raise ValueError(f"unknown ablation variant {name!r}; choose from {', '.join(ABLATION_VARIANTS)}")
    step = CHAIN.index(name) if name in CHAIN else len(CHAIN) - 1  # a side variant: the full system, one change
    regimes = replace(profile.regimes, emission="gaussian" if step < 2 else "student_t")
    portfolio = replace(
        profile.portfolio,
        vol_targeting=step >= 1,
        hard_switch=name == "hard_switch",
        dd_max=profile.portfolio.dd_max if step >= 1 else 0.0,
    )
    wfa = replace(
        profile.wfa,
        experts=("trend",) if step < 3 else ("trend", "mean_reversion", "breakout", "carry"),
        search_risk_scale=step >= 1,
        search_experts=name != "gating_only",
        sampler="tpe" if name == "mixture_soft_tpe" else SAMPLER,
    )
    return replace(profile, regimes=regimes, portfolio=portfolio, wfa=wfa)


def reference_of(variant: str, variants: Sequence[str]) -> str | None:
    """The variant ``variant`` is compared with among the configured ``variants``: its :data:`REFERENCES` entry, or,
    when that one is not configured, the nearest configured variant up the chain of references (None: none)."""
    reference = REFERENCES[variant]
    while reference is not None and reference not in variants:
        reference = REFERENCES[reference]
    return reference


def needs_gaussian_regimes(variants: Sequence[str]) -> bool:
    return any(v in CHAIN[:2] for v in variants)


# ------------------------------------------------------------------------------------------------------- running


def run_variant(
    variant: str,
    seed: int,
    bars: pd.DataFrame,
    volatility: pd.DataFrame,
    student_t: pd.DataFrame,
    gaussian: pd.DataFrame,
    profile: Profile,
    checkpoints: str,
    say: Callable[[str], None] = print,
    lines: str | None = None,
):
    """Run (or resume) one (variant, seed): :func:`btc_assets.wfa.run_seed` with the variant's settings
    (:func:`variant_profile`) and its regimes (``gaussian``: the Gaussian-HMM probabilities, for the first two
    variants; ``student_t`` otherwise), checkpointed under ``<checkpoints>/ablation/<variant>/``. Returns the
    :class:`~btc_assets.wfa.WfaResult`. In Dagster each (variant, seed) is one partition of ``ablation_runs``."""
    from btc_assets.wfa import run_seed

    prof = variant_profile(variant, profile)
    regimes = gaussian if prof.regimes.emission == "gaussian" else student_t
    return run_seed(
        seed,
        seed_key(seed),
        bars,
        volatility,
        regimes,
        settings=prof.wfa,
        portfolio=prof.portfolio,
        schedule=prof.schedule,
        checkpoints=str(Path(checkpoints) / "ablation" / variant),
        say=say,
        expert_settings=prof.experts,
        lines=lines,
    )


# ---------------------------------------------------------------------------------------------------- statistics


def t_interval(values: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t interval for the mean; NaN bounds with fewer than 2 finite values."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    from scipy import stats as sps  # scipy.stats costs ~0.4 s to import: loaded when a table is made

    half = float(sps.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def bootstrap_mean_pvalue(d: np.ndarray, block: float, reps: int, seed: int) -> float:
    """Two-sided stationary-bootstrap p-value of H0: E[d] = 0 (see the module docstring)."""
    from arch.bootstrap import StationaryBootstrap

    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 10 or float(d.std()) == 0.0:
        return math.nan
    bs = StationaryBootstrap(block, d, seed=seed)
    means = bs.apply(lambda x: np.array([x.mean()]), reps)[:, 0]
    observed = float(d.mean())
    return float(np.mean(np.abs(means - observed) >= abs(observed)))


def per_seed_metrics(results: dict[tuple[str, int], pd.DataFrame], ruin_floor: float) -> pd.DataFrame:
    """One row per (variant, seed): the out-of-sample metrics."""
    rows = [
        {"variant": v, "seed": seed_key(s), **frame_metrics(frame, ruin_floor)} for (v, s), frame in results.items()
    ]
    return pd.DataFrame(rows)[["variant", "seed", *METRICS]]


def variant_walk_forward_pbo(
    trials: Mapping[tuple[str, int], pd.DataFrame] | None, variant: str, seeds: Sequence[int]
) -> dict[str, float]:
    """The walk-forward PBO of one variant, pooled over the studies of all its seeds (NaN without trials)."""
    frames = [
        trials[(variant, s)].assign(seed=seed_key(s)) for s in seeds if trials is not None and (variant, s) in trials
    ]
    if not frames:
        return {"pbo_walk_forward": math.nan, "pbo_walk_forward_logit": math.nan, "pbo_walk_forward_studies": 0.0}
    wf = walk_forward_pbo(pd.concat(frames, ignore_index=True))
    return {
        "pbo_walk_forward": wf.pbo,
        "pbo_walk_forward_logit": wf.mean_logit,
        "pbo_walk_forward_studies": float(wf.n_studies),
    }


def ablation_table(
    results: dict[tuple[str, int], pd.DataFrame],
    profile: Profile,
    *,
    block_days: float = 10.0,
    reps: int = 2000,
    bootstrap_seed: int = 0,
    trials: Mapping[tuple[str, int], pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, per_seed): one row per variant, in the configured order, with the means and intervals across seeds
    of :data:`METRICS`, the paired tests against its reference (``versus``, :func:`reference_of`; not the row
    before it) and, given the runs' ``trials`` frames, the variant's walk-forward PBO (see the module docstring)."""
    from scipy import stats as sps  # as in t_interval

    settings = profile.ablation
    per_seed = per_seed_metrics(results, profile.portfolio.ruin_floor)
    daily = {
        v: pd.concat({s: daily_returns(results[(v, s)]) for s in settings.seeds}, axis=1) for v in settings.variants
    }
    rows = []
    for i, variant in enumerate(settings.variants):
        mine = per_seed[per_seed["variant"] == variant].set_index("seed")
        row: dict[str, object] = {
            "step": i,
            "variant": variant,
            "description": DESCRIPTIONS[variant],
            "n_seeds": len(mine),
        }
        for m in METRICS:
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = t_interval(mine[m].tolist(), settings.confidence)
        row.update(variant_walk_forward_pbo(trials, variant, settings.seeds))
        reference = reference_of(variant, settings.variants)
        row["versus"] = reference
        if reference is not None:
            theirs = per_seed[per_seed["variant"] == reference].set_index("seed").reindex(mine.index)
            for m in PAIRED:
                d = (mine[m] - theirs[m]).to_numpy(dtype=float)
                row[f"d_{m}"], row[f"d_{m}_lo"], row[f"d_{m}_hi"] = t_interval(d.tolist(), settings.confidence)
                finite = d[np.isfinite(d)]
                row[f"p_{m}_t"] = (
                    float(sps.ttest_1samp(finite, 0.0).pvalue) if finite.size >= 2 and finite.std() > 0 else math.nan
                )
                row[f"p_{m}_wilcoxon"] = (
                    float(sps.wilcoxon(finite).pvalue) if finite.size >= 1 and (finite != 0).any() else math.nan
                )
            a, b = daily[variant].mean(axis=1), daily[reference].mean(axis=1)
            both = pd.concat([a, b], axis=1, join="inner").dropna()
            diff = (both.iloc[:, 0] - both.iloc[:, 1]).to_numpy()
            row["d_daily_mean_ann"] = float(diff.mean() * 365.0) if diff.size else math.nan
            row["p_daily_bootstrap"] = bootstrap_mean_pvalue(diff, block_days, reps, bootstrap_seed)
            row["days"] = float(diff.size)
        rows.append(row)
    return pd.DataFrame(rows), per_seed


def design_snooping(
    results: Mapping[tuple[str, int], pd.DataFrame],
    benchmark: pd.DataFrame,
    profile: Profile,
    *,
    block_size: int | None = None,
    reps: int = 1000,
    seed: int = 0,
) -> dict[str, object]:
    """SPA and Reality Check of the designs against ``benchmark`` (``buy_and_hold_spot`` on the same bars): the M
    candidates are the variants, each its seed-averaged daily out-of-sample return series; the days every variant
    and the benchmark have. Stationary bootstrap (``block_size`` mean block length, default int(sqrt(T))), ``reps``
    replications, fixed ``seed``. Also each candidate's annualised mean daily excess return over the benchmark."""
    settings = profile.ablation
    variants = [v for v in settings.variants if all((v, s) in results for s in settings.seeds)]
    if not variants:
        raise ValueError("design_snooping needs at least one variant with every seed's results")
    daily = {
        v: pd.concat({s: daily_returns(results[(v, s)]) for s in settings.seeds}, axis=1).mean(axis=1, skipna=False)
        for v in variants
    }
    frame = pd.concat({**daily, "_benchmark": daily_returns(benchmark)}, axis=1, join="inner").dropna()
    designs, bench = frame[variants].to_numpy(), frame["_benchmark"].to_numpy()
    spa = spa_test(designs, bench, block_size=block_size, reps=reps, seed=seed)
    rc = reality_check(designs, bench, block_size=block_size, reps=reps, seed=seed)
    excess = (designs - bench[:, None]).mean(axis=0) * 365.0
    return {
        "spa_lower": spa["lower"],
        "spa_consistent": spa["consistent"],
        "spa_upper": spa["upper"],
        "reality_check": rc["pvalue"],
        "candidates": list(variants),
        "n_candidates": float(len(variants)),
        "days": float(len(frame)),
        "excess_vs_benchmark_ann": {v: float(x) for v, x in zip(variants, excess, strict=True)},
    }
