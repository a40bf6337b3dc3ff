"""`moectl inspect PATH`: detects what PATH is and hands it to the matching renderer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moectl.errors import MoectlError


def detect_kind(path: Path) -> str:
    """'corpus', 'run', 'checkpoint' or 'model' for a moectl directory, else a MoectlError."""
    if not path.exists():
        raise MoectlError(
            f"{path} does not exist",
            hint="inspect accepts a prepared corpus, a run directory, a checkpoint or a model dir",
        )
    if path.is_dir():
        if (path / "manifest.json").exists() or (
            (path / "train").is_dir() and (path / "eval").is_dir()
        ):
            return "corpus"
        if (path / "config.yaml").exists() and (
            (path / "metrics.jsonl").exists() or (path / "checkpoints").is_dir()
        ):
            return "run"
        if (path / "model.json").exists():
            return "checkpoint" if (path / "trainer_state.pt").exists() else "model"
    raise MoectlError(
        f"{path} is not a prepared corpus, a run directory, a checkpoint or a model artifact",
        hint="inspect accepts a directory written by `moectl prepare-data` (manifest.json), "
        "`moectl train --run-dir` (config.yaml, metrics.jsonl), or a model dir (model.json)",
    )


def inspect(
    path: Annotated[Path, typer.Argument(help="A corpus, run directory, checkpoint or model dir.")],
    samples: Annotated[
        int, typer.Option("--samples", "-n", min=0, help="Decoded blocks to show per domain.")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show what is inside a prepared corpus, a run, a checkpoint or a model artifact.

    Examples:

      moectl inspect data/mix --samples 2

      moectl inspect runs/moe --json

      moectl inspect runs/moe/best
    """
    kind = detect_kind(path)
    if kind == "corpus":
        from moectl.cli.inspect_corpus import render_corpus

        render_corpus(path, samples=samples, as_json=as_json)
    elif kind == "run":
        from moectl.cli.inspect_run import render_run

        render_run(path, as_json=as_json)
    else:
        from moectl.cli.inspect_run import render_model

        render_model(path, as_json=as_json)
