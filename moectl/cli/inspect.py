"""`moectl inspect PATH`: detects what PATH is and hands it to the matching renderer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moectl.errors import MoectlError


def inspect(
    path: Annotated[
        Path,
        typer.Argument(help="A corpus, run directory, checkpoint, model dir or study folder."),
    ],
    samples: Annotated[
        int, typer.Option("--samples", min=0, help="Decoded blocks to show per domain.")
    ] = 0,
    as_json: Annotated[
        bool, typer.Option("--json/--no-json", help="Print JSON for scripts.")
    ] = False,
) -> None:
    """Show what is inside a prepared corpus, a run, a checkpoint, a model artifact or a
    quickstart study folder (its settings and every run).

    Examples:

      moectl inspect data/mix --samples 2

      moectl inspect runs/moe --json

      moectl inspect runs/moe/best

      moectl inspect study
    """
    from moectl.rundir.kinds import describe_path, detect_kind

    if not path.exists():
        raise MoectlError(
            f"{path} does not exist",
            hint="inspect accepts a prepared corpus, a run directory, a checkpoint or a model dir",
        )
    kind = detect_kind(path)
    if kind is None:
        raise MoectlError(
            f"{path} is {describe_path(path)}, not a prepared corpus, a run directory, a "
            "checkpoint, a model artifact or a study folder",
            hint="inspect accepts a directory written by `moectl prepare-data` (manifest.json), "
            "`moectl train --run-dir` (config.yaml, run.json), a model dir (model.json) or "
            "`moectl quickstart --out` (study.json)",
        )
    if kind == "corpus":
        from moectl.cli.inspect_corpus import render_corpus

        render_corpus(path, samples=samples, as_json=as_json)
    elif kind == "run":
        from moectl.cli.inspect_run import render_run

        render_run(path, as_json=as_json)
    elif kind == "study":
        from moectl.cli.inspect_run import render_study

        render_study(path, as_json=as_json)
    else:
        from moectl.cli.inspect_run import render_model

        render_model(path, as_json=as_json)
