"""Test-wide settings: never touch the network, keep torch to one thread per test process."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
from typer.testing import CliRunner


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def invoke_cli(*args):
    """Run the moectl CLI in-process: invoke_cli("inspect", "x") -> click Result."""
    from moectl.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def trained_run(tmp_path_factory, label: str, *args):
    """A run trained through the CLI with `args` (preset, --set, --data) in a fresh folder, for
    module fixtures that many tests read."""
    path = tmp_path_factory.mktemp(label) / "run"
    result = invoke_cli("train", *args, "--run-dir", path)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def cli():
    """`invoke_cli` as a fixture: cli("inspect", "x") -> click Result (exit_code, output)."""
    return invoke_cli


def write_domain_texts(root, n_texts: int = 40) -> dict[str, list[str]]:
    """Small, clearly different code / math / prose documents, one file each, seeded."""
    import random

    rng = random.Random(0)
    words = [
        "the",
        "river",
        "valley",
        "town",
        "market",
        "people",
        "summer",
        "winter",
        "old",
        "bridge",
        "road",
        "light",
    ]
    names = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "items",
        "total",
        "value",
        "count",
        "index",
        "result",
        "node",
        "graph",
    ]
    files: dict[str, list[str]] = {}
    for domain in ("code", "math", "prose"):
        folder = root / domain
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_texts):
            if domain == "code":
                a, b = rng.sample(names, 2)
                line = f"def {a}_{i}({b}):\n    return [{b} * {rng.randint(1, 9)} for {a} in x]\n"
                text = line * 3
            elif domain == "math":
                x, y = rng.randint(1, 99), rng.randint(1, 99)
                text = " ".join(f"Q: {x + k} + {y} = ? A: {x + k + y}." for k in range(6))
            else:
                text = " ".join(rng.choice(words) for _ in range(60)) + "."
            (folder / f"{i}.txt").write_text(text, encoding="utf-8")
        files[domain] = [str(folder)]
    return files


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A prepared three-domain corpus (bpe:300, blocks of 16) shared by training tests. 100
    texts per domain hold out 10 eval documents each (10%), the fewest a verdict may rest on
    (bootstrap.MIN_DOCUMENTS)."""
    from moectl.config import DataConfig
    from moectl.data.prepare import prepare_corpus

    root = tmp_path_factory.mktemp("tiny-corpus")
    files = write_domain_texts(root / "texts", n_texts=100)
    config = DataConfig(
        source="files", domains=list(files), files=files, tokenizer="bpe:300", block_size=16
    )
    return prepare_corpus(config, root / "corpus").path


def snapshot(root) -> dict[str, tuple[str, bytes | None]]:
    """Every path below `root` (itself included) with its mode and, for a file, its bytes:
    equal before and after a refused command means it changed nothing on disk."""
    from pathlib import Path

    root = Path(root)
    if not root.exists():
        return {}
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        found[str(path.relative_to(root))] = (
            oct(info.st_mode),
            path.read_bytes() if path.is_file() else None,
        )
    return found


def tree_hash(root) -> str:
    """A digest of `snapshot(root)`, for comparing a folder's bytes before and after."""
    import hashlib

    digest = hashlib.sha256()
    entries = snapshot(root)
    if not entries:
        return "absent"
    for name, (mode, data) in entries.items():
        digest.update(name.encode() + mode.encode() + (data or b""))
    return digest.hexdigest()


@contextlib.contextmanager
def untouched(*roots):
    """Assert that the block changes no path, mode or byte below any of `roots` (a folder that
    did not exist must still not exist)."""
    before = [snapshot(root) for root in roots]
    yield
    for root, old in zip(roots, before, strict=True):
        new = snapshot(root)
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        assert not changed, f"{root} changed: {changed[:10]}"


def refused(result, *needles: str) -> str:
    """Assert a clean refusal: exit 2, no traceback, the error on one line (plus an optional
    hint line) naming every needle; returns that line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1 and len(lines) - errors[0] <= 2, result.output
    line = lines[errors[0]]
    for needle in needles:
        assert needle in line, result.output
    return line


@pytest.fixture
def read_only(monkeypatch):
    """read_only(folder): make `folder` read-only (0555) for the test. As root, whom the
    kernel lets write anyway, `os.access` is made to answer from the mode bits as it would for
    the owner, so a check that asks before writing sees what a user would."""
    folders = []
    real_access = os.access

    def owner_access(path, mode, *args, **kwargs):
        if mode & os.W_OK and any(
            str(path) == str(f) or str(path).startswith(f"{f}/") for f in folders
        ):
            try:
                if not os.stat(path).st_mode & 0o200:
                    return False
            except OSError:
                return False
        return real_access(path, mode, *args, **kwargs)

    if os.geteuid() == 0:
        monkeypatch.setattr(os, "access", owner_access)

    def make(folder):
        folder.chmod(0o555)
        folders.append(folder)
        return folder

    yield make
    for folder in folders:
        folder.chmod(0o755)


# The session fixtures more than one test folder reads.
from helpers.evaluation import tiny_study  # noqa: E402, F401
