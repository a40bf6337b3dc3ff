"""The writer's side of a run directory, in the order training uses it: hold the lock, refuse a
--run-dir moectl must not write into, pick the checkpoint to resume and the changes it may make,
write config.yaml and run.json, append JSONL rows, and cut the logs back to a resumed step.

One writer at a time: `lock_run_dir` holds an OS lock for as long as a run writes, and a second
writer is refused naming the holder's pid."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from moectl.config import RunConfig, dump_yaml, flatten
from moectl.errors import MoectlError, TrainingError
from moectl.fs import LockHeld, exclusive_lock, write_json, write_text
from moectl.rundir.kinds import describe_path, detect_kind
from moectl.rundir.layout import (
    BEST_DIR,
    CONFIG_NAME,
    LOCK_NAME,
    METRICS_NAME,
    ROUTING_NAME,
    RUN_INFO_NAME,
)
from moectl.rundir.locate import latest_checkpoint, list_checkpoints
from moectl.rundir.reading import read_jsonl, read_run_config, read_run_info
from moectl.rundir.records import Amendment, Resume, RunInfo
from moectl.version import __version__


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's writer lock (creating the folder); a held one is refused."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(run_dir / LOCK_NAME):
            yield
    except LockHeld as held:
        holder = f"pid {held.pid}" if held.pid is not None else "an unknown pid"
        raise TrainingError(
            f"run directory {run_dir} is in use by another moectl process ({holder}); "
            "wait for it to finish, or stop it first"
        ) from None


def is_moectl_run(path: Path) -> bool:
    """Whether moectl made the run directory `path`: it holds the writer lock file (created
    first thing), or config.yaml beside a readable run.json. A user's folder that merely has a
    config.yaml or metrics.jsonl is not one, so a new run never writes into it."""
    path = Path(path)
    if (path / LOCK_NAME).is_file():
        return True
    if detect_kind(path) != "run":
        return False
    try:
        return read_run_info(path) is not None
    except MoectlError:
        return False


def check_run_dir(run_dir: Path, resuming: bool) -> None:
    """Refuse, before anything is written, a --run-dir moectl must not write into: a resume
    needs a moectl run; a new run needs a new or empty folder, or a moectl run (whose
    checkpoints `resolve_resume` then protects)."""
    run_dir = Path(run_dir)
    if resuming and not run_dir.is_dir():
        raise TrainingError(
            f"run directory {run_dir} does not exist, so there is nothing to resume",
            hint="check --run-dir, or start a new run without --resume",
        )
    if not run_dir.exists() or is_moectl_run(run_dir):
        return
    found = describe_path(run_dir)
    if found == "an empty folder":
        if not resuming:
            return
        raise TrainingError(
            f"run directory {run_dir} has no checkpoint to resume from (it is an empty folder)",
            hint="check --run-dir, or start a new run without --resume",
        )
    raise TrainingError(
        f"--run-dir {run_dir} is {found}, not a moectl run directory",
        hint="choose a new --run-dir (moectl never writes into a folder it did not make)"
        if not resuming
        else "pass the --run-dir of a `moectl train` run",
    )


def resolve_resume(run_dir: Path, resume: Path | bool | None) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run (refusing to clobber checkpoints)."""
    if resume is None or resume is False:
        check_run_dir(run_dir, resuming=False)
        if list_checkpoints(run_dir):
            raise TrainingError(
                f"run directory {run_dir} already has checkpoints",
                hint=f"continue it with `moectl train --run-dir {run_dir} --resume`, "
                "or choose a new --run-dir",
            )
        return None
    check_run_dir(run_dir, resuming=True)
    if resume is True:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise TrainingError(
                f"run directory {run_dir} has no checkpoint to resume from",
                hint="start it again without --resume (checkpoints are written every "
                "train.save_every steps)",
            )
        return checkpoint
    path = Path(resume)
    if not path.is_dir():
        raise TrainingError(
            f"checkpoint {path} does not exist",
            hint=f"pick one of {run_dir}/checkpoints/step-N, or pass --resume alone for the latest",
        )
    return path


RESUMABLE_KEYS = ("train.max_steps", "train.parallel")
"""The settings a resume may change: how long the run goes on, and how its ranks hold the model
(checkpoints are full state dicts either way); everything else continues as it was."""


def resume_amendments(run_dir: Path, config: RunConfig, step: int) -> list[Amendment]:
    """Check that `config` is the run's saved config but for RESUMABLE_KEYS; each change as an
    amendment to record. Anything else differing is a TrainingError naming it. The
    data section is not compared: it is always the corpus manifest's (a run saved before that
    rule recorded its preset's, and gets the corpus's on this resume)."""
    saved = read_run_config(run_dir)
    ours, theirs = (flatten(c.model_dump(mode="json", exclude={"data"})) for c in (config, saved))
    differing = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    others = [k for k in differing if k not in RESUMABLE_KEYS]
    if others:
        raise TrainingError(
            f"a resumed run keeps its saved config, but this one differs in {', '.join(others)}",
            hint=f"resume without changes (only --set {' or '.join(RESUMABLE_KEYS)} may change), "
            "or start a new --run-dir",
        )
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return [
        Amendment(time=now, step=step, key=key, old=theirs.get(key), new=ours.get(key))
        for key in RESUMABLE_KEYS
        if key in differing
    ]


def start_run(
    run_dir: Path,
    config: RunConfig,
    data_dir: Path,
    init_from: Path | None,
    domains: list[str],
    resumed_from: Path | None,
    amendments: list[Amendment] | None = None,
    precision: str | None = None,
) -> None:
    """Write config.yaml and run.json (last, so a run dir with run.json has its config); a
    fresh start also clears logs and best/ of an earlier attempt that saved no checkpoint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if resumed_from is None:
        for name in (METRICS_NAME, ROUTING_NAME):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / BEST_DIR, ignore_errors=True)
    write_text(run_dir / CONFIG_NAME, dump_yaml(config))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    previous = read_run_info(run_dir) if resumed_from is not None else None
    info = RunInfo(
        created=previous.created if previous else now,
        moectl_version=__version__,
        data_dir=str(Path(data_dir).resolve()),
        init_from=str(init_from) if init_from else (previous.init_from if previous else None),
        domains=domains,
        resumes=previous.resumes if previous else [],
        amendments=[*(previous.amendments if previous else []), *(amendments or [])],
        precision=precision,
    )
    if resumed_from is not None:
        info.resumes.append(Resume(time=now, checkpoint=str(resumed_from)))
    write_json(run_dir / RUN_INFO_NAME, info)


class JsonlWriter:
    """Appends one JSON object per line, flushed so a killed run keeps every finished row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def write(self, row: BaseModel) -> None:
        self._file.write(row.model_dump_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def truncate_after(paths: list[Path], step: int) -> None:
    """Drop the rows each JSONL file in `paths` logged after `step`, so a resumed run does not
    repeat steps in the log. Every file is read before any is written: a damaged one is refused
    with all of them as they were."""
    kept = {
        path: [row for row in read_jsonl(path) if row.get("step", 0) <= step]
        for path in paths
        if path.is_file()
    }
    for path, rows in kept.items():
        write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
