"""What the CPU study trains: corpus size, model size, steps and learning rates per size."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from moectl.config import DataConfig, RunConfig, deep_merge, load_preset, validate

StudySize = Literal["tiny", "default"]
VARIANTS: dict[str, str] = {
    "dense": "cpu-dense",
    "moe": "cpu-moe",
    "no-lb": "cpu-no-lb",
    "top2": "cpu-top2",
}


class StudyPlan(BaseModel):
    """Sizes of one study: corpus, model, step counts and learning rates."""

    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any] = Field(description="train settings shared by every stage")
    moe: dict[str, Any] = Field(
        default_factory=dict, description="MoE settings over the cpu-* presets' (layers, experts)"
    )
    pretrain_steps: int
    pretrain_lr: float
    variant_steps: int
    variant_lr: float
    eval_max_blocks: int
    n_permutations: int = 20
    workers: int = Field(2, ge=1, description="variants trained at once, one process each")


PLANS: dict[str, StudyPlan] = {
    "default": StudyPlan(
        data={"size_mb": 1.0, "block_size": 128, "tokenizer": "bpe:4096"},
        model={"n_layer": 4, "n_embd": 128, "n_head": 4},
        train={
            "batch_size": 16,
            "eval_every": 50,
            "eval_max_blocks": 96,
            "save_every": 50,
            "router_log_every": 10,
            "log_every": 10,
        },
        pretrain_steps=300,
        pretrain_lr=2e-3,
        variant_steps=350,
        variant_lr=1e-3,
        eval_max_blocks=192,
    ),
    "tiny": StudyPlan(
        data={"size_mb": 0.03, "block_size": 32, "tokenizer": "bpe:384"},
        model={"n_layer": 2, "n_embd": 32, "n_head": 2},
        train={
            "batch_size": 8,
            "eval_every": 10,
            "eval_max_blocks": 12,
            "save_every": 10,
            "router_log_every": 2,
            "log_every": 2,
        },
        pretrain_steps=16,
        pretrain_lr=3e-3,
        variant_steps=40,
        variant_lr=3e-3,
        eval_max_blocks=24,
        n_permutations=5,
    ),
}


def plan_configs(size: StudySize) -> tuple[DataConfig, dict[str, RunConfig]]:
    """The corpus config and the run config of every training stage ('pretrain' + variants)."""
    plan = PLANS[size]
    data = validate(DataConfig, deep_merge(load_preset("cpu")["data"], plan.data), "study data")
    shared = {
        "data": data.model_dump(mode="json"),
        "model": plan.model,
        "train": plan.train,
        "moe": plan.moe,
    }
    runs = {
        "pretrain": _run_config(
            "cpu-dense",
            shared,
            name="pretrain",
            steps=plan.pretrain_steps,
            lr=plan.pretrain_lr,
            threads=None,
        )
    }
    for variant, preset in VARIANTS.items():
        runs[variant] = _run_config(
            preset,
            shared,
            name=variant,
            steps=plan.variant_steps,
            lr=plan.variant_lr,
            threads=1 if plan.workers > 1 else None,
        )
    return data, runs


def _run_config(
    preset: str, shared: dict[str, Any], *, name: str, steps: int, lr: float, threads: int | None
) -> RunConfig:
    raw = deep_merge(load_preset(preset), shared)
    train = {"max_steps": steps, "lr": lr, "num_threads": threads}
    raw = deep_merge(raw, {"name": name, "train": train})
    return validate(RunConfig, raw, f"study run '{name}'")
