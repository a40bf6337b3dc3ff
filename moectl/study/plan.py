"""What the CPU study trains: which presets, how many steps, from what, for each size and plan.

The model, corpus and logging of a study live in presets (`study-cpu`, `study-cpu-tiny`), the
variants in the `cpu-*` presets, so `moectl train --preset study-cpu ...` reproduces any stage
by hand. This module adds only what a preset cannot say: the step counts and learning rates of
the two phases, and the plan, i.e. where the variants start:

- `scratch` (the default): train every variant from random weights in one schedule (no
  pretraining stage, so `scratch_steps` fits the same time budget), MoE experts drawn
  independently (`moe.init: scratch`, the OLMoE setting);
- `upcycle`: pretrain a dense GPT-2, then continue every variant from it (the reference study's
  sparse upcycling; the MoE starts with experts copied from the dense MLP).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from moectl.analysis.gate_null import N_GATES
from moectl.config import SEED_MAX, DataConfig, RunConfig, as_overrides, load_preset, validate
from moectl.study.experiment.configs import ExperimentPlan, plan_experiment
from moectl.study.experiment.spec import (
    ArmSpec,
    ConfigSpec,
    CorpusSpec,
    EvaluationSpec,
    ExperimentSpec,
    Family,
    FamilySpec,
    merged,
)

StudySize = Literal["tiny", "default"]
StudyPlanName = Literal["upcycle", "scratch"]
PLAN_NAMES: tuple[StudyPlanName, ...] = ("upcycle", "scratch")
DEFAULT_PLAN: StudyPlanName = "scratch"
"""The specialization experiment's clearest result (docs/study.md): from scratch, domain routing
emerges with training; upcycled, training reduces what the pretrained representation gave."""
VARIANTS: dict[str, str] = {
    "dense": "cpu-dense",
    "moe": "cpu-moe",
    "no-lb": "cpu-no-lb",
    "top2": "cpu-top2",
}


class StudyPlan(BaseModel):
    """Steps and learning rates of one study size; the rest comes from its preset."""

    preset: str = Field(description="the study preset: corpus, model, logging")
    pretrain_steps: int
    pretrain_lr: float
    variant_steps: int
    variant_lr: float
    scratch_steps: int = Field(description="steps of every variant in the scratch plan")
    scratch_lr: float
    eval_max_blocks: int
    n_permutations: int = 20
    seeds: int = Field(
        3,
        ge=1,
        description="seeds when none are given: the configured train.seed and the next ones. "
        "One seed cannot settle a verdict about the training procedure (docs/study.md: the "
        "seeds disagree), so a study runs three; the tiny size is a smoke test of the "
        "pipeline, one seed",
    )
    workers: int = Field(
        4,
        ge=1,
        description="variants trained at once, one process of one thread each: all four, so "
        "the no-LB variant's early stop on collapse leaves no core idle while top-2 trains on",
    )


PLANS: dict[str, StudyPlan] = {
    "default": StudyPlan(
        preset="study-cpu",
        pretrain_steps=300,
        pretrain_lr=2e-3,
        variant_steps=350,
        variant_lr=1e-3,
        scratch_steps=650,
        scratch_lr=2e-3,
        eval_max_blocks=192,
    ),
    "tiny": StudyPlan(
        preset="study-cpu-tiny",
        pretrain_steps=16,
        pretrain_lr=3e-3,
        variant_steps=40,
        variant_lr=3e-3,
        scratch_steps=48,
        scratch_lr=3e-3,
        eval_max_blocks=24,
        n_permutations=5,
        seeds=1,
    ),
}


def quickstart_experiment(
    size: StudySize,
    plan: StudyPlanName = DEFAULT_PLAN,
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    functional: bool = False,
) -> ExperimentSpec:
    """The quickstart as the fixed experiment `moectl experiment` runs: the study preset's
    corpus; the four variants as arms (each its `cpu-*` preset under the study preset's data,
    model and train sections, the phase's steps and learning rate), no-lb as the collapse
    control; the upcycle plan's dense pretrain, one per seed. `overrides` (`key=value`, as
    `--set`) reach every run after everything else; `seeds` default to `default_seeds`."""
    sizes = PLANS[size]
    study = load_preset(sizes.preset)
    shared = as_overrides({key: study[key] for key in ("data", "model", "train") if key in study})
    extra = list(overrides or [])
    threads = 1 if sizes.workers > 1 else None
    if plan == "upcycle":
        family: Family = "upcycled"
        steps, lr = sizes.variant_steps, sizes.variant_lr
    else:
        family, steps, lr = "scratch", sizes.scratch_steps, sizes.scratch_lr
    phase = [f"train.max_steps={steps}", f"train.lr={lr}", _threads(threads)]
    pretrain = ConfigSpec(
        preset="cpu-dense",
        overrides=[
            *shared,
            f"train.max_steps={sizes.pretrain_steps}",
            f"train.lr={sizes.pretrain_lr}",
            _threads(None),
            *extra,
        ],
    )
    dense = "dense"
    arms = [
        ArmSpec(
            name=variant,
            family=family,
            preset=preset,
            overrides=extra,
            dense=None if variant == dense else dense,
            collapse_control=variant == "no-lb",
        )
        for variant, preset in VARIANTS.items()
    ]
    spec = ExperimentSpec(
        description=f"moectl quickstart ({size}, {plan} plan)",
        corpus=CorpusSpec(prepare=ConfigSpec(preset=sizes.preset)),
        base=ConfigSpec(overrides=[*shared, *phase]),
        pretrain=pretrain if family == "upcycled" else None,
        families={"scratch": FamilySpec(overrides=["moe.init=scratch"])},
        arms=arms,
        seeds=seeds or [0],
        evaluation=EvaluationSpec(
            max_blocks=sizes.eval_max_blocks,
            random_gates=N_GATES,
            n_permutations=sizes.n_permutations,
            functional=functional,
        ),
    )
    if seeds:
        return spec
    return spec.model_copy(update={"seeds": default_seeds(configured_seed_of(spec), sizes.seeds)})


def plan_quickstart(spec: ExperimentSpec) -> ExperimentPlan:
    """The quickstart's runs: the configured seed's keep the plain names (runs/moe), the other
    seeds' are runs/moe-seedN (and runs/pretrain-seedN)."""
    base_seed = configured_seed_of(spec)
    return plan_experiment(
        spec,
        Path("quickstart"),
        names=lambda arm, seed: seed_run_name(arm, seed, base_seed),
        what="invalid quickstart settings",
    )


def plan_configs(
    size: StudySize, plan: StudyPlanName = DEFAULT_PLAN, overrides: list[str] | None = None
) -> tuple[DataConfig, dict[str, RunConfig]]:
    """The corpus config and the run config of every training stage of the configured seed:
    'pretrain' (upcycle plan only) and the variants. `overrides` apply to every stage."""
    seed = configured_seed(size, plan, overrides)
    planned = plan_quickstart(quickstart_experiment(size, plan, overrides, [seed]))
    assert planned.corpus_config is not None
    return planned.corpus_config, {run.arm: run.config for run in planned.runs}


def default_seeds(first: int, count: int) -> list[int]:
    """The seeds of a study given none: the configured `train.seed` (`first`) and the next
    ones, `count` in all (the size's `seeds`); near the largest seed, the ones ending at it."""
    first = min(first, SEED_MAX - count + 1)
    return list(range(first, first + count))


def configured_seed(
    size: StudySize, plan: StudyPlanName = DEFAULT_PLAN, overrides: list[str] | None = None
) -> int:
    """The `train.seed` the study's presets and `overrides` configure."""
    return configured_seed_of(quickstart_experiment(size, plan, overrides, seeds=[0]))


def configured_seed_of(spec: ExperimentSpec) -> int:
    """The `train.seed` of the spec's first arm before any seed is applied."""
    arm = spec.arms[0]
    overrides = [*spec.base.overrides, *arm.overrides]
    raw = merged(ConfigSpec(preset=arm.preset or spec.base.preset, overrides=overrides), "base")
    return validate(RunConfig, raw, "the quickstart's settings").train.seed


def seed_run_name(stage: str, seed: int, base_seed: int) -> str:
    """A stage's run name for one seed: the configured seed keeps the plain name."""
    return stage if seed == base_seed else f"{stage}-seed{seed}"


def _threads(threads: int | None) -> str:
    return f"train.num_threads={json.dumps(threads)}"
