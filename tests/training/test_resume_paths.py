"""Resume's hard paths: a stop in the middle of a collapse streak, TensorBoard curves after a
resume from an earlier checkpoint, and a second Ctrl-C that aborts at once."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from helpers.training import COLLAPSING

from moectl.config import resolve_run_config
from moectl.training.trainer import train_run

MOE = ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4"]


def routing_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "routing.jsonl").read_text().splitlines()]


def interrupt_at(step: int):
    def callback(event):
        if event.stage == "train" and event.completed == step:
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def test_resume_in_the_middle_of_a_collapse_streak_stops_where_the_full_run_stops(
    tiny_corpus, tmp_path
):
    config = resolve_run_config("tiny", overrides=[*COLLAPSING, "train.collapse.patience=3"])
    full = train_run(config, tiny_corpus, tmp_path / "full")
    assert full.stop_reason == "collapse" and full.steps < 60
    streak = [r for r in routing_rows(tmp_path / "full")[1:] if r["collapse"]["warning"]]
    assert [r["collapse"]["consecutive"] for r in streak[-3:]] == [1, 2, 3]
    middle = streak[-2]["step"]  # the streak stands at 2 of 3 here

    cut = train_run(config, tiny_corpus, tmp_path / "cut", callback=interrupt_at(middle))
    assert cut.stop_reason == "interrupted" and cut.steps == middle
    resumed = train_run(config, tiny_corpus, tmp_path / "cut", resume=True)
    assert resumed.stop_reason == "collapse" and resumed.steps == full.steps
    assert resumed.collapse_events == full.collapse_events
    assert routing_rows(tmp_path / "cut") == routing_rows(tmp_path / "full")


def tensorboard_points(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalar points per tag as TensorBoard keeps them: event files in the order written, and
    a session start marked with a step (SummaryWriter's purge_step) drops every earlier point
    at or after that step. Out-of-order steps are *not* dropped here, so doubled steps show."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    files = []
    for path in folder.glob("events.out.tfevents.*"):
        events = list(EventFileLoader(str(path)).Load())
        files.append((events[0].wall_time, events))
    points: dict[str, list[tuple[int, float]]] = {}
    for _, events in sorted(files, key=lambda item: item[0]):
        for event in events:
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                points = {t: [p for p in v if p[0] < event.step] for t, v in points.items()}
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = value.tensor.float_val[0] if value.tensor.float_val else None
                    points.setdefault(value.tag, []).append((event.step, number))
    return points


def test_tensorboard_holds_each_step_once_after_a_resume_from_an_earlier_checkpoint(
    tiny_corpus, tmp_path
):
    """A run that got past its checkpoint (here: completed) is resumed from the checkpoint,
    as after a crash: the steps it logged after step 4 are logged again and must replace the
    old points, not double them."""
    overrides = [*MOE, "train.max_steps=8", "train.save_every=4", "train.log_every=1",
                 "train.eval_every=2", "train.sinks=[tensorboard]"]  # fmt: skip
    config = resolve_run_config("tiny", overrides=overrides)
    run = tmp_path / "run"
    train_run(config, tiny_corpus, run)
    train_run(config, tiny_corpus, run, resume=run / "checkpoints" / "step-4")
    points = tensorboard_points(run / "tensorboard")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [row for row in metrics if row["kind"] == "train"]
    assert [step for step, _ in points["train/loss"]] == list(range(1, 9))
    assert [v for _, v in points["train/loss"]] == pytest.approx([r["loss"] for r in train])
    assert [step for step, _ in points["eval/loss"]] == [2, 4, 6, 8]
    routing_steps = [step for step, _ in points["routing/layer_1/max_fraction"]]
    assert routing_steps == [row["step"] for row in routing_rows(run)]


def test_a_second_ctrl_c_aborts_at_once_with_exit_130(cli, tiny_corpus, tmp_path, monkeypatch):
    """The first Ctrl-C asks for a stop at the step boundary; a second one before it is
    honoured aborts now: exit 130, no checkpoint of the step, the run still resumable."""
    from moectl.cli import train as train_cli

    original = train_cli.TrainProgress.__call__

    def double_interrupt_at_step_3(self, event):
        original(self, event)
        if event.stage == "train" and event.completed == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_cli.TrainProgress, "__call__", double_interrupt_at_step_3)
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--set", "train.max_steps=6", "--set",
            "train.save_every=2", "--data", tiny_corpus, "--run-dir", run]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and "checkpoint saved" not in result.output
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2"]
    monkeypatch.undo()
    resumed = cli("train", "--run-dir", run, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (run / "checkpoints" / "step-6" / "trainer_state.pt").is_file()
