"""Training several runs at once in worker processes, one torch thread each.

On a small CPU, small GPT-2s do not scale across threads (two threads are often slower than one
when anything else runs), but independent runs scale across processes. Workers report progress
through a queue; the parent forwards it to the caller's callback. Ctrl-C in the parent becomes
SIGTERM for the workers, which the trainer treats as a request to checkpoint and stop (a second
SIGINT would abort it without a checkpoint). A parent that ends any other way (SIGTERM, SIGKILL)
cannot tell them, so each worker watches its parent and sends itself that SIGTERM once the
parent is gone, and never waits on the progress queue that no one reads any more: it
checkpoints, releases its run lock and exits, and a re-run resumes.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moectl.config import RunConfig
from moectl.errors import MoectlError
from moectl.fs import write_json
from moectl.progress import ProgressCallback, ProgressEvent
from moectl.training.results import TrainResult

RESULT_FILE = "result.json"
PARENT_POLL_S = 0.5
"""How often a worker checks that its parent is alive (while training, and while it waits to
put a message on the full progress queue)."""
PROGRESS_BACKLOG = 4
"""Progress messages a worker may have queued before its next one waits for the parent.

Bounding the queue keeps every worker within a few steps of what the parent has seen, so a
Ctrl-C that the parent handles at step N stops the workers by step N + a few, however loaded
the machine is (an unbounded queue let a fast worker finish while the parent lagged behind)."""


@dataclass(frozen=True)
class TrainJob:
    """One training stage: its run config, where it trains, and what it starts from."""

    name: str
    config: RunConfig
    corpus_dir: Path
    run_dir: Path
    init_from: Path | None = None


def train_stage(job: TrainJob, callback: ProgressCallback | None = None) -> TrainResult:
    """Train `job`, resuming from its latest checkpoint if an earlier attempt left one; the
    result is written to run_dir/result.json once the run is complete."""
    from moectl.rundir.locate import latest_checkpoint
    from moectl.training.trainer import train_run

    resume = latest_checkpoint(job.run_dir) is not None
    result = train_run(
        job.config,
        job.corpus_dir,
        job.run_dir,
        resume=True if resume else None,
        init_from=None if resume else job.init_from,
        callback=callback,
    )
    if result.stop_reason != "interrupted":
        write_json(job.run_dir / RESULT_FILE, result)
    return result


def _worker(job: TrainJob, messages: Any, parent: int) -> None:
    _watch_parent(parent)

    def forward(event: ProgressEvent) -> None:
        _send(messages, ("progress", job.name, event), parent)

    try:
        result = train_stage(job, forward)
    except MoectlError as error:
        _send(messages, ("error", job.name, (error.message, error.hint)), parent)
    except BaseException as error:  # a crash must reach the parent, not vanish with the process
        _send(messages, ("error", job.name, (f"{type(error).__name__}: {error}", None)), parent)
    else:
        _send(messages, ("done", job.name, result.model_dump_json()), parent)


def _watch_parent(parent: int) -> None:
    """SIGTERM this worker once `parent` is gone (it was reparented), however the parent ended:
    the trainer then checkpoints and stops, as after a Ctrl-C, and the run lock is released."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="moectl-parent-watch", daemon=True).start()


def _send(messages: Any, message: tuple[str, str, Any], parent: int) -> None:
    """Put `message` for the parent, waiting on the bounded queue while the parent lives; once
    it is gone the message is dropped (no one would read it, and a worker blocked here would
    hold its run lock for ever)."""
    while os.getppid() == parent:
        try:
            messages.put(message, timeout=PARENT_POLL_S)
            return
        except queue_module.Full:
            continue
    messages.cancel_join_thread()  # exit without flushing to a pipe no one reads


def run_parallel(
    jobs: list[TrainJob],
    workers: int,
    callback: ProgressCallback | None = None,
    on_done: Callable[[str, TrainResult], None] | None = None,
    on_error: Callable[[str, str], None] | None = None,
) -> dict[str, TrainResult]:
    """Run `jobs` with at most `workers` at a time; returns each job's TrainResult by name.

    Progress events arrive with their stage renamed "<stage> <job>" (e.g. "train moe").
    A failing job raises its MoectlError after the running jobs have stopped; `on_error` hears
    each failing job's name and message as it fails.
    """
    context = multiprocessing.get_context("spawn")
    messages = context.Queue(maxsize=PROGRESS_BACKLOG)
    waiting = list(jobs)
    running: dict[str, Any] = {}
    results: dict[str, TrainResult] = {}
    failure: MoectlError | None = None
    stopping = False

    def stop_all() -> None:
        for process in running.values():
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    while waiting or running:
        try:
            while waiting and len(running) < workers and not stopping:
                job = waiting.pop(0)
                process = context.Process(
                    target=_worker, args=(job, messages, os.getpid()), daemon=True
                )
                process.start()
                running[job.name] = process
            if not running:
                break
            try:
                kind, name, payload = messages.get(timeout=1.0)
            except queue_module.Empty:
                _check_alive(running, stopping)
                continue
            if kind == "progress":
                if callback is not None:
                    callback(
                        ProgressEvent(
                            f"{payload.stage} {name}",
                            payload.completed,
                            payload.total,
                            payload.message,
                            payload.metrics,
                        )
                    )
                continue
            running.pop(name).join()
            if kind == "done":
                results[name] = TrainResult.model_validate_json(payload)
                if on_done is not None:
                    on_done(name, results[name])
            else:
                message, hint = payload
                if on_error is not None:
                    on_error(name, message)
                if failure is None:
                    failure = MoectlError(f"stage {name} failed: {message}", hint)
                    stopping = True
                    stop_all()
        except KeyboardInterrupt:
            stopping = True
            stop_all()
    if failure is not None:
        raise failure
    return results


def _check_alive(running: dict[str, Any], stopping: bool) -> None:
    """A worker that died without a word (killed, out of memory) is an error, not a hang; while
    stopping, one that our SIGTERM caught before its trainer started is simply stopped."""
    for name, process in list(running.items()):
        if not process.is_alive() and process.exitcode not in (0, None):
            running.pop(name)
            if stopping:
                continue
            raise MoectlError(
                f"stage {name}: its worker process died (exit code {process.exitcode})",
                hint="run the same command again to resume from the last checkpoint",
            )
