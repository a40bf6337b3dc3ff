"""Atomic writes of files and directories, with the permissions the user's umask asks for.

Every writer of a corpus, run directory, model artifact, result or report goes through here, so
a reader (`inspect`, `evaluate`, `visualize` during a run) sees either the previous complete file
or the new complete one, never a half-written one under the final name. Temporary names start
with a dot beside the target, so a rename never crosses a file system. `tempfile` creates
owner-only files and folders and safetensors writes 0600 weights, so whatever is renamed into
place gets 0666/0777 minus the umask, as a plain `open()` or `mkdir` would have made it: a run
or corpus in a shared group directory stays readable by the group.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from moectl.errors import MoectlError

_TEMP_NAME = re.compile(r"^\..+\.(tmp|old)-[A-Za-z0-9_]+$|^\..+\.[A-Za-z0-9_]+\.tmp$")
"""The hidden names this module stages under (mkdtemp/mkstemp beside the target)."""


def read_bytes(path: Path, hint: str | None = None) -> bytes:
    """The bytes of `path`, or a MoectlError naming the file when it is missing or unreadable."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MoectlError(f"{path} does not exist", hint=hint) from None
    except PermissionError:
        raise MoectlError(f"{path} is not readable (permission denied)", hint=hint) from None
    except OSError as exc:
        raise MoectlError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from None


def read_text(path: Path, hint: str | None = None) -> str:
    """The UTF-8 text of `path`, or a MoectlError naming the file and what is wrong with it.

    Every reader of a record a user can damage (a config, run.json, an init record) goes
    through here, so a missing, unreadable or binary file is one clear line, never a traceback.
    """
    data = read_bytes(path, hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MoectlError(
            f"{path} is not UTF-8 text (a binary byte at offset {exc.start})", hint=hint
        ) from None


def check_writable(path: Path, option: str) -> None:
    """Refuse, before any work, a destination this process cannot create or replace: the
    nearest existing folder at or above `path` must be writable. `option` names the flag
    that chose `path` (e.g. --out), for the message."""
    path = Path(path)
    folder = _nearest_existing(path if path.is_dir() else path.parent)
    if not folder.is_dir():
        raise MoectlError(
            f"cannot write {path}: {folder} is a file, not a folder",
            hint=f"choose a {option} below a folder",
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MoectlError(
            f"cannot write {path}: {folder} is not writable (permission denied)",
            hint=f"choose a {option} in a folder you can write to",
        )


def check_writable_folder(path: Path, option: str) -> None:
    """`check_writable` for a destination that is a folder, which an existing file there
    cannot become either."""
    _refuse_a_file(Path(path), option)
    check_writable(path, option)


def check_folder_path(path: Path, option: str) -> None:
    """Refuse a folder that a command only reads (a missing one reads as empty) where a file
    stands at `path` or above it."""
    path = Path(path)
    _refuse_a_file(path, option)
    above = _nearest_existing(path)
    if not above.is_dir():
        raise MoectlError(
            f"{option} {path}: {above} is a file, not a folder",
            hint=f"choose a {option} below a folder",
        )


def _nearest_existing(path: Path) -> Path:
    """`path` or the nearest of its parents that exists (the root at worst)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _refuse_a_file(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise MoectlError(
            f"{option} {path} is a file, not a folder",
            hint=f"choose a new or existing {option} folder",
        )


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files and folders this module staged in `folder` and a killed process
    left behind; only call it while holding the lock of whatever owns `folder`."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for child in folder.iterdir():
        if _TEMP_NAME.match(child.name):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(child)
    return removed


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: Path) -> None:
    """Give `path`, and everything below it if it is a folder, the umask's default modes."""
    mask = current_umask()
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temp file path beside `path`; on success it is renamed to `path`, on an error
    removed. For writers that take a file name (a figure's savefig)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        apply_umask(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """Write `text` to a temp file beside `path`, then rename it into place."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: Path, model: BaseModel) -> Path:
    """Write a pydantic model as indented JSON, atomically."""
    return write_text(path, model.model_dump_json(indent=2) + "\n")


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a new, empty temp folder beside `target`; on success it replaces `target`.

    On an error the temp folder vanishes and `target` is as it was. An existing `target` is
    moved aside only once the new folder is complete, and removed after the swap. Deciding
    whether `target` may be replaced is the caller's job.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    staging = holder / target.name
    staging.mkdir()
    try:
        yield staging
        apply_umask(staging)
        replace_directory(staging, target)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def replace_directory(new: Path, target: Path) -> None:
    """Rename `new` to `target`; an existing target is moved aside first and removed after."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


class LockHeld(Exception):
    """The lock file is held by another process; `pid` is the holder's, when it wrote one."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(f"held by pid {pid}")
        self.pid = pid


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an OS lock (flock) on `path` for the block; the holder's pid is written into it.

    The kernel drops the lock when the process exits in any way, `kill -9` included, so a
    crashed run never leaves a stale lock. A held lock raises `LockHeld` at once (no waiting)
    and leaves the file as it was. The file itself stays: deleting it would let a third process
    lock a new file while the second still holds the old one.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise LockHeld(int(text) if text.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


def is_locked(path: Path) -> bool:
    """Whether another process holds `exclusive_lock` on the file `path` now (a missing file is
    not locked). Asks for a shared lock on a read-only descriptor, so it writes nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this call got
    return False
