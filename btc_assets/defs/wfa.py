"""Walk-forward optimisation assets: one partition per seed, resumable from its checkpoint."""

import sys

import dagster as dg
import pandas as pd

from btc_assets import wfa
from btc_assets.config import seed_from_key
from btc_assets.defs.partitions import seed_partitions
from btc_assets.defs.resources import ProjectHome, Study

GROUP = "walk_forward"
POOL = "wfa"  # at most `concurrency.pools.default_limit` seeds optimise at once (the instance's dagster.yaml)
# the same digest and settings key the seed's checkpoint (btc_assets.wfa.run: code_digest, config_hash)
COMPUTED_BY = {
    name: (("btc_assets.wfa",), ("wfa", "portfolio", "schedule", "experts"))
    for name in ("wfa_results", "wfa_folds", "wfa_trials")
}


@dg.multi_asset(
    group_name=GROUP,
    partitions_def=seed_partitions,
    pool=POOL,
    outs={
        "wfa_results": dg.AssetOut(
            kinds={"python", "optuna", "parquet"},
            description="Stitched out-of-sample bars of one seed: each fold's test window run with the parameters "
            "optimised on its training window (each leg's venue fees, slippage, funding and borrowing "
            "charged), with fold, positions, P&L terms, costs and equity.",
        ),
        "wfa_folds": dg.AssetOut(
            kinds={"python", "parquet"},
            description="One row per fold: test window, final parameters (JSON) and out-of-sample metrics.",
        ),
        "wfa_trials": dg.AssetOut(
            kinds={"python", "parquet"},
            description="Every Optuna trial of the seed: fold, phase, trial, training (fit) score, validation "
            "score, winner flag and parameters (JSON); for the overfitting statistics.",
        ),
    },
)
def walk_forward(
    context: dg.AssetExecutionContext,
    project: ProjectHome,
    study: Study,
    market_bars: pd.DataFrame,
    volatility: pd.DataFrame,
    regime_probabilities: pd.DataFrame,
):
    """Optimise each fold's K phase blocks in turn with Optuna (seeded by the partition's seed) on the training
    window, select on the inner validation slice, run the winner on the test window; resume from the seed's
    checkpoint (fold, phase and trial) after any crash."""
    profile = study.profile
    key = context.partition_key
    try:
        result = wfa.run_seed(
            seed_from_key(key),
            key,
            market_bars,
            volatility,
            regime_probabilities,
            settings=profile.wfa,
            portfolio=profile.portfolio,
            schedule=profile.schedule,
            checkpoints=str(project.paths.checkpoints),
            say=context.log.info,
            expert_settings=profile.experts,
            lines=str(project.paths.lines),
        )
    except OSError as err:
        # a full disk: the instance may sit on the same disk and never store this failure, so say it here too
        print(f"{key}: FAILED: {err}; nothing done is lost: free the space and run again", file=sys.stderr, flush=True)
        raise
    last = result.folds.iloc[-1]
    equity = float(result.oos["equity"].iloc[-1])
    yield dg.Output(
        result.oos,
        output_name="wfa_results",
        metadata={
            "seed": key,
            "folds": len(result.folds),
            "final_equity": equity,
            "trials_run_now": result.trials_run,
            "trials_from_checkpoint": result.trials_from_checkpoint,
            "studies_retested": result.studies_retested,
            "resumed": result.resumed,
            "checkpoint_fingerprint": result.fingerprint.key,
            "last_fold_sharpe": float(last["sharpe"]),
        },
    )
    columns = ["fold", "test_start", "cagr", "sharpe", "max_drawdown", "turnover_annual", "survival"]
    yield dg.Output(
        result.folds,
        output_name="wfa_folds",
        metadata={
            "folds": dg.MetadataValue.md(result.folds[columns].to_markdown(index=False, floatfmt=".4f")),
        },
    )
    yield dg.Output(result.trials, output_name="wfa_trials", metadata={"trials": len(result.trials)})


assets = [walk_forward]
