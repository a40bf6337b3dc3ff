"""However `moectl quickstart` ends (SIGTERM, SIGINT, SIGKILL), its training workers and the
multiprocessing resource tracker end with it and release the run locks, so the documented re-run
resumes instead of being refused as "in use by another moectl process" (issue 28 section 3).

One study folder is started three times, each start killed once a worker holds a run lock (the
earliest point where a stale worker would block the next start; the last once a worker trains):
every start after the first is the re-run of a killed one, and after the last every run lock is
free and every run that was training has the checkpoint a re-run resumes from."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moectl.fs import exclusive_lock
from moectl.rundir.locate import latest_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]
ROOT = Path(__file__).resolve().parents[2]
START_S = 300  # the first start prepares the corpus on a loaded 2-core machine
END_S = 120  # a stopping worker saves a checkpoint first


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a live process, None once it has ended (a zombie has ended)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else (int(ppid), state)


def _descendants(pid: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = found[0]
    family, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - family
        family |= frontier
    return family


def _locked_runs(out: Path, family: set[int]) -> list[Path]:
    """The study's runs whose lock a process of `family` holds (each holder writes its pid)."""
    runs = []
    for lock in out.glob("runs/*/.moectl.lock"):
        text = lock.read_text().strip()
        if text.isdigit() and int(text) in family:
            runs.append(lock.parent)
    return runs


def _trained_since(run: Path, started: float) -> bool:
    """Whether the run's worker has logged a training step (a "train" row) since `started`."""
    metrics = run / "metrics.jsonl"
    if not metrics.is_file() or metrics.stat().st_mtime <= started:
        return False
    lines = metrics.read_bytes().splitlines()
    return any(b'"kind":"train"' in line.replace(b" ", b"") for line in lines)


def _start(out: Path, log: Path) -> subprocess.Popen:
    """quickstart --tiny in its own process, with SIGINT as a terminal gives it (a background
    shell starts jobs with SIGINT ignored)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "moectl", "quickstart", "--tiny", "--no-tensorboard"]
    return subprocess.Popen(
        [*command, "--out", str(out)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_a_worker(
    parent: subprocess.Popen, out: Path, log: Path, training: bool
) -> tuple[set[int], list[Path]]:
    """Poll until one of `parent`'s workers holds a run lock (and, if `training`, has trained a
    step); returns every descendant of `parent` then, and the runs that trained since."""
    started, deadline = time.time(), time.monotonic() + START_S
    while time.monotonic() < deadline:
        assert parent.poll() is None, f"quickstart ended ({parent.returncode}): {log.read_text()}"
        family = _descendants(parent.pid)
        runs = _locked_runs(out, family)
        trained = [run for run in runs if _trained_since(run, started)]
        if runs and (trained or not training):
            return family, trained
        time.sleep(0.2)
    parent.kill()
    pytest.fail(f"no worker took a run lock in {START_S} s: {log.read_text()}")


@pytest.mark.timeout(1800)
def test_every_worker_ends_with_the_parent_however_it_ends(tmp_path):
    out = tmp_path / "study"
    for number, signum in enumerate((signal.SIGTERM, signal.SIGINT, signal.SIGKILL)):
        log = tmp_path / f"start-{number}.log"
        parent = _start(out, log)
        # the last start is killed mid-training: its orphaned worker must checkpoint and stop
        training = signum == signal.SIGKILL
        family, trained = _wait_for_a_worker(parent, out, log, training)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in family]
        assert any(b"resource_tracker" in command for command in commands), commands
        family |= _descendants(parent.pid)  # any worker started since
        os.kill(parent.pid, signum)
        code = parent.wait(timeout=END_S)
        assert code in (-signum, 128 + signum), log.read_text()
        deadline = time.monotonic() + END_S
        while (alive := {pid for pid in family if _stat(pid)}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive, f"{signum.name}: processes outlived quickstart: {sorted(alive)}"
    # what the next start resumes from: the checkpoints of the runs killed mid-training
    assert trained and all(latest_checkpoint(run) is not None for run in trained), trained
    locks = sorted(out.glob("runs/*/.moectl.lock"))
    assert locks
    for lock in locks:  # every run lock is free for the next start
        with exclusive_lock(lock):
            pass
