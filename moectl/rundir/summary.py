"""A run's summary: what `moectl inspect RUN` shows, read while the run may still be training."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from moectl.rundir.locate import best_model, list_checkpoints
from moectl.rundir.reading import read_metrics, read_routing, read_run_config, read_run_info
from moectl.rundir.records import Amendment, CollapseEvent, EvalRow, collapse_events


class CheckpointEntry(BaseModel):
    step: int
    path: str


class RunSummary(BaseModel):
    """What `moectl inspect RUN` shows: config, progress, evals, collapse and files."""

    kind: Literal["run"] = "run"
    path: str
    name: str
    description: str
    data_dir: str | None
    init_from: str | None
    created: str | None
    model: dict[str, Any]
    moe: dict[str, Any] | None
    train: dict[str, Any]
    steps_done: int
    max_steps: int
    tokens: int
    last_train_loss: float | None
    tokens_per_s: float | None
    best_eval: EvalRow | None
    last_eval: EvalRow | None
    collapse_events: list[CollapseEvent]
    collapse_stop: bool
    checkpoints: list[CheckpointEntry]
    best_model: str | None
    amendments: list[Amendment]


def run_summary(run_dir: Path) -> RunSummary:
    """Everything `inspect` says about a run, read while it may still be training."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    info = read_run_info(run_dir)
    train_rows, eval_rows = read_metrics(run_dir)
    events = collapse_events(read_routing(run_dir))
    last_train = train_rows[-1] if train_rows else None
    best = best_model(run_dir)
    return RunSummary(
        path=str(run_dir),
        name=config.name,
        description=config.description,
        data_dir=info.data_dir if info else None,
        init_from=info.init_from if info else None,
        created=info.created if info else None,
        model=config.model.model_dump(mode="json"),
        moe=config.moe.model_dump(mode="json") if config.moe.enabled else None,
        train={
            k: getattr(config.train, k) for k in ("max_steps", "batch_size", "grad_accum", "lr")
        },
        steps_done=last_train.step if last_train else 0,
        max_steps=config.train.max_steps,
        tokens=last_train.tokens if last_train else 0,
        last_train_loss=last_train.loss if last_train else None,
        tokens_per_s=last_train.tokens_per_s if last_train else None,
        best_eval=min(eval_rows, key=lambda r: r.loss) if eval_rows else None,
        last_eval=eval_rows[-1] if eval_rows else None,
        collapse_events=events,
        collapse_stop=any(event.stop for event in events),
        checkpoints=[CheckpointEntry(step=s, path=str(p)) for s, p in list_checkpoints(run_dir)],
        best_model=str(best) if best else None,
        amendments=info.amendments if info else [],
    )
