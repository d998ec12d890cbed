"""Walk-forward optimisation: per fold, the regime phases' parameter blocks are optimised in turn with Optuna on the
training window (selected on an inner validation slice), then run out of sample on the fold's test window; the test
windows are stitched into one out-of-sample series per seed. Resumable at the exact fold, phase and trial.

* :mod:`btc_assets.wfa.space`      the parameter blocks and how they become engine inputs
* :mod:`btc_assets.wfa.objective`  fold data (fit / validation / test pieces) and the score
* :mod:`btc_assets.wfa.samplers`   the studies' samplers and per-trial seeds
* :mod:`btc_assets.wfa.journal`    the durable Optuna storage (crash-tolerant journal file or RDB)
* :mod:`btc_assets.wfa.study`      one resumable (fold, phase) Optuna study with crash-independent choices
* :mod:`btc_assets.wfa.distributed` one (fold, phase) study worked on by several machines through PostgreSQL
* :mod:`btc_assets.wfa.checkpoint` fingerprints, (fold, phase) records, progress
* :mod:`btc_assets.wfa.run`        one seed end to end
"""

from btc_assets.wfa.checkpoint import Fingerprint, read_progress
from btc_assets.wfa.run import WfaResult, code_digest, run_seed
from btc_assets.wfa.space import PhaseParams, StrategyParams

__all__ = ["Fingerprint", "PhaseParams", "StrategyParams", "WfaResult", "code_digest", "read_progress", "run_seed"]
