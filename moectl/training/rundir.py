"""The run directory's bookkeeping: config.yaml, run.json, and what --resume refers to."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from moectl import __version__
from moectl.config import RunConfig, deep_merge, dump_yaml, parse_override, validate
from moectl.errors import TrainingError
from moectl.training.checkpoint import latest_checkpoint, list_checkpoints

CONFIG_NAME = "config.yaml"
RUN_INFO_NAME = "run.json"
METRICS_NAME = "metrics.jsonl"
ROUTING_NAME = "routing.jsonl"
BEST_DIR = "best"


def resolve_resume(run_dir: Path, resume: Path | bool | None) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run (refusing to clobber checkpoints)."""
    if resume is None or resume is False:
        if list_checkpoints(run_dir):
            raise TrainingError(
                f"run directory {run_dir} already has checkpoints",
                hint=f"continue it with `moectl train --run-dir {run_dir} --resume`, "
                "or choose a new --run-dir",
            )
        return None
    if resume is True:
        if not run_dir.is_dir():
            raise TrainingError(
                f"run directory {run_dir} does not exist, so there is nothing to resume",
                hint="check --run-dir, or start a new run without --resume",
            )
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise TrainingError(
                f"run directory {run_dir} has no checkpoint to resume from",
                hint="start it again without --resume (checkpoints are written every "
                "train.save_every steps)",
            )
        return checkpoint
    path = Path(resume)
    if not path.is_dir():
        raise TrainingError(
            f"checkpoint {path} does not exist",
            hint=f"pick one of {run_dir}/checkpoints/step-N, or pass --resume alone for the latest",
        )
    return path


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> RunConfig:
    """The config a run was started with (config.yaml), with optional --set overrides on top."""
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise TrainingError(
            f"{run_dir} has no {CONFIG_NAME}, so it is not a moectl run directory",
            hint="check --run-dir, or give --preset/--config to start a new run",
        )
    raw: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for text in overrides or []:
        raw = deep_merge(raw, parse_override(text))
    return validate(RunConfig, raw, "run configuration")


def start_run_dir(
    run_dir: Path,
    config: RunConfig,
    data_dir: Path,
    init_from: Path | None,
    domains: list[str],
    resumed_from: Path | None,
) -> None:
    """Write config.yaml and run.json; a fresh start also clears logs of an unsaved earlier try."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if resumed_from is None:
        for name in (METRICS_NAME, ROUTING_NAME):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / BEST_DIR, ignore_errors=True)
    _write_text(run_dir / CONFIG_NAME, dump_yaml(config))
    info_path = run_dir / RUN_INFO_NAME
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info: dict[str, Any] = {}
    if resumed_from is not None and info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
    info.setdefault("created", now)
    info.update(
        moectl_version=__version__,
        data_dir=str(Path(data_dir).resolve()),
        init_from=str(init_from) if init_from else info.get("init_from"),
        domains=domains,
    )
    if resumed_from is not None:
        info.setdefault("resumes", []).append({"time": now, "checkpoint": str(resumed_from)})
    _write_text(info_path, json.dumps(info, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)
