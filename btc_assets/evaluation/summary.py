"""The summary across seeds: out-of-sample metrics per seed and their dispersion, the references on the same bars,
the user's 5 %/month target with its probability, the original system's figures as reported (a table of their
own), and the selection-bias statistics (PSR, DSR, minimum track record length).

Conventions
* Every seed's out-of-sample series is its stitched test windows (``wfa_results``), hourly bars, with the costs the
  engine charges, each leg at its own venue: perp fees on the directional leg and the carry's perp leg, spot fees
  on the carry's spot leg, slippage, funding, and borrowing on a short spot leg.
* The metric columns (:data:`METRICS`) are :func:`btc_assets.portfolio.metrics.portfolio_metrics`'s:
  ``monthly_return`` the compounded monthly rate (1 + CAGR)^(1/12) − 1; ``mean_monthly_return_arithmetic`` the
  arithmetic mean over complete calendar months; ``cost_drag`` the costs paid (fees + slippage + borrowing + funding
  paid) per
  year in fractions of equity; ``cost_share_of_gross`` those costs ÷ the gross (pre-cost) P&L, NaN when the gross
  P&L is not positive.
* Reference rows (:data:`btc_assets.portfolio.metrics.REFERENCES`, :func:`reference_frames`) on exactly the
  seeds' out-of-sample bars: ``buy_and_hold_spot`` (spot, one entry at the spot fee, no funding: the headline
  reference), ``buy_and_hold_perp`` (a 1× long perp paying funding) and ``vol_targeted_buy_and_hold`` (leverage
  from the daily-horizon GARCH volatility, the strategy's band and costs).
* The original system's figures (:data:`ORIGINAL_SYSTEM_REPORTED`: 0.30 % a month, 12 % max drawdown, 100 %
  survival) come from another study whose conventions (compounding, costs, period) are unknown, so they are not a
  row of the measured table: :attr:`Summary.original_reported` shows them "as reported".
* Dispersion rows ``median``, ``p05``, ``p95`` are taken across seeds, per metric; ``survival`` in those rows is the
  survival rate (share of seeds whose equity never went below the ruin floor). The minimum track record length
  counts its infinite values (a seed whose Sharpe ratio is not above 0 never becomes significant) as the largest,
  never drops them: its rows are :func:`btc_assets.overfitting.quantile_with_inf` (linear interpolation,
  infinite as soon as an infinite seed gets any weight).
* Where each statistic is computed: a statistic of a selection is computed where the selection happened and on data
  it did not select by. The optimiser selects per (seed, fold, phase) study on the training window; the stitched
  test windows select nothing, except which design is reported.
* Out-of-sample series (per seed, per-bar Sharpe ratios of the stitched hourly returns): ``psr`` is the PSR against
  SR* = 0, ``psr_vs_spot`` against SR* = the per-bar Sharpe ratio of ``buy_and_hold_spot`` on the same bars (taken
  as known; the paired comparison with its sampling error is the SPA below). ``dsr`` is the PSR deflated by the
  number of designs compared, ``n_designs`` (default :data:`N_DESIGNS` = the 7 ablation variants, the sampler
  alternative ``mixture_soft_tpe`` among them): SR* = E[max SR] of ``n_designs`` designs with true SR 0 and
  V[SR] = 1 / (T − 1), the sampling variance of a per-bar SR under H0
  (:func:`btc_assets.overfitting.design_deflated_sharpe_ratio`; designs count as independent, which deflates
  slightly too much). The optimiser's trials are not counted here: they are
  deflated in their own studies (next bullet). ``min_track_record_days``: the minimum track record length against
  SR* = 0 at 95 %, in days.
* Per-study DSR (:func:`btc_assets.overfitting.study_deflated_sharpe`): for each study, the selected trial's
  per-bar Sharpe ratio on the fit piece (where the search maximised), deflated with that study's own trial count
  and its own variance of ``fit_sharpe`` across its trials; T = the fit piece's bars (``fit_bars`` of the trials
  frame); normal moments (the trials frame has no skewness or
  kurtosis; negligible at hourly Sharpe ratios). ``study_dsr_*`` use N_eff = ρ̄ + (1 − ρ̄)·N with ρ̄ the study's
  ``study_rho`` (mean pairwise correlation of the weekly training returns of the study's CSCV trials),
  ``study_dsr_raw_n_*`` the raw N; per seed the median and the mean over its studies, pooled over every study in
  ``median_study_dsr``, ``mean_study_dsr``, ``median_study_dsr_raw_n``, ``share_studies_dsr_above_95``. Studies
  with different windows are never pooled into one deflation.
* Data snooping (Hansen's SPA and White's Reality Check, ``btc_assets.overfitting``) on daily returns (the
  hourly ones compounded per UTC day) against ``buy_and_hold_spot`` on the same bars, a fixed bootstrap seed. The
  candidates of a snooping test are designs; here there is one design, so one candidate: the seed-averaged daily
  return series (the seeds are replications of one design: their dispersion is in the rows above, they are not
  candidates). With one candidate the SPA's studentisation is a rescaling, so its upper p-value is White's. H0: the
  design does not beat spot buy-and-hold in expectation. The test across designs is in the ablation.
* PBO, two of them. ``pbo`` per seed: the mean over its studies of the per-study CSCV PBO (``study_pbo``;
  ``btc_assets.wfa.run.study_pbo``): CSCV over ``pbo_trials`` trials drawn at random from the study (seeded from
  the study, never chosen by score), their weekly training-window returns; pooled: ``median_study_pbo``,
  ``mean_study_pbo``, ``share_studies_pbo_above_half``, ``studies_with_pbo``. ``pbo_walk_forward`` per seed: the PBO
  of the walk-forward selection itself (:func:`btc_assets.overfitting.walk_forward_pbo`): per study, the rank ω
  (ties averaged, ω = rank / (N + 1)) of the selected trial among all the study's trials by their ``test`` score
  (each trial run once on the fold's test window as its own book, which the selection never saw); PBO = share of
  studies with ω ≤ 0.5, ``pbo_walk_forward_logit`` = mean ln(ω / (1 − ω)) (> 0: selection helps out of sample).
  Pooled over all studies of all seeds: ``pbo_walk_forward``, ``pbo_walk_forward_logit``,
  ``pbo_walk_forward_studies``. Both are ≈ 0.5 on a market without structure. ``pbo_walk_forward_sharpe`` (and
  ``_logit``, ``_studies``): the same with the trials ranked out of sample by their plain Sharpe ratio
  (``test_sharpe``) instead of the objective, whose penalties are predictable.
* Target: ``p_month_at_target`` is the share of (seed, complete calendar month) out-of-sample returns at or above
  the target (a month counts when its first and its last hour are both in the series; :attr:`Summary.monthly`
  holds those months); ``p_seed_at_target`` the share of seeds whose compounded ``monthly_return`` reaches it;
  ``median_monthly_return`` the median of that across seeds.
* Where the out-of-sample P&L comes from (per expert and per regime phase: gross, basis, funding, fees, slippage,
  borrowing, in fractions of equity per year, adding up to each seed's Σ bar_return / years) is not part of this
  table: :mod:`btc_assets.evaluation.attribution`, asset ``wfa_attribution``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from btc_assets.config import ABLATION_VARIANTS, PortfolioSettings
from btc_assets.overfitting import (
    design_deflated_sharpe_ratio,
    minimum_track_record_length,
    probabilistic_sharpe_ratio,
    quantile_with_inf,
    reality_check,
    sharpe_ratio,
    spa_test,
    study_deflated_sharpe,
    study_keys,
    walk_forward_pbo,
)
from btc_assets.portfolio.engine import PortfolioParams
from btc_assets.portfolio.metrics import (
    calendar_month_returns,
    frame_metrics,
    reference_runs,
)
from btc_assets.portfolio.tables import engine_params, leverage_sigma, price_arrays

TARGET_MONTHLY = 0.05  # the original study's goal
# The original system's figures as another study reported them (conventions unknown; not measured here).
ORIGINAL_SYSTEM_REPORTED = {"return_per_month": 0.0030, "max_drawdown": 0.12, "survival": 1.0}
ORIGINAL_SYSTEM_NOTE = (
    "as reported by another study; its conventions (compounded or arithmetic months, costs, "
    "period, data) are unknown, so these figures are not comparable with the measured table"
)
METRICS = [
    "monthly_return",
    "mean_monthly_return_arithmetic",
    "cagr",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "turnover_annual",
    "cost_drag",
    "cost_share_of_gross",
    "survival",
]
SPOT = "buy_and_hold_spot"  # the headline reference: PSR against its Sharpe ratio, the SPA's benchmark
N_DESIGNS = len(ABLATION_VARIANTS)  # designs compared: the ablation's variants (the sampler alternative among them)
# the selection-bias columns of every seed row (see the module docstring)
SELECTION_COLUMNS = [
    "psr",
    "psr_vs_spot",
    "dsr",
    "study_dsr_median",
    "study_dsr_mean",
    "study_dsr_raw_n_median",
    "study_dsr_raw_n_mean",
    "pbo",
    "pbo_walk_forward",
    "pbo_walk_forward_logit",
    "pbo_walk_forward_sharpe",
    "pbo_walk_forward_sharpe_logit",
    "min_track_record_days",
    "track_record_days",
]
# FoldSchedule's default purge + validation: where the fit piece ends before a test window (fallback for trials
# frames without ``fit_bars``)


@dataclass(frozen=True)
class Summary:
    table: pd.DataFrame  # one row per seed, then median / p05 / p95 and the references (all measured here)
    target: dict[str, float]
    overfitting: dict[str, float]
    monthly: pd.DataFrame  # seed, year, month, return (complete calendar months only)
    original_reported: pd.DataFrame  # one row, original_system: its figures as reported, with the note


def original_system_reported() -> pd.DataFrame:
    """The original system's reported figures as a one-row table (row ``original_system``, a ``note`` column)."""
    return pd.DataFrame([{"row": "original_system", **ORIGINAL_SYSTEM_REPORTED, "note": ORIGINAL_SYSTEM_NOTE}])


def monthly_returns(frame: pd.DataFrame) -> pd.Series:
    """Compounded return of each complete UTC calendar month of a run (first and last hour both in it)."""
    r = pd.Series(frame["bar_return"].to_numpy(), index=pd.DatetimeIndex(frame["timestamp"]))
    return calendar_month_returns(r, complete_only=True)


def daily_returns(frame: pd.DataFrame) -> pd.Series:
    """Hourly returns compounded per UTC day."""
    ts = pd.DatetimeIndex(frame["timestamp"])
    r = pd.Series(frame["bar_return"].to_numpy(), index=ts)
    return (1.0 + r).groupby(ts.floor("D")).prod() - 1.0


def snooping_tests(oos: Mapping[str, pd.DataFrame], benchmark: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """SPA and Reality Check p-values of one design against the benchmark, on daily returns: the one candidate is
    the seed-averaged daily return series (the seeds are replications, not candidates; days every seed and the
    benchmark have). ``spa_candidates`` = 1."""
    daily = pd.concat({s: daily_returns(f) for s, f in oos.items()}, axis=1)
    both = pd.concat(
        [daily.mean(axis=1, skipna=False).rename("design"), daily_returns(benchmark).rename("benchmark")],
        axis=1,
        join="inner",
    ).dropna()
    design, bench = both["design"].to_numpy(), both["benchmark"].to_numpy()
    spa = spa_test(design, bench, seed=seed)
    rc = reality_check(design, bench, seed=seed)
    return {
        "spa_lower": spa["lower"],
        "spa_consistent": spa["consistent"],
        "spa_upper": spa["upper"],
        "reality_check": rc["pvalue"],
        "spa_candidates": 1.0,
        "days": float(len(both)),
    }


def reference_frames(
    bars: pd.DataFrame, volatility: pd.DataFrame, timestamps: pd.Series, portfolio: PortfolioSettings
) -> dict[str, pd.DataFrame]:
    """The references (:data:`btc_assets.portfolio.metrics.REFERENCES`) on exactly the out-of-sample bars, with
    the portfolio's costs (spot: the spot fee) and the strategy's leverage volatility (causal, so known from the
    first out-of-sample bar)."""
    index = pd.DatetimeIndex(bars["timestamp"])
    pos = index.get_indexer(pd.DatetimeIndex(timestamps))
    if (pos < 0).any() or not (np.diff(pos) == 1).all():
        raise ValueError("the out-of-sample bars must be a contiguous stretch of the bar grid")
    window = slice(int(pos[0]), int(pos[-1]) + 1)
    params: PortfolioParams = engine_params(portfolio)
    prices = price_arrays(bars, portfolio).window(window)
    sigma_lev = leverage_sigma(volatility, portfolio)[window]
    slip_sigma = volatility["sigma"].to_numpy(dtype=np.float64)[window]
    out = reference_runs(prices, sigma_lev, slip_sigma, params, index=index[window])
    return {name: frame.reset_index(names="timestamp") for name, frame in out.items()}


def fold_parameters(folds: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (seed, fold, phase): the fold's final parameters of that phase (from ``wfa_folds``)."""
    rows = []
    for seed, frame in folds.items():
        for fold, text in zip(frame["fold"], frame["params"], strict=True):
            for k, phase in enumerate(json.loads(text)["phases"]):
                rows.append({"seed": seed, "fold": int(fold), "phase": k, **phase})
    return pd.DataFrame(rows)


def effective_trials(all_trials: pd.DataFrame) -> float:
    """Σ over (seed, fold, phase) studies of ρ̄_s + (1 − ρ̄_s)·N_s: N_s the study's trials, ρ̄_s the mean pairwise
    correlation of the weekly training returns of its CSCV trials (``study_rho``). Studies count as independent of
    each other. Without ``study_rho`` (older results): the raw count. Informative only (``n_effective_trials``):
    no deflation pools studies."""
    if "study_rho" not in all_trials or all_trials["study_rho"].isna().all():
        return float(len(all_trials))
    keys = ["fold", "phase"] + (["seed"] if "seed" in all_trials else [])
    per_study = all_trials.groupby(keys).agg(n=("trial", "size"), rho=("study_rho", "first"))
    rho = per_study["rho"].fillna(0.0).clip(0.0, 1.0)
    return float((rho + (1.0 - rho) * per_study["n"]).sum())


def trial_fit_bars(all_trials: pd.DataFrame) -> np.ndarray:
    """Bars of each trial's fit piece (the ``fit_bars`` column, written by ``run_seed``)."""
    if "fit_bars" not in all_trials or all_trials["fit_bars"].isna().any():
        raise ValueError(
            "wfa_trials has no fit_bars for some trials (results of an older version): re-run the walk-forward"
        )
    return all_trials["fit_bars"].to_numpy(dtype=float)


def selection_statistics(
    oos: Mapping[str, pd.DataFrame],
    trials: Mapping[str, pd.DataFrame],
    spot: pd.DataFrame,
    *,
    n_designs: int = N_DESIGNS,
    bootstrap_seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The selection-bias columns of every seed row (:data:`SELECTION_COLUMNS`) and the pooled figures (the
    summary's ``overfitting``), each where its selection happened (see the module docstring). ``spot`` is
    ``buy_and_hold_spot`` on the seeds' out-of-sample bars."""
    seeds = sorted(oos)
    frames = [trials[s].assign(seed=s) for s in seeds if s in trials]
    all_trials = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    spot_sr = sharpe_ratio(spot["bar_return"].to_numpy(dtype=np.float64))
    rows: dict[str, dict[str, float]] = {}
    for seed in seeds:
        r = oos[seed]["bar_return"].to_numpy(dtype=np.float64)
        rows[seed] = {
            "psr": probabilistic_sharpe_ratio(r),
            "psr_vs_spot": probabilistic_sharpe_ratio(r, spot_sr) if math.isfinite(spot_sr) else math.nan,
            "dsr": design_deflated_sharpe_ratio(r, n_designs),
            "min_track_record_days": minimum_track_record_length(r) / 24.0,
            "track_record_days": len(r) / 24.0,
        }
    per_seed = pd.DataFrame(rows).T.reindex(columns=SELECTION_COLUMNS)
    pooled: dict[str, float] = {
        "n_trials": float(len(all_trials)),
        "n_effective_trials": effective_trials(all_trials) if frames else 0.0,
        "n_designs": float(n_designs),
        "spot_sharpe_per_bar": spot_sr,
        "median_psr": float(per_seed["psr"].median()),
        "median_psr_vs_spot": float(per_seed["psr_vs_spot"].median()),
        "median_dsr": float(per_seed["dsr"].median()),
    }
    if frames:
        keys = study_keys(all_trials)
        fit_bars = trial_fit_bars(all_trials)
        dsr = study_deflated_sharpe(all_trials.assign(fit_bars=fit_bars))
        by_seed = dsr.groupby("seed")
        per_seed["study_dsr_median"] = by_seed["dsr"].median()
        per_seed["study_dsr_mean"] = by_seed["dsr"].mean()
        per_seed["study_dsr_raw_n_median"] = by_seed["dsr_raw_n"].median()
        per_seed["study_dsr_raw_n_mean"] = by_seed["dsr_raw_n"].mean()
        finite = dsr["dsr"].dropna()
        pooled.update(
            {
                "n_studies": float(len(dsr)),
                "studies_with_dsr": float(len(finite)),
                "median_study_dsr": float(finite.median()) if len(finite) else math.nan,
                "mean_study_dsr": float(finite.mean()) if len(finite) else math.nan,
                "median_study_dsr_raw_n": float(dsr["dsr_raw_n"].median()),
                "share_studies_dsr_above_95": float((finite > 0.95).mean()) if len(finite) else math.nan,
            }
        )
        if "study_pbo" in all_trials:
            studies = all_trials.drop_duplicates(keys)
            per_seed["pbo"] = studies.groupby("seed")["study_pbo"].mean()
            pbo = studies["study_pbo"].dropna()
            pooled.update(
                {
                    "studies_with_pbo": float(len(pbo)),
                    "median_study_pbo": float(pbo.median()) if len(pbo) else math.nan,
                    "mean_study_pbo": float(pbo.mean()) if len(pbo) else math.nan,
                    "share_studies_pbo_above_half": float((pbo > 0.5).mean()) if len(pbo) else math.nan,
                }
            )
        # ranked by the objective (``test``), and by the plain out-of-sample Sharpe ratio (``test_sharpe``): the
        # objective's penalties (turnover, the cost budget) are predictable, so they can make a selection look good
        # out of sample without return skill; the second says how much of it is in the returns
        for score, name in (("test", "pbo_walk_forward"), ("test_sharpe", "pbo_walk_forward_sharpe")):
            if score not in all_trials:
                continue
            wf = walk_forward_pbo(all_trials, score=score)
            if wf.n_studies:
                per_study = wf.studies.assign(low=wf.studies["logit"] <= 0.0).groupby("seed")
                per_seed[name] = per_study["low"].mean().astype(float)
                per_seed[f"{name}_logit"] = per_study["logit"].mean()
            pooled.update({name: wf.pbo, f"{name}_logit": wf.mean_logit, f"{name}_studies": float(wf.n_studies)})
    pooled.update(snooping_tests(oos, spot, seed=bootstrap_seed))
    return per_seed.astype(float), pooled


SPREAD = {
    "median": lambda v: v.median(),
    "p05": lambda v: v.quantile(0.05),
    "p95": lambda v: v.quantile(0.95),
    "std": lambda v: v.std(ddof=1),
}


def spread(values: pd.DataFrame, stats: tuple[str, ...] = ("median", "p05", "p95")) -> pd.DataFrame:
    """The dispersion across seeds (the rows of ``values``): one row per statistic of :data:`SPREAD`, named by it."""
    return pd.DataFrame({name: SPREAD[name](values) for name in stats}).T


def summarise(
    oos: Mapping[str, pd.DataFrame],
    trials: Mapping[str, pd.DataFrame],
    bars: pd.DataFrame,
    volatility: pd.DataFrame,
    portfolio: PortfolioSettings,
    *,
    n_designs: int = N_DESIGNS,
) -> Summary:
    """The whole summary (see the module docstring; ``n_designs``: the designs compared, for ``dsr``)."""
    if not oos:
        raise ValueError("no seed has out-of-sample results yet: materialise some wfa_results partitions first")
    seeds = sorted(oos)
    rows = {seed: frame_metrics(oos[seed], portfolio.ruin_floor) for seed in seeds}
    first = oos[seeds[0]]
    refs = reference_frames(bars, volatility, first["timestamp"], portfolio)
    selection, selection_pooled = selection_statistics(oos, trials, refs[SPOT], n_designs=n_designs)
    per_seed = pd.DataFrame(rows).T.join(selection)
    columns = [*METRICS, *SELECTION_COLUMNS]
    per_seed = per_seed[columns]
    finite = per_seed.replace([np.inf, -np.inf], np.nan)
    dispersion = spread(finite)
    dispersion["min_track_record_days"] = [
        quantile_with_inf(per_seed["min_track_record_days"], q) for q in (0.5, 0.05, 0.95)
    ]  # an infinite one (never significant) counts
    dispersion["survival"] = per_seed["survival"].mean()  # the survival rate, in every dispersion row
    ref_rows = pd.DataFrame({name: frame_metrics(frame, portfolio.ruin_floor) for name, frame in refs.items()}).T
    for name, frame in refs.items():
        r = frame["bar_return"].to_numpy(dtype=np.float64)
        ref_rows.loc[name, "psr"] = probabilistic_sharpe_ratio(r)
        ref_rows.loc[name, "psr_vs_spot"] = probabilistic_sharpe_ratio(r, selection_pooled["spot_sharpe_per_bar"])
    table = pd.concat([per_seed, dispersion, ref_rows.reindex(columns=columns)]).rename_axis("row").reset_index()
    monthly = pd.concat({seed: monthly_returns(oos[seed]) for seed in seeds}, names=["seed", "year", "month"])
    monthly = monthly.rename("return").reset_index()
    target = {
        "target_monthly": TARGET_MONTHLY,
        "median_monthly_return": float(per_seed["monthly_return"].median()),
        "complete_months": float(len(monthly)),
        "p_month_at_target": float((monthly["return"] >= TARGET_MONTHLY).mean()) if len(monthly) else math.nan,
        "p_seed_at_target": float((per_seed["monthly_return"] >= TARGET_MONTHLY).mean()),
    }
    overfitting = {"n_seeds": float(len(seeds)), **selection_pooled}
    return Summary(table, target, overfitting, monthly, original_system_reported())
