"""An experiment's folder and what is in it: experiment.json (written first: moectl made this
folder), data/ (a corpus the experiment prepared), runs/<arm>-seed<N> and runs/pretrain-seed<N>
(run directories), eval/ (each run's evaluation), report.md and report.json, and slurm/ (the
SLURM jobs' scripts and logs, `launcher: slurm`).

Before anything is written the folder is checked: a folder moectl did not make is refused, and
so is a run (or prepared corpus) whose stored config no longer matches the file, naming the arm:
a finished run is never silently reused for settings it was not trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from moectl.config import DataConfig, RunConfig, flatten
from moectl.errors import ConfigError, MoectlError
from moectl.fs import check_folder_path, is_locked, read_text, write_json
from moectl.rundir.layout import (
    CONFIG_NAME,
    EXPERIMENT_REPORT_JSON,
    EXPERIMENT_REPORT_MD,
    EXPERIMENT_STATE,
    LOCK_NAME,
    MANIFEST_NAME,
    STUDY_EVAL,
    STUDY_RUNS,
)
from moectl.study.experiment.configs import ExperimentPlan, PlannedRun
from moectl.study.parallel import RESULT_FILE
from moectl.version import __version__

STATE_FORMAT = 1
RunState = Literal["queued", "running", "done", "failed"]


class ExperimentState(BaseModel):
    """experiment.json: that moectl made the folder, the runs whose last attempt failed, and
    the SLURM job of each run and of the evaluation (`launcher: slurm`)."""

    format: Literal["moectl-experiment"] = "moectl-experiment"
    format_version: int = STATE_FORMAT
    moectl_version: str = __version__
    failed: dict[str, str] = Field(
        default_factory=dict, description="run name -> the last line of its failure"
    )
    jobs: dict[str, str] = Field(
        default_factory=dict,
        description="run name (or 'evaluation') -> the SLURM job id of its last submission",
    )


class RunStatus(BaseModel):
    """Where one run of the experiment stands (`moectl experiment FILE --status`)."""

    name: str
    arm: str
    seed: int
    state: RunState
    detail: str = Field(description="steps done, where it resumes, or the failure's last line")
    run_dir: str


class ExperimentLayout:
    """The paths of one experiment folder, its state file and its checks."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.state_path = self.out / EXPERIMENT_STATE
        self.eval_dir = self.out / STUDY_EVAL
        self.report_md = self.out / EXPERIMENT_REPORT_MD
        self.report_json = self.out / EXPERIMENT_REPORT_JSON
        self.slurm_dir = self.out / "slurm"

    def run_dir(self, name: str) -> Path:
        return self.out / STUDY_RUNS / name

    def corpus_dir(self, plan: ExperimentPlan) -> Path:
        return plan.corpus_path if plan.corpus_path is not None else self.out / "data"

    def read_state(self) -> ExperimentState | None:
        """experiment.json, or None where there is none; a damaged one is refused."""
        if not self.state_path.is_file():
            return None
        try:
            return ExperimentState.model_validate_json(read_text(self.state_path))
        except ValidationError:
            raise MoectlError(
                f"{self.state_path} is not a moectl experiment state file",
                hint="use another --out, or delete the folder to start over",
            ) from None

    def write_state(self, state: ExperimentState) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.state_path, state)

    def check(self, plan: ExperimentPlan, file: Path) -> ExperimentState:
        """The folder's state (a new one for a new or empty folder), after refusing a folder
        moectl did not make, a prepared corpus of another config and every run whose stored
        config differs from the file's (one problem per run, naming its arm)."""
        from moectl.rundir.writing import check_run_dir

        if self.out.exists() and not self.out.is_dir():
            raise MoectlError(f"--out {self.out} is a file", hint="choose a folder")
        state = self.read_state()
        if state is None and self.out.is_dir() and any(self.out.iterdir()):
            raise MoectlError(
                f"{self.out} is not empty and holds no moectl experiment ({EXPERIMENT_STATE})",
                hint="use a new or empty --out folder; an experiment writes only into its own",
            )
        problems = self._corpus_problems(plan)
        for run in plan.runs:
            run_dir = self.run_dir(run.name)
            check_run_dir(run_dir, resuming=False)
            if (run_dir / CONFIG_NAME).is_file():
                problems += _changed(run, run_dir)
        if problems:
            raise ConfigError(
                f"{self.out} holds runs the experiment file {file} no longer describes",
                problems,
                hint="restore those settings, give a changed arm a new name, or delete its runs "
                "to train them again",
            )
        return state or ExperimentState()

    def _corpus_problems(self, plan: ExperimentPlan) -> list[tuple[str, str]]:
        from moectl.data.store import read_manifest

        if plan.corpus_path is not None and not (plan.corpus_path / MANIFEST_NAME).is_file():
            return [("corpus.path", f"{plan.corpus_path} holds no prepared corpus")]
        manifest = self.out / "data" / MANIFEST_NAME
        if plan.corpus_config is None or not manifest.is_file():
            return []
        keys = _differing(read_manifest(manifest.parent).config, plan.corpus_config)
        if not keys:
            return []
        return [("corpus.prepare", f"data/ was prepared with other settings: {', '.join(keys)}")]

    def statuses(self, plan: ExperimentPlan) -> list[RunStatus]:
        """Every run's state: done (result.json), running (its writer lock is held), failed
        (its last attempt failed, with the failure's last line) or queued; a missing folder's
        runs are all queued, and a file where the folder goes is refused."""
        from moectl.rundir.locate import artifact_step, latest_checkpoint

        check_folder_path(self.out, "--out")
        state = self.read_state() or ExperimentState()
        found = []
        for run in plan.runs:
            run_dir = self.run_dir(run.name)
            checkpoint = latest_checkpoint(run_dir)
            if (run_dir / RESULT_FILE).is_file():
                result = _result(run_dir)
                status: RunState = "done"
                detail = f"{result.get('stop_reason')} at step {result.get('steps')}"
            elif is_locked(run_dir / LOCK_NAME):
                status, detail = "running", "training"
            elif run.name in state.failed:
                status, detail = "failed", state.failed[run.name]
            else:
                status = "queued"
                detail = f"resumes at step {artifact_step(checkpoint)}" if checkpoint else ""
            found.append(
                RunStatus(
                    name=run.name,
                    arm=run.arm,
                    seed=run.seed,
                    state=status,
                    detail=detail,
                    run_dir=str(run_dir),
                )
            )
        return found


def _changed(run: PlannedRun, run_dir: Path) -> list[tuple[str, str]]:
    """The run's stored config against the file's (the data section is the corpus manifest's,
    written by the trainer, so it is not compared), and the pretrain it started from."""
    from moectl.rundir.reading import read_run_config, read_run_info

    keys = _differing(read_run_config(run_dir), run.config, exclude={"data"})
    info = read_run_info(run_dir)
    started = Path(info.init_from).parent.name if info and info.init_from else None
    if info is not None and started != run.init_from:
        keys.append(f"start: {started or 'random weights'} -> {run.init_from or 'random weights'}")
    if not keys:
        return []
    where = f"arm '{run.arm}'" if run.arm != "pretrain" else "the pretrain"
    return [(f"{where} seed {run.seed} ({run_dir})", f"trained with other {', '.join(keys)}")]


def _differing(
    saved: RunConfig | DataConfig, wanted: RunConfig | DataConfig, exclude: set[str] | None = None
) -> list[str]:
    """'key: saved -> wanted' for each setting that differs."""
    ours = flatten(saved.model_dump(mode="json", exclude=exclude))
    theirs = flatten(wanted.model_dump(mode="json", exclude=exclude))
    keys = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    return [f"{k}: {ours.get(k)!r} -> {theirs.get(k)!r}" for k in keys]


def _result(run_dir: Path) -> dict[str, object]:
    import json

    try:
        return dict(json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}
