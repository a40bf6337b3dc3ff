"""What kind of moectl folder a path is (corpus, run, checkpoint, model, export, study), told by
the files it holds, and the words messages use for it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from moectl.rundir.layout import (
    CHECKPOINTS,
    CONFIG_NAME,
    MANIFEST_NAME,
    METRICS_NAME,
    MODEL_META,
    RUN_INFO_NAME,
    STATE_NAME,
    STUDY_STATE,
)

Kind = Literal["corpus", "run", "checkpoint", "model", "export", "study"]
KIND_LABELS = {
    "study": "a quickstart study folder",
    "corpus": "a prepared corpus",
    "run": "a run directory",
    "checkpoint": "a training checkpoint",
    "model": "a model artifact",
    "export": "a transformers model directory",
}


def detect_kind(path: Path) -> Kind | None:
    """Which moectl folder `path` is (None for anything else): a corpus holds manifest.json, a
    run config.yaml beside run.json, metrics.jsonl or checkpoints/, a model model.json (a
    checkpoint also trainer_state.pt), an export (`moectl export`, or any transformers model
    directory) config.json, a study (`moectl quickstart --out`) its state file study.json."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / STUDY_STATE).is_file():
        return "study"
    if (path / MANIFEST_NAME).is_file():
        return "corpus"
    if (path / CONFIG_NAME).is_file() and (
        (path / RUN_INFO_NAME).is_file()
        or (path / METRICS_NAME).is_file()
        or (path / CHECKPOINTS).is_dir()
    ):
        return "run"
    if (path / MODEL_META).is_file():
        return "checkpoint" if (path / STATE_NAME).is_file() else "model"
    if (path / "config.json").is_file():
        return "export"
    return None


def describe_path(path: Path) -> str:
    """What is at `path`, in words, for messages that refuse to touch it."""
    path = Path(path)
    kind = detect_kind(path)
    if kind is not None:
        return KIND_LABELS[kind]
    if not path.exists():
        return "nothing"
    if not path.is_dir():
        return "a file"
    entries = sum(1 for _ in path.iterdir())
    return "an empty folder" if entries == 0 else f"a folder with {entries} entries"
