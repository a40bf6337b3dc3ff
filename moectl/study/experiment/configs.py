"""An experiment file resolved into the runs it trains: every arm's RunConfig per seed, the
shared pretrains, the corpus. Every problem is found here, before anything is written.

An arm's config is the base (preset < base overrides; an arm's own preset replaces the base's
under the same overrides), named `<arm>-seed<N>`, then its family's overrides, its own, and
`train.seed=N`; with a `prepare` corpus its data section is the corpus config (what the trainer
records anyway). A collapse-control arm then drops every balancing (`without_balancing`). A
pretrain is `pretrain-seed<N>` with `train.seed=N`. The quickstart plans its fixed experiment
here too, with its own run names (study/plan.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moectl.config import DataConfig, RunConfig, deep_merge, validate
from moectl.errors import ConfigError
from moectl.study.experiment.spec import (
    PRETRAIN,
    ArmSpec,
    ConfigSpec,
    ExperimentSpec,
    FamilySpec,
    apply_overrides,
    merged,
)

RunNames = Callable[[str, int], str]
"""(arm or 'pretrain', seed) -> the run's name and folder under runs/."""


def run_name(arm: str, seed: int) -> str:
    """The run of `arm` (or the pretrain) with `seed`: its folder under runs/ and its name."""
    return f"{arm}-seed{seed}"


@dataclass(frozen=True)
class PlannedRun:
    """One run the experiment trains: `init_from` names the run whose best/ model it continues."""

    name: str
    arm: str
    seed: int
    config: RunConfig
    init_from: str | None = None


@dataclass(frozen=True)
class ExperimentPlan:
    """Every run of the experiment (pretrains first), its corpus and its arms in file order."""

    spec: ExperimentSpec
    seeds: list[int]
    corpus_path: Path | None
    corpus_config: DataConfig | None
    pretrains: list[PlannedRun]
    arms: list[PlannedRun]

    @property
    def runs(self) -> list[PlannedRun]:
        return [*self.pretrains, *self.arms]

    def arm_runs(self, arm: str) -> list[PlannedRun]:
        """The runs of `arm`, in seed order."""
        return [run for run in self.arms if run.arm == arm]

    def router_tests(self) -> int:
        """The family of router claims per seed: MoE layers summed over the MoE arms."""
        first = [self.arm_runs(arm.name)[0].config for arm in self.spec.arms]
        return sum(len(c.moe.resolve_layers(c.model.n_layer)) for c in first if c.moe.enabled)


def plan_experiment(
    spec: ExperimentSpec,
    file: Path,
    seeds: list[int] | None = None,
    names: RunNames = run_name,
    what: str | None = None,
) -> ExperimentPlan:
    """Resolve every run of `spec` (from the file `file`; `seeds` replaces the file's; `names`
    names each run); a ConfigError (`what`, by default naming the file) naming each key that
    does not resolve, and each control that is not one."""
    seeds = list(seeds or spec.seeds)
    what = what or f"invalid experiment file {file}"
    problems: list[tuple[str, str]] = []
    corpus_config = corpus_path = None
    if spec.corpus.path is not None:
        corpus_path = Path(file).parent / spec.corpus.path
    else:
        corpus_config = _resolved(problems, "corpus.prepare", lambda: _corpus_config(spec))
    base = _resolved(problems, "base", lambda: merged(spec.base, "base"))
    pretrain = None
    if spec.pretrain is not None:
        pretrain = _resolved(problems, "pretrain", lambda: merged(spec.pretrain, "pretrain"))
    if problems or base is None:
        raise ConfigError(what, problems)
    data = {"data": corpus_config.model_dump(mode="json")} if corpus_config else {}
    pretrain_seeds = [spec.pretrain_seed] if spec.pretrain_seed is not None else seeds
    pretrains = []
    if pretrain is not None and any(arm.family == "upcycled" for arm in spec.arms):
        for seed in pretrain_seeds:
            raw = deep_merge(pretrain, {**data, "name": names(PRETRAIN, seed)})
            raw = deep_merge(raw, {"train": {"seed": seed}})
            config = _validated(problems, raw, "pretrain", f"{what}: pretrain")
            if config is not None:
                pretrains.append(PlannedRun(names(PRETRAIN, seed), PRETRAIN, seed, config))
    arms = []
    for i, arm in enumerate(spec.arms):
        family = spec.families.get(arm.family, FamilySpec())
        arm_base = base
        if arm.preset is not None:
            own = ConfigSpec(preset=arm.preset, overrides=spec.base.overrides)
            arm_base = _resolved(
                problems, f"arms.{i}", lambda own=own, i=i: merged(own, f"arms.{i}")
            )
            if arm_base is None:
                continue
        for seed in seeds:
            name = names(arm.name, seed)
            config = arm_config(arm_base, data, arm, family, seed, name, i, problems)
            if config is None:
                break
            start = spec.pretrain_seed if spec.pretrain_seed is not None else seed
            init_from = names(PRETRAIN, start) if arm.family == "upcycled" else None
            arms.append(PlannedRun(config.name, arm.name, seed, config, init_from))
    if problems:
        raise ConfigError(what, problems)
    plan = ExperimentPlan(spec, seeds, corpus_path, corpus_config, pretrains, arms)
    problems = control_problems(plan)
    if problems:
        raise ConfigError(what, problems)
    return plan


def arm_config(
    base: dict[str, Any],
    data: dict[str, Any],
    arm: ArmSpec,
    family: FamilySpec,
    seed: int,
    name: str,
    index: int,
    problems: list[tuple[str, str]],
) -> RunConfig | None:
    """One arm's config for one seed, named `name`, or None with its problems added (keys
    under arms.N)."""
    key = f"arms.{index}"
    raw = deep_merge(base, {**data, "name": name})
    raw = apply_overrides(raw, family.overrides, f"families.{arm.family}.overrides", problems)
    raw = apply_overrides(raw, arm.overrides, f"{key}.overrides", problems)
    raw = deep_merge(raw, {"train": {"seed": seed}})
    config = _validated(problems, raw, f"{key} ({arm.name})", f"arm {arm.name}")
    if config is None or not arm.collapse_control:
        return config
    return without_balancing(config)


def without_balancing(config: RunConfig) -> RunConfig:
    """The collapse control whatever the overrides say: no balancing loss, no router noise
    and, where the scheme balances without a loss (`bias`), no scheme at all, so an experiment
    of the bias scheme compares it against no balancing."""
    from moectl.model.balance import SCHEMES

    moe: dict[str, Any] = {"lb_coef": 0.0, "noise_std": 0.0}
    if not SCHEMES[config.moe.balance].adds_loss:
        moe["balance"] = "none"
    raw = deep_merge(config.model_dump(mode="json"), {"moe": moe})
    return validate(RunConfig, raw, f"run '{config.name}'")


def control_problems(plan: ExperimentPlan) -> list[tuple[str, str]]:
    """A dense control must be dense, a frozen-router control an MoE whose router does not
    learn, and every MoE arm needs its matched dense arm (its loss is judged against it)."""
    configs = {arm.name: plan.arm_runs(arm.name)[0].config for arm in plan.spec.arms}
    problems = []
    for i, arm in enumerate(plan.spec.arms):
        moe = configs[arm.name].moe
        if moe.enabled and arm.dense is None:
            problems.append((f"arms.{i}.dense", "an MoE arm needs its matched dense arm"))
        if arm.dense is not None and configs[arm.dense].moe.enabled:
            problems.append((f"arms.{i}.dense", f"'{arm.dense}' is an MoE arm, not dense"))
        if not moe.enabled and arm.dense is not None:
            problems.append((f"arms.{i}.dense", "a dense arm is a control, it needs none"))
        frozen = configs.get(arm.frozen_router or "")
        if frozen is not None and not (frozen.moe.enabled and frozen.moe.router_lr_scale == 0):
            problems.append(
                (
                    f"arms.{i}.frozen_router",
                    f"'{arm.frozen_router}' must be an MoE arm with moe.router_lr_scale=0",
                )
            )
    return problems


def _corpus_config(spec: ExperimentSpec) -> DataConfig:
    raw = merged(spec.corpus.prepare, "corpus.prepare", section="data")  # type: ignore[arg-type]
    return validate(DataConfig, raw, "corpus.prepare")


def _resolved(problems: list[tuple[str, str]], key: str, make: Any) -> Any:
    """`make()`, or None with its ConfigError's problems added (each under `key`)."""
    try:
        return make()
    except ConfigError as error:
        found = error.problems or [(key, error.message)]
        problems += [(p if p.startswith(key) else f"{key}: {p}", m) for p, m in found]
        return None


def _validated(
    problems: list[tuple[str, str]], raw: dict[str, Any], key: str, what: str
) -> RunConfig | None:
    return _resolved(problems, key, lambda: validate(RunConfig, raw, what))
