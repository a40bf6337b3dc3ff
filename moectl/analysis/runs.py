"""Reading run directories: which model a run means, its config, metrics and routing logs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moectl.errors import MoectlError
from moectl.training.checkpoint import latest_checkpoint
from moectl.training.sinks import read_jsonl


def is_run_dir(path: Path) -> bool:
    """A directory written by `moectl train --run-dir`."""
    return path.is_dir() and (path / "config.yaml").is_file()


def is_model_dir(path: Path) -> bool:
    """A model artifact (checkpoint or best/, model.json) or a transformers directory (config.json,
    e.g. from `moectl export`)."""
    return path.is_dir() and any((path / f).is_file() for f in ("model.json", "config.json"))


def resolve_model(path: Path) -> tuple[Path, Path | None]:
    """(model artifact dir, run dir or None) for a run dir (best/, else latest checkpoint) or an
    artifact; a clear MoectlError for anything else."""
    if not path.exists():
        raise MoectlError(
            f"{path} does not exist", hint="pass a run directory or a model artifact directory"
        )
    if is_run_dir(path):
        model = path / "best" if is_model_dir(path / "best") else latest_checkpoint(path)
        if model is None:
            raise MoectlError(
                f"run {path} has no saved model yet (no best/ and no checkpoints/step-N/)",
                hint="train longer than one save interval, or pass a model directory",
            )
        return model, path
    if is_model_dir(path):
        for parent in (path.parent, path.parent.parent):
            if is_run_dir(parent):
                return path, parent
        return path, None
    raise MoectlError(
        f"{path} is neither a run directory nor a model artifact",
        hint="a run dir holds config.yaml; a model directory holds model.json or config.json",
    )


@dataclass
class RunLogs:
    """What visualize needs from one run directory."""

    path: Path
    name: str
    config: dict[str, Any]
    run_info: dict[str, Any]
    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    routing: list[dict[str, Any]] | None = None

    @property
    def collapse_threshold(self) -> float:
        """The run's collapse threshold (DESIGN default 0.60 when the config has none)."""
        collapse = (self.config.get("train") or {}).get("collapse") or {}
        return float(collapse.get("threshold", 0.60))

    @property
    def is_moe(self) -> bool:
        return bool((self.config.get("moe") or {}).get("enabled"))

    def collapse_events(self) -> list[dict[str, Any]]:
        """One entry per routing row that raised a collapse warning: step, layers, stop."""
        events = []
        for row in self.routing or []:
            collapse = row.get("collapse") or {}
            if collapse.get("warning"):
                events.append(
                    {
                        "step": row.get("step"),
                        "layers": list(collapse.get("layers") or []),
                        "consecutive": collapse.get("consecutive", 0),
                        "stop": bool(collapse.get("stop")),
                    }
                )
        return events


def load_run(path: Path) -> RunLogs:
    """Config, run info, metrics and routing rows of a run dir (routing None if not logged)."""
    if not is_run_dir(path):
        raise MoectlError(
            f"{path} is not a run directory (no config.yaml)",
            hint="pass a directory written by `moectl train --run-dir`",
        )
    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    info_path = path / "run.json"
    run_info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    rows = read_jsonl(path / "metrics.jsonl") if (path / "metrics.jsonl").is_file() else []
    routing_path = path / "routing.jsonl"
    routing = read_jsonl(routing_path) if routing_path.is_file() else None
    return RunLogs(
        path=path,
        name=path.resolve().name,
        config=config,
        run_info=run_info,
        train=[r for r in rows if r.get("kind") == "train"],
        eval=[r for r in rows if r.get("kind") == "eval"],
        routing=routing or None,
    )
