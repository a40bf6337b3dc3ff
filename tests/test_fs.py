"""Atomic files and folders with umask permissions, and the run directory's writer lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from moectl.fs import LockHeld, atomic_directory, exclusive_lock, is_locked, write_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_directory_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_directory(target) as temp:
        (temp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_directory(target) as temp:
        (temp / "a.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "first"

    with atomic_directory(target) as temp:
        (temp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(
    ("umask", "folder", "file"), [(0o022, 0o755, 0o644), (0o002, 0o775, 0o664)]
)
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, folder, file) -> None:
    old = os.umask(umask)
    try:
        with atomic_directory(tmp_path / "d") as temp:
            (temp / "sub").mkdir(mode=0o700)
            (temp / "sub" / "w.bin").write_bytes(b"x")
            os.chmod(temp / "sub" / "w.bin", 0o600)  # as safetensors writes weights
        written = write_text(tmp_path / "t.json", "{}")
    finally:
        os.umask(old)
    assert mode(tmp_path / "d") == folder and mode(tmp_path / "d" / "sub") == folder
    assert mode(tmp_path / "d" / "sub" / "w.bin") == file and mode(written) == file


def test_a_held_lock_is_refused_naming_the_holder_and_left_unchanged(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from moectl.fs import exclusive_lock\n"
            "with exclusive_lock(Path(sys.argv[1])):\n"
            "    print('held', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = lock.read_bytes()
        with pytest.raises(LockHeld) as info, exclusive_lock(lock):
            pass
        assert info.value.pid == holder.pid
        assert lock.read_bytes() == before
    finally:
        holder.stdin.close()
        holder.wait()
    with exclusive_lock(lock):  # released when the holder exits
        assert lock.read_text().strip() == str(os.getpid())


def test_is_locked_sees_a_held_lock_and_writes_nothing(tmp_path: Path):
    """`moectl experiment --status` tells a running run by its held writer lock."""
    path = tmp_path / ".moectl.lock"
    assert not is_locked(path) and not path.exists()
    with exclusive_lock(path):
        held = path.read_bytes()
        assert is_locked(path)
        assert path.read_bytes() == held
    assert not is_locked(path)
