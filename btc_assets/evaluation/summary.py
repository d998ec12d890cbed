"""The summary across seeds: out-of-sample metrics per seed and their dispersion, the references on the same bars,
the user's 5 %/month target with its probability, the original system as the baseline row, and the
selection-bias statistics (PSR, DSR, minimum track record length).

Conventions
* Every seed's out-of-sample series is its stitched test windows (``wfa_results``): all costs on, hourly bars.
* ``cost_share``: fees + slippage ÷ the pre-cost return (Σ bar returns + Σ fees and slippage); NaN when the
  pre-cost return is not positive (there is no gross profit to share).
* Dispersion rows ``median``, ``p05``, ``p95`` are taken across seeds, per metric; ``survival`` in those rows is the
  survival rate (share of seeds whose equity never went below the ruin floor). An infinite minimum track record
  length (the Sharpe ratio is not above the benchmark) is left out of them.
* PSR / DSR use per-bar Sharpe ratios of the hourly out-of-sample returns. The raw number of trials N counts every
  Optuna trial of every fold, phase and seed in the summary; V[SR] is the variance, across those trials, of the
  per-bar Sharpe ratio on each trial's training (fit) piece. ``dsr`` uses the effective number of independent
  trials (:func:`effective_trials`: within each study, N_eff = ρ̄ + (1 − ρ̄)·N with ρ̄ the mean pairwise
  correlation of its best trials' weekly returns; summed over studies), ``dsr_raw_n`` the raw N (more
  conservative). ``expected_max_sr_per_bar`` is E[max SR] for N_eff trials with that variance, the DSR's benchmark.
* Data snooping against buy-and-hold: Hansen's SPA and White's Reality Check (``btc_assets.evaluation.stats``) on
  daily returns (the hourly ones compounded per UTC day), the seeds as the M strategies, buy-and-hold on the same
  bars as the benchmark, a fixed bootstrap seed. H0: no seed beats buy-and-hold in expectation.
* ``pbo`` per seed: the mean, over its (fold, phase) studies, of each study's probability of backtest overfitting
  (CSCV over the weekly training-window returns of the study's best trials; ``btc_assets.wfa.run.study_pbo``).
  ``median_study_pbo`` and ``share_studies_pbo_above_half`` pool the studies of every seed.
* Target: ``p_month_at_target`` is the share of (seed, calendar month) out-of-sample returns at or above the
  target; ``p_seed_at_target`` the share of seeds whose mean monthly return reaches it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from btc_assets.config import PortfolioSettings
from btc_assets.evaluation.stats import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    minimum_track_record_length,
    probabilistic_sharpe_ratio,
    reality_check,
    spa_test,
)
from btc_assets.portfolio.engine import PortfolioParams
from btc_assets.portfolio.metrics import buy_and_hold, portfolio_metrics, vol_targeted_buy_and_hold
from btc_assets.portfolio.moe import engine_params, price_arrays

TARGET_MONTHLY = 0.05  # the original study's goal
ORIGINAL_SYSTEM = {"mean_monthly_return": 0.0030, "max_drawdown": 0.12, "survival": 1.0}  # its reported figures
METRICS = ["mean_monthly_return", "cagr", "sharpe", "sortino", "calmar", "max_drawdown", "turnover_annual",
           "cost_share", "survival"]


@dataclass(frozen=True)
class Summary:
    table: pd.DataFrame  # one row per seed, then median / p05 / p95, the references and the original system
    target: dict[str, float]
    overfitting: dict[str, float]
    monthly: pd.DataFrame  # seed, month, return


def cost_share(frame: pd.DataFrame) -> float:
    costs = float((frame["fee_cost"] + frame["slippage_cost"]).sum())
    gross = float(frame["bar_return"].sum()) + costs
    return costs / gross if gross > 0 else float("nan")


def frame_stats(frame: pd.DataFrame, ruin_floor: float) -> dict[str, float]:
    """Metrics of one out-of-sample run (columns of the engine's frame, a ``timestamp`` column)."""
    returns = pd.Series(frame["bar_return"].to_numpy(), index=pd.DatetimeIndex(frame["timestamp"]))
    equity = np.cumprod(1.0 + returns.to_numpy())
    out = portfolio_metrics(returns, equity, frame["turnover"].to_numpy(),
                            (frame["fee_cost"] + frame["slippage_cost"]).to_numpy(), ruin_floor,
                            exposure=frame["gross_exposure"].to_numpy() if "gross_exposure" in frame else None)
    out["cost_share"] = cost_share(frame)
    return out


def monthly_returns(frame: pd.DataFrame) -> pd.Series:
    ts = pd.DatetimeIndex(frame["timestamp"])
    r = pd.Series(frame["bar_return"].to_numpy(), index=ts)
    return (1.0 + r).groupby([ts.year, ts.month]).prod() - 1.0


def daily_returns(frame: pd.DataFrame) -> pd.Series:
    """Hourly returns compounded per UTC day."""
    ts = pd.DatetimeIndex(frame["timestamp"])
    r = pd.Series(frame["bar_return"].to_numpy(), index=ts)
    return (1.0 + r).groupby(ts.floor("D")).prod() - 1.0


def snooping_tests(oos: Mapping[str, pd.DataFrame], benchmark: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """SPA and Reality Check p-values of the seeds (strategies) against the benchmark, on daily returns."""
    strategies = pd.concat({s: daily_returns(f) for s, f in oos.items()}, axis=1)
    bench = daily_returns(benchmark).reindex(strategies.index)
    spa = spa_test(strategies.to_numpy(), bench.to_numpy(), seed=seed)
    rc = reality_check(strategies.to_numpy(), bench.to_numpy(), seed=seed)
    return {"spa_lower": spa["lower"], "spa_consistent": spa["consistent"], "spa_upper": spa["upper"],
            "reality_check": rc["pvalue"], "days": float(len(strategies))}


def reference_frames(bars: pd.DataFrame, volatility: pd.DataFrame, timestamps: pd.Series,
                     portfolio: PortfolioSettings) -> dict[str, pd.DataFrame]:
    """Buy-and-hold and vol-targeted buy-and-hold on exactly the out-of-sample bars, with the same costs."""
    index = pd.DatetimeIndex(bars["timestamp"])
    pos = index.get_indexer(pd.DatetimeIndex(timestamps))
    if (pos < 0).any() or not (np.diff(pos) == 1).all():
        raise ValueError("the out-of-sample bars must be a contiguous stretch of the bar grid")
    window = slice(int(pos[0]), int(pos[-1]) + 1)
    params: PortfolioParams = engine_params(portfolio)
    args = tuple(a[window] for a in price_arrays(bars, portfolio))
    sub_index = index[window]
    out = {
        "buy_and_hold": buy_and_hold(*args, params, index=sub_index),
        "vol_targeted_buy_and_hold": vol_targeted_buy_and_hold(
            *args, volatility["sigma"].to_numpy(dtype=np.float64)[window], params, index=sub_index),
    }
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
    correlation of its best trials' weekly training returns (``study_rho``). Studies count as independent of each
    other. Without ``study_rho`` (older results): the raw count."""
    if "study_rho" not in all_trials or all_trials["study_rho"].isna().all():
        return float(len(all_trials))
    keys = ["fold", "phase"] + (["seed"] if "seed" in all_trials else [])
    per_study = all_trials.groupby(keys).agg(n=("trial", "size"), rho=("study_rho", "first"))
    rho = per_study["rho"].fillna(0.0).clip(0.0, 1.0)
    return float((rho + (1.0 - rho) * per_study["n"]).sum())


def _pbo_facts(all_trials: pd.DataFrame) -> dict[str, float]:
    if "study_pbo" not in all_trials:
        return {}
    studies = all_trials.drop_duplicates(["fold", "phase"] + (["seed"] if "seed" in all_trials else []))
    pbo = studies["study_pbo"].dropna()
    return {"studies_with_pbo": float(len(pbo)), "median_study_pbo": float(pbo.median()) if len(pbo) else math.nan,
            "share_studies_pbo_above_half": float((pbo > 0.5).mean()) if len(pbo) else math.nan}


def summarise(oos: Mapping[str, pd.DataFrame], trials: Mapping[str, pd.DataFrame], bars: pd.DataFrame,
              volatility: pd.DataFrame, portfolio: PortfolioSettings) -> Summary:
    """The whole summary (see the module docstring)."""
    if not oos:
        raise ValueError("no seed has out-of-sample results yet: materialise some wfa_results partitions first")
    seeds = sorted(oos)
    rows = {seed: frame_stats(oos[seed], portfolio.ruin_floor) for seed in seeds}
    all_trials = pd.concat([trials[s].assign(seed=s) for s in seeds if s in trials], ignore_index=True)
    n_trials = len(all_trials)
    n_eff = effective_trials(all_trials)
    sr_var = float(all_trials["fit_sharpe"].var(ddof=1)) if n_trials > 1 else 0.0
    for seed in seeds:
        r = oos[seed]["bar_return"].to_numpy(dtype=np.float64)
        rows[seed]["psr"] = probabilistic_sharpe_ratio(r)
        rows[seed]["dsr"] = deflated_sharpe_ratio(r, n_eff, sr_var) if n_eff > 1 else rows[seed]["psr"]
        rows[seed]["dsr_raw_n"] = deflated_sharpe_ratio(r, n_trials, sr_var) if n_trials > 1 else rows[seed]["psr"]
        rows[seed]["min_track_record_days"] = minimum_track_record_length(r) / 24.0
        rows[seed]["track_record_days"] = len(r) / 24.0
        studies = trials[seed].drop_duplicates(["fold", "phase"]) if seed in trials else pd.DataFrame()
        rows[seed]["pbo"] = float(studies["study_pbo"].mean()) if "study_pbo" in studies else float("nan")
    per_seed = pd.DataFrame(rows).T
    columns = [*METRICS, "psr", "dsr", "dsr_raw_n", "pbo", "min_track_record_days", "track_record_days"]
    per_seed = per_seed[columns]
    finite = per_seed.replace([np.inf, -np.inf], np.nan)  # an infinite minimum track record (never) is left out
    spread = pd.DataFrame({
        "median": finite.median(), "p05": finite.quantile(0.05), "p95": finite.quantile(0.95),
    }).T
    spread["survival"] = per_seed["survival"].mean()  # the survival rate, in every dispersion row
    first = oos[seeds[0]]
    refs = reference_frames(bars, volatility, first["timestamp"], portfolio)
    ref_rows = pd.DataFrame({name: frame_stats(frame, portfolio.ruin_floor) for name, frame in refs.items()}).T
    for name, frame in refs.items():
        r = frame["bar_return"].to_numpy(dtype=np.float64)
        ref_rows.loc[name, "psr"] = probabilistic_sharpe_ratio(r)
    original = pd.DataFrame([ORIGINAL_SYSTEM], index=["original_system"])
    table = pd.concat([per_seed, spread, ref_rows.reindex(columns=columns),
                       original.reindex(columns=columns)]).rename_axis("row").reset_index()
    monthly = pd.concat({seed: monthly_returns(oos[seed]) for seed in seeds}, names=["seed", "year", "month"])
    monthly = monthly.rename("return").reset_index()
    target = {
        "target_monthly": TARGET_MONTHLY,
        "median_mean_monthly_return": float(per_seed["mean_monthly_return"].median()),
        "p_month_at_target": float((monthly["return"] >= TARGET_MONTHLY).mean()),
        "p_seed_at_target": float((per_seed["mean_monthly_return"] >= TARGET_MONTHLY).mean()),
    }
    overfitting = {
        "n_seeds": float(len(seeds)),
        "n_trials": float(n_trials),
        "n_effective_trials": n_eff,
        "sr_variance_per_bar": sr_var,
        "expected_max_sr_per_bar": expected_max_sharpe(n_eff, sr_var) if n_eff > 1 else 0.0,
        "median_psr": float(per_seed["psr"].median()),
        "median_dsr": float(per_seed["dsr"].median()),
        **_pbo_facts(all_trials),
    }
    overfitting.update(snooping_tests(oos, refs["buy_and_hold"]))
    return Summary(table, target, overfitting, monthly)
