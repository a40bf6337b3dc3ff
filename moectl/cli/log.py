"""`moectl log`: send the logs of finished runs or studies to TensorBoard or W&B."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from moectl.cli.common import console
from moectl.cli.schemas import JsonOption, LoggedRun, LogOutput, print_json
from moectl.errors import MoectlError


class Tracker(str, Enum):
    """The trackers `moectl log` sends to (the sinks of train.sinks)."""

    tensorboard = "tensorboard"
    wandb = "wandb"


class WandbMode(str, Enum):
    """W&B's modes that send or keep a run (train.wandb.mode without 'disabled')."""

    online = "online"
    offline = "offline"


def log(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Run directories, or study folders (all their runs).", metavar="RUN"),
    ],
    to: Annotated[
        Tracker,
        typer.Option("--to", "-t", help="The tracker.", show_default=False),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for the event files (one subfolder per run; tensorboard --logdir OUT), "
            "or for W&B's local files.",
        ),
    ] = Path("moectl-logs"),
    project: Annotated[
        str | None,
        typer.Option(
            "--project",
            help="W&B project (default: each run's train.wandb.project, else WANDB_PROJECT).",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        WandbMode | None,
        typer.Option(
            "--mode", help="W&B mode (default: W&B's own, WANDB_MODE).", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send existing runs' metrics, routing and config to TensorBoard or W&B, so runs trained
    without a sink (or another study's) can be compared on one dashboard.

    Every run gets what training with train.sinks would have sent: each metrics.jsonl and
    routing.jsonl number under the names of docs/interop.md, the routing heatmap at every
    router-log step, collapse warnings and the config. The runs are only read. For TensorBoard
    each run is written to its own new OUT/NAME folder (a study's runs to OUT/STUDY/NAME); an
    existing one, or an OUT inside a run (whose own tensorboard/ folder already holds its
    events), is refused before anything is written. --json lists each run, its rows and where
    they went.

    Examples:

      moectl log runs/dense runs/moe --to tensorboard --out tb && tensorboard --logdir tb

      moectl log moectl-study --to tensorboard --out tb

      moectl log moectl-study other-study --to wandb --project moe-study
    """
    from moectl.fs import atomic_directory, check_writable_folder
    from moectl.training.sinks import (
        TensorBoardSink,
        WandbSink,
        check_sinks,
        run_log_rows,
        send_rows,
    )

    check_sinks([to.value], requested_by=f"--to {to.value}")
    check_writable_folder(out, "--out")
    runs = _runs(paths)
    if to == Tracker.tensorboard:
        _check_outside_runs(out, runs)
        taken = [str(out / label) for label, _ in runs if (out / label).exists()]
        if taken:
            raise MoectlError(
                f"{taken[0]} already exists; nothing was written",
                hint="choose another --out",
            )
    # every config and log is read before anything is written, so a bad run changes nothing
    configs = [_run_config(run_dir, project, mode.value if mode else None) for _, run_dir in runs]
    logs = [run_log_rows(run_dir) for _, run_dir in runs]
    logged: list[LoggedRun] = []
    for (label, run_dir), config, rows in zip(runs, configs, logs, strict=True):
        if to == Tracker.tensorboard:
            with atomic_directory(out / label) as folder:
                sink = TensorBoardSink(folder, config)
                try:
                    send_rows(rows, [sink])
                finally:
                    sink.close()
            where = out / label
        else:
            out.mkdir(parents=True, exist_ok=True)
            sink = WandbSink(out, config)
            try:
                send_rows(rows, [sink])
            finally:
                sink.close()
            where = out / "wandb"
        logged.append(LoggedRun(run_dir=str(run_dir), rows=len(rows), destination=str(where)))
        if not as_json:
            console.print(
                f"{escape(str(run_dir))}: {len(rows)} rows -> {escape(str(where))}",
                highlight=False,
            )
    if as_json:
        print_json(LogOutput(tracker=to.value, runs=logged))


def _check_outside_runs(out: Path, runs: list[tuple[str, Path]]) -> None:
    """Refuse an --out inside a run: its tensorboard/ folder already holds the run's events,
    and a copy nested in it would show every step twice (and the runs are only read)."""
    from moectl.training.sinks import TENSORBOARD_DIR

    target = out.resolve()
    for _, run_dir in runs:
        run = run_dir.resolve()
        if target == run or run in target.parents:
            raise MoectlError(
                f"--out {out} is inside run {run_dir}, whose {TENSORBOARD_DIR}/ folder holds its "
                "events; nothing was written",
                hint="it is on TensorBoard already: tensorboard --logdir "
                f"{run_dir / TENSORBOARD_DIR}; or choose an --out outside the run",
            )


def _runs(paths: list[Path]) -> list[tuple[str, Path]]:
    """(label, run dir) for each run named or inside a named study; labels are unique."""
    from moectl.rundir.kinds import describe_path, detect_kind
    from moectl.rundir.locate import study_runs

    runs: list[tuple[str, Path]] = []
    for path in paths:
        if detect_kind(path) == "run":
            runs.append((path.resolve().name, path))
        elif detect_kind(path) == "study":
            study = path.resolve().name
            runs += [(f"{study}/{run.name}", run) for run in study_runs(path)]
        else:
            raise MoectlError(
                f"{path} is {describe_path(path)}, not a run directory or a study folder",
                hint="pass folders written by `moectl train --run-dir` or `moectl quickstart`",
            )
    labels = [label for label, _ in runs]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise MoectlError(
            f"two runs would both be logged as '{twice[0]}'",
            hint="log them in separate calls with different --out",
        )
    return runs


def _run_config(run_dir: Path, project: str | None, mode: str | None):
    """The run's config, with the W&B project and mode of this call where given."""
    from moectl.rundir.reading import read_run_config

    config = read_run_config(run_dir)
    wandb = config.train.wandb.model_copy(
        update={k: v for k, v in (("project", project), ("mode", mode)) if v is not None}
    )
    return config.model_copy(update={"train": config.train.model_copy(update={"wandb": wandb})})
