"""Python code from the running interpreter's own standard library: real code, always present.

Test suites, test fixtures (some deliberately broken or in other encodings), third-party
site-packages and machine-generated tables (codec charmaps, pydoc topics, sysconfig data) are left
out: they are not the hand-written Python a code domain should stand for, and generated tables are
both trivially memorizable and machine-specific.
"""

from __future__ import annotations

import ast
import os
import platform
import random
import re
import sys
import sysconfig
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from moectl.data.builtin.select import fingerprint, take_until
from moectl.data.types import DomainTexts, SourceInfo
from moectl.errors import DataError

SKIPPED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "__phello__",
    }
)
GENERATED_MARKER = re.compile(r"auto-?generated|generated (?:from|by|with)|do not edit", re.I)
HEADER_LINES = 12


def stdlib_root() -> Path:
    """The standard library directory of the interpreter running moectl."""
    return Path(sysconfig.get_paths()["stdlib"])


def _skipped_dir(name: str) -> bool:
    return name in SKIPPED_DIRS or name.startswith("config-")


def stdlib_python_files(root: Path) -> list[Path]:
    """Candidate `.py` files under `root`, relative and sorted, with test/vendor dirs pruned."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _skipped_dir(d)]
        rel = Path(dirpath).relative_to(root)
        files.extend(rel / f for f in filenames if f.endswith(".py"))
    return sorted(files, key=lambda p: p.as_posix())


def read_source(path: Path) -> str | None:
    """The file's text if it is hand-written, valid UTF-8 Python; None otherwise."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.strip():
        return None
    if GENERATED_MARKER.search("\n".join(text.splitlines()[:HEADER_LINES])):
        return None
    try:
        ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError):
        return None
    return text


def _documents(root: Path, order: list[Path], skipped: Counter[str]) -> Iterator[str]:
    for rel in order:
        text = read_source(root / rel)
        if text is None:
            skipped["unreadable_or_generated"] += 1
            continue
        yield text


def load_code(max_chars: int, seed: int, root: Path | None = None) -> DomainTexts:
    """Standard-library modules, one document per file, in an order shuffled by `seed`."""
    root = root or stdlib_root()
    files = stdlib_python_files(root)
    if not files:
        raise DataError(
            f"no Python standard library sources found under {root}",
            hint="this interpreter ships without .py sources; use --source files with your code",
        )
    order = list(files)
    random.Random(seed).shuffle(order)
    skipped: Counter[str] = Counter()
    texts, exhausted = take_until(_documents(root, order, skipped), max_chars)
    version = platform.python_version()
    info = SourceInfo(
        domain="code",
        kind="builtin",
        dataset="python-stdlib",
        revision=version,
        fingerprint=fingerprint(texts),
        details={
            "python_version": version,
            "implementation": sys.implementation.name,
            "stdlib_path": str(root),
            "files_available": len(files),
            "files_skipped": sum(skipped.values()),
            "documents": len(texts),
            "chars": sum(len(t) for t in texts),
            "exhausted": exhausted,
            "license": "PSF-2.0",
        },
    )
    return DomainTexts(domain="code", texts=texts, sources=[info])
