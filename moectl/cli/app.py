"""The `moectl` Typer application: global options, error handling and command registration."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import typer
from typer.core import TyperCommand, TyperGroup

from moectl.cli.common import render_error
from moectl.errors import MoectlError, did_you_mean
from moectl.version import __version__

UsageError: type[Exception] = typer.BadParameter.__base__
"""A parser's error (bad option, bad value), from whichever copy of click Typer parses with:
reached through Typer's public BadParameter, its subclass."""


class _State:
    debug = False


STATE = _State()


PLACEHOLDERS: dict[type, str] = {Path: "PATH", int: "INTEGER", float: "NUMBER", str: "TEXT"}
"""The value placeholder of each parameter type: one style, UPPERCASE words, in every command
(a declaration may name a more telling one, e.g. KEY=VALUE)."""


def set_placeholders(params: list[Any]) -> list[Any]:
    """Give every parameter the placeholder of its type; an on/off flag takes no value, so it
    shows none (its --flag/--no-flag names say it all)."""
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
            continue
        annotation = param.type_descriptor.annotation
        if get_origin(annotation) is list:
            (annotation,) = get_args(annotation)
        placeholder = PLACEHOLDERS.get(annotation, "VALUE")
        if param.param_type_name == "argument":  # named for what it is, typed like an option
            param.metavar = param.metavar or (param.name or "").upper()
            param.display_type_rich = lambda ctx, text=placeholder: text  # type: ignore[method-assign]
        elif param.metavar is None:
            param.metavar = placeholder
    return params


def reflow_help(text: str | None) -> str | None:
    """A docstring's prose paragraphs as one line each, for the terminal to wrap: the Typer
    this project runs keeps a docstring's single line breaks, so text wrapped at 100 columns in
    the source came out ragged in an 80-column terminal. Indented paragraphs (the examples)
    keep their lines."""
    if text is None:
        return None
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        paragraph if paragraph.startswith((" ", "\b")) else " ".join(paragraph.split("\n"))
        for paragraph in paragraphs
    )


class MoectlCommand(TyperCommand):
    """A moectl command: Typer's, with one placeholder style (`set_placeholders`), its help's
    paragraphs reflowed (`reflow_help`) and usage errors that name the fix (`usage_error`,
    which sees the command's own arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow_help(self.help)

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return set_placeholders(super().get_params(ctx))

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: typer.Context | None = None,
        **extra: Any,
    ) -> typer.Context:
        given = list(args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as error:
            if _is_no_args_help(error):
                raise
            raise usage_error(error, given) from None


class MoectlGroup(TyperGroup):
    """Turns every error a user can fix into the same one-line `error:` + `hint:` form and exit
    code 2, without a traceback: a MoectlError from any command, a usage error from parsing
    (a mistyped option, a bad value; Typer's "did you mean" becomes the hint) and a permission
    a command did not check first."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: typer.Context | None = None,
        **extra: Any,
    ) -> typer.Context:
        with _one_line_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: typer.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return set_placeholders(super().get_params(ctx))


def _is_no_args_help(error: Exception) -> bool:
    """Click's "no arguments, so show the help" signal (click 8.2+), which is not an error."""
    return type(error).__name__ == "NoArgsIsHelpError"


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except UsageError as error:
        if _is_no_args_help(error) or STATE.debug:
            raise
        render_error(usage_error(error))
        raise typer.Exit(2) from None
    except MoectlError as error:
        if STATE.debug:
            raise
        render_error(error)
        raise typer.Exit(error.exit_code) from None
    except PermissionError as error:
        if STATE.debug:
            raise
        render_error(
            MoectlError(
                f"permission denied: {error.filename or error}",
                hint="choose a path you can write to, or change its permissions",
            )
        )
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        if STATE.debug:
            raise
        raise typer.Exit(130) from None


def usage_error(error: Any, args: list[str] | None = None) -> MoectlError:
    """A parser's error as a MoectlError: its message on one line, its fix and where to read
    the command's options as the hint. The fix is the closest choice to a mistyped value, the
    closest real option to an unknown one or else, for a command that takes --set, the config
    key it names (`--max-step 5` -> `--set train.max_steps=5`), or the parser's suggestion."""
    text = " ".join(error.format_message().split()).replace("Value error, ", "")
    message, found, suggestion = text.partition(" Did you mean")
    ctx = error.ctx
    command = ctx.command_path if ctx is not None else "moectl"
    listed = "commands" if ctx is None or isinstance(ctx.command, TyperGroup) else "options"
    fix = f"Did you mean{suggestion} " if found else ""
    choice = re.search(r"'([^']*)' is not one of ((?:'[^']*'(?:, )?)+)", message)
    if choice:
        close = _closest(choice[1], re.findall(r"'([^']*)'", choice[2]))
        fix = f"did you mean '{close}'? " if close else fix
    if type(error).__name__ == "NoSuchOption" and ctx is not None:
        names = [o for p in ctx.command.params for o in [*p.opts, *p.secondary_opts]]
        real = [o for o in names if o.startswith("--") and o not in ("--set", "--help")]
        close = _closest(error.option_name, real)
        if close is not None:
            fix = f"did you mean {close}? "
        elif _takes_set(ctx):
            sections = ("data.",) if ctx.info_name == "prepare-data" else ("",)
            fix = _config_key_fix(error.option_name, args or [], sections) or fix
    return MoectlError(message, hint=fix + f"`{command} --help` lists the {listed}")


def _closest(word: str, choices: list[str]) -> str | None:
    """The choice `did_you_mean` would suggest for `word`, or None."""
    close = did_you_mean(word, sorted(set(choices)))
    return close.split("'")[1] if close else None


def _takes_set(ctx: Any) -> bool:
    return any("--set" in getattr(param, "opts", []) for param in ctx.command.params)


def _config_key_fix(option: str, args: list[str], sections: tuple[str, ...]) -> str:
    """'did you mean --set train.max_steps=5? ' for an unknown option that names a config key
    in one of `sections` (its value taken from the command line), else ''."""
    from moectl.config import RunConfig, flatten

    keys = [k for k in flatten(RunConfig().model_dump(mode="json")) if k.startswith(sections)]
    leaf = _closest(option.lstrip("-").replace("-", "_"), [k.rpartition(".")[2] for k in keys])
    if leaf is None:
        return ""
    given = [arg for arg in args if arg == option or arg.startswith(option + "=")]
    value = "VALUE"
    if given and "=" in given[0]:
        value = given[0].partition("=")[2]
    elif given and args.index(given[0]) + 1 < len(args):
        value = args[args.index(given[0]) + 1]
    sets = [f"--set {key}={value}" for key in keys if key.rpartition(".")[2] == leaf]
    return f"did you mean {' or '.join(sets)}? "


app = typer.Typer(
    cls=MoectlGroup,
    name="moectl",
    help="Study how experts specialize in mixture-of-experts language models.\n\n"
    "prepare-data -> train -> evaluate -> visualize, or all of it at once with quickstart.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
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
    debug: Annotated[
        bool,
        typer.Option(
            "--debug/--no-debug", help="Show full tracebacks on errors (also MOECTL_DEBUG=1)."
        ),
    ] = False,
) -> None:
    STATE.debug = debug or os.environ.get("MOECTL_DEBUG") == "1"
    if not STATE.debug:
        logging.getLogger("transformers").setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _register() -> None:
    from moectl.cli import (
        evaluate,
        experiment,
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

    app.command("prepare-data", cls=MoectlCommand)(prepare_data.prepare_data)
    app.command("inspect", cls=MoectlCommand)(inspect.inspect)
    app.command("train", cls=MoectlCommand)(train.train)
    app.command("evaluate", cls=MoectlCommand)(evaluate.evaluate)
    app.command("visualize", cls=MoectlCommand)(visualize.visualize)
    app.command("generate", cls=MoectlCommand)(generate.generate)
    app.command("export", cls=MoectlCommand)(export.export)
    app.command("log", cls=MoectlCommand)(log.log)
    app.command("quickstart", cls=MoectlCommand)(quickstart.quickstart)
    app.command("experiment", cls=MoectlCommand)(experiment.experiment)
    app.command("presets", cls=MoectlCommand)(presets.presets)


_register()


def main() -> None:
    """Console-script entry point (also `python -m moectl`)."""
    app()
