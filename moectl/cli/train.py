"""`moectl train`: run a preset or config on a prepared corpus, with resume and upcycling."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from moectl.cli.common import ConfigOption, RichProgress, SetOption, console, err_console
from moectl.errors import TrainingError
from moectl.progress import ProgressEvent

if TYPE_CHECKING:
    from moectl.config import RunConfig
    from moectl.training.results import TrainResult


class TrainProgress(RichProgress):
    """One bar for the steps (loss, tokens/s); eval results and collapse warnings above it."""

    def __call__(self, event: ProgressEvent) -> None:
        out = self._progress.console
        if event.stage == "train":
            loss = event.metrics.get("loss")
            tps = event.metrics.get("tokens_per_s") or 0.0
            info = f"loss {loss:.4f}  " if loss is not None else ""
            super().__call__(replace(event, message=info + f"{tps:,.0f} tok/s"))
        elif event.stage == "eval":
            metrics = dict(event.metrics)
            overall = metrics.pop("eval_loss")
            domains = "  ".join(f"{k.removesuffix('_loss')} {v:.3f}" for k, v in metrics.items())
            out.print(
                f"step {event.completed:.0f}  eval loss {overall:.4f}  [dim]{domains}[/]",
                highlight=False,
            )
        elif event.stage == "collapse":
            out.print(f"[bold yellow]collapse warning:[/] {event.message}", highlight=False)
        elif event.stage == "checkpoint":
            out.print(f"[dim]checkpoint {event.message}[/]", highlight=False)


def resolve_config(
    preset: str | None,
    config: Path | None,
    overrides: list[str] | None,
    run_dir: Path,
    resuming: bool,
) -> RunConfig:
    """The run's config: preset/config/--set, or on --resume without them the run's own."""
    from moectl.config import resolve_run_config
    from moectl.training.rundir import load_run_config

    if resuming and preset is None and config is None:
        return load_run_config(run_dir, overrides)
    return resolve_run_config(preset, config, overrides)


def resolve_data_dir(data: Path | None, run_dir: Path, resuming: bool) -> Path:
    """--data, or on --resume the corpus the run was started with (run.json)."""
    if data is not None:
        return data
    info = run_dir / "run.json"
    if resuming and info.is_file():
        return Path(json.loads(info.read_text(encoding="utf-8"))["data_dir"])
    raise TrainingError(
        "no corpus given", hint="pass --data DIR, a corpus written by `moectl prepare-data`"
    )


def render_result(result: TrainResult, domains_loss: dict[str, float]) -> None:
    table = Table(title=f"run {result.run_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("steps", f"{result.steps} / {result.max_steps}")
    table.add_row("stopped", result.stop_reason)
    if result.last_train_loss is not None:
        table.add_row("last train loss", f"{result.last_train_loss:.4f}")
    if result.best_eval_loss is not None:
        table.add_row("best eval loss", f"{result.best_eval_loss:.4f} (step {result.best_step})")
    for domain, loss in domains_loss.items():
        table.add_row(f"  eval {domain}", f"{loss:.4f}")
    table.add_row("collapse warnings", str(len(result.collapse_events)))
    table.add_row("throughput", f"{result.tokens_per_s:,.0f} tokens/s")
    table.add_row("last checkpoint", result.last_checkpoint or "-")
    console.print(table)


def train(
    run_dir: Annotated[
        Path,
        typer.Option("--run-dir", "-r", help="Run directory to write.", show_default=False),
    ],
    resume_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[PATH]",
            help="With --resume: a checkpoints/step-N directory (default: the run's latest).",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            "-d",
            help="Prepared corpus (moectl prepare-data). On --resume: the run's own.",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", "-p", help="Preset name, e.g. cpu-moe (see moectl/presets)."),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run from its latest checkpoint, or from the PATH given after it.",
        ),
    ] = False,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from",
            help="Start from a model artifact (e.g. runs/dense/best); dense ones are upcycled "
            "per the config's moe section.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a dense or MoE GPT-2 on a prepared corpus; Ctrl-C saves a checkpoint to resume.

    Examples:

      moectl train --preset cpu-dense --data data/mix --run-dir runs/dense

      moectl train --preset cpu-moe --data data/mix --run-dir runs/moe
        --init-from runs/dense/best

      moectl train --run-dir runs/moe --resume

      moectl train --run-dir runs/moe --resume runs/moe/checkpoints/step-100
        --set train.max_steps=600

      torchrun --nproc_per_node=2 -m moectl train --preset cpu-moe --data data/mix
        --run-dir runs/moe-ddp
    """
    from moectl.training.trainer import train_run

    if resume_path is not None and not resume:
        raise TrainingError(
            f"unexpected argument {resume_path}",
            hint="a checkpoint path goes right after --resume: --resume PATH",
        )
    cfg = resolve_config(preset, config, overrides, run_dir, resume)
    data_dir = resolve_data_dir(data, run_dir, resume)
    resume_arg: Path | bool | None = (resume_path or True) if resume else None
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        err_console.print(
            f"training [bold]{cfg.name}[/] on {data_dir} -> {run_dir}", highlight=False
        )
    if main:
        with TrainProgress(err_console) as progress:
            result = train_run(
                cfg, data_dir, run_dir, resume=resume_arg, init_from=init_from, callback=progress
            )
    else:
        result = train_run(cfg, data_dir, run_dir, resume=resume_arg, init_from=init_from)
    if not main:
        return
    domain_loss = {
        k.removeprefix("loss/"): v for k, v in result.last_eval.items() if k.startswith("loss/")
    }
    render_result(result, domain_loss)
    if result.stop_reason == "collapse":
        last = result.collapse_events[-1]
        err_console.print(
            f"[bold red]stopped: router collapse[/] at step {last.step} in layers {last.layers} "
            f"({last.consecutive} consecutive warnings over "
            f"{cfg.train.collapse.threshold:.0%})",
            highlight=False,
        )
    elif result.stop_reason == "interrupted":
        err_console.print(
            f"[bold yellow]interrupted[/] at step {result.steps}; checkpoint saved. Resume with: "
            f"moectl train --run-dir {run_dir} --resume",
            highlight=False,
        )
