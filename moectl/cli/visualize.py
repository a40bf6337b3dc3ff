"""`moectl visualize`: study figures, the token routing page and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moectl.cli.common import console, render_warnings
from moectl.errors import MoectlError


def visualize(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run directories to compare (their evaluations are read too), or a quickstart "
            "study folder (its report is rebuilt, findings included)."
        ),
    ] = None,
    eval_files: Annotated[
        list[Path] | None,
        typer.Option(
            "--eval", "-e", help="Results of `moectl evaluate` (JSON), in addition to runs' eval/."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Folder for figures, tokens.html and report.html "
            "(default: <run>/figures, or figures/ beside several runs).",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Figure format: png or svg.")] = "png",
) -> None:
    """Draw a study: domain x expert heatmaps per MoE layer, router entropy and the collapse
    trajectory over training, train/eval loss per domain, load-balancing loss, token-type
    routing bars, a token-level routing page (tokens.html) and one self-contained report.html.

    Runs without routing.jsonl or without evaluation results lose only the figures that need
    them (with a warning).

    Examples:

      moectl visualize runs/moe

      moectl visualize study

      moectl visualize runs/dense runs/moe runs/no-lb runs/top2 --out study/

      moectl visualize --eval results.json --out figs/ --format svg
    """
    from moectl.analysis.results import load_results
    from moectl.fs import check_writable
    from moectl.rundir.kinds import detect_kind
    from moectl.rundir.locate import evaluation_files, expand_runs
    from moectl.viz.study import visualize_study

    runs = list(runs or [])
    if len(runs) == 1 and not eval_files and out is None and detect_kind(runs[0]) == "study":
        _rebuild_study_report(runs[0])
        return
    runs = expand_runs(runs)
    if not runs and not eval_files:
        raise MoectlError(
            "nothing to visualize",
            hint="pass run directories (moectl visualize runs/moe), or --eval results.json "
            "--out FOLDER",
        )
    if out is not None and out.exists() and not out.is_dir():
        raise MoectlError(
            f"--out {out} is a file, not a folder",
            hint="pass a folder for the figures and report.html (it is created if missing)",
        )
    for run in runs:
        if not run.exists():
            raise MoectlError(f"{run} does not exist", hint="pass run directories of moectl train")
    files = list(eval_files or [])
    for run in runs:
        files += evaluation_files(run)
    results = [result for path in files for result in load_results(path)]
    if out is not None:
        out_dir, report_path = out, out / "report.html"
    elif runs:
        base = runs[0] if len(runs) == 1 else _common_parent(runs)
        out_dir, report_path = base / "figures", base / "report.html"
    else:
        raise MoectlError(
            "--eval files alone have no run folder to write into", hint="pass --out FOLDER"
        )
    check_writable(out_dir, "--out")
    warnings: list[str] = []
    if runs and not files:
        warnings.append("no evaluation results: run `moectl evaluate` for heatmaps and tokens")
    written = visualize_study(
        runs, results, out_dir, fmt, report_path=report_path, warnings=warnings
    )
    render_warnings(warnings)
    for path in written:
        console.print(f"wrote {path}", highlight=False, markup=False)


def _rebuild_study_report(study: Path) -> None:
    """`visualize STUDY`: the quickstart's figures and report.html, findings included, again."""
    from moectl.fs import check_writable
    from moectl.study.pipeline import study_report

    check_writable(study, "STUDY")
    warnings: list[str] = []
    written = study_report(study, command=f"moectl visualize {study}", warnings=warnings)
    render_warnings(warnings)
    for path in written:
        console.print(f"wrote {path}", highlight=False, markup=False)


def _common_parent(paths: list[Path]) -> Path:
    resolved = [p.resolve() for p in paths]
    common = resolved[0].parent
    while not all(common in p.parents for p in resolved):
        common = common.parent
    return common
