"""Where a run's things are: its checkpoints, latest and best model, the model a path means, a
study's runs, and a run's evaluation files."""

from __future__ import annotations

import json
import re
from pathlib import Path

from moectl.errors import MoectlError, TrainingError
from moectl.rundir.kinds import describe_path, detect_kind
from moectl.rundir.layout import (
    BEST_DIR,
    CHECKPOINTS,
    EVAL_DIR,
    MODEL_META,
    STATE_NAME,
    STUDY_EVAL,
    STUDY_RUNS,
)

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_NAME).is_file() and (child / MODEL_META).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def best_model(run_dir: Path) -> Path | None:
    """The run's best/ model artifact, if it has one yet."""
    best = Path(run_dir) / BEST_DIR
    return best if (best / MODEL_META).is_file() else None


def artifact_step(artifact: Path) -> int:
    """The training step recorded in a model artifact's model.json."""
    try:
        return int(json.loads((artifact / MODEL_META).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        raise TrainingError(
            f"{artifact} has no readable {MODEL_META}",
            hint="resume from another checkpoint of the run",
        ) from None


def resolve_model(path: Path) -> tuple[Path, Path | None]:
    """(model artifact, run dir or None) for a run dir (best/, else its latest checkpoint) or a
    model artifact or checkpoint; a MoectlError for anything else."""
    path = Path(path)
    if not path.exists():
        raise MoectlError(
            f"{path} does not exist", hint="pass a run directory or a model artifact directory"
        )
    kind = detect_kind(path)
    if kind == "run":
        model = best_model(path) or latest_checkpoint(path)
        if model is None:
            raise MoectlError(
                f"run {path} has no saved model yet (no best/ and no checkpoints/step-N/)",
                hint="train longer than one save interval, or pass a model directory",
            )
        return model, path
    if kind in ("model", "checkpoint", "export"):
        for parent in (path.parent, path.parent.parent):
            if detect_kind(parent) == "run":
                return path, parent
        return path, None
    raise MoectlError(
        f"{path} is neither a run directory nor a model artifact (it is {describe_path(path)})",
        hint="a run dir holds config.yaml; a model artifact holds model.json (an exported "
        "transformers directory config.json)",
    )


# --- studies and evaluations -------------------------------------------------------------------
#
# A study (`moectl quickstart --out STUDY`) holds study.json, data/, runs/NAME (run dirs),
# eval/NAME.json (each run's evaluation), figures/ and report.html.


def study_runs(study: Path) -> list[Path]:
    """The run directories of a study folder, by name."""
    folder = Path(study) / STUDY_RUNS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if detect_kind(p) == "run")


def study_of(run_dir: Path) -> Path | None:
    """The study folder `run_dir` belongs to (STUDY/runs/NAME), or None for a run on its own."""
    run_dir = Path(run_dir)
    study = run_dir.parent.parent
    if run_dir.parent.name == STUDY_RUNS and detect_kind(study) == "study":
        return study
    return None


def expand_runs(paths: list[Path]) -> list[Path]:
    """`paths` with each study folder replaced by its runs: every command that takes runs
    takes a study as "all of its runs"."""
    expanded: list[Path] = []
    for path in paths:
        expanded += study_runs(path) if detect_kind(path) == "study" else [Path(path)]
    return expanded


def evaluation_files(run_dir: Path) -> list[Path]:
    """Every evaluation result file moectl wrote for the run: `moectl evaluate`'s
    RUN/eval/*.json and, for a run inside a study, the quickstart's STUDY/eval/NAME.json. The one
    answer to "where are this run's evaluations" (export's card, visualize, the study)."""
    run_dir = Path(run_dir)
    own = run_dir / EVAL_DIR
    found = sorted(own.glob("*.json")) if own.is_dir() else []
    study = study_of(run_dir)
    if study is not None:
        studied = study / STUDY_EVAL / f"{run_dir.name}.json"
        found += [studied] if studied.is_file() else []
    return found


def evaluation_folder(model_path: Path, run_dir: Path | None) -> Path:
    """Where `moectl evaluate` saves a model's results by default: <run dir or model dir>/eval
    (`evaluation_files` finds them there)."""
    return Path(run_dir or model_path) / EVAL_DIR
