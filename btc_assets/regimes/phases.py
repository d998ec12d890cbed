"""Canonical order and names of regime states, so phase index k means the same thing in every refit, fold and seed.

HMM state labels are arbitrary (any permutation fits equally well). After every fit the states are ordered by
this documented rule, using each state's fitted mean of the ``log_vol`` and ``trend`` features:

1. the state with the highest volatility is the **last** phase: ``crash`` if its mean trend is negative,
   otherwise ``breakout`` (high-volatility up-moves);
2. of the others, the state with the lowest volatility is the **first** phase: ``calm``;
3. the remaining states go in between, by mean trend, highest first: ``trend_up`` first, ``trend_down`` last and
   ``chop`` in the middle (``chop_1``, ``chop_2``, ... when there are several).

For K = 5 this gives ``calm, trend_up, chop, trend_down, crash|breakout``. Ties are broken by state index, so the
rule is deterministic. K = 1 is ``all``; K = 2 is ``calm`` and the high-volatility state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def canonical_phases(means: np.ndarray, feature_names: Sequence[str]) -> tuple[list[int], list[str]]:
    """``order[k]`` is the fitted state that becomes phase k; ``names[k]`` its name."""
    means = np.asarray(means, dtype=float)
    k = means.shape[0]
    if k == 1:
        return [0], ["all"]
    vol = means[:, list(feature_names).index("log_vol")]
    trend = means[:, list(feature_names).index("trend")]
    states = list(range(k))
    high = max(states, key=lambda s: (vol[s], -s))
    high_name = "crash" if trend[high] < 0 else "breakout"
    rest = [s for s in states if s != high]
    calm = min(rest, key=lambda s: (vol[s], s))
    middle = sorted((s for s in rest if s != calm), key=lambda s: (-trend[s], s))
    if not middle:
        names_mid: list[str] = []
    elif len(middle) == 1:
        names_mid = ["chop"]
    else:
        chops = len(middle) - 2
        chop_names = ["chop"] if chops == 1 else [f"chop_{i + 1}" for i in range(chops)]
        names_mid = ["trend_up", *chop_names, "trend_down"]
    return [calm, *middle, high], ["calm", *names_mid, high_name]
