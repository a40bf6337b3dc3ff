"""`moectl quickstart`: the whole CPU-scale study in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from moectl.cli.common import RichProgress, console


def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the whole study.")] = Path(
        "moectl-study"
    ),
    tiny: Annotated[
        bool, typer.Option("--tiny", help="A two-minute version (tiny model and corpus).")
    ] = False,
) -> None:
    """Run the reference study scaled to a CPU, offline, in one command.

    Prepares the built-in corpus, pretrains a small dense GPT-2, upcycles it into an 8-expert
    top-1 MoE and continues it next to a matched dense baseline, a no-load-balancing run and a
    top-2 run, evaluates all four, and writes figures and OUT/report.html. Re-running skips
    finished stages and resumes an interrupted one.

    Examples:

      moectl quickstart --out study

      moectl quickstart --tiny --out /tmp/tiny-study
    """
    from moectl.study import StageOutcome, run_study

    def on_stage(outcome: StageOutcome) -> None:
        verb = {"skipped": "already done", "done": "done", "resumed": "resumed and done"}
        console.print(
            f"[bold green]✓[/] {outcome.name}: {verb[outcome.status]}"
            + (f" in {outcome.seconds:.0f}s" if outcome.status != "skipped" else ""),
            highlight=False,
        )

    with RichProgress(transient=True) as progress:
        result = run_study(out, "tiny" if tiny else "default", callback=progress, on_stage=on_stage)

    findings = Table(title="What this study found", show_lines=True)
    findings.add_column("finding", style="bold")
    findings.add_column("reproduced")
    findings.add_column("measured")
    for finding in result.findings:
        mark = "[green]yes[/]" if finding.reproduced else "[yellow]no[/]"
        findings.add_row(escape(finding.title), mark, escape(finding.text))
    console.print(findings)

    paths = Table(title=escape(f"Study in {result.out} ({result.seconds / 60:.1f} min)"))
    paths.add_column("what", style="bold")
    paths.add_column("path")
    paths.add_row("report", escape(result.report or "(not written)"))
    paths.add_row("token routing page", escape(result.token_page or "(not written)"))
    paths.add_row("corpus", escape(result.corpus))
    for name, run_dir in result.runs.items():
        paths.add_row(f"run {name}", escape(run_dir))
    paths.add_row("figures", escape(str(Path(result.out) / "figures")))
    console.print(paths)
