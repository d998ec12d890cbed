"""One account over several runs: the engine's carried state (``new_state``) against one reference run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from btc_assets.portfolio import BookInputs, backtest_score, new_state, run_portfolio, run_portfolio_reference
from btc_assets.portfolio.layout import State
from btc_assets_tests.test_portfolio_engine import CARRY, PARAM_SETS, WITH_BASIS, engine_args, random_inputs

SPLITS = (0, 137, 256, 260, 511, 700)  # inside and on the kernel's 256-bar blocks
N = 700


def _pieces(inputs: dict, cuts=SPLITS):
    for a, b in itertools.pairwise(cuts):
        yield a, b, {k: (v[a:b] if k != "gating" else v) for k, v in inputs.items()}


def _chained(inputs: dict, params, gatings=None, cuts=SPLITS):
    state = new_state(inputs["experts"].shape[1])
    frames = []
    for i, (_, _, piece) in enumerate(_pieces(inputs, cuts)):
        if gatings is not None:
            piece["gating"] = gatings[i]
        frames.append(run_portfolio(*engine_args(piece), params, CARRY, state=state))
    return frames, state


@pytest.mark.parametrize("name", list(PARAM_SETS))
def test_chained_runs_equal_one_run_bit_for_bit(name: str) -> None:
    """Same inputs everywhere: cutting the bars into pieces and carrying the state changes nothing at all."""
    inputs = random_inputs(N, seed=11 + len(name), smooth=True, basis=name in WITH_BASIS)
    params = PARAM_SETS[name]
    whole = run_portfolio(*engine_args(inputs), params, CARRY)
    frames, state = _chained(inputs, params)
    stitched = np.concatenate([f.to_numpy() for f in frames])
    np.testing.assert_array_equal(stitched, whole.to_numpy())
    assert state[State.STARTED] == 1.0
    # the score kernel carries the same account
    score_state = new_state(inputs["experts"].shape[1])
    sums = [backtest_score(*engine_args(piece), params, CARRY, state=score_state) for _, _, piece in _pieces(inputs)]
    assert sum(s.turnover for s in sums) == pytest.approx(whole["turnover"].sum(), abs=1e-12)
    assert sum(s.sum_return for s in sums) == pytest.approx(whole["bar_return"].sum(), abs=1e-12)
    assert sums[-1].log_growth == pytest.approx(np.log(whole["equity"].iloc[-1]), abs=1e-12)


@pytest.mark.parametrize("name", ["soft", "band", "throttle", "hard", "policy", "basis"])
def test_chained_runs_with_new_parameters_equal_one_reference_run(name: str) -> None:
    """Different gating per piece (a new fold's parameters): the chained kernel equals one reference run over the
    concatenated bars with per-bar gating, so the boundary is traded and charged like any bar (the decision
    interval's count, the spot close of the basis and the borrowing carried too)."""
    inputs = random_inputs(N, seed=31 + len(name), smooth=True, basis=name in WITH_BASIS)
    params = PARAM_SETS[name]
    rng = np.random.default_rng(5)
    gatings = [
        rng.dirichlet(np.ones(inputs["experts"].shape[1]), inputs["probs"].shape[1]) for _ in range(len(SPLITS) - 1)
    ]
    frames, _ = _chained(inputs, params, gatings)
    per_bar = np.concatenate(
        [np.repeat(g[None], b - a, axis=0) for (a, b, _), g in zip(_pieces(inputs), gatings, strict=True)]
    )
    reference = run_portfolio_reference(*engine_args({**inputs, "gating": per_bar}), params, CARRY)
    stitched = np.concatenate([f.to_numpy() for f in frames])
    np.testing.assert_allclose(stitched, reference.to_numpy(), rtol=0, atol=1e-9, equal_nan=True)
    # the first bar of every later piece earns its gap and fill: nothing restarts flat at 1
    for frame in frames[1:]:
        assert frame["bar_return"].iloc[0] != 0.0 or frame["position"].iloc[0] == 0.0
    assert max(f["equity"].iloc[0] for f in frames[1:]) != 1.0


def test_boundary_position_is_carried_or_traded_and_charged() -> None:
    """A long position held at the end of one run is still held at the start of the next, and a new target there
    is a charged trade (fees and slippage on the turnover)."""
    n = 60
    close = 100 * np.exp(np.linspace(0, 0.05, n))
    market = dict(
        open_=close.copy(),
        close=close,
        tradable=np.ones(n, bool),
        funding=np.zeros(n),
        sigma_hat=np.full(n, 0.4),
        probs=np.ones((n, 1)),
    )
    params = PARAM_SETS["band"]

    def half(rows: slice, gating: float) -> tuple[BookInputs, np.ndarray]:
        """The bars ``rows`` with one expert at 0.5, and its gating."""
        book = BookInputs.from_arrays(**{k: v[rows] for k, v in market.items()}, experts=np.full((30, 1), 0.5))
        return book, np.full((1, 1), gating)

    state = new_state(1)
    first = run_portfolio(*half(slice(None, 30), 1.0), params, state=state)
    held = first["position"].iloc[-1]
    assert held > 0 and state[State.POSITION] == held and state[State.PENDING] == 0.0
    # same target: the position carries, no trade at the boundary
    same = run_portfolio(*half(slice(30, None), 1.0), params, state=state.copy())
    assert same["position"].iloc[0] == held and same["turnover"].iloc[0] == 0.0
    assert same["bar_return"].iloc[0] == pytest.approx(held * (close[30] / close[29] - 1))
    # a new parameter set (gating 0.2): the order decided at its first close fills at the next open and is charged
    new = run_portfolio(*half(slice(30, None), 0.2), params, state=state.copy())
    assert new["position"].iloc[0] == held
    assert new["position"].iloc[1] < held and new["turnover"].iloc[1] == pytest.approx(held - new["position"].iloc[1])
    cost_rate = (params.perp_fee_bps + params.slip_bps) * 1e-4
    assert new["fee_cost"].iloc[1] + new["slippage_cost"].iloc[1] == pytest.approx(new["turnover"].iloc[1] * cost_rate)


def test_bad_state_is_rejected() -> None:
    inputs = random_inputs(50, seed=1)
    with pytest.raises(ValueError, match="state must be"):
        run_portfolio(*engine_args(inputs), PARAM_SETS["soft"], CARRY, state=np.zeros(3))
    carried = new_state(inputs["experts"].shape[1])
    carried[State.STARTED] = 1.0  # no last close
    with pytest.raises(ValueError, match="last close"):
        run_portfolio(*engine_args(inputs), PARAM_SETS["soft"], CARRY, state=carried)
