"""Launching a torchrun job of two gloo ranks on the CPU, and reading its runs back (the DDP and
FSDP tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH_TIMEOUT = 150


def torchrun(*train_args: str | Path) -> subprocess.Popen:
    """`python -m torch.distributed.run ... -m moectl train ARGS` for 2 ranks, in its own
    session (so a stuck launch is killed whole)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "--rdzv-conf=join_timeout=60", "-m", "moectl", "train", *map(str, train_args),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def fresh(corpus: Path, run_dir: Path, overrides: list[str]) -> list[str | Path]:
    """The `moectl train` arguments of a new tiny run."""
    sets = [arg for item in overrides for arg in ("--set", item)]
    return ["--preset", "tiny", *sets, "--data", corpus, "--run-dir", run_dir]


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """Wait for a launch; past LAUNCH_TIMEOUT kill its whole session and fail with its output."""
    try:
        output, _ = process.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun did not finish in {LAUNCH_TIMEOUT} s:\n{output[-4000:]}")
    return process.returncode, output


def rows(run_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    path = run_dir / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def replayable(run_dir: Path) -> list[dict]:
    """Metric rows without what depends on the clock (time, throughput)."""
    drop = {"time", "tokens_per_s"}
    return [{k: v for k, v in row.items() if k not in drop} for row in rows(run_dir)]
