"""Progress reporting from the core library without printing.

The core calls a `ProgressCallback` with `ProgressEvent`s; the CLI renders them as rich progress
bars, library users pass their own callable or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress in a named stage (e.g. "load:code", "tokenize", "train")."""

    stage: str
    completed: float
    total: float | None = None
    message: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[ProgressEvent], None]


def report(
    callback: ProgressCallback | None,
    stage: str,
    completed: float,
    total: float | None = None,
    message: str | None = None,
    **metrics: Any,
) -> None:
    """Send one event to `callback` if there is one."""
    if callback is not None:
        callback(ProgressEvent(stage, completed, total, message, metrics))
