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

from typing import Any, Literal

from pydantic import BaseModel, Field

from moectl.config import DataConfig, RunConfig, deep_merge, load_preset, parse_override, validate

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
    ),
}


def plan_configs(
    size: StudySize, plan: StudyPlanName = DEFAULT_PLAN, overrides: list[str] | None = None
) -> tuple[DataConfig, dict[str, RunConfig]]:
    """The corpus config and the run config of every training stage: 'pretrain' (upcycle plan
    only) and the variants. `overrides` (`key=value`, as `--set`) apply to every stage."""
    sizes = PLANS[size]
    study = load_preset(sizes.preset)
    data = validate(DataConfig, study["data"], "study data")
    extra: dict[str, Any] = {}
    for text in overrides or []:
        extra = deep_merge(extra, parse_override(text))
    threads = 1 if sizes.workers > 1 else None
    runs: dict[str, RunConfig] = {}
    if plan == "upcycle":
        runs["pretrain"] = _run_config(
            "cpu-dense", study, extra, "pretrain", sizes.pretrain_steps, sizes.pretrain_lr, None
        )
        steps, lr = sizes.variant_steps, sizes.variant_lr
    else:
        steps, lr = sizes.scratch_steps, sizes.scratch_lr
        extra = deep_merge({"moe": {"init": "scratch"}}, extra)
    for variant, preset in VARIANTS.items():
        runs[variant] = _run_config(preset, study, extra, variant, steps, lr, threads)
    runs["no-lb"] = without_balancing(runs["no-lb"])
    return data, runs


def without_balancing(config: RunConfig) -> RunConfig:
    """The no-LB variant as the collapse control whatever `--set` says: no balancing loss, no
    router noise and, where the scheme balances without a loss (`bias`), no scheme at all, so
    `--set moe.balance=bias` compares the bias scheme against no balancing."""
    from moectl.model.balance import SCHEMES

    moe: dict[str, Any] = {"lb_coef": 0.0, "noise_std": 0.0}
    if not SCHEMES[config.moe.balance].adds_loss:
        moe["balance"] = "none"
    raw = deep_merge(config.model_dump(mode="json"), {"moe": moe})
    return validate(RunConfig, raw, "study run 'no-lb'")


def _run_config(
    preset: str,
    study: dict[str, Any],
    extra: dict[str, Any],
    name: str,
    steps: int,
    lr: float,
    threads: int | None,
) -> RunConfig:
    shared = {key: study[key] for key in ("data", "model", "train") if key in study}
    raw = deep_merge(load_preset(preset), shared)
    train = {"max_steps": steps, "lr": lr, "num_threads": threads}
    raw = deep_merge(raw, {"name": name, "train": train})
    return validate(RunConfig, deep_merge(raw, extra), f"study run '{name}'")
