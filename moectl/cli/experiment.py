"""`moectl experiment FILE.yaml`: arms x seeds from one file, trained, evaluated and judged."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from moectl.cli.common import RichProgress, console, err_console
from moectl.cli.quickstart import parse_seeds
from moectl.cli.schemas import ExperimentOutput, JsonOption, print_json

if TYPE_CHECKING:
    from moectl.study.experiment import ExperimentPlan, RunStatus
    from moectl.study.experiment.table import ExperimentTable


def experiment(
    file: Annotated[Path, typer.Argument(help="The experiment file (YAML).", show_default=False)],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The experiment's folder. Default: the file's name without .yaml, here.",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            metavar="LIST",
            help="Comma-separated train.seed values, instead of the file's `seeds`.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Runs trained at once (one process each).")
    ] = 2,
    status: Annotated[
        bool,
        typer.Option(
            "--status/--no-status",
            help="Only show every run's state (queued, running, done, failed and why); "
            "trains nothing, writes nothing.",
        ),
    ] = False,
    as_markdown: Annotated[
        bool,
        typer.Option(
            "--markdown/--no-markdown",
            help="Print the report's per-arm x layer table as markdown (docs/study.md's).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run an experiment: every arm of FILE once per seed, evaluated and judged in one table.

    The file names the corpus (a prepared one, or a prepare-data spec), the base config (a
    preset plus --set-style overrides), the shared dense pretrain, the arms (name, family:
    upcycled from the pretrain or scratch, overrides, and the controls each is judged
    against: its matched dense arm and its frozen-router arm), the seeds and the evaluation's
    sizes (examples/specialization.yaml is docs/study.md's experiment). The folder holds
    runs/ARM-seedN, runs/pretrain-seedN, eval/ and report.md / report.json.

    Re-running skips finished runs and resumes interrupted ones; an arm or seed added to the
    file trains only what is new. A run whose stored config no longer matches the file is
    refused, naming its arm. An invalid file is one line per problem, exit 2, nothing written.

    Examples:

      moectl experiment examples/specialization.yaml --out spec --seeds 0,1,2

      moectl experiment examples/specialization.yaml --out spec --status

      moectl experiment examples/specialization.yaml --out spec --markdown > table.md

      moectl experiment my-arms.yaml --workers 4 --json | jq '.table.rows[0]'
    """
    from moectl.study.experiment import (
        ExperimentLayout,
        load_experiment,
        plan_experiment,
        run_experiment,
    )

    spec = load_experiment(file)
    plan = plan_experiment(spec, file, parse_seeds(seeds))
    out = out if out is not None else Path(file.stem)
    layout = ExperimentLayout(out)
    if status:
        runs = layout.statuses(plan)
        if as_json:
            print_json(ExperimentOutput(out=str(out), seeds=plan.seeds, runs=runs))
        else:
            console.print(_status_table(runs, out))
        return

    def on_run(outcome) -> None:  # type: ignore[no-untyped-def]
        verb = {"skipped": "already done", "done": "done", "resumed": "resumed and done"}
        seconds = f" in {outcome.seconds:.0f}s" if outcome.status != "skipped" else ""
        quiet = as_json or as_markdown
        (err_console if quiet else console).print(
            f"[bold green]✓[/] {escape(outcome.name)}: {verb[outcome.status]}{seconds}",
            highlight=False,
        )

    with RichProgress(transient=True) as progress:
        result = run_experiment(plan, file, out, workers, callback=progress, on_run=on_run)
    if as_json:
        print_json(
            ExperimentOutput(
                out=result.out,
                seeds=result.seeds,
                runs=layout.statuses(plan),
                report_markdown=result.report_markdown,
                report_json=result.report_json,
                table=result.table,
                seconds=result.seconds,
            )
        )
    elif as_markdown:
        from moectl.study.experiment import markdown

        typer.echo(markdown(result.table))
    else:
        console.print(_summary_table(result.table, plan))
        console.print(
            f"full table: {escape(result.report_markdown)} (and {escape(result.report_json)}); "
            f"{result.seconds / 60:.1f} min",
            highlight=False,
        )


def _status_table(runs: list[RunStatus], out: Path) -> Table:
    colours = {"done": "green", "running": "cyan", "failed": "red", "queued": "yellow"}
    table = Table(title=escape(f"Experiment in {out}"))
    for column in ("run", "arm", "seed", "state", "detail"):
        table.add_column(column)
    for run in runs:
        colour = colours[run.state]
        table.add_row(
            escape(run.name),
            escape(run.arm),
            str(run.seed),
            f"[{colour}]{run.state}[/]",
            escape(run.detail),
        )
    return table


def _summary_table(report: ExperimentTable, plan: ExperimentPlan) -> Table:
    """The report's deciding columns; the full table is report.md (--markdown)."""
    from moectl.study.experiment.table import loss_text

    table = Table(title=f"What the experiment found ({len(plan.seeds)} seeds)")
    for column in ("arm", "layer", "source over seeds", "trained NMI", "loss vs matched dense"):
        table.add_column(column)
    for row in report.rows:
        nmi = sum(row.trained_nmi) / len(row.trained_nmi) if row.trained_nmi else None
        table.add_row(
            escape(row.arm),
            "-" if row.layer is None else str(row.layer),
            escape(row.source or "-"),
            "-" if nmi is None else f"{nmi:.3f}",
            escape(loss_text(row)),
        )
    return table
