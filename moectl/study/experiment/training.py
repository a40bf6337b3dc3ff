"""Training many planned runs on this machine: the one way the quickstart and `moectl
experiment` train, skip and resume runs.

Each unfinished run trains in the worker pool (study/parallel), resuming from its latest
checkpoint where an earlier attempt left one; a run that finished (its result.json) is
skipped. An interruption (Ctrl-C, SIGTERM) raises StudyInterrupted once every worker has
checkpointed, so the same command resumes. Besides each run's own bar, one `training` bar sums
every run's steps, so its rate (all workers together) gives the ETA of the whole stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from moectl.errors import MoectlError
from moectl.progress import ProgressCallback, ProgressEvent, report
from moectl.study.experiment.configs import PlannedRun
from moectl.study.parallel import RESULT_FILE

TrainStatus = Literal["skipped", "done", "resumed"]


class StudyInterrupted(MoectlError):
    """A training stage stopped on Ctrl-C / SIGTERM after saving a checkpoint."""

    exit_code = 130


def train_runs(
    runs: list[PlannedRun],
    run_dir: Callable[[str], Path],
    corpus_dir: Path,
    workers: int,
    callback: ProgressCallback | None = None,
    *,
    on_run: Callable[[str, TrainStatus, float], None],
    on_failed: Callable[[str, str], None] | None = None,
    resume_hint: str,
) -> None:
    """Train every run of `runs` that has not finished (`run_dir(name)`: its folder; a run
    continues from `run_dir(init_from)/best`), at most `workers` at a time.

    `on_run(name, status, seconds)` hears each run as it is skipped (finished before) or ends
    ("done", or "resumed" when an earlier attempt had begun it); `on_failed(name, message)`
    each failure as it happens. An interruption raises StudyInterrupted naming the runs that
    did not finish, with `resume_hint`.
    """
    from moectl.rundir.locate import artifact_step, latest_checkpoint
    from moectl.study.parallel import TrainJob, run_parallel

    max_steps = {run.name: run.config.train.max_steps for run in runs}
    steps = dict.fromkeys(max_steps, 0)
    jobs = []
    for run in runs:
        if (run_dir(run.name) / RESULT_FILE).is_file():
            steps[run.name] = max_steps[run.name]
            on_run(run.name, "skipped", 0.0)
            continue
        checkpoint = latest_checkpoint(run_dir(run.name))
        steps[run.name] = artifact_step(checkpoint) if checkpoint else 0
        start = (run_dir(run.init_from) / "best").resolve() if run.init_from else None
        jobs.append(TrainJob(run.name, run.config, corpus_dir, run_dir(run.name), start))
    if not jobs:
        return
    begun = time.perf_counter()
    resumed = {job.name for job in jobs if job.run_dir.exists()}
    total = sum(max_steps.values())
    finished = len(runs) - len(jobs)

    def overall() -> None:
        message = f"{finished}/{len(runs)} runs done"
        report(callback, "training", sum(steps.values()), total, message=message)

    def forward(event: ProgressEvent) -> None:
        assert callback is not None
        callback(event)
        kind, _, name = event.stage.partition(" ")
        if kind == "train" and name in steps:
            steps[name] = int(event.completed)
            overall()

    def done(name: str, result: object) -> None:
        nonlocal finished
        if getattr(result, "stop_reason", None) == "interrupted":
            return
        finished += 1
        steps[name] = max_steps[name]
        overall()
        on_run(name, "resumed" if name in resumed else "done", time.perf_counter() - begun)

    if callback is not None:
        overall()
    results = run_parallel(
        jobs,
        min(workers, len(jobs)),
        forward if callback is not None else None,
        on_done=done,
        on_error=on_failed,
    )
    stopped = [n for n, r in results.items() if r.stop_reason == "interrupted"]
    unfinished = stopped + [job.name for job in jobs if job.name not in results]
    if unfinished:
        raise StudyInterrupted(f"{', '.join(unfinished)} did not finish", hint=resume_hint)
