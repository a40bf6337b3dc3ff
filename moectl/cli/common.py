"""Shared CLI pieces: consoles, config options, error rendering and a rich progress renderer."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from moectl.errors import MoectlError
from moectl.progress import ProgressEvent

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file (overrides the preset).", show_default=False
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override one field, e.g. --set train.lr=1e-3 (repeatable; wins over --config).",
        show_default=False,
    ),
]
DOMAIN_COLORS = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_black"]


def domain_style(domain: str, domains: list[str]) -> str:
    """The rich colour of a domain, stable within one listing of domains."""
    index = domains.index(domain) if domain in domains else len(domains)
    return DOMAIN_COLORS[index % len(DOMAIN_COLORS)]


def render_error(error: MoectlError) -> None:
    """One clear error (plus its problems and hint) on stderr, no traceback."""
    err_console.print(f"[bold red]error:[/] {escape(error.message)}", highlight=False)
    for path, message in getattr(error, "problems", []):
        err_console.print(f"  [yellow]{escape(path)}[/]: {escape(message)}", highlight=False)
    if error.hint:
        err_console.print(f"  [dim]hint:[/] {escape(error.hint)}", highlight=False)


def render_warnings(warnings: list[str]) -> None:
    """Warnings the core returned, one per line, on stderr."""
    for warning in warnings:
        err_console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)


class RichProgress:
    """A ProgressCallback that shows one rich bar per stage; use as a context manager."""

    def __init__(self, console: Console | None = None, transient: bool = False) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console or err_console,
            transient=transient,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        info = event.message or " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in event.metrics.items()
        )
        if event.stage not in self._tasks:
            self._tasks[event.stage] = self._progress.add_task(
                event.stage, total=event.total, info=info
            )
        self._progress.update(
            self._tasks[event.stage], completed=event.completed, total=event.total, info=info
        )
