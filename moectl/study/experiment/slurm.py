"""Running an experiment on a SLURM cluster (`launcher: slurm`): each run is one job submitted
through submitit, and the order comes from the scheduler, not from moectl: the pretrains first,
each arm after its pretrain (afterok), the evaluation after every arm. A job whose dependency
fails is cancelled by SLURM (--kill-on-invalid-dep), so nothing waits for ever.

Submitting returns at once; the job ids are kept in experiment.json, the jobs' scripts and logs
in slurm/. A re-run submits only what is unfinished and not already queued, so it resumes
exactly as the local launcher does: a job stopped by `scancel` (SIGTERM: the trainer
checkpoints and stops) continues from that checkpoint in its new job. A run's state is its run
folder (result.json: done) and, while SLURM holds its job, the job's state from `squeue`
(submitit's own job state reads `sacct`, which needs the cluster's accounting database).

A multi-GPU run (gpus_per_run > 1) trains through torchrun inside its job, one rank per GPU,
with the run's `train.parallel` (ddp or fsdp).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from moectl.errors import MoectlError, RunFailure
from moectl.fs import check_writable_folder
from moectl.progress import ProgressCallback
from moectl.study.experiment.configs import ExperimentPlan
from moectl.study.experiment.layout import ExperimentLayout, RunStatus
from moectl.study.experiment.spec import SlurmSpec
from moectl.study.parallel import RESULT_FILE, TrainJob

EVALUATION = "evaluation"
"""The evaluation job's name in experiment.json's jobs."""
POLL_S = 5.0
"""How often --wait asks SLURM about the experiment's jobs."""


class SubmittedJob(BaseModel):
    """One job of the experiment after `submit_experiment`: submitted now, still queued from
    an earlier submission, or done (nothing to submit)."""

    name: str
    job_id: str | None
    status: Literal["submitted", "queued", "done"]
    after: list[str] = Field(default_factory=list, description="the job ids it waits for")


def submitit_module() -> Any:
    """submitit, or one line naming the extra that installs it."""
    try:
        import submitit
    except ImportError:
        raise MoectlError(
            "--launcher slurm submits through submitit, which is not installed",
            hint="pip install 'moectl[slurm]'",
        ) from None
    return submitit


def submit_experiment(
    plan: ExperimentPlan,
    file: Path,
    out: Path,
    slurm: SlurmSpec,
    callback: ProgressCallback | None = None,
) -> list[SubmittedJob]:
    """Submit every unfinished run of `plan` (from `file`) and the evaluation as SLURM jobs
    writing into `out`; a job still queued from an earlier call is kept, not submitted twice."""
    from moectl.study.experiment.run import prepared_corpus

    submitit = submitit_module()
    layout = ExperimentLayout(out)
    check_writable_folder(layout.out, "--out")
    state = layout.check(plan, file)
    layout.write_state(state)
    corpus_dir = prepared_corpus(plan, layout, callback)
    queued = queued_jobs(state.jobs.values())
    slurm_dir = layout.slurm_dir.resolve()
    executor = submitit.SlurmExecutor(folder=slurm_dir)
    placed: list[SubmittedJob] = []
    fresh: set[str] = set()

    def place(name: str, done: bool, needs: list[str], function: Any, *args: Any) -> None:
        old = state.jobs.get(name)
        if done:
            placed.append(SubmittedJob(name=name, job_id=old, status="done"))
            return
        if old in queued and not fresh.intersection(needs):
            placed.append(SubmittedJob(name=name, job_id=old, status="queued"))
            return
        if old in queued:  # it waits on a job that was submitted again: replace it
            subprocess.run(["scancel", old], check=False, capture_output=True)
        after = [state.jobs[n] for n in needs if n in fresh or state.jobs.get(n) in queued]
        gpus = slurm.gpus_per_run if name != EVALUATION else min(slurm.gpus_per_run, 1)
        executor.update_parameters(
            **sbatch_parameters(slurm, gpus), job_name=f"moectl-{name}", **dependency(after)
        )
        job = executor.submit(function, *args)
        state.jobs[name] = str(job.job_id)
        state.failed.pop(name, None)
        layout.write_state(state)
        fresh.add(name)
        placed.append(
            SubmittedJob(name=name, job_id=state.jobs[name], status="submitted", after=after)
        )

    for run in plan.runs:
        run_dir = layout.run_dir(run.name)
        start = (layout.run_dir(run.init_from) / "best").resolve() if run.init_from else None
        job = TrainJob(run.name, run.config, corpus_dir.resolve(), run_dir.resolve(), start)
        needs = [run.init_from] if run.init_from else []
        place(run.name, finished(run_dir), needs, train_job, job, slurm.gpus_per_run, slurm_dir)
    arms = [run.name for run in plan.arms]
    place(
        EVALUATION,
        not fresh and report_is_current(layout, plan),
        arms,
        evaluation_job,
        plan,
        layout.out.resolve(),
    )
    return placed


def sbatch_parameters(slurm: SlurmSpec, gpus: int) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for one job: one task with the run's CPUs and GPUs."""
    parameters: dict[str, Any] = {
        "time": slurm.minutes,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": slurm.cpus_per_run,
        "signal_delay_s": 120,
    }
    optional = {
        "partition": slurm.partition,
        "account": slurm.account,
        "qos": slurm.qos,
        "constraint": slurm.constraint,
        "mem": f"{slurm.mem_gb}GB" if slurm.mem_gb else None,
        "gpus_per_node": gpus or None,
        "setup": slurm.setup or None,
    }
    parameters.update({key: value for key, value in optional.items() if value is not None})
    return parameters


def dependency(after: list[str]) -> dict[str, Any]:
    """sbatch's dependency on `after` (afterok: they must succeed; a failure cancels this job)."""
    if not after:
        return {"additional_parameters": {}}
    return {
        "additional_parameters": {
            "dependency": "afterok:" + ":".join(after),
            "kill_on_invalid_dep": "yes",
        }
    }


def finished(run_dir: Path) -> bool:
    return (run_dir / RESULT_FILE).is_file()


def report_is_current(layout: ExperimentLayout, plan: ExperimentPlan) -> bool:
    """report.json exists and is newer than every arm's result (nothing trained since)."""
    if not layout.report_json.is_file():
        return False
    made = layout.report_json.stat().st_mtime
    results = [layout.run_dir(run.name) / RESULT_FILE for run in plan.arms]
    return all(path.is_file() and path.stat().st_mtime <= made for path in results)


def train_job(job: TrainJob, gpus: int, slurm_dir: Path) -> str:
    """A run's job: train (or resume) it here, or through torchrun on `gpus` GPUs; a run that
    stopped before its end (scancel, a time limit) fails the job, so what depends on it waits
    for the next submission."""
    from moectl.study.parallel import train_stage

    if gpus > 1:
        job_file = slurm_dir / f"{job.name}.train-job.pkl"
        job_file.write_bytes(pickle.dumps(job))
        subprocess.run(torchrun_command(job_file, gpus), check=True)
    else:
        train_stage(job)
    if not finished(job.run_dir):
        raise RunFailure(
            f"run {job.name} stopped before its end; its last checkpoint is kept",
            hint="run the same moectl experiment command again to resume it",
        )
    return job.name


def torchrun_command(job_file: Path, gpus: int) -> list[str]:
    """One node, one rank per GPU, each training the pickled TrainJob (this module's main)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={gpus}",
        "-m",
        __name__,
        str(job_file),
    ]


def evaluation_job(plan: ExperimentPlan, out: Path) -> str:
    """The evaluation's job: every arm's run is evaluated and the report written."""
    from moectl.study.experiment.run import write_report

    layout = ExperimentLayout(out)
    missing = [run.name for run in plan.arms if not finished(layout.run_dir(run.name))]
    if missing:
        raise RunFailure(f"runs not finished: {', '.join(missing)}")
    write_report(plan, layout)
    return str(layout.report_json)


def queued_jobs(job_ids: Iterable[str]) -> dict[str, str]:
    """Job id -> state (PENDING, RUNNING, ...) for those of `job_ids` SLURM still holds."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    try:
        found = subprocess.run(
            ["squeue", "--noheader", "--format=%i|%T", f"--jobs={','.join(ids)}"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        raise MoectlError(
            "squeue is not on PATH: --launcher slurm runs where SLURM's commands are",
            hint="run it on the cluster's login node",
        ) from None
    if found.returncode != 0:
        if "Invalid job id" in found.stderr:  # none of them is known any more
            return {}
        raise MoectlError(f"squeue failed: {found.stderr.strip()}", hint="is SLURM up?")
    states = dict(line.split("|", 1) for line in found.stdout.split() if "|" in line)
    return {job_id: state for job_id, state in states.items() if job_id in ids}


def slurm_statuses(layout: ExperimentLayout, plan: ExperimentPlan) -> list[RunStatus]:
    """Every run's state from its folder, and for a run not done whose job SLURM holds or
    held: queued or running as SLURM says, or failed with its job log's last line."""
    state = layout.read_state()
    jobs = state.jobs if state is not None else {}
    queued = queued_jobs(jobs.values())
    found = []
    for status in layout.statuses(plan):
        job_id = jobs.get(status.name)
        if status.state != "done" and job_id is not None:
            status = _with_job(layout, status, job_id, queued.get(job_id))
        found.append(status)
    return found


def _with_job(
    layout: ExperimentLayout, status: RunStatus, job_id: str, slurm_state: str | None
) -> RunStatus:
    if slurm_state == "PENDING":
        where = f", {status.detail}" if status.detail else ""
        return status.model_copy(update={"state": "queued", "detail": f"job {job_id}{where}"})
    if slurm_state is not None:
        return status.model_copy(
            update={"state": "running", "detail": f"job {job_id} {slurm_state.lower()}"}
        )
    if status.state == "running":  # its lock is held: the job is ending
        return status
    return status.model_copy(
        update={"state": "failed", "detail": f"job {job_id}: {last_log_line(layout, job_id)}"}
    )


def last_log_line(layout: ExperimentLayout, job_id: str) -> str:
    """The last line the job wrote to its stderr log (submitit's %j_0_log.err), srun's own
    'task 0: Exited with exit code 1' aside."""
    log = layout.slurm_dir / f"{job_id}_0_log.err"
    text = log.read_text(errors="replace") if log.is_file() else ""
    lines = [line for line in text.strip().splitlines() if not line.startswith("srun: ")]
    return lines[-1].strip() if lines else "ended before it started (a dependency failed?)"


def wait_for_jobs(layout: ExperimentLayout) -> None:
    """Return once SLURM holds none of the experiment's jobs (asking every POLL_S seconds)."""
    state = layout.read_state()
    jobs = list(state.jobs.values()) if state is not None else []
    while queued_jobs(jobs):
        time.sleep(POLL_S)


def main(argv: list[str]) -> None:
    """One torchrun rank of a multi-GPU run: train the pickled TrainJob at argv[0]."""
    from moectl.study.parallel import train_stage

    job = pickle.loads(Path(argv[0]).read_bytes())
    train_stage(job)


if __name__ == "__main__":
    main(sys.argv[1:])
