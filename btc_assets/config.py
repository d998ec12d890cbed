"""Where the project keeps its state, and the run profiles.

``BTC_ASSETS_HOME`` (default ``./data``) holds everything that must survive a restart:

* ``raw/``         inputs (downloads are cached here; user files are read where they are and never modified)
* ``warehouse/``   materialisations, one Parquet file per asset and partition, plus ``catalog.duckdb``
* ``checkpoints/`` resumable optimisation state
* ``fits/``        fitted GARCH and HMM refits keyed by their inputs (``btc_assets.fits``): new bars refit only what
                   they add
* ``reports/``     plots and the HTML report
* ``dagster/``     the Dagster instance (``DAGSTER_HOME``): run history, materialisations, staleness
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from btc_assets.folds import FoldSchedule

# metadata of a settings field that changes no result (how it is computed, not what it is): left out of the
# settings hash of the version mechanism (btc_assets.versions.settings_hash)
NO_RESULT = {"result": False}

DEFAULT_HOME = "./data"


def default_jobs() -> int:
    """Processes to run at once by default (seeds, ablation runs): the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class Paths:
    """The folders under one ``BTC_ASSETS_HOME``."""

    home: Path

    @classmethod
    def at(cls, home: str | os.PathLike[str]) -> Paths:
        return cls(Path(home).expanduser().resolve())

    @property
    def raw(self) -> Path:
        return self.home / "raw"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    @property
    def checkpoints(self) -> Path:
        return self.home / "checkpoints"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def fits(self) -> Path:
        return self.home / "fits"

    @property
    def lines(self) -> Path:
        """Rolling lines shared by the seed processes, per data version (:mod:`btc_assets.line_store`)."""
        return self.home / "lines"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def ensure(self) -> Paths:
        for folder in (self.raw, self.warehouse, self.checkpoints, self.reports, self.dagster_home):
            folder.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class VolatilitySettings:
    """Realized windows and the GARCH specification (see ``btc_assets.volatility``)."""

    realized_window: int = 24
    refit_every: str = "MS"
    train_window: int | None = 17_520
    vol: str = "GARCH"
    dist: str = "t"
    seasonal: bool = True
    horizon: int = 24  # hours: the mean variance forecast over the next ``horizon`` hours (``sigma_horizon``)


@dataclass(frozen=True)
class RegimeSettings:
    """Student-t HMM settings (see ``btc_assets.regimes``)."""

    n_states: int = 5
    covariance_type: str = "full"
    n_restarts: int = 4
    n_iter: int = 100
    tol: float = 2e-5  # EM stops when the log-likelihood gains less than this per observation
    sticky: float = 200.0  # extra Dirichlet prior mass on staying in a state (transmat_prior diagonal)
    lfp_window: int = 256
    lfp_min_period: int = 48
    seed: int = 12345
    emission: str = "student_t"  # student_t | gaussian (the original design; for the ablation)


SAMPLERS = ("tpe", "cmaes", "random")
N_SEEDS = 30  # seed partitions seed_00 … seed_29; a profile's ``n_seeds`` says how many ``run`` launches


def seed_key(seed: int) -> str:
    return f"seed_{seed:02d}"


def seed_from_key(key: str) -> int:
    if not key.startswith("seed_") or not key[5:].isdigit():
        raise ValueError(f"not a seed partition key: {key!r} (expected seed_00 … seed_{N_SEEDS - 1:02d})")
    return int(key[5:])


EXPERTS: tuple[str, ...] = ("trend", "mean_reversion", "breakout", "carry")


def default_gating() -> tuple[tuple[float, ...], ...]:
    """Starting gating matrix G (phases calm, trend_up, chop, trend_down, crash × experts trend, mean_reversion,
    breakout, carry); rows on the simplex. A prior for the optimiser, not a fitted result."""
    return (
        (0.2, 0.3, 0.1, 0.4),
        (0.6, 0.0, 0.3, 0.1),
        (0.0, 0.7, 0.0, 0.3),
        (0.6, 0.0, 0.3, 0.1),
        (0.3, 0.0, 0.5, 0.2),
    )


VOL_FORECASTS = ("horizon", "ewma", "next_hour")


@dataclass(frozen=True)
class PortfolioSettings:
    """Mixture-of-experts portfolio, its rebalance policy and its costs (see ``btc_assets.portfolio``). Costs are
    always on; each leg pays its own venue."""

    gating: tuple[tuple[float, ...], ...] = field(default_factory=default_gating)
    hard_switch: bool = False
    vol_targeting: bool = True
    vol_target: float = 0.5  # annualised
    # the volatility that sets the leverage: "horizon" (GARCH mean variance over the next VolatilitySettings.horizon
    # hours, the hour-of-day seasonality averaged out), "ewma" (one-day-half-life EWMA of the next-hour forecast's
    # variance) or "next_hour" (the next hour's forecast with its seasonal factor: swings every day)
    vol_forecast: str = "ewma"
    lev_max: float = 2.0
    dd_max: float = 0.25
    k_min: float = 0.25
    rearm: float = 0.5
    # rebalance policy: trade when the target moves by more than max(band, band_rel · |held|) (equity units), at
    # most once every decision_hours unless the target is flat or the drawdown throttle cut risk since the fill
    # (defaults measured on the real data, default experts: 30× turnover and 2.5 %/yr costs; see the README)
    band: float = 0.2
    band_rel: float = 0.5
    decision_hours: int = 48
    perp_fee_bps: float = 5.0  # Binance USDT-M futures taker (VIP 0)
    spot_fee_bps: float = 10.0  # Binance spot taker (VIP 0)
    maker: bool = False  # limit orders: pay the maker fees below instead (fills assumed; slippage still charged)
    perp_maker_bps: float = 2.0  # Binance USDT-M futures maker (VIP 0)
    spot_maker_bps: float = 10.0  # Binance spot maker (VIP 0)
    borrow_rate: float = 0.05  # annual margin interest on a short spot leg (an assumption; see the README)
    slip_bps: float = 2.0
    slip_vol_coef: float = 0.0  # extra slippage bps per unit of the next hour's annualised volatility
    ruin_floor: float = 0.5
    assumed_funding: float = 0.0001  # per 8 h, charged where the funding history is unknown (before it starts)

    @property
    def fees_bps(self) -> tuple[float, float]:
        """(perp, spot) fee per unit of notional traded, in bps: taker, or maker with ``maker``."""
        if self.maker:
            return self.perp_maker_bps, self.spot_maker_bps
        return self.perp_fee_bps, self.spot_fee_bps


@dataclass(frozen=True)
class WfaSettings:
    """Walk-forward optimisation (see ``btc_assets.wfa``).

    Per fold, the K phases are optimised in turn, ``n_trials`` trials each; the objective is computed on the
    training window minus its last ``FoldSchedule.validation`` span (the inner validation slice, out of sample for
    the regime model too), and the phase's winner is the best validation score among the ``select_top`` best
    training scores.
    """

    n_trials: int = 300  # per (fold, phase)
    sampler: str = "tpe"  # one of SAMPLERS: tpe (multivariate) | cmaes | random
    n_startup_trials: int = 20  # random trials before the model-based sampler takes over
    max_folds: int | None = None  # the last N folds only (None: all)
    select_top: int = 5
    # per unit of annual turnover (equity traded per year). Costs are already in the returns; this counts them about
    # twice more, because a cost is certain while a fitted gross return is about half noise (walk-forward PBO ≈ ½):
    # one unit of annual turnover costs ~7 bps of fees and slippage, 0.0035–0.007 of Sharpe at the optimised books'
    # 10–20 %/yr volatility (0.001 before: the optimised seeds then turned over up to 61× a year at up to 5.7 %/yr
    # of costs; probes of 0.005 and 0.01 on seeds 0–3 are in the README)
    turnover_penalty: float = 0.005
    drawdown_penalty: float = 1.0  # per unit of max drawdown
    # The search's cost budget: fees + slippage + borrowing per year, as a fraction of equity, on the piece scored.
    # The churn target is < 3 %/yr of costs out of sample *including* the funding a perp long pays (0.5–1 %/yr at
    # the optimised books' exposure, which no rebalance policy removes), so trading costs get 2 %/yr. Beyond it the
    # score falls by cost_budget_penalty per unit (100: 1 Sharpe per 1 %/yr), so an over-budget book wins only
    # when every candidate is over budget. inf: no budget.
    cost_budget: float = 0.02
    cost_budget_penalty: float = 100.0
    min_risk_scale: float = 0.25  # per-phase vol-target multiplier range
    max_risk_scale: float = 2.0
    # Where and how a seed runs, never what it finds (NO_RESULT: outside the version hash): the Optuna storage URL
    # (postgresql+psycopg2://…; empty: a journal file per study under checkpoints/), several processes/machines on
    # one seed through it (btc_assets.wfa.distributed), seconds between progress records (also at every phase end)
    storage: str = field(default="", metadata=NO_RESULT)
    shared: bool = field(default=False, metadata=NO_RESULT)
    progress_every: float = field(default=600.0, metadata=NO_RESULT)
    pbo_trials: int = 50  # per (fold, phase): the best trials (by fit) whose weekly returns feed the CSCV PBO
    pbo_blocks: int = 16
    experts: tuple[str, ...] = EXPERTS  # the experts a phase may weight (others get weight 0, default parameters)
    search_risk_scale: bool = True  # search each phase's vol-target multiple (else fixed at 1)
    search_policy: bool = False  # also search the rebalance policy (band_rel, decision_hours), global to the book
    max_band_rel: float = 1.0
    max_decision_hours: int = 96
    search_experts: bool = True  # search the directional experts' parameters per phase (else the experts' defaults)
    # the search space's rolling lines memory-mapped from files every seed process shares (<home>/lines, one set per
    # data version: ~1.3 GB on the real history), instead of kept in each process; results are the same either way
    shared_lines: bool = field(default=False, metadata=NO_RESULT)
    # with shared_lines: MB of those lines a seed process keeps mapped (btc_assets.line_store), so its resident set
    # stays within its own memory + this (for a scheduler that limits each process's RSS). The machine holds the
    # lines once either way, in the page cache; a bound costs ~16 % more CPU in the seeds (a released line is mapped
    # again when read again). 0: no bound (a seed's RSS then counts every line it read, ~1.3 GB on the real data)
    lines_resident_mb: int = field(default=0, metadata=NO_RESULT)


# the chain original → … → mixture_soft (the full system), then the side variants, each one step off mixture_soft
ABLATION_VARIANTS: tuple[str, ...] = (
    "original",
    "vol_targeting",
    "student_t_hmm",
    "mixture_soft",
    "hard_switch",
    "gating_only",
    "mixture_soft_tpe",
)


@dataclass(frozen=True)
class AblationSettings:
    """The ablation (see ``btc_assets.evaluation.ablation``): which variants, on which seeds, and the confidence
    level of the intervals across seeds."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    variants: tuple[str, ...] = ABLATION_VARIANTS
    confidence: float = 0.95


@dataclass(frozen=True)
class PositionSettings:
    """The position to hold now (``latest_position``): the capital its BTC amounts are for, in USDT."""

    capital: float = 100_000.0


@dataclass(frozen=True)
class ExpertSettings:
    """The experts' parameters over their classes' own (``btc_assets.experts``), from the settings file::

        [experts.defaults]
        "trend.tenkan" = 12          # expert_signals, the optimiser's starting point, the unsearched experts
        [experts.ranges]
        "breakout.window" = [48, 336]  # the optimiser's range of an int or float parameter

    ``defaults``: ("<expert>.<parameter>", value) pairs; ``ranges``: ("<expert>.<parameter>", low, high). Names and
    types are checked against the expert classes (``btc_assets.experts.check_settings``)."""

    defaults: tuple[tuple[str, object], ...] = ()
    ranges: tuple[tuple[str, float, float], ...] = ()


@dataclass(frozen=True)
class Profile:
    """Size and settings of a study; each stage reads its own section."""

    name: str
    description: str
    n_seeds: int
    schedule: FoldSchedule = field(default_factory=FoldSchedule)
    volatility: VolatilitySettings = field(default_factory=VolatilitySettings)
    regimes: RegimeSettings = field(default_factory=RegimeSettings)
    portfolio: PortfolioSettings = field(default_factory=PortfolioSettings)
    wfa: WfaSettings = field(default_factory=WfaSettings)
    ablation: AblationSettings = field(default_factory=AblationSettings)
    experts: ExpertSettings = field(default_factory=ExpertSettings)
    position: PositionSettings = field(default_factory=PositionSettings)


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick",
        "whole graph end to end in ~45 s on 2 cores (~2 min on a fresh checkout: numba compiles), tiny settings",
        n_seeds=2,
        regimes=RegimeSettings(n_restarts=2, n_iter=40),
        wfa=WfaSettings(n_trials=6, n_startup_trials=3, max_folds=2, select_top=2),
        ablation=AblationSettings(seeds=(0, 1)),
    ),
    "integration": Profile(
        "integration",
        "real data, all stages, several seeds, under 10 minutes",
        n_seeds=3,
        wfa=WfaSettings(n_trials=24, n_startup_trials=8, max_folds=4, select_top=3),
        ablation=AblationSettings(seeds=(0, 1, 2)),
    ),
    # random search: the only sampler within the speed budget, and none found better winners (see the README)
    "full": Profile(
        "full",
        "30 seeds, K=5, 300 trials per phase, all folds, random search",
        n_seeds=30,
        wfa=WfaSettings(sampler="random", shared_lines=True),
    ),
}
DEFAULT_PROFILE = "quick"


SECTIONS = ("schedule", "volatility", "regimes", "portfolio", "wfa", "ablation", "experts", "position")


def _coerce(value: object, default: object, where: str) -> object:
    """A TOML value as the type of the setting's default (lists become tuples, ints are accepted as floats)."""
    if isinstance(default, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(default, bool):
            raise ValueError(f"{where}: expected {type(default).__name__}, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int | float):
        return float(value)
    if isinstance(default, tuple) and isinstance(value, list):
        if not default:
            return tuple(value)
        return tuple(_coerce(v, default[0], where) for v in value)
    if default is None or isinstance(value, type(default)):
        return value
    raise ValueError(f"{where}: expected {type(default).__name__}, got {value!r}")


def _flatten(table: dict[str, object], prefix: str = "") -> dict[str, object]:
    """``{"trend": {"tenkan": 12}}`` (TOML's dotted keys) and ``{"trend.tenkan": 12}`` alike → dotted keys."""
    out: dict[str, object] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _expert_overrides(current: ExpertSettings, values: dict[str, object], source: str) -> ExpertSettings:
    """``[experts.defaults]`` / ``[experts.ranges]`` over ``current`` (the parameter names are checked against
    the expert classes by ``btc_assets.experts.check_settings``, which :func:`btc_assets.settings.resolve_settings`
    calls)."""
    if set(values) - {"defaults", "ranges"} or not all(isinstance(v, dict) for v in values.values()):
        raise ValueError(f"{source}: [experts] takes the tables [experts.defaults] and [experts.ranges] only")
    defaults = dict(current.defaults)
    for key, value in _flatten(values.get("defaults", {})).items():  # type: ignore[arg-type]
        if not isinstance(value, int | float | bool):
            raise ValueError(f"{source}: [experts.defaults] {key}: expected a number or a boolean, got {value!r}")
        defaults[key] = value
    ranges = {key: (low, high) for key, low, high in current.ranges}
    for key, value in _flatten(values.get("ranges", {})).items():  # type: ignore[arg-type]
        pair = value if isinstance(value, list) else []
        if (
            len(pair) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in pair)
            or pair[0] >= pair[1]
        ):
            raise ValueError(f"{source}: [experts.ranges] {key}: expected [low, high] with low < high, got {value!r}")
        ranges[key] = (float(pair[0]), float(pair[1]))
    return ExpertSettings(
        tuple(sorted(defaults.items())), tuple((key, low, high) for key, (low, high) in sorted(ranges.items()))
    )


def apply_overrides(profile: Profile, overrides: dict[str, object], source: str) -> Profile:
    """``profile`` with the settings in ``overrides`` (``{section: {field: value}}``) replaced; an unknown section or
    field, or a value of the wrong type, is an error naming ``source`` and the key."""
    changes: dict[str, object] = {}
    for section, values in overrides.items():
        if section not in SECTIONS or not isinstance(values, dict):
            raise ValueError(f"{source}: unknown section [{section}] (sections: {', '.join(SECTIONS)})")
        current = getattr(profile, section)
        if section == "experts":
            changes[section] = _expert_overrides(current, values, source)
            continue
        fields = asdict(current)
        updates = {}
        for key, value in values.items():
            if key not in fields:
                raise ValueError(f"{source}: [{section}] has no setting {key!r} (settings: {', '.join(fields)})")
            updates[key] = _coerce(value, getattr(current, key), f"{source}: [{section}] {key}")
        changes[section] = replace(current, **updates)
    return replace(profile, **changes)


def get_profile(name: str = DEFAULT_PROFILE) -> Profile:
    """The named profile as the code defines it (no settings file, no environment: those are applied once, by
    :func:`btc_assets.settings.resolve_settings`)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None


def read_settings_file(profile: Profile, path: Path) -> Profile:
    """``profile`` with the settings of the TOML file ``path`` applied (``[portfolio] band = 0.3``); an unknown
    section or setting, or a value of the wrong type, is an error naming the file and the key."""
    with open(path, "rb") as handle:
        try:
            overrides = tomllib.load(handle)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML: {err}") from None
    return apply_overrides(profile, overrides, str(path))


def with_sampler(profile: Profile, sampler: str, source: str) -> Profile:
    """``profile`` with the walk-forward sampler replaced (``source`` names where the choice came from)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r} ({source}); choose one of {', '.join(SAMPLERS)}")
    return replace(profile, wfa=replace(profile.wfa, sampler=sampler))
