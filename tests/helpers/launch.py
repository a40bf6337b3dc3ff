"""Launching a torchrun job of two gloo ranks on the CPU, and reading its runs back (the DDP and
FSDP tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

LAUNCH_TIMEOUT = 150
LAUNCH_MARK = "MOECTL_TEST_LAUNCH"
"""An environment variable unique to each launch, so a timed-out one's ranks can be found."""
_MARKS: dict[int, str] = {}


def torchrun(*train_args: str | Path) -> subprocess.Popen:
    """`python -m torch.distributed.run ... -m moectl train ARGS` for 2 ranks, in its own
    session, marked (LAUNCH_MARK) so that `kill_launch` finds its ranks too."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "--rdzv-conf=join_timeout=60", "-m", "moectl", "train", *map(str, train_args),
    ]  # fmt: skip
    mark = uuid.uuid4().hex
    env = {**os.environ, "OMP_NUM_THREADS": "1", LAUNCH_MARK: mark}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    _MARKS[process.pid] = mark
    return process


def fresh(corpus: Path, run_dir: Path, overrides: list[str]) -> list[str | Path]:
    """The `moectl train` arguments of a new tiny run."""
    sets = [arg for item in overrides for arg in ("--set", item)]
    return ["--preset", "tiny", *sets, "--data", corpus, "--run-dir", run_dir]


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """Wait for a launch; past LAUNCH_TIMEOUT kill the launcher and every rank it started and
    fail with its output."""
    try:
        output, _ = process.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_launch(process)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            output = "(no output: a rank still holds the pipe)"
        pytest.fail(f"torchrun did not finish in {LAUNCH_TIMEOUT} s:\n{output[-4000:]}")
    return process.returncode, output


def kill_launch(process: subprocess.Popen) -> None:
    """SIGKILL the launcher's session and every process carrying its LAUNCH_MARK: torchrun
    starts each rank in a session of its own, and a rank whose launcher is gone is orphaned,
    still holding the output pipe."""
    mark = _MARKS.pop(process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for proc in Path("/proc").glob("[0-9]*"):
        if process_env_mark(int(proc.name)) == mark:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def process_env_mark(pid: int) -> str | None:
    """The LAUNCH_MARK in a process's environment (Linux /proc), or None."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = f"{LAUNCH_MARK}=".encode()
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode()
    return None


def rows(run_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    path = run_dir / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def replayable(run_dir: Path) -> list[dict]:
    """Metric rows without what depends on the clock (time, throughput)."""
    drop = {"time", "tokens_per_s"}
    return [{k: v for k, v in row.items() if k not in drop} for row in rows(run_dir)]
