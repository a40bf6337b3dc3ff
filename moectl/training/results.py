"""What a training run returns to its caller (the CLI, the quickstart, a notebook)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from moectl.rundir.records import CollapseEvent, EvalScores

StopReason = Literal["completed", "collapse", "interrupted", "already_complete"]


class TrainResult(BaseModel):
    """The outcome of `train_run`; the run directory holds the full record.

    `already_complete`: a resume found the run at train.max_steps and touched nothing.
    """

    run_dir: str
    steps: int
    max_steps: int
    stop_reason: StopReason
    stop_signal: str | None = Field(
        None, description="SIGINT or SIGTERM when stop_reason is interrupted"
    )
    best_step: int | None = None
    best_eval_loss: float | None = None
    last_eval: EvalScores | None = None
    last_train_loss: float | None = None
    last_checkpoint: str | None = None
    collapse_events: list[CollapseEvent] = Field(default_factory=list)
    tokens_per_s: float = 0.0
    resumed_from: str | None = None
    world_size: int = 1
