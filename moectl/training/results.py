"""What a training run returns to its caller (the CLI, the quickstart, a notebook)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from moectl.training.collapse import CollapseEvent

StopReason = Literal["completed", "collapse", "interrupted"]


class TrainResult(BaseModel):
    """The outcome of `train_run`; the run directory holds the full record."""

    run_dir: str
    steps: int
    max_steps: int
    stop_reason: StopReason
    best_step: int | None = None
    best_eval_loss: float | None = None
    last_eval: dict[str, float] = Field(
        default_factory=dict, description="last eval row's loss and per-domain losses"
    )
    last_train_loss: float | None = None
    last_checkpoint: str | None = None
    collapse_events: list[CollapseEvent] = Field(default_factory=list)
    tokens_per_s: float = 0.0
    resumed_from: str | None = None
    world_size: int = 1
