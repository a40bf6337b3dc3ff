"""`moectl experiment FILE.yaml`: arms x seeds from one file, trained, evaluated and judged."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from moectl.cli.common import RichProgress, console, err_console
from moectl.cli.quickstart import parse_seeds
from moectl.cli.schemas import ExperimentOutput, JsonOption, print_json

if TYPE_CHECKING:
    from moectl.study.experiment import ExperimentLayout, ExperimentPlan, RunStatus
    from moectl.study.experiment.slurm import SubmittedJob
    from moectl.study.experiment.spec import ExperimentSpec, SlurmSpec
    from moectl.study.experiment.table import ExperimentTable

Launcher = Literal["local", "slurm"]
SLURM = "SLURM (--launcher slurm; override the file's slurm: section)"


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
    launcher: Annotated[
        Launcher | None,
        typer.Option(
            "--launcher",
            metavar="LAUNCHER",
            help="local: this machine's worker pool; slurm: one SLURM job per run (submitit). "
            "Default: the file's `launcher` (local).",
            show_default=False,
        ),
    ] = None,
    partition: Annotated[
        str | None,
        typer.Option("--slurm-partition", help="The partition.", rich_help_panel=SLURM),
    ] = None,
    gpus_per_run: Annotated[
        int | None,
        typer.Option(
            "--gpus-per-run",
            min=0,
            help="GPUs per run; above 1 the run trains with torchrun (train.parallel).",
            rich_help_panel=SLURM,
        ),
    ] = None,
    cpus_per_run: Annotated[
        int | None,
        typer.Option("--cpus-per-run", min=1, help="CPUs per run.", rich_help_panel=SLURM),
    ] = None,
    mem_gb: Annotated[
        int | None,
        typer.Option("--mem-gb", min=1, help="Memory per job in GB.", rich_help_panel=SLURM),
    ] = None,
    time_limit: Annotated[
        str | None,
        typer.Option(
            "--time",
            metavar="TIME",
            help="Time limit per job, as sbatch --time: minutes (90), 8:00:00 or 1-12:00:00.",
            rich_help_panel=SLURM,
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="With slurm: wait for the jobs, then show the report as the local launcher "
            "does. Without it the command submits, prints the job ids and returns.",
            rich_help_panel=SLURM,
        ),
    ] = False,
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
    against: its matched dense arm and its frozen-router arm), the seeds, the evaluation's
    sizes and the comparisons (pairs of arms whose eval loss difference the report gives over
    seeds; examples/specialization.yaml is docs/study.md's experiment). The folder holds
    runs/ARM-seedN, runs/pretrain-seedN, eval/ and report.md / report.json.

    Re-running skips finished runs and resumes interrupted ones; an arm or seed added to the
    file trains only what is new. Each run's evaluation is kept as soon as it is done, so a
    stopped evaluation resumes with the runs it had not reached. A run whose stored config no
    longer matches the file is refused, naming its arm. An invalid file is one line per
    problem, exit 2, nothing written.

    With --launcher slurm (pip install 'moectl[slurm]') each run is one SLURM job: the
    pretrains, then each arm after its pretrain (afterok), then the evaluation after every
    arm. The command submits, prints the job ids and returns (--wait: waits and shows the
    report). --status shows each job's state; re-running submits only unfinished runs that
    are not queued, and a job stopped by scancel resumes from its checkpoint.

    Examples:

      moectl experiment examples/specialization.yaml --out spec --seeds 0,1,2

      moectl experiment examples/specialization.yaml --out spec --status

      moectl experiment examples/specialization.yaml --out spec --markdown > table.md

      moectl experiment my-arms.yaml --workers 4 --json | jq '.table.rows[0]'

      moectl experiment my-arms.yaml --launcher slurm --slurm-partition gpu --time 8:00:00

      moectl experiment my-arms.yaml --launcher slurm --gpus-per-run 4 --wait --markdown

      moectl experiment my-arms.yaml --status
    """
    from moectl.study.experiment import (
        ExperimentLayout,
        load_experiment,
        plan_experiment,
        run_experiment,
    )
    from moectl.study.experiment.slurm import slurm_statuses

    spec = load_experiment(file)
    plan = plan_experiment(spec, file, parse_seeds(seeds))
    out = out if out is not None else Path(file.stem)
    layout = ExperimentLayout(out)
    if status:
        runs = slurm_statuses(layout, plan)
        if as_json:
            print_json(ExperimentOutput(out=str(out), seeds=plan.seeds, runs=runs))
        else:
            console.print(_status_table(runs, out))
        return
    quiet = as_json or as_markdown
    if (launcher or spec.launcher) == "slurm":
        resources = {
            "partition": partition,
            "gpus_per_run": gpus_per_run,
            "cpus_per_run": cpus_per_run,
            "mem_gb": mem_gb,
            "time": time_limit,
        }
        _on_slurm(plan, file, layout, _slurm_spec(spec, resources), wait, as_json, as_markdown)
        return

    def on_run(outcome) -> None:  # type: ignore[no-untyped-def]
        verb = {"skipped": "already done", "done": "done", "resumed": "resumed and done"}
        seconds = f" in {outcome.seconds:.0f}s" if outcome.status != "skipped" else ""
        (err_console if quiet else console).print(
            f"[bold green]✓[/] {escape(outcome.name)}: {verb[outcome.status]}{seconds}",
            highlight=False,
        )

    with RichProgress(transient=True) as progress:
        result = run_experiment(plan, file, out, workers, callback=progress, on_run=on_run)
    _show_report(plan, layout, result.table, result.seconds, as_json, as_markdown)


def _slurm_spec(spec: ExperimentSpec, given: dict[str, object]) -> SlurmSpec:
    """The file's slurm section with the options given on the command line, validated."""
    from moectl.config import validate
    from moectl.study.experiment.spec import SlurmSpec

    raw = spec.slurm.model_dump(exclude_unset=True)
    raw.update({key: value for key, value in given.items() if value is not None})
    return validate(SlurmSpec, raw, "SLURM options (the file's slurm: section and --slurm-*)")


def _on_slurm(
    plan: ExperimentPlan,
    file: Path,
    layout: ExperimentLayout,
    slurm: SlurmSpec,
    wait: bool,
    as_json: bool,
    as_markdown: bool,
) -> None:
    """Submit the experiment's jobs; with `wait`, wait for them and show the report."""
    from moectl.errors import RunFailure
    from moectl.study.experiment.slurm import (
        report_is_current,
        slurm_statuses,
        submit_experiment,
        wait_for_jobs,
    )
    from moectl.study.experiment.table import ExperimentTable

    started = time.perf_counter()
    with RichProgress(transient=True) as progress:
        placed = submit_experiment(plan, file, layout.out, slurm, callback=progress)
    for job in placed:
        (err_console if as_json or as_markdown else console).print(_job_line(job), highlight=False)
    if not wait:
        if as_json:
            runs = slurm_statuses(layout, plan)
            print_json(
                ExperimentOutput(out=str(layout.out), seeds=plan.seeds, runs=runs, jobs=placed)
            )
        elif not as_markdown:
            console.print(
                f"follow them with: moectl experiment {escape(str(file))} --out "
                f"{escape(str(layout.out))} --status",
                highlight=False,
            )
        return
    wait_for_jobs(layout)
    if not report_is_current(layout, plan):
        runs = slurm_statuses(layout, plan)
        if not as_json:
            err_console.print(_status_table(runs, layout.out))
        unfinished = [run.name for run in runs if run.state != "done"] or ["the evaluation"]
        raise RunFailure(
            f"the experiment's jobs ended with {', '.join(unfinished)} unfinished",
            hint="see --status for each job's last line; run the same command again to resume",
        )
    table = ExperimentTable.model_validate_json(layout.report_json.read_text(encoding="utf-8"))
    seconds = time.perf_counter() - started
    _show_report(plan, layout, table, seconds, as_json, as_markdown, placed)


def _job_line(job: SubmittedJob) -> str:
    if job.status == "done":
        return f"[bold green]✓[/] {escape(job.name)}: already done"
    if job.status == "queued":
        return f"[cyan]…[/] {escape(job.name)}: still queued as job {job.job_id}"
    after = f" (after {', '.join(job.after)})" if job.after else ""
    return f"[cyan]→[/] {escape(job.name)}: submitted as job {job.job_id}{after}"


def _show_report(
    plan: ExperimentPlan,
    layout: ExperimentLayout,
    table: ExperimentTable,
    seconds: float,
    as_json: bool,
    as_markdown: bool,
    jobs: list[SubmittedJob] | None = None,
) -> None:
    """The finished experiment's report: JSON, markdown or the summary table."""
    if as_json:
        print_json(
            ExperimentOutput(
                out=str(layout.out),
                seeds=plan.seeds,
                runs=layout.statuses(plan),
                report_markdown=str(layout.report_md),
                report_json=str(layout.report_json),
                table=table,
                seconds=seconds,
                jobs=jobs,
            )
        )
    elif as_markdown:
        from moectl.study.experiment import markdown

        typer.echo(markdown(table))
    else:
        console.print(_summary_table(table, plan))
        if table.comparisons:
            console.print(_comparison_table(table))
        console.print(
            f"full table: {escape(str(layout.report_md))} (and {escape(str(layout.report_json))}); "
            f"{seconds / 60:.1f} min",
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


def _comparison_table(report: ExperimentTable) -> Table:
    """The file's comparisons: one arm's eval loss minus another's, over seeds."""
    from moectl.study.experiment.table import difference_text

    table = Table(title="Eval loss between arms (paired by seed and document)")
    for column in ("arm - against", "difference [95% CI]", "verdict"):
        table.add_column(column)
    for row in report.comparisons:
        table.add_row(
            escape(f"{row.arm} - {row.against}"),
            difference_text(row.mean, row.ci),
            escape(row.verdict),
        )
    return table
