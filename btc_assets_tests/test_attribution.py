"""The P&L attribution (``btc_assets.evaluation.attribution``): it adds up to the run's total on random engine runs,
matches a hand-computed case and slow per-bar references (decision bars, expert and phase shares), and works on a
stitched walk-forward book, through Dagster and in the report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import optuna
import pandas as pd
import pytest

from btc_assets.config import EXPERTS, get_profile
from btc_assets.evaluation import attribution as att
from btc_assets.portfolio.engine import BookInputs, PortfolioParams, run_portfolio
from btc_assets_tests.conftest import definitions
from btc_assets_tests.test_portfolio_engine import CARRY, PARAM_SETS, engine_args, random_inputs

NAMES = tuple(EXPERTS)  # trend, mean_reversion, breakout, carry: column CARRY is the carry
HOURS = 8760.0
TIGHT = 1e-12  # per year: sums and the unallocated cell


def random_run(name: str, carry_col: int, seed: int = 0) -> tuple[dict, PortfolioParams, pd.DataFrame]:
    params = PARAM_SETS[name]
    inputs = random_inputs(600, seed=seed + len(name), smooth=name in ("band", "throttle", "policy"), basis=True)
    frame = run_portfolio(*engine_args(inputs), params, carry_col, expert_names=NAMES)
    return inputs, params, frame


def moves_of(inputs: dict) -> att.MarketMoves:
    return att.market_moves(
        inputs["open_"], inputs["close"], inputs["funding"], inputs["spot_open"], inputs["spot_close"]
    )


def cell_table(cells: pd.DataFrame) -> pd.DataFrame:
    return cells.set_index(["expert", "phase"])


def assert_adds_up(frame: pd.DataFrame, cells: pd.DataFrame, years: float) -> None:
    """Σ cells of net = Σ bar_return / years; the unallocated cell ~0; each component's sum = the frame's."""
    assert cells["net"].sum() == pytest.approx(frame["bar_return"].sum() / years, abs=TIGHT)
    rest = cells[cells["expert"] == att.UNALLOCATED]
    assert len(rest) == 1 and rest[list(att.COMPONENTS)].abs().to_numpy().max() < TIGHT
    totals = {
        "gross": "price_pnl",
        "basis": "basis_pnl",
        "funding": "funding_pnl",
        "fees": "fee_cost",
        "slippage": "slippage_cost",
        "borrowing": "borrow_cost",
    }
    for component, column in totals.items():
        assert cells[component].sum() == pytest.approx(frame[column].sum() / years, abs=TIGHT)


# ------------------------------------------------------------------------------------------- random engine runs


@pytest.mark.parametrize("name", list(PARAM_SETS))
@pytest.mark.parametrize("carry_col", [CARRY, -1])
def test_adds_up_to_the_total_on_random_runs(name: str, carry_col: int) -> None:
    inputs, params, frame = random_run(name, carry_col)
    splits = att.moe_splits(inputs["probs"], inputs["gating"], NAMES, params.hard_switch)
    carry = "carry" if carry_col >= 0 else None
    cells = att.attribute(frame, moves_of(inputs), splits, carry=carry)
    years = len(frame) / HOURS
    assert_adds_up(frame, cells, years)
    # per bar too, and the net of every bar is its return
    names, values = att.bar_attribution(frame, moves_of(inputs), splits, carry=carry)
    assert names[-1] == (att.UNALLOCATED, att.NO_PHASE) and len(names) == 4 * 5 + 1
    np.testing.assert_allclose(values.sum(axis=1) @ att.SIGNS, frame["bar_return"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(values.sum(axis=1)[:, 0], frame["price_pnl"], rtol=0, atol=1e-15)
    assert np.abs(values[:, -1]).max() < 1e-15
    # per expert: its column's price P&L, contrib(t−1)·gap + contrib(t)·intra, whatever the phase split
    moves = moves_of(inputs)
    by_expert = cells.groupby("expert").sum(numeric_only=True)
    for expert in NAMES[:3] + (NAMES[3:] if carry is None else ()):
        c = frame[f"contrib_{expert}"].to_numpy()
        gross = (np.r_[0.0, c[:-1]] * moves.gap + c * moves.intra).sum() / years
        assert by_expert.loc[expert, "gross"] == pytest.approx(gross, abs=TIGHT)
    assert (frame["turnover"] > 0).sum() > 5 and cells["gross"].abs().sum() > 0
    if carry is not None and name == "basis":
        carry_rows = cells[cells["expert"] == "carry"]
        assert carry_rows["basis"].abs().sum() > 0 and carry_rows["borrowing"].sum() > 0
        assert carry_rows["gross"].abs().max() == 0.0  # the carry has no directional price exposure
        assert cells.loc[cells["expert"] != "carry", "basis"].abs().max() < TIGHT


def reference_phase_split(
    frame: pd.DataFrame, inputs: dict, hard: bool, moves: att.MarketMoves
) -> dict[tuple[str, str], tuple[float, float]]:
    """A slow per-bar loop: (gross, funding) per (expert, phase) with the shares p_k·G[k, e] / Σ_j p_j·G[j, e]
    at the close before the last bar the position (or, for the carry, the carry position) changed."""
    probs, gating = inputs["probs"], inputs["gating"]
    out: dict[tuple[str, str], list[float]] = {}
    held_prev: dict[tuple[str, str], float] = {}
    tau = {"d": -1, "c": -1}
    for t in range(len(frame)):
        row = frame.iloc[t]
        before = frame.iloc[t - 1] if t else None
        if t and row["position"] != before["position"]:
            tau["d"] = t - 1
        if t and row["carry_position"] != before["carry_position"]:
            tau["c"] = t - 1
        held: dict[tuple[str, str], float] = {}
        for e, expert in enumerate(NAMES):
            at = tau["c" if expert == "carry" else "d"]
            if at < 0 or not np.isfinite(probs[at]).all():
                continue
            p = probs[at].copy()
            if hard:
                p = np.eye(len(p))[int(np.argmax(p))]
            w = p * gating[:, e]
            if w.sum() == 0:
                continue
            for k in range(len(p)):
                held[(expert, f"phase{k}")] = row[f"contrib_{expert}"] * w[k] / w.sum()
        for cell in set(held) | set(held_prev):
            gross, funding = out.setdefault(cell, [0.0, 0.0])
            if cell[0] != "carry":
                gross += held_prev.get(cell, 0.0) * moves.gap[t] + held.get(cell, 0.0) * moves.intra[t]
            funding -= held.get(cell, 0.0) * moves.funding[t]
            out[cell] = [gross, funding]
        held_prev = held
    return {cell: (g, f) for cell, (g, f) in out.items()}


@pytest.mark.parametrize("name", ["policy", "hard", "basis"])
def test_phase_split_follows_the_decision_bar(name: str) -> None:
    """The moe split equals a per-bar loop that looks up the probabilities at each position's decision bar (not at
    the bar itself: with a band or a decision interval the held position is older than the last close)."""
    inputs, params, frame = random_run(name, CARRY, seed=11)
    moves = moves_of(inputs)
    cells = cell_table(
        att.attribute(
            frame, moves, att.moe_splits(inputs["probs"], inputs["gating"], NAMES, params.hard_switch), carry="carry"
        )
    )
    years = len(frame) / HOURS
    reference = reference_phase_split(frame, inputs, params.hard_switch, moves)
    assert len(reference) > 10
    for cell, (gross, funding) in reference.items():
        assert cells.loc[cell, "gross"] == pytest.approx(gross / years, abs=TIGHT), cell
        assert cells.loc[cell, "funding"] == pytest.approx(funding / years, abs=TIGHT), cell
    # the current bar's probabilities would give another split: the test is not vacuous
    held_back = (frame["position"].diff() == 0) & (frame["target_position"].shift() != frame["position"])
    assert held_back.sum() > 10 or params.band == 0.0


# ---------------------------------------------------------------------------------------------- by hand


def test_hand_computed_two_expert_case() -> None:
    """Two experts a, b and two phases, G = [[0.5, 0.5], [1, 0]], p = (0.6, 0.4): w_a = 0.7 (phase shares 3/7,
    4/7), w_b = 0.3 (all phase 0). Fill at bar 1 to d = 1 (contribs 0.7, 0.3), at bar 2 to d = 0.4 (b flips to
    −0.3); at the close of bar 2 p moves to (0.58, 0.42) but the band holds the position, so the split stays the
    one decided at the close of bar 1."""
    close = np.array([100.0, 101.0, 99.0, 100.0, 102.0])
    open_ = np.array([100.0, 100.5, 100.0, 99.5, 101.0])
    funding = np.array([0.0, 0.0, 0.001, 0.0, -0.0005])
    experts = np.array([[1.0, 1.0], [1.0, -1.0], [1.0, -1.0], [1.0, -1.0], [1.0, -1.0]])
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.58, 0.42], [0.58, 0.42], [0.58, 0.42]])
    gating = np.array([[0.5, 0.5], [1.0, 0.0]])
    params = PortfolioParams(
        vol_targeting=False, lev_max=10.0, dd_max=0.0, ruin_floor=0.0, band=0.05, perp_fee_bps=10.0, slip_bps=5.0
    )
    book = BookInputs.from_arrays(open_, close, np.ones(5, dtype=bool), funding, experts, probs, np.ones(5))
    frame = run_portfolio(book, gating, params, expert_names=["a", "b"])
    np.testing.assert_allclose(frame["position"], [0.0, 1.0, 0.4, 0.4, 0.4], atol=1e-15)
    moves = att.market_moves(open_, close, funding)
    cells = att.attribute(frame, moves, att.moe_splits(probs, gating, ["a", "b"]), bars_per_year=5.0)  # 1 year
    got = cell_table(cells)
    g, i = moves.gap, moves.intra
    fee, slip = 10e-4, 5e-4
    expected = {  # (gross, funding, fees, slippage) summed over the bars, by hand
        ("a", "phase0"): (
            0.3 * (i[1] + g[2] + i[2] + g[3] + i[3] + g[4] + i[4]),
            -0.3 * (0.001 - 0.0005),
            0.3 * fee,
            0.3 * slip,
        ),
        ("a", "phase1"): (
            0.4 * (i[1] + g[2] + i[2] + g[3] + i[3] + g[4] + i[4]),
            -0.4 * (0.001 - 0.0005),
            0.4 * fee,
            0.4 * slip,
        ),
        ("b", "phase0"): (
            0.3 * i[1] + 0.3 * g[2] - 0.3 * (i[2] + g[3] + i[3] + g[4] + i[4]),
            0.3 * (0.001 - 0.0005),
            (0.3 + 0.6) * fee,
            (0.3 + 0.6) * slip,
        ),
        ("b", "phase1"): (0.0, 0.0, 0.0, 0.0),
    }
    for cell, (gross, fund, fees, slippage) in expected.items():
        row = got.loc[cell]
        assert row["gross"] == pytest.approx(gross, abs=1e-15), cell
        assert row["funding"] == pytest.approx(fund, abs=1e-15), cell
        assert row["fees"] == pytest.approx(fees, abs=1e-15), cell
        assert row["slippage"] == pytest.approx(slippage, abs=1e-15), cell
        assert row["net"] == pytest.approx(gross + fund - fees - slippage, abs=1e-15), cell
    assert_adds_up(frame, cells, 1.0)
    margins = cell_table(att.with_margins(cells))
    assert margins.loc[("a", att.ALL), "net"] == pytest.approx(got.loc[[("a", "phase0"), ("a", "phase1")], "net"].sum())
    assert margins.loc[(att.ALL, att.ALL), "net"] == pytest.approx(frame["bar_return"].sum(), abs=1e-15)
    share = att.phase_time_share(probs, ["calm", "crash"])
    assert share.to_dict() == {"calm": 1.0, "crash": 0.0, att.UNKNOWN_PHASE: 0.0}


# ---------------------------------------------------------------------------------------- the walk-forward book


def synthetic_book(seed: int, hard: bool = False) -> dict[str, object]:
    """A stitched walk-forward book of three folds on one year of the demo market (the perp listed in the middle of
    the test windows), synthetic regime refits and random parameters per fold (no optimisation): the real fold
    objective and test-window stitching of ``btc_assets.wfa.run``."""
    from btc_assets.experts import BarArrays
    from btc_assets.ingestion import build_market_bars
    from btc_assets.ingestion.demo import DemoMarketSpec, generate_demo_market
    from btc_assets.portfolio.tables import prepare_inputs
    from btc_assets.wfa.objective import FoldObjective, SignalCache
    from btc_assets.wfa.run import _no_signals, _out_of_sample, phase_of
    from btc_assets.wfa.space import StrategyParams, suggest_phase

    market = generate_demo_market(DemoMarketSpec(years=1.0, perp_listing_days=230.0))
    bars = build_market_bars(market.ohlcv, market.funding, market.perp).bars
    n, k_phases = len(bars), 5
    rng = np.random.default_rng(seed)
    sigma = 0.5 * np.exp(0.3 * np.sin(np.arange(n) * 2 * np.pi / 720))
    sigma[:48] = np.nan
    volatility = pd.DataFrame({"timestamp": bars["timestamp"], "sigma": sigma, "sigma_horizon": sigma})
    pieces = []
    for refit in range(3):
        z = np.zeros((n, k_phases))
        for t in range(1, n):
            z[t] = 0.98 * z[t - 1] + rng.normal(0, 0.5, k_phases)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        segments = {"train": (500, 4000), "validation": (4000, 5000), "test": (5000, 6000)}
        for segment, (a, b) in segments.items():
            rows = slice(a + 1000 * refit, b + 1000 * refit)
            pieces.append(
                pd.DataFrame(
                    {
                        "fold": refit,
                        "segment": segment,
                        "timestamp": bars["timestamp"].to_numpy()[rows],
                        **{f"p_{k}": p[rows, k] for k in range(k_phases)},
                    }
                )
            )
    probabilities = pd.concat(pieces, ignore_index=True)
    profile = get_profile("quick")
    portfolio = replace(
        profile.portfolio,
        band=0.02,
        band_rel=0.0,
        decision_hours=4,
        slip_vol_coef=1.0,
        borrow_rate=0.1,
        hard_switch=hard,
    )
    inputs = prepare_inputs(bars, volatility, probabilities, _no_signals(n), portfolio)
    signals = SignalCache(BarArrays.from_market_bars(bars))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    fold_params = []
    for refit in range(3):
        objective = FoldObjective(inputs, probabilities, refit, signals, portfolio, profile.wfa)
        params = StrategyParams(
            tuple(phase_of(suggest_phase(study.ask(), profile.wfa), profile.wfa) for _ in range(k_phases))
        )
        fold_params.append((refit, params, objective))
    oos, folds = _out_of_sample(fold_params, portfolio)
    return {
        "bars": bars,
        "volatility": volatility,
        "probabilities": probabilities,
        "portfolio": portfolio,
        "oos": oos,
        "folds": folds,
        "fold_params": fold_params,
        "signals": signals,
    }


@pytest.fixture(scope="module")
def books() -> dict[str, dict[str, object]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return {"seed_00": synthetic_book(1), "seed_01": synthetic_book(2), "hard": synthetic_book(3, hard=True)}


@pytest.mark.parametrize("key", ["seed_00", "hard"])
def test_walk_forward_book_adds_up_and_matches_a_reference(books: dict, key: str) -> None:
    book = books[key]
    oos, folds, bars, portfolio = book["oos"], book["folds"], book["bars"], book["portfolio"]
    result = att.wfa_attribution(oos, folds, bars, portfolio)
    assert result.years == pytest.approx(len(oos) / HOURS)
    assert_adds_up(oos, result.cells, result.years)
    assert (oos["position"].diff() != 0).sum() > 50 and oos["basis_pnl"].abs().sum() > 0
    params = att.fold_parameters(folds)
    rows = att.grid_rows(bars, oos["timestamp"])
    fold = oos["fold"].to_numpy()
    # the recomputed mixes are the engine's columns, bit for bit; the probabilities from the weights are the
    # fold's filtered ones (one-hot with hard switching) and give back the carry weight
    terms = att.wfa_mix_terms(oos, params, bars)
    probs = att.wfa_probabilities(oos, params)
    filtered = book["probabilities"].query("segment == 'test'").sort_values("timestamp")
    expected_p = filtered[[f"p_{k}" for k in range(5)]].to_numpy()
    if book["portfolio"].hard_switch:
        expected_p = np.eye(5)[np.argmax(expected_p, axis=1)]
    np.testing.assert_allclose(probs, expected_p, rtol=0, atol=1e-12)
    for refit, p, objective in book["fold_params"]:
        test = objective.pieces["test"]
        sel = fold == refit
        np.testing.assert_array_equal(terms[:, sel].sum(axis=2).T, objective.columns[test.start : test.stop, :5])
        carry_gate = np.array([ph.gating[EXPERTS.index("carry")] for ph in p.phases])
        np.testing.assert_allclose(probs[sel] @ carry_gate, oos.loc[sel, "weight_carry"], rtol=0, atol=1e-12)
    # a slow per-bar reference of the expert split (decision bar, possibly in the previous fold) and carry split
    from btc_assets.portfolio.tables import price_arrays

    signals = book["signals"]
    prices = price_arrays(bars, portfolio)
    moves = att.market_moves(prices.open_, prices.close, prices.funding, prices.spot_open, prices.spot_close, rows)
    gross: dict[tuple[str, str], float] = {}
    basis: dict[tuple[str, str], float] = {}
    held_prev: dict[tuple[str, str], float] = {}
    tau_d = tau_c = -1
    crossed = 0
    pos, cpos = oos["position"].to_numpy(), oos["carry_position"].to_numpy()
    for t in range(len(oos)):
        if t and pos[t] != pos[t - 1]:
            tau_d = t - 1
        if t and cpos[t] != cpos[t - 1]:
            tau_c = t - 1
        held: dict[tuple[str, str], float] = {}
        if tau_d >= 0:
            crossed += fold[tau_d] != fold[t] and pos[t] != 0
            phases = params[int(fold[tau_d])].phases
            for k, phase in enumerate(phases):
                x = {
                    e: phase.gating[EXPERTS.index(e)] * signals.get(getattr(phase, e))[rows[tau_d]]
                    for e in ("trend", "mean_reversion", "breakout")
                }
                m = sum(x.values())
                for e, v in x.items():
                    held[(e, f"phase{k}")] = oos[f"contrib_phase{k}"].iat[t] * v / m if m != 0 else 0.0
        if tau_c >= 0:
            g = np.array([ph.gating[EXPERTS.index("carry")] for ph in params[int(fold[tau_c])].phases])
            w = expected_p[tau_c] * g
            for k in range(5):
                held[("carry", f"phase{k}")] = cpos[t] * w[k] / w.sum() if w.sum() else 0.0
        for cell in set(held) | set(held_prev):
            old, new = held_prev.get(cell, 0.0), held.get(cell, 0.0)
            if cell[0] == "carry":
                basis[cell] = (
                    basis.get(cell, 0.0)
                    + old * (moves.gap[t] - moves.spot_gap[t])
                    + new * (moves.intra[t] - moves.spot_intra[t])
                )
            else:
                gross[cell] = gross.get(cell, 0.0) + old * moves.gap[t] + new * moves.intra[t]
        held_prev = held
    assert crossed > 0, "no position held across a fold boundary: the test proves nothing"
    cells = cell_table(result.cells)
    for cell, value in gross.items():
        assert cells.loc[cell, "gross"] == pytest.approx(value / result.years, abs=TIGHT), cell
    for cell, value in basis.items():
        assert cells.loc[cell, "basis"] == pytest.approx(value / result.years, abs=TIGHT), cell
    share = result.time_share
    assert share.sum() == pytest.approx(1.0) and share[att.UNKNOWN_PHASE] == 0.0
    best = np.argmax(expected_p, axis=1)
    assert share["phase2"] == pytest.approx(float((best == 2).mean()))


def test_across_seeds_quantiles_margins_and_time_share(books: dict) -> None:
    runs = {
        s: att.wfa_attribution(books[s]["oos"], books[s]["folds"], books[s]["bars"], books[s]["portfolio"])
        for s in ("seed_00", "seed_01")
    }
    table = att.across_seeds({s: r.cells for s, r in runs.items()}, {s: r.time_share for s, r in runs.items()})
    assert list(table.columns) == ["expert", "phase", "component", "median", "p05", "p95", "mean", "seeds"]
    assert set(table["component"]) == {*att.COMPONENTS, att.NET, att.TIME_SHARE}
    assert (table["seeds"] == 2).all() and (table["p05"] <= table["median"] + 1e-15).all()
    assert (table["median"] <= table["p95"] + 1e-15).all()
    one = table.set_index(["expert", "phase", "component"])
    totals = [r.cells["net"].sum() for r in runs.values()]
    assert one.loc[(att.ALL, att.ALL, att.NET), "median"] == pytest.approx(np.median(totals))
    assert one.loc[(att.ALL, att.ALL, att.NET), "p05"] == pytest.approx(np.quantile(totals, 0.05))
    cells = table[(table["component"] == att.NET) & ~table["expert"].isin([att.ALL]) & (table["phase"] != att.ALL)]
    assert cells["mean"].sum() == pytest.approx(np.mean(totals), abs=TIGHT)  # the means add up
    trend = [r.cells.loc[r.cells["expert"] == "trend", "fees"].sum() for r in runs.values()]
    assert one.loc[("trend", att.ALL, "fees"), "median"] == pytest.approx(np.median(trend))
    assert one.loc[(att.ALL, "phase0", att.TIME_SHARE), "median"] == pytest.approx(
        np.median([r.time_share["phase0"] for r in runs.values()])
    )  # the books have their own regimes
    view = att.margins_view(table, scale=100.0)
    assert list(view.index[:4]) == [(e, att.ALL) for e in ("trend", "mean_reversion", "breakout", "carry")]
    assert view.index[-1] == (att.ALL, att.ALL) and "time_share" in view and "net_p95" in view
    grid = att.net_grid(table)
    assert grid.loc["carry", "phase3"] == pytest.approx(one.loc[("carry", "phase3", att.NET), "median"])


def test_moe_attribution_over_the_out_of_sample_window(books: dict) -> None:
    from btc_assets.portfolio.tables import compute_portfolio, prepare_inputs

    book = books["seed_00"]
    bars, portfolio = book["bars"], book["portfolio"]
    rng = np.random.default_rng(0)
    signals = pd.DataFrame(np.clip(rng.normal(0, 0.6, (len(bars), 4)), -1, 1), columns=list(EXPERTS))
    inputs = prepare_inputs(bars, book["volatility"], book["probabilities"], signals, portfolio)
    run = compute_portfolio(inputs, portfolio)
    result = att.moe_attribution(run.frame, inputs, portfolio, ["calm", "up", "chop", "down", "crash"])
    start = inputs.first_known
    assert 0 < start < len(bars) and result.years == pytest.approx((len(bars) - start) / HOURS)
    assert_adds_up(run.frame.iloc[start:], result.cells, result.years)
    assert set(result.cells["phase"]) == {"calm", "up", "chop", "down", "crash", att.NO_PHASE}
    assert result.cells["fees"].sum() > 0 and result.cells["basis"].abs().sum() > 0


def test_dagster_asset_and_report(books: dict, tmp_path: Path) -> None:
    """``wfa_attribution`` over the seeds in a warehouse (written here from the synthetic books), its metadata and
    chart, the report's section, and ``moe_portfolio``'s attribution metadata."""
    from btc_assets.evaluation.report import render_report
    from btc_assets.storage import Warehouse

    warehouse = Warehouse(tmp_path / "warehouse")
    first = books["seed_00"]
    warehouse.write(first["bars"], "market_bars")
    names = ["calm", "trend_up", "chop", "trend_down", "crash"]
    warehouse.write(pd.DataFrame({"fold": 0, "phase": range(5), "name": names}), "regime_phases")
    for seed in ("seed_00", "seed_01"):
        warehouse.write(books[seed]["oos"], "wfa_results", seed)
        warehouse.write(books[seed]["folds"], "wfa_folds", seed)
    warehouse.write(first["volatility"], "volatility")
    warehouse.write(first["probabilities"], "regime_probabilities")
    signals = np.clip(np.random.default_rng(0).normal(0, 0.6, (len(first["bars"]), 4)), -1, 1)
    warehouse.write(pd.DataFrame(signals, columns=list(EXPERTS)), "expert_signals")
    defs = definitions(tmp_path, "quick")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            defs.assets, resources=defs.resources, instance=instance, selection=["wfa_attribution", "moe_portfolio"]
        )
    assert result.success
    moe = result.asset_materializations_for_node("moe_portfolio")[0].metadata
    rows = [r.data for r in moe["attribution_pct_per_year"].records]  # table metadata: typed, sortable in the UI
    assert {"carry", "all"} <= {r["expert"] for r in rows} and "trend_down" in {r["phase"] for r in rows}
    assert all(isinstance(r["net"], float) for r in rows if r["net"] is not None)
    grid = moe["attribution_net_by_expert_and_phase_pct_per_year"]
    assert "crash" in {c.name for c in grid.schema.columns}
    table = warehouse.read("wfa_attribution")
    assert set(table["phase"]) >= set(names) and (table["seeds"] == 2).all()
    meta = result.asset_materializations_for_node("wfa_attribution")[0].metadata
    assert meta["seeds"].value == 2 and meta["max_unallocated_per_year"].value < TIGHT
    assert "mean_reversion" in {r.data["expert"] for r in meta["attribution_pct_per_year"].records}
    assert "data:image/png;base64," in meta["attribution_chart"].value
    assert (tmp_path / "reports" / "attribution.png").stat().st_size > 10_000
    # the quick profile's portfolio is not the books' (band, decision interval): the prices and funding the
    # attribution reads do not depend on those, so the seeds still add up
    total = table.query("expert == 'all' and phase == 'all' and component == 'net'")["mean"].iloc[0]
    returns = [books[s]["oos"]["bar_return"].sum() / (len(books[s]["oos"]) / HOURS) for s in ("seed_00", "seed_01")]
    assert total == pytest.approx(np.mean(returns), abs=TIGHT)
    page = render_report(tmp_path / "reports", None, {}, attribution=table).read_text()
    assert "Where the out-of-sample P&amp;L comes from" in page and "P&amp;L attribution per expert" in page
    assert "crash" in page and "time_share" in page
    assert "wfa_attribution" in render_report(tmp_path / "reports", None, {}).read_text()  # listed as missing
    json.dumps(table.to_dict(orient="records"))  # plain values
