"""Shared CLI pieces: consoles, shared options, error rendering and a rich progress renderer.

Rich reads square brackets as markup, so every piece of user or library text printed through it
goes through `escape` first (paths, names, messages, hints such as `pip install "moectl[offline]"`).
Options several commands share (--data, --device, --config, --set) are declared once here; a
short flag means the same option in every command or does not exist.
"""

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
        metavar="KEY=VALUE",
        help="Override one field, e.g. --set train.lr=1e-3 (repeatable; wins over --config).",
        show_default=False,
    ),
]
DataOption = Annotated[
    Path | None,
    typer.Option("--data", "-d", help="Prepared corpus (moectl prepare-data).", show_default=False),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")
]
DOMAIN_COLORS = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_black"]


def domain_style(domain: str, domains: list[str]) -> str:
    """The rich colour of a domain, stable within one listing of domains."""
    index = domains.index(domain) if domain in domains else len(domains)
    return DOMAIN_COLORS[index % len(DOMAIN_COLORS)]


def render_error(error: MoectlError) -> None:
    """One clear error (plus its problems and hint) on stderr, no traceback; each is one line
    however narrow the terminal (soft wrap) or long the library's message, so a log keeps it
    greppable."""
    out = err_console
    message = " ".join(error.message.split())  # a library's multi-line text, too, is one line
    out.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    for path, message in getattr(error, "problems", []):
        out.print(
            f"  [yellow]{escape(path)}[/]: {escape(message)}", highlight=False, soft_wrap=True
        )
    if error.hint:
        out.print(f"  [dim]hint:[/] {escape(error.hint)}", highlight=False, soft_wrap=True)


def render_warnings(warnings: list[str]) -> None:
    """Warnings the core returned, one line each (soft wrap), on stderr."""
    for warning in warnings:
        err_console.print(
            f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True
        )


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
        info = escape(
            event.message
            or " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in event.metrics.items()
                if isinstance(v, int | float | str) and not isinstance(v, bool)
            )
        )
        if event.stage not in self._tasks:
            self._tasks[event.stage] = self._progress.add_task(
                escape(event.stage), total=event.total, info=info
            )
        self._progress.update(
            self._tasks[event.stage], completed=event.completed, total=event.total, info=info
        )
