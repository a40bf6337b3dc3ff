"""Where metrics go besides the run directory's JSONL files (`moectl.rundir`): TensorBoard and
W&B when asked for.

The JSONL files are the contract other commands read; these sinks only mirror the scalar
metrics. Asking for a sink whose package is missing is a TrainingError before training starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

from moectl.config import RunConfig
from moectl.errors import TrainingError


class MetricSink(Protocol):
    """A mirror of the scalar metrics (TensorBoard, W&B)."""

    def log(self, prefix: str, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """Scalars into `run_dir/tensorboard` for `tensorboard --logdir`."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, prefix: str, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self._writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """Scalars into a Weights & Biases run named after the run config (mode from WANDB_MODE)."""

    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        import wandb

        self._run = wandb.init(
            name=config.name, dir=str(run_dir), config=config.model_dump(mode="json")
        )

    def log(self, prefix: str, step: int, values: dict[str, float]) -> None:
        self._run.log({f"{prefix}/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        self._run.finish()


_SINK_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_sinks(names: list[str]) -> None:
    """A TrainingError naming the pip package for any requested sink that is not installed."""
    missing = [name for name in names if importlib.util.find_spec(_SINK_PACKAGES[name]) is None]
    if missing:
        packages = " ".join(_SINK_PACKAGES[name] for name in missing)
        raise TrainingError(
            f"metric sink(s) {', '.join(missing)} requested in train.sinks but not installed",
            hint=f'pip install {packages} (or "moectl[tracking]"), or drop them from train.sinks',
        )


def build_sinks(config: RunConfig, run_dir: Path) -> list[MetricSink]:
    """The optional sinks the config asks for (call `check_sinks` first)."""
    return [
        TensorBoardSink(run_dir) if name == "tensorboard" else WandbSink(run_dir, config)
        for name in config.train.sinks
    ]


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics row, flattened (domain_loss.code -> domain_loss/code)."""
    flat: dict[str, float] = {}
    for key, value in row.items():
        if key in ("kind", "step"):
            continue
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": float(v) for k, v in value.items() if v is not None})
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat
