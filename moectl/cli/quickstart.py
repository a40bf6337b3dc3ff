"""`moectl quickstart`: the whole CPU-scale study in one command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from moectl.analysis.bootstrap import format_interval
from moectl.analysis.results import Finding
from moectl.cli.common import RichProgress, console, err_console
from moectl.cli.schemas import JsonOption, QuickstartOutput, print_json
from moectl.config import SEED_MAX
from moectl.errors import MoectlError
from moectl.study.plan import DEFAULT_PLAN, PLAN_NAMES

if TYPE_CHECKING:
    from moectl.study.pipeline import StudyResult


def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the whole study.")] = Path(
        "moectl-study"
    ),
    tiny: Annotated[
        bool, typer.Option("--tiny/--no-tiny", help="A two-minute version (tiny model and corpus).")
    ] = False,
    plan: Annotated[
        str,
        typer.Option(
            "--plan",
            help="scratch: train every variant from random weights (independent experts); "
            "upcycle: pretrain a dense GPT-2 and upcycle it.",
        ),
    ] = DEFAULT_PLAN,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML config file for every training stage, as in `moectl train` (--set wins).",
            show_default=False,
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="Override one field in every training stage, as in `moectl train` (repeatable).",
            show_default=False,
        ),
    ] = None,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard/--no-tensorboard",
            help="TensorBoard event files in every run (OUT/runs/*/tensorboard): "
            "tensorboard --logdir OUT/runs. A --set train.sinks=[...] replaces them.",
        ),
    ] = True,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            metavar="LIST",
            help="Comma-separated train.seed values: every stage runs once per seed and each "
            "finding reports its verdict per seed and an interval over seeds. Default: three "
            "(train.seed and the next two; --tiny: one). --seeds 0 is a one-seed look, whose "
            "report says that one seed cannot settle a verdict.",
            show_default=False,
        ),
    ] = None,
    functional: Annotated[
        bool,
        typer.Option(
            "--functional/--no-functional",
            help="Also run the functional test: each domain keeps only its most-used experts vs "
            "random ones (many more evaluation passes: minutes at the default size).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the reference study scaled to a CPU, offline, in one command.

    Prepares the built-in corpus and trains four variants at once, one process each: an
    8-expert top-1 MoE next to a matched dense baseline, a no-load-balancing run and a top-2
    run. With --plan scratch (the default) all four train from random weights, the MoE with
    independently drawn experts; with --plan upcycle a dense GPT-2 is pretrained first and every
    variant continues from it, the MoE upcycled. Then it evaluates all four, judges each finding
    against its control (for specialization, the distribution of random gates on the trained
    model and the model at step 0; paired bootstrap intervals for losses; the LB run for
    collapse) and writes figures and OUT/report.html. Re-running skips finished stages and
    resumes an interrupted one. Every stage runs once per seed, three by default (runs/moe,
    runs/moe-seed1, runs/moe-seed2): each finding reports its seed count and an interval over
    the seeds; the time grows with the number of seeds.

    --set moe.router_lr_scale=0 freezes every MoE's router at its init (the causal control: a
    router that never learns), a study of its own beside the default one.

    --json prints the findings, runs and report path as JSON (stage lines go to stderr).

    Examples:

      moectl quickstart --out study

      moectl quickstart --tiny --out /tmp/tiny-study

      moectl quickstart --plan upcycle --out study-upcycle

      moectl quickstart --plan upcycle --set moe.router_lr_scale=10 --out study-router-lr

      moectl quickstart --config my-moe.yaml --out study-mine

      moectl quickstart --tiny --no-tensorboard --out /tmp/tiny-study

      moectl quickstart --seeds 0 --out study-one-seed

      moectl quickstart --seeds 0,1,2,3,4 --out study-5-seeds

      moectl quickstart --set moe.router_lr_scale=0 --out study-frozen-router
    """
    from moectl.config import config_file_overrides
    from moectl.study import StageOutcome, run_study

    if plan not in PLAN_NAMES:
        raise MoectlError(
            f"unknown plan '{plan}'", hint=f"use --plan {' or --plan '.join(PLAN_NAMES)}"
        )

    seed_list = parse_seeds(seeds)
    command = " ".join(
        ["moectl quickstart", f"--out {out}", *(["--tiny"] if tiny else []), f"--plan {plan}"]
        + ([f"--config {config}"] if config else [])
        + [f"--set {o}" for o in overrides or []]
        + ([f"--seeds {','.join(map(str, seed_list))}"] if seed_list else [])
        + ([] if tensorboard else ["--no-tensorboard"])
        + (["--functional"] if functional else [])
    )

    def on_stage(outcome: StageOutcome) -> None:
        verb = {"skipped": "already done", "done": "done", "resumed": "resumed and done"}
        (err_console if as_json else console).print(
            f"[bold green]✓[/] {outcome.name}: {verb[outcome.status]}"
            + (f" in {outcome.seconds:.0f}s" if outcome.status != "skipped" else ""),
            highlight=False,
        )

    with RichProgress(transient=True) as progress:
        result = run_study(
            out,
            "tiny" if tiny else "default",
            callback=progress,
            on_stage=on_stage,
            plan_name=plan,
            overrides=[*(config_file_overrides(config) if config else []), *(overrides or [])],
            tensorboard=tensorboard,
            seeds=seed_list,
            command=command,
            functional=functional,
        )

    if as_json:
        print_json(quickstart_output(result))
        return
    findings = Table(title="What this study found", show_lines=True)
    findings.add_column("finding", style="bold")
    findings.add_column("verdict")
    findings.add_column("deciding number [95% CI], compared against")
    findings.add_column("in words")
    for finding in result.findings:
        colour = "green" if finding.reproduced else "yellow"
        findings.add_row(
            escape(finding.title),
            f"[{colour}]{escape(finding.verdict)}[/]",
            escape(_deciding(finding)),
            escape(finding.text),
        )
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


def quickstart_output(result: StudyResult) -> QuickstartOutput:
    """What `quickstart --json` prints: the findings and where everything is."""
    return QuickstartOutput.model_validate(result.model_dump())


def parse_seeds(text: str | None) -> list[int] | None:
    """'0,1,2' -> [0, 1, 2]; None -> None (the configured seed alone). A bad list is refused
    naming its first bad entry (never echoing the whole list, which may be thousands long),
    before anything is built."""
    if text is None:
        return None
    seeds: dict[int, None] = {}  # ordered, and a membership test in O(1)
    for part in text.split(","):
        try:
            seed = int(part)
        except ValueError:
            raise MoectlError(
                f"--seeds takes comma-separated integers; '{part[:20]}' is not one",
                hint="e.g. --seeds 0,1,2",
            ) from None
        if not 0 <= seed <= SEED_MAX:
            raise MoectlError(
                f"--seeds: {seed} is outside the seeds a run takes (0 to {SEED_MAX})",
                hint="give seeds in that range, e.g. --seeds 0,1,2",
            )
        if seed in seeds:
            raise MoectlError(
                f"--seeds names {seed} twice", hint="give distinct seeds, e.g. --seeds 0,1,2"
            )
        seeds[seed] = None
    return list(seeds)


def _deciding(finding: Finding) -> str:
    if finding.value is None:
        return finding.control or "-"
    number = (
        f"{finding.value:+.3f} {format_interval(finding.ci)}"
        if finding.ci
        else (f"{finding.value:g}")
    )
    return f"{finding.measure}: {number}, vs {finding.control}"
