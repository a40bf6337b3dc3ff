"""Running an experiment on this machine (`launcher: local`): prepare the corpus, train what is
not finished (the pretrains first, then every arm, `workers` at a time in worker processes,
each resuming from its latest checkpoint), evaluate every run, and write the report.

A re-run skips finished runs (result.json) and resumes interrupted ones exactly (the trainer's
resume); a run or corpus whose stored config differs from the file is refused before anything
is written (`ExperimentLayout.check`). The core never prints: progress goes to `callback`,
each run's outcome to `on_run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from moectl.fs import check_writable_folder, write_json, write_text
from moectl.progress import ProgressCallback
from moectl.study.experiment.configs import ExperimentPlan, PlannedRun
from moectl.study.experiment.layout import ExperimentLayout, ExperimentState
from moectl.study.experiment.table import ExperimentTable, experiment_table, markdown
from moectl.study.experiment.training import TrainStatus, train_runs
from moectl.study.parallel import RESULT_FILE


class RunOutcome(BaseModel):
    """How one run went in this invocation."""

    name: str
    status: TrainStatus
    seconds: float


class ExperimentResult(BaseModel):
    """What `run_experiment` trained, evaluated and reported."""

    out: str
    seeds: list[int]
    runs: dict[str, str]
    outcomes: list[RunOutcome]
    report_markdown: str
    report_json: str
    table: ExperimentTable
    seconds: float


def run_experiment(
    plan: ExperimentPlan,
    file: Path,
    out: Path,
    workers: int = 2,
    callback: ProgressCallback | None = None,
    on_run: Callable[[RunOutcome], None] | None = None,
) -> ExperimentResult:
    """Run (or finish) the experiment `plan` (from the file `file`) in the folder `out`."""
    started = time.perf_counter()
    layout = ExperimentLayout(out)
    check_writable_folder(layout.out, "--out")
    state = layout.check(plan, file)
    layout.write_state(state)
    outcomes: list[RunOutcome] = []

    def record(outcome: RunOutcome) -> None:
        outcomes.append(outcome)
        if on_run is not None:
            on_run(outcome)

    corpus_dir = prepared_corpus(plan, layout, callback)
    for runs in (plan.pretrains, plan.arms):
        _train(layout, state, runs, corpus_dir, workers, callback, record)
    table = write_report(plan, layout, callback)
    return ExperimentResult(
        out=str(layout.out),
        seeds=plan.seeds,
        runs={run.name: str(layout.run_dir(run.name)) for run in plan.runs},
        outcomes=outcomes,
        report_markdown=str(layout.report_md),
        report_json=str(layout.report_json),
        table=table,
        seconds=time.perf_counter() - started,
    )


def prepared_corpus(
    plan: ExperimentPlan, layout: ExperimentLayout, callback: ProgressCallback | None = None
) -> Path:
    """The experiment's corpus folder, prepared into data/ first where the file asks for it."""
    from moectl.data.prepare import prepare_corpus

    corpus_dir = layout.corpus_dir(plan)
    if plan.corpus_config is not None and not (corpus_dir / "manifest.json").is_file():
        prepare_corpus(plan.corpus_config, corpus_dir, force=True, callback=callback)
    return corpus_dir


def write_report(
    plan: ExperimentPlan, layout: ExperimentLayout, callback: ProgressCallback | None = None
) -> ExperimentTable:
    """Evaluate every arm's run (reusing kept evaluations) and write report.md / report.json."""
    from moectl.study.experiment.evaluation import evaluate_runs, evaluation_options

    run_dirs = {run.name: layout.run_dir(run.name) for run in plan.arms}
    results = evaluate_runs(
        layout.eval_dir, run_dirs, layout.corpus_dir(plan), evaluation_options(plan), callback
    )
    walls = {name: wall_seconds(path) for name, path in run_dirs.items()}
    table = experiment_table(plan, results, walls)
    write_text(layout.report_md, markdown(table) + "\n")
    write_json(layout.report_json, table)
    return table


def wall_seconds(run_dir: Path) -> float:
    """From the run's config.yaml (written at its start) to its result.json (at its end)."""
    return (run_dir / RESULT_FILE).stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime


def _train(
    layout: ExperimentLayout,
    state: ExperimentState,
    runs: list[PlannedRun],
    corpus_dir: Path,
    workers: int,
    callback: ProgressCallback | None,
    record: Callable[[RunOutcome], None],
) -> None:
    """Train the unfinished `runs` (experiment/training.py), recording each outcome and each
    failure's last line in the state file."""

    def ended(name: str, status: TrainStatus, seconds: float) -> None:
        if status != "skipped":
            state.failed.pop(name, None)
            layout.write_state(state)
        record(RunOutcome(name=name, status=status, seconds=seconds))

    def failed(name: str, message: str) -> None:
        lines = message.strip().splitlines() or [""]
        state.failed[name] = lines[-1]
        layout.write_state(state)

    train_runs(
        runs,
        layout.run_dir,
        corpus_dir,
        workers,
        callback,
        on_run=ended,
        on_failed=failed,
        resume_hint="run the same moectl experiment command again to resume",
    )
