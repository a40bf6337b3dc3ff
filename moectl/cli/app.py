"""The `moectl` Typer application: global options, error handling and command registration."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from moectl import __version__
from moectl.cli.common import render_error
from moectl.errors import MoectlError


class _State:
    debug = False


STATE = _State()


class MoectlGroup(TyperGroup):
    """Turns MoectlError from any command into one message and its exit code (no traceback).
    (A mistyped command or option gets "Did you mean" from Typer and click themselves.)"""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MoectlError as error:
            if STATE.debug:
                raise
            render_error(error)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            if STATE.debug:
                raise
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=MoectlGroup,
    name="moectl",
    help="Study how experts specialize in mixture-of-experts language models.\n\n"
    "prepare-data -> train -> evaluate -> visualize, or all of it at once with quickstart.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moectl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    STATE.debug = debug or os.environ.get("MOECTL_DEBUG") == "1"
    if not STATE.debug:
        logging.getLogger("transformers").setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _register() -> None:
    from moectl.cli import (
        evaluate,
        export,
        generate,
        inspect,
        log,
        prepare_data,
        presets,
        quickstart,
        train,
        visualize,
    )

    app.command("prepare-data")(prepare_data.prepare_data)
    app.command("inspect")(inspect.inspect)
    app.command("train")(train.train)
    app.command("evaluate")(evaluate.evaluate)
    app.command("visualize")(visualize.visualize)
    app.command("generate")(generate.generate)
    app.command("export")(export.export)
    app.command("log")(log.log)
    app.command("quickstart")(quickstart.quickstart)
    app.command("presets")(presets.presets)


_register()


def main() -> None:
    """Console-script entry point (also `python -m moectl`)."""
    app()
