"""The optimiser's parameters: one block per regime phase, and how a full parameter set becomes engine inputs.

Phase k's block (what the study for phase k searches; ``WfaSettings.experts``, ``search_risk_scale`` and
``search_experts`` can narrow it, e.g. for the ablation's Ichimoku-only and gating-only variants, and
:func:`fixed_phase` then says what stays fixed):

* ``gate.<expert>`` for the four experts: raw weights in [0, 1], normalised onto the simplex to give gating row k
  (all zero: equal weights);
* ``risk_scale``: phase k's vol target as a multiple of the portfolio's (``PortfolioSettings.vol_target``);
* the directional experts' parameters for phase k: ``trend.*``, ``mean_reversion.*``, ``breakout.*`` (search
  ranges in ``btc_assets.experts``); with ``search_experts = False`` they stay at the expert classes' defaults
  (``TrendExpert()``, ``MeanReversionExpert()``, ``BreakoutExpert()``) and only the gates and ``risk_scale`` are
  searched.

With ``WfaSettings.search_policy`` every phase's study also searches the rebalance policy, which is global (one
for the whole book): ``policy.band_rel`` in [0, ``max_band_rel``] and ``policy.decision_hours`` in [1,
``max_decision_hours``] (:class:`Policy`); each phase's winner sets it for the phases after it, as for its own
block (the incumbent, trial 0, is the current book). Off (the default), the policy is the
portfolio's (``PortfolioSettings.band_rel`` / ``decision_hours``).

The carry expert is market-neutral and behaves the same in every phase: its parameters are shared (defaults) and
each phase only chooses its carry weight. The engine sees K + 1 columns: column k is phase k's directional mix
m_k(t) = Σ_{e directional} G[k, e] · x_e^k(t) (expert e with phase k's parameters; an abstaining expert counts 0)
and the last column is the carry target; the K × (K + 1) gating matrix has risk_scale_k on its diagonal and
G[k, carry] in its last column. The soft-switched target is then
Σ_k p_k(t) · risk_scale_k · m_k(t) · leverage_t · throttle_t: the mixture of experts of ``btc_assets.portfolio``
with phase-specific expert parameters and vol targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import optuna

from btc_assets import experts
from btc_assets.config import EXPERTS, ExpertSettings, PortfolioSettings, WfaSettings

DIRECTIONAL: tuple[str, ...] = experts.DIRECTIONAL  # each phase has its own parameters for these
EXPERT_KINDS: dict[str, type] = {name: experts.REGISTRY[name] for name in DIRECTIONAL}


@dataclass(frozen=True)
class PhaseParams:
    """One phase's block: its gating row (on the simplex), vol-target multiple and directional expert configs."""

    gating: tuple[float, ...]
    risk_scale: float = 1.0
    trend: experts.TrendExpert = field(default_factory=experts.TrendExpert)
    mean_reversion: experts.MeanReversionExpert = field(default_factory=experts.MeanReversionExpert)
    breakout: experts.BreakoutExpert = field(default_factory=experts.BreakoutExpert)

    def flat(self) -> dict[str, Any]:
        """Flat Optuna-style parameters (raw gate weights = the normalised row)."""
        out: dict[str, Any] = {f"gate.{e}": float(w) for e, w in zip(EXPERTS, self.gating, strict=True)}
        out["risk_scale"] = float(self.risk_scale)
        for name in DIRECTIONAL:
            for key, value in asdict(getattr(self, name)).items():
                out[f"{name}.{key}"] = value
        return out

    @classmethod
    def from_flat(cls, params: Mapping[str, Any]) -> PhaseParams:
        raw = np.array([float(params[f"gate.{e}"]) for e in EXPERTS])
        return cls(
            gating=normalise_row(raw),
            risk_scale=float(params["risk_scale"]),
            **{name: kind.from_params(params, prefix=f"{name}.") for name, kind in EXPERT_KINDS.items()},
        )


def normalise_row(raw: np.ndarray) -> tuple[float, ...]:
    """Raw non-negative weights onto the simplex (all zero: equal weights); a row already on it is kept as is."""
    raw = np.clip(np.asarray(raw, dtype=np.float64), 0.0, None)
    total = raw.sum()
    if abs(total - 1.0) <= 1e-12:
        return tuple(float(v) for v in raw)
    row = raw / total if total > 0 else np.full(raw.shape, 1.0 / raw.size)
    return tuple(float(v) for v in row)


@dataclass(frozen=True)
class Policy:
    """The searched rebalance policy (``PortfolioSettings.band_rel`` / ``decision_hours`` of the engine)."""

    band_rel: float
    decision_hours: int

    def flat(self) -> dict[str, Any]:
        return {"policy.band_rel": float(self.band_rel), "policy.decision_hours": int(self.decision_hours)}

    @classmethod
    def from_flat(cls, params: Mapping[str, Any]) -> Policy:
        return cls(float(params["policy.band_rel"]), int(params["policy.decision_hours"]))


def suggest_phase(trial: Any, settings: WfaSettings, expert_settings: ExpertSettings | None = None) -> dict[str, Any]:
    """Sample phase parameters from an Optuna trial: the searched ones only (:func:`complete_phase` adds the
    fixed rest before :meth:`PhaseParams.from_flat`), and the policy's with ``search_policy``."""
    active = [e for e in EXPERTS if e in settings.experts]
    params: dict[str, Any] = {}
    if settings.search_policy:
        params["policy.band_rel"] = trial.suggest_float("policy.band_rel", 0.0, settings.max_band_rel)
        params["policy.decision_hours"] = trial.suggest_int("policy.decision_hours", 1, settings.max_decision_hours)
    if len(active) > 1:
        params.update({f"gate.{e}": trial.suggest_float(f"gate.{e}", 0.0, 1.0) for e in active})
    if settings.search_risk_scale:
        params["risk_scale"] = trial.suggest_float("risk_scale", settings.min_risk_scale, settings.max_risk_scale)
    for name, kind in EXPERT_KINDS.items():
        if name in _searched_experts(settings):
            config = kind.suggest(trial, prefix=f"{name}.", space=experts.search_space(name, expert_settings))
            params.update({f"{name}.{key}": value for key, value in asdict(config).items()})
    return params


def fixed_phase(settings: WfaSettings, expert_settings: ExpertSettings | None = None) -> dict[str, Any]:
    """The phase parameters the search leaves fixed: weight 0 (and default parameters) for the experts outside
    ``settings.experts``, weight 1 for a sole active expert, ``risk_scale`` 1 when it is not searched, and the
    default parameters (``[experts.defaults]`` over the classes') of every directional expert when
    ``settings.search_experts`` is off."""
    _check_experts(settings)
    active = [e for e in EXPERTS if e in settings.experts]
    fixed: dict[str, Any] = {f"gate.{e}": 0.0 for e in EXPERTS if e not in active}
    if len(active) == 1:
        fixed[f"gate.{active[0]}"] = 1.0
    if not settings.search_risk_scale:
        fixed["risk_scale"] = 1.0
    defaults = experts.configured(expert_settings)
    for name in EXPERT_KINDS:
        if name not in _searched_experts(settings):
            fixed.update({f"{name}.{key}": value for key, value in asdict(getattr(defaults, name)).items()})
    return fixed


def complete_phase(
    searched: Mapping[str, Any], settings: WfaSettings, expert_settings: ExpertSettings | None = None
) -> dict[str, Any]:
    """Searched parameters plus the fixed ones: a full flat block for :meth:`PhaseParams.from_flat`."""
    return {**fixed_phase(settings, expert_settings), **searched}


def with_trial(
    base: StrategyParams,
    k: int,
    searched: Mapping[str, Any],
    settings: WfaSettings,
    expert_settings: ExpertSettings | None = None,
) -> StrategyParams:
    """``base`` with phase k's block (and, with ``search_policy``, the policy) from a trial's searched
    parameters."""
    out = base.with_phase(k, PhaseParams.from_flat(complete_phase(searched, settings, expert_settings)))
    return replace(out, policy=Policy.from_flat(searched)) if settings.search_policy else out


def incumbent_of(
    params: StrategyParams,
    k: int,
    settings: WfaSettings,
    portfolio: PortfolioSettings,
    expert_settings: ExpertSettings | None = None,
) -> dict[str, Any]:
    """The searched parameters of ``params`` for phase k's study (trial 0): its block's searched part and, with
    ``search_policy``, its policy (the portfolio's when it has none yet)."""
    out = searched_part(params.phases[k].flat(), settings, expert_settings)
    if settings.search_policy:
        policy = params.policy or Policy(
            min(portfolio.band_rel, settings.max_band_rel), min(portfolio.decision_hours, settings.max_decision_hours)
        )
        out.update(policy.flat())
    return out


def searched_part(
    flat: Mapping[str, Any], settings: WfaSettings, expert_settings: ExpertSettings | None = None
) -> dict[str, Any]:
    """The searched subset of a full flat block (e.g. the incumbent enqueued as trial 0)."""
    names = phase_distributions(settings, expert_settings)
    return {k: v for k, v in flat.items() if k in names}


def _check_experts(settings: WfaSettings) -> None:
    unknown = set(settings.experts) - set(EXPERTS)
    if unknown or not settings.experts:
        raise ValueError(f"wfa.experts must be a non-empty subset of {', '.join(EXPERTS)}; got {settings.experts}")
    if (
        len(settings.experts) == 1
        and not settings.search_risk_scale
        and not _searched_experts(settings)
        and not settings.search_policy
    ):
        raise ValueError(
            f"nothing to search: a sole expert ({settings.experts[0]}) whose parameters are not "
            "searched (search_experts = false, or the carry expert's shared defaults) and "
            "search_risk_scale = false"
        )


def _searched_experts(settings: WfaSettings) -> list[str]:
    """The directional experts whose parameters the search covers: the active ones, none without
    ``search_experts``."""
    if not settings.search_experts:
        return []
    return [name for name in EXPERT_KINDS if name in settings.experts]


@dataclass(frozen=True)
class StrategyParams:
    """A full parameter set: one block per phase, plus the shared carry expert."""

    phases: tuple[PhaseParams, ...]
    carry: experts.CarryExpert = field(default_factory=experts.CarryExpert)
    policy: Policy | None = None  # the searched rebalance policy; None: the portfolio settings'

    @classmethod
    def default(
        cls,
        portfolio: PortfolioSettings,
        settings: WfaSettings | None = None,
        expert_settings: ExpertSettings | None = None,
    ) -> StrategyParams:
        """Default experts (``[experts.defaults]`` over the classes') in every phase, the profile's gating prior,
        risk scale 1; with ``settings``, projected onto its search space (the fixed parameters of
        :func:`fixed_phase` applied)."""
        d = experts.configured(expert_settings)
        params = cls(
            tuple(
                PhaseParams(tuple(row), trend=d.trend, mean_reversion=d.mean_reversion, breakout=d.breakout)
                for row in portfolio.gating
            ),
            d.carry,
        )
        if settings is None:
            return params
        return cls(
            tuple(
                PhaseParams.from_flat(
                    complete_phase(searched_part(p.flat(), settings, expert_settings), settings, expert_settings)
                )
                for p in params.phases
            ),
            d.carry,
        )

    def with_phase(self, k: int, phase: PhaseParams) -> StrategyParams:
        phases = list(self.phases)
        phases[k] = phase
        return StrategyParams(tuple(phases), self.carry, self.policy)

    def gating_matrix(self) -> np.ndarray:
        """K × (K + 1): risk_scale_k on the diagonal (phase k's mix column), G[k, carry] in the last column."""
        k_phases = len(self.phases)
        g = np.zeros((k_phases, k_phases + 1))
        for k, phase in enumerate(self.phases):
            g[k, k] = phase.risk_scale
            g[k, -1] = phase.gating[EXPERTS.index("carry")]
        return g

    def to_json(self) -> dict[str, Any]:
        out = {"phases": [p.flat() for p in self.phases], "carry": asdict(self.carry)}
        if self.policy is not None:
            out["policy"] = self.policy.flat()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StrategyParams:
        policy = Policy.from_flat(data["policy"]) if "policy" in data else None
        return cls(
            tuple(PhaseParams.from_flat(p) for p in data["phases"]), experts.CarryExpert(**data["carry"]), policy
        )


def column_names(n_phases: int) -> list[str]:
    """Engine column names: ``phase<k>`` (phase k's directional mix), then ``carry``."""
    return [f"phase{k}" for k in range(n_phases)] + ["carry"]


def phase_distributions(
    settings: WfaSettings, expert_settings: ExpertSettings | None = None
) -> dict[str, optuna.distributions.BaseDistribution]:
    """The search space of one phase block, as Optuna distributions (same names as :func:`suggest_phase`)."""
    _check_experts(settings)
    active = [e for e in EXPERTS if e in settings.experts]
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    if settings.search_policy:
        dists["policy.band_rel"] = optuna.distributions.FloatDistribution(0.0, settings.max_band_rel)
        dists["policy.decision_hours"] = optuna.distributions.IntDistribution(1, settings.max_decision_hours)
    if len(active) > 1:
        dists.update({f"gate.{e}": optuna.distributions.FloatDistribution(0.0, 1.0) for e in active})
    if settings.search_risk_scale:
        dists["risk_scale"] = optuna.distributions.FloatDistribution(settings.min_risk_scale, settings.max_risk_scale)
    for name in EXPERT_KINDS:
        if name not in _searched_experts(settings):
            continue
        for key, (low, high, what) in experts.search_space(name, expert_settings).items():
            dists[f"{name}.{key}"] = (
                optuna.distributions.IntDistribution(int(low), int(high))
                if what == "int"
                else optuna.distributions.FloatDistribution(float(low), float(high))
                if what == "float"
                else optuna.distributions.CategoricalDistribution([False, True])
            )
    return dists
