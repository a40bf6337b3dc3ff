"""Checkpoints in `run_dir/checkpoints/step-N/`: model artifact + trainer_state.pt, kept rotating.

A checkpoint directory is staged under a hidden temp name and renamed into place only once both
the model and the trainer state are on disk, so a run killed mid-save leaves the previous
checkpoints intact and never a half one that `--resume` would pick up.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moectl.errors import TrainingError
from moectl.fs import atomic_directory
from moectl.rundir.layout import STATE_NAME
from moectl.rundir.locate import checkpoint_path, list_checkpoints

STATE_FORMAT = 1


def write_checkpoint(
    run_dir: Path,
    step: int,
    write_model: Callable[[Path], None],
    state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep_last`.

    `write_model(path)` must write the model artifact into `path` (an empty staging folder);
    the trainer state is added beside it before the rename.
    """
    target = checkpoint_path(run_dir, step)
    with atomic_directory(target) as staging:
        write_model(staging)
        torch.save(state, staging / STATE_NAME)
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint directory, or a TrainingError if it is not one."""
    path = checkpoint / STATE_NAME
    if not path.is_file():
        raise TrainingError(
            f"{checkpoint} is not a training checkpoint (no {STATE_NAME})",
            hint="pass a checkpoints/step-N directory of a run, or --resume alone for the latest",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: unpickling errors vary by cause
        raise TrainingError(
            f"cannot read {path}: {exc}", hint="resume from an older checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format_version", 0) > STATE_FORMAT:
        raise TrainingError(f"{path} is not a trainer state this moectl can read")
    return state


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the run draws from: torch (CPU and CUDA), numpy and Python's `random`."""
    np_state = np.random.get_state()
    python_version, python_internal, python_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [python_version, list(python_internal), python_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
