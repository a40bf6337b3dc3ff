"""A run's logs as visualize and the study findings read them: config, metrics, routing.

Everything is read through `moectl.rundir`, which owns the files and their record types; this is
the analysis view of one run, with rows as the plain dicts the figure code indexes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moectl.config import RunConfig
from moectl.errors import MoectlError
from moectl.rundir.kinds import describe_path, detect_kind
from moectl.rundir.reading import read_metrics, read_routing, read_run_config
from moectl.rundir.records import RoutingRow, collapse_events


@dataclass
class RunLogs:
    """What visualize needs from one run directory."""

    path: Path
    name: str
    config: RunConfig
    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    routing: list[dict[str, Any]] | None = None

    @property
    def collapse_threshold(self) -> float:
        return self.config.train.collapse.threshold

    @property
    def collapse_patience(self) -> int:
        """Consecutive warnings that make a collapse."""
        return self.config.train.collapse.patience

    @property
    def is_moe(self) -> bool:
        return self.config.moe.enabled

    def collapse_events(self) -> list[dict[str, Any]]:
        """The run's collapse warnings (`rundir.CollapseEvent` fields), one per warning row."""
        rows = [RoutingRow.model_validate(row) for row in self.routing or []]
        return [event.model_dump() for event in collapse_events(rows)]


def load_run(path: Path) -> RunLogs:
    """Config, metrics and routing rows of a run dir (routing None if none was logged)."""
    if detect_kind(path) != "run":
        raise MoectlError(
            f"{path} is {describe_path(path)}, not a run directory",
            hint="pass a directory written by `moectl train --run-dir`",
        )
    train, evals = read_metrics(path)
    routing = read_routing(path)
    return RunLogs(
        path=path,
        name=path.resolve().name,
        config=read_run_config(path),
        train=[row.model_dump() for row in train],
        eval=[row.model_dump() for row in evals],
        routing=[row.model_dump() for row in routing] or None,
    )
