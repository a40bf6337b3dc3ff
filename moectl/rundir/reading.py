"""Reading a run directory: its config, run.json, the corpus it trained on, and the rows of its
JSONL logs as records. Readers need no lock: config.yaml and run.json are replaced atomically,
and a torn last JSONL line is skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from moectl.config import RunConfig, read_yaml, validate
from moectl.errors import MoectlError, TrainingError
from moectl.fs import read_bytes, read_text
from moectl.rundir.layout import CONFIG_NAME, METRICS_NAME, ROUTING_NAME, RUN_INFO_NAME
from moectl.rundir.records import EvalRow, RoutingRow, RunInfo, TrainRow

Row = TypeVar("Row", bound=BaseModel)

DAMAGED_HINT = "the file is damaged; restore it from a copy, or train the run again"


def read_run_config(run_dir: Path) -> RunConfig:
    """The config a run trains with (config.yaml)."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise TrainingError(
            f"{run_dir} has no {CONFIG_NAME}, so it is not a moectl run directory",
            hint="check --run-dir, or give --preset/--config to start a new run",
        )
    raw = read_yaml(path, hint=DAMAGED_HINT) or {}
    if not isinstance(raw, dict):
        raise TrainingError(f"{path} is not a moectl run config", hint=DAMAGED_HINT)
    return validate(RunConfig, raw, f"run configuration {path}")


def read_run_info(run_dir: Path) -> RunInfo | None:
    """run.json, or None for a run directory written without one."""
    path = Path(run_dir) / RUN_INFO_NAME
    if not path.is_file():
        return None
    text = read_text(path, hint=DAMAGED_HINT)
    try:
        return RunInfo.model_validate_json(text)
    except ValidationError as exc:
        raise TrainingError(
            f"{path} is not a moectl run.json ({exc.errors()[0]['msg']})",
            hint="pass the corpus explicitly with --data",
        ) from None


def corpus_dir(run_dir: Path) -> Path | None:
    """The corpus a run trained on (run.json's data_dir). moectl records it absolute; an older
    relative one was relative to where training ran, so it is tried from the current
    directory, then from the run dir and its parents."""
    info = read_run_info(run_dir)
    if info is None or not info.data_dir:
        return None
    path = Path(info.data_dir)
    if path.is_absolute() or path.exists():
        return path
    for base in [Path(run_dir), *Path(run_dir).resolve().parents]:
        if (base / path).exists():
            return base / path
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete rows of a JSONL file. A torn last line (a crash mid-write, or a read while
    the run writes) is skipped; a damaged line before it, or any line that is JSON but not an
    object (`[1, 2]`: no torn write makes one), is a MoectlError naming its number."""
    if not path.is_file():
        return []
    lines = read_bytes(path, hint=DAMAGED_HINT).splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if number == len(lines):
                continue
            what = "UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "a JSON row"
            raise MoectlError(f"{path} line {number} is not {what}", hint=DAMAGED_HINT) from None
        if not isinstance(row, dict):
            raise MoectlError(
                f"{path} line {number} is not a JSON object ({type(row).__name__})",
                hint=DAMAGED_HINT,
            )
        rows.append(row)
    return rows


def _validated(path: Path, model: type[Row], rows: list[dict[str, Any]]) -> list[Row]:
    """`rows` of the JSONL file `path` as `model`s; a row of another shape is a MoectlError."""
    try:
        return [model.model_validate(row) for row in rows]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MoectlError(
            f"{path} has a row that is not a moectl {model.__name__} ({where}: {first['msg']})",
            hint="the file was written by another moectl version or edited; check the run",
        ) from None


def read_metrics(run_dir: Path) -> tuple[list[TrainRow], list[EvalRow]]:
    """The train and eval rows of metrics.jsonl."""
    path = Path(run_dir) / METRICS_NAME
    rows = read_jsonl(path)
    train = _validated(path, TrainRow, [r for r in rows if r.get("kind") == "train"])
    evals = _validated(path, EvalRow, [r for r in rows if r.get("kind") == "eval"])
    return train, evals


def read_routing(run_dir: Path) -> list[RoutingRow]:
    """The rows of routing.jsonl ([] for a dense run or one that logged no routing yet)."""
    path = Path(run_dir) / ROUTING_NAME
    return _validated(path, RoutingRow, read_jsonl(path))
