"""`moectl experiment --launcher slurm` on a real one-node SLURM (tests/helpers/slurm_cluster):
the tiny two-arm x two-seed experiment is submitted as jobs ordered by the scheduler, one arm's
job is killed by `scancel` mid-run, the next `moectl experiment` resubmits only that run (and
the evaluation), and every run and the report equal the local launcher's on the same seeds.

Where the cluster cannot start (no slurm-wlm / munge, not root) the tests skip and say why;
`.ci/run` installs both, so CI runs them. The SLURM-free parts (the file's slurm section, the
sbatch parameters, a multi-GPU arm's torchrun command, a missing submitit) are tested without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_experiment import TINY, serial_runs

from moectl.cli.schemas import ExperimentOutput
from moectl.study.experiment.table import ExperimentTable, markdown

KILLED = "moe-seed1"
STEPS = 40
"""The arms' steps (the pretrains stay at 4): the cancelled run stops well before its end."""
HOLD_SITE = Path(__file__).parents[1] / "helpers" / "slurm_hold"
"""A sitecustomize that holds the KILLED run's first job at its step-3 checkpoint until the
test's scancel arrives (the resubmitted job runs without it)."""
EXPERIMENT = {
    **TINY,
    "base": {**TINY["base"], "overrides": [*TINY["base"]["overrides"], f"train.max_steps={STEPS}"]},
}
RESULT_KEYS = (
    "steps",
    "stop_reason",
    "last_train_loss",
    "best_eval_loss",
    "best_step",
    "last_eval",
)


def _write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A one-node SLURM for the session, SLURM_CONF pointing at it; skips, saying why, where
    it cannot start."""
    pytest.importorskip("submitit")
    from helpers.slurm_cluster import start_cluster

    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    if isinstance(cluster, str):
        pytest.skip(f"no one-node SLURM on this machine: {cluster}")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", str(cluster.conf))
            yield cluster
    finally:
        cluster.stop()


def _wait_for(condition, what: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _statuses(cli, file: Path, out: Path) -> dict[str, tuple[str, str]]:
    result = cli("experiment", file, "--out", out, "--status", "--json")
    assert result.exit_code == 0, result.output
    runs = ExperimentOutput.model_validate_json(result.stdout).runs
    return {run.name: (run.state, run.detail) for run in runs}


@pytest.fixture(scope="module")
def experiment(slurm, tmp_path_factory):
    """The experiment run locally (in-process), then through SLURM: submitted, one arm's job
    cancelled at its step-3 checkpoint, then run again with --wait."""
    from conftest import invoke_cli

    import moectl.study.experiment.slurm as launcher

    root = tmp_path_factory.mktemp("slurm-experiment")
    file = _write(root / "tiny.yaml", EXPERIMENT)
    local = root / "local"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("moectl.study.parallel.run_parallel", serial_runs)
        done = invoke_cli("experiment", file, "--out", local, "--json")
    assert done.exit_code == 0, done.output

    out = root / "slurm"
    with pytest.MonkeyPatch.context() as patch:  # the jobs inherit this environment
        paths = [str(HOLD_SITE), *filter(None, [os.environ.get("PYTHONPATH")])]
        patch.setenv("PYTHONPATH", os.pathsep.join(paths))
        patch.setenv("MOECTL_TEST_HOLD", f"{KILLED}:3")
        submitted = invoke_cli("experiment", file, "--out", out, "--launcher", "slurm", "--json")
    assert submitted.exit_code == 0, submitted.output
    first = ExperimentOutput.model_validate_json(submitted.stdout)
    recorded = json.loads((out / "experiment.json").read_text())["jobs"]
    queued = _statuses(invoke_cli, file, out)
    job = {j.name: j.job_id for j in first.jobs}[KILLED]
    checkpoint = out / "runs" / KILLED / "checkpoints" / "step-3"
    # The job holds at its step-3 checkpoint until the cancel's SIGTERM (HOLD_SITE), so the
    # cancel lands mid-run however slow this machine is.
    _wait_for(lambda: checkpoint.is_dir() or job not in launcher.queued_jobs([job]), "a job")
    log = out / "slurm" / f"{job}_0_log.err"
    assert checkpoint.is_dir(), log.read_text() if log.is_file() else f"job {job} never ran"
    subprocess.run(["scancel", job], check=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launcher, "POLL_S", 0.5)
        launcher.wait_for_jobs(launcher.ExperimentLayout(out))
        killed = _statuses(invoke_cli, file, out)
        left = sorted(p.name for p in checkpoint.parent.iterdir())
        again = invoke_cli(
            "experiment", file, "--out", out, "--launcher", "slurm", "--wait", "--json"
        )
    assert again.exit_code == 0, again.output
    return file, local, out, first, (recorded, queued), killed, left, again


def test_each_run_is_a_job_after_its_pretrain_and_the_evaluation_after_every_arm(experiment):
    *_, first, (recorded, queued), _, _, _ = experiment
    jobs = {job.name: job for job in first.jobs}
    assert list(jobs) == [
        "pretrain-seed0",
        "pretrain-seed1",
        "dense-seed0",
        "dense-seed1",
        "moe-seed0",
        "moe-seed1",
        "evaluation",
    ]
    assert {job.status for job in jobs.values()} == {"submitted"}
    for seed in (0, 1):
        assert jobs[f"pretrain-seed{seed}"].after == []
        for arm in ("dense", "moe"):
            assert jobs[f"{arm}-seed{seed}"].after == [jobs[f"pretrain-seed{seed}"].job_id]
    arms = [jobs[n].job_id for n in ("dense-seed0", "dense-seed1", "moe-seed0", "moe-seed1")]
    assert sorted(jobs["evaluation"].after) == sorted(arms)
    assert recorded == {name: job.job_id for name, job in jobs.items()}
    for name, (status, detail) in queued.items():
        assert status in ("queued", "running", "done"), (name, status, detail)
        if status != "done":
            assert detail.startswith(f"job {jobs[name].job_id}"), (name, detail)


def test_a_cancelled_job_leaves_a_checkpoint_and_shows_failed_with_its_last_line(experiment):
    *_, first, _, killed, left, _ = experiment
    job = {j.name: j.job_id for j in first.jobs}[KILLED]
    state, detail = killed[KILLED]
    assert state == "failed" and detail.startswith(f"job {job}: "), detail
    assert "CANCELLED" in detail or f"run {KILLED} stopped before its end" in detail, detail
    steps = [int(name.removeprefix("step-")) for name in left]
    assert steps and max(steps) == 3, left  # held at step 3 until the SIGTERM, then stopped
    others = {name: s for name, (s, _) in killed.items() if name != KILLED}
    assert set(others.values()) == {"done"}


def test_the_next_run_resubmits_only_the_cancelled_run_and_the_evaluation(experiment):
    *_, again = experiment
    output = ExperimentOutput.model_validate_json(again.stdout)
    statuses = {job.name: job.status for job in output.jobs}
    assert {n for n, s in statuses.items() if s == "submitted"} == {KILLED, "evaluation"}
    assert {s for n, s in statuses.items() if n not in (KILLED, "evaluation")} == {"done"}
    assert {run.state for run in output.runs} == {"done"}


def test_slurm_runs_and_report_equal_the_local_launchers(experiment):
    """Same final losses exactly, run by run (the resumed one too), and the same report,
    wall-clock seconds aside."""
    _, local, out, *_, left, again = experiment
    for run in sorted(p.name for p in (local / "runs").iterdir()):
        ours = json.loads((out / "runs" / run / "result.json").read_text())
        theirs = json.loads((local / "runs" / run / "result.json").read_text())
        assert {k: ours[k] for k in RESULT_KEYS} == {k: theirs[k] for k in RESULT_KEYS}, run
    resumed = json.loads((out / "runs" / KILLED / "result.json").read_text())
    assert Path(resumed["resumed_from"]).name == max(left, key=lambda n: int(n[5:]))
    assert resumed["steps"] == STEPS

    def without_walls(table: ExperimentTable) -> ExperimentTable:
        rows = [
            row.model_copy(update={"wall_seconds": [0.0] * len(row.wall_seconds)})
            for row in table.rows
        ]
        return table.model_copy(update={"rows": rows})

    ours = ExperimentTable.model_validate_json((out / "report.json").read_text())
    theirs = ExperimentTable.model_validate_json((local / "report.json").read_text())
    assert without_walls(ours) == without_walls(theirs)
    assert markdown(without_walls(ours)) == markdown(without_walls(theirs))
    assert ExperimentOutput.model_validate_json(again.stdout).table == ours


def test_the_slurm_section_is_validated_one_line_per_key_and_the_cli_overrides_it(
    cli, tmp_path: Path
):
    from moectl.study.experiment.spec import SlurmSpec

    bad = {
        **TINY,
        "launcher": "slurm",
        "slurm": {"time": "2h", "gpus_per_run": -1, "partitoin": "gpu"},
    }
    file = _write(tmp_path / "bad.yaml", bad)
    result = cli("experiment", file, "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = sorted(" ".join(line.split()) for line in result.stderr.splitlines()[1:])
    assert lines == sorted(
        [
            "slurm.partitoin: unknown field (did you mean 'partition'?)",
            "slurm.gpus_per_run: Input should be greater than or equal to 0",
            "slurm.time: '2h' is not a SLURM time: give minutes (90), 8:00:00 or 1-12:00:00",
        ]
    )
    result = cli(
        "experiment",
        _write(tmp_path / "ok.yaml", TINY),
        "--launcher",
        "slurm",
        "--time",
        "soon",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 2
    assert "time: 'soon' is not a SLURM time" in " ".join(result.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "ok.yaml"]
    times = {
        t: SlurmSpec(time=t).minutes for t in (90, "90", "1:30", "8:00:00", "1-12", "1-0:00:01")
    }
    assert times == {90: 90, "90": 90, "1:30": 2, "8:00:00": 480, "1-12": 2160, "1-0:00:01": 1441}


def test_sbatch_parameters_and_dependencies():
    from moectl.study.experiment.slurm import dependency, sbatch_parameters
    from moectl.study.experiment.spec import SlurmSpec

    spec = SlurmSpec(partition="gpu", gpus_per_run=4, cpus_per_run=8, mem_gb=32, time="1-0")
    assert sbatch_parameters(spec, 4) == {
        "time": 1440,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": 8,
        "signal_delay_s": 120,
        "partition": "gpu",
        "mem": "32GB",
        "gpus_per_node": 4,
    }
    assert "gpus_per_node" not in sbatch_parameters(SlurmSpec(), 0)
    assert dependency([]) == {"additional_parameters": {}}
    assert dependency(["12", "13"])["additional_parameters"] == {
        "dependency": "afterok:12:13",
        "kill_on_invalid_dep": "yes",
    }


def test_a_multi_gpu_arm_trains_through_torchrun_in_its_job(tmp_path: Path, monkeypatch):
    """gpus_per_run > 1: the job runs torchrun, one rank per GPU, each rank training the run
    (this module's main); no GPU here, so the command line is what is checked."""
    import moectl.study.experiment.slurm as launcher
    from moectl.study.parallel import TrainJob

    calls = []
    monkeypatch.setattr(launcher.subprocess, "run", lambda cmd, check: calls.append(cmd))
    run_dir = tmp_path / "runs" / "moe-seed0"
    job = TrainJob("moe-seed0", None, tmp_path / "data", run_dir)  # type: ignore[arg-type]
    with pytest.raises(launcher.RunFailure, match="stopped before its end"):
        launcher.train_job(job, 4, tmp_path)
    (command,) = calls
    job_file = tmp_path / "moe-seed0.train-job.pkl"
    assert command == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=4",
        "-m",
        "moectl.study.experiment.slurm",
        str(job_file),
    ]
    import pickle

    assert pickle.loads(job_file.read_bytes()) == job


def test_without_submitit_slurm_is_one_line_naming_the_extra(cli, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    file = _write(tmp_path / "tiny.yaml", TINY)
    result = cli("experiment", file, "--out", tmp_path / "out", "--launcher", "slurm")
    assert result.exit_code == 2
    assert "pip install 'moectl[slurm]'" in result.stderr
    assert not (tmp_path / "out").exists()
