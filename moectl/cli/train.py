"""`moectl train`: run a preset or config on a prepared corpus, with resume and upcycling."""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from moectl.cli.common import (
    ConfigOption,
    DataOption,
    RichProgress,
    SetOption,
    console,
    err_console,
)
from moectl.cli.schemas import JsonOption, TrainOutput, print_json
from moectl.errors import RunFailure, TrainingError
from moectl.progress import ProgressEvent

if TYPE_CHECKING:
    from moectl.config import RunConfig
    from moectl.training.results import TrainResult


class TrainProgress(RichProgress):
    """One bar for the steps (loss, tokens/s); eval results and collapse warnings above it.

    Without a terminal (a batch job's log) there is no bar: each log step is one plain line
    with step, loss, learning rate, tokens/s and, for an MoE, the busiest expert's share.
    """

    def __init__(self, plain: bool) -> None:
        super().__init__(err_console)
        self.plain = plain

    def __enter__(self) -> TrainProgress:
        if not self.plain:
            super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.plain:
            self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        out = err_console
        metrics = event.metrics
        if event.stage == "train":
            loss = metrics.get("loss")
            tps = metrics.get("tokens_per_s") or 0.0
            if not self.plain:
                info = f"loss {loss:.4f}  " if loss is not None else ""
                super().__call__(replace(event, message=info + f"{tps:,.0f} tok/s"))
            elif metrics.get("logged"):
                share = metrics.get("max_share")
                out.print(
                    f"step {event.completed:.0f}/{event.total:.0f}  loss {loss:.4f}  "
                    f"lr {metrics['lr']:.3g}  {tps:,.0f} tok/s"
                    + (f"  max share {share:.3f}" if share is not None else ""),
                    markup=False,
                    highlight=False,
                )
        elif event.stage == "eval":
            domains = "  ".join(f"{k} {v:.3f}" for k, v in metrics["domain_loss"].items())
            out.print(
                f"step {event.completed:.0f}  eval loss {metrics['loss']:.4f}  "
                f"[dim]{escape(domains)}[/]",
                highlight=False,
            )
        elif event.stage == "collapse":
            out.print(f"[bold yellow]collapse warning:[/] {escape(event.message)}", highlight=False)
        elif event.stage == "checkpoint":
            out.print(f"[dim]checkpoint {escape(event.message)}[/]", highlight=False)


def resume_config(
    run_dir: Path,
    preset: str | None,
    config: Path | None,
    overrides: list[str],
    data: Path | None,
) -> tuple[RunConfig, Path]:
    """The saved config (with allowed max_steps and parallel changes) and corpus of a run to
    resume."""
    from moectl.config import resolve_run_config
    from moectl.rundir.reading import corpus_dir, read_run_config
    from moectl.rundir.writing import RESUMABLE_KEYS

    given = [flag for flag, value in (("--preset", preset), ("--config", config)) if value]
    given += [f"--set {o}" for o in overrides if o.partition("=")[0].strip() not in RESUMABLE_KEYS]
    given += ["--data"] if data is not None else []
    if given:
        raise TrainingError(
            f"--resume continues the run with its saved config and corpus; {given[0]} cannot "
            f"change them (only --set {' or '.join(RESUMABLE_KEYS)} can)",
            hint="drop it, or start a new --run-dir",
        )
    saved = read_run_config(run_dir)
    cfg = resolve_run_config(base=saved.model_dump(mode="json"), overrides=overrides)
    data_dir = corpus_dir(run_dir)
    if data_dir is None:
        raise TrainingError(f"{run_dir} has no run.json naming its corpus")
    return cfg, data_dir


def train_output(result: TrainResult, wall_seconds: float) -> TrainOutput:
    """The final summary of a run: what `--json` prints and the table shows (dense or MoE as
    the run's saved config says, which an --init-from artifact may have set)."""
    from moectl.rundir.locate import best_model
    from moectl.rundir.reading import read_run_config

    run_dir = Path(result.run_dir)
    best = best_model(run_dir)
    if result.stop_reason == "interrupted":
        next_command = f"moectl train --run-dir {run_dir} --resume"
    else:
        next_command = f"moectl evaluate {run_dir}"
    return TrainOutput(
        run_dir=result.run_dir,
        kind="moe" if read_run_config(run_dir).moe.enabled else "dense",
        steps=result.steps,
        max_steps=result.max_steps,
        stop_reason=result.stop_reason,
        stop_signal=result.stop_signal,
        wall_seconds=wall_seconds,
        best_dir=str(best) if best is not None else None,
        best_step=result.best_step,
        best_eval_loss=result.best_eval_loss,
        last_train_loss=result.last_train_loss,
        eval_domain_loss=result.last_eval.domain_loss if result.last_eval else {},
        tokens_per_s=result.tokens_per_s,
        collapse_warnings=len(result.collapse_events),
        last_checkpoint=result.last_checkpoint,
        next_command=next_command,
    )


def render_result(summary: TrainOutput) -> None:
    table = Table(title=escape(f"run {summary.run_dir}"), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", "MoE" if summary.kind == "moe" else "dense")
    table.add_row("steps", f"{summary.steps} / {summary.max_steps}")
    table.add_row("stopped", summary.stop_reason)
    table.add_row("wall time", f"{summary.wall_seconds:.1f} s")
    if summary.last_train_loss is not None:
        table.add_row("last train loss", f"{summary.last_train_loss:.4f}")
    if summary.best_eval_loss is not None:
        table.add_row("best eval loss", f"{summary.best_eval_loss:.4f} (step {summary.best_step})")
    for domain, loss in summary.eval_domain_loss.items():
        table.add_row(f"  eval {escape(domain)}", f"{loss:.4f}")
    table.add_row("collapse warnings", str(summary.collapse_warnings))
    table.add_row("throughput", f"{summary.tokens_per_s:,.0f} tokens/s")
    table.add_row("last checkpoint", escape(summary.last_checkpoint or "-"))
    console.print(table)
    # Paths and the next command on lines of their own, never cut, so they can be copied.
    for label, value in (("best model", summary.best_dir or "-"), ("next", summary.next_command)):
        console.print(f"[bold]{label}:[/] {escape(value)}", highlight=False, soft_wrap=True)


def failure_of(error: BaseException, run_dir: Path) -> RunFailure | None:
    """The one-line RunFailure (exit 1) for a run that fails while it runs for want of memory
    or disk space; None for anything else."""
    import torch

    resume = f"moectl train --run-dir {run_dir} --resume"  # from the last checkpoint, if any
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunFailure(
            f"no space left on the device while writing {error.filename or run_dir}",
            hint=f"free some space, then resume ({resume}) or train again in a new --run-dir",
        )
    out_of_memory = isinstance(error, RuntimeError) and "out of memory" in str(error)  # MPS, HIP
    if out_of_memory or isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return RunFailure(
            f"out of memory during training: {' '.join(str(error).split())[:200]}",
            hint="lower train.batch_size (raise train.grad_accum to keep the tokens per step) "
            "and train again in a new --run-dir",
        )
    return None


def train(
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", "-r", help="Run directory to write.", show_default=False),
    ] = None,
    resume_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="CHECKPOINT",
            help="With --resume: a checkpoints/step-N directory (default: the run's latest).",
            show_default=False,
        ),
    ] = None,
    data: DataOption = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", "-p", help="Preset name, e.g. cpu-moe (see moectl presets)."),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Continue the run with its saved config and corpus from its latest checkpoint, "
            "or from the CHECKPOINT given after it; only --set train.max_steps=N may change.",
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
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config/--no-print-config",
            help="Print the resolved config and exit (writes nothing).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Train a dense or MoE decoder (GPT-2 or Llama-family) on a prepared corpus; Ctrl-C saves
    a checkpoint to resume.

    An interrupted run exits with 130 (Ctrl-C) or 143 (SIGTERM) after its checkpoint; resuming a
    run that is already complete does nothing and exits 0. A bad config or input exits 2 before
    anything is written; a run that fails while it runs (a non-finite loss, out of memory, a
    full disk) exits 1. --json prints the final summary as JSON.

    Metrics also go to TensorBoard (RUN_DIR/tensorboard) and W&B with the train.sinks option,
    e.g. --set 'train.sinks=["tensorboard", "wandb"]' (names: docs/interop.md).

    Examples:

      moectl train --preset cpu-dense --data data/mix --run-dir runs/dense

      moectl train --preset cpu-moe --data data/mix --run-dir runs/moe
        --init-from runs/dense/best

      moectl train --run-dir runs/moe --resume

      moectl train --run-dir runs/moe --resume runs/moe/checkpoints/step-100
        --set train.max_steps=600

      moectl train --preset cpu-moe --set moe.top_k=2 --print-config

      moectl train --preset cpu-moe --data data/mix --run-dir runs/moe
        --set 'train.sinks=["tensorboard"]'

      moectl train --preset cpu-moe --data data/mix --run-dir runs/bias
        --set moe.balance=bias --set moe.top_k=2

      moectl train --preset smollm2-moe --data data/mix --run-dir runs/smollm2

      torchrun --nproc_per_node=2 -m moectl train --preset cpu-moe --data data/mix
        --run-dir runs/moe-ddp

      torchrun --nproc_per_node=4 -m moectl train --preset moe-main --data data/ref
        --run-dir runs/moe-fsdp --set train.parallel=fsdp
    """
    from moectl.config import dump_yaml, resolve_run_config
    from moectl.data.store import read_manifest

    if resume_path is not None and not resume:
        raise TrainingError(
            f"unexpected argument {resume_path}",
            hint="a checkpoint path goes right after --resume: --resume CHECKPOINT",
        )
    if resume and init_from is not None:
        raise TrainingError(
            "--resume and --init-from cannot be combined: a resumed run continues its own model",
            hint="drop --init-from to resume, or start a new --run-dir from the artifact",
        )
    if run_dir is None and (resume or not print_config):
        raise TrainingError("--run-dir is required", hint="pass --run-dir DIR for the run's files")
    if resume:
        assert run_dir is not None
        cfg, data_dir = resume_config(run_dir, preset, config, overrides or [], data)
    else:
        cfg = resolve_run_config(preset, config, overrides)
        data_dir = data
    if data_dir is not None and print_config:
        cfg = cfg.model_copy(update={"data": read_manifest(data_dir).config})
    if print_config:
        typer.echo(dump_yaml(cfg), nl=False)
        return
    if data_dir is None:
        raise TrainingError(
            "no corpus given", hint="pass --data DIR, a corpus written by `moectl prepare-data`"
        )
    assert run_dir is not None
    _run(cfg, data_dir, run_dir, (resume_path or True) if resume else None, init_from, as_json)


def _run(
    cfg: RunConfig,
    data_dir: Path,
    run_dir: Path,
    resume: Path | bool | None,
    init: Path | None,
    as_json: bool,
) -> None:
    from moectl.training.trainer import check_run, train_run

    check_run(cfg, data_dir, run_dir, resume=resume, init_from=init)
    if int(os.environ.get("RANK", "0")) != 0:
        train_run(cfg, data_dir, run_dir, resume=resume, init_from=init)
        return
    err_console.print(
        f"training {cfg.name} on {data_dir} -> {run_dir}", highlight=False, markup=False
    )
    started = time.monotonic()
    try:
        with TrainProgress(plain=not err_console.is_terminal) as progress:
            result = train_run(
                cfg, data_dir, run_dir, resume=resume, init_from=init, callback=progress
            )
    except (OSError, RuntimeError, MemoryError) as error:
        failure = failure_of(error, run_dir)
        if failure is None:
            raise
        raise failure from error
    summary = train_output(result, time.monotonic() - started)
    if as_json:
        print_json(summary)
    if result.stop_reason == "already_complete":
        err_console.print(
            f"run {run_dir} is already complete at step {result.steps}; nothing to do",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return
    if not as_json:
        render_result(summary)
    if result.stop_reason == "collapse":
        last = result.collapse_events[-1]
        err_console.print(
            f"[bold red]stopped: router collapse[/] at step {last.step} in layers "
            f"{escape(str(last.layers))} ({last.consecutive} consecutive warnings over "
            f"{cfg.train.collapse.threshold:.0%})",
            highlight=False,
        )
    elif result.stop_reason == "interrupted":
        err_console.print(
            f"[bold yellow]interrupted[/] at step {result.steps}; checkpoint saved. Resume with: "
            + escape(f"moectl train --run-dir {run_dir} --resume"),
            highlight=False,
        )
        raise typer.Exit(128 + signal.Signals[result.stop_signal or "SIGINT"].value)
