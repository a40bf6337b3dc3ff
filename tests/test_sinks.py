"""Metric sinks: every JSONL metric reaches TensorBoard and W&B under stable names; W&B resumes.

TensorBoard is read back from its event files. W&B runs for real in offline mode: its run id
must survive an interrupted and resumed run, and its run file must carry the routing names.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from moectl.config import resolve_run_config
from moectl.errors import TrainingError
from moectl.rundir import read_jsonl
from moectl.training.sinks import check_sinks, collapse_text, sink_scalars
from moectl.training.trainer import train_run

ROUTING_ROW = {
    "step": 4,
    "layers": {
        "1": {
            "fractions": [0.7, 0.1, 0.1, 0.1],
            "domain_fractions": {"code": [1.0, 0.0, 0.0, 0.0]},
            "entropy": 1.2,
            "domain_entropy": {"code": 0.9},
            "max_fraction": 0.7,
        }
    },
    "collapse": {"warning": True, "layers": [1], "consecutive": 2, "stop": False},
}


def test_routing_rows_become_stable_scalar_names_and_a_collapse_event() -> None:
    flat = sink_scalars("routing", ROUTING_ROW)
    assert flat["routing/layer_1/max_fraction"] == 0.7
    assert flat["routing/layer_1/expert_0"] == 0.7 and flat["routing/layer_1/expert_3"] == 0.1
    assert flat["routing/layer_1/code/expert_0"] == 1.0
    assert flat["routing/layer_1/entropy"] == 1.2 and flat["routing/layer_1/code/entropy"] == 0.9
    assert flat["collapse/warning"] == 1.0 and flat["collapse/consecutive"] == 2.0
    text = collapse_text(ROUTING_ROW)
    assert text == "step 4: collapse warning, busiest expert layer 1 70% (2 consecutive)"
    quiet = {**ROUTING_ROW, "collapse": {**ROUTING_ROW["collapse"], "warning": False}}
    assert collapse_text(quiet) is None
    assert not any("/balance/" in name for name in flat)  # switch keeps no state
    layer = {**ROUTING_ROW["layers"]["1"], "balance": {"bias_min": -0.02, "bias_max": 0.01}}
    biased = sink_scalars("routing", {**ROUTING_ROW, "layers": {"1": layer}})
    assert biased["routing/layer_1/balance/bias_min"] == -0.02
    assert biased["routing/layer_1/balance/bias_max"] == 0.01
    train = {"kind": "train", "step": 3, "loss": 2.0, "lb_loss": None, "time": 1e9,
             "domain_loss": {"code": 1.5}}  # fmt: skip
    assert sink_scalars("train", train) == {"train/loss": 2.0, "train/domain_loss/code": 1.5}


def test_missing_sink_package_names_the_install_command(cli, monkeypatch, tmp_path) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TrainingError) as info:
        check_sinks(["wandb"])
    assert 'pip install "moectl[tracking]"' in info.value.hint
    # The brackets survive rich's markup when the CLI renders the error.
    result = cli("train", "--preset", "tiny", "--data", tmp_path / "none", "--run-dir",
                 tmp_path / "run", "--set", "train.sinks=[wandb]")  # fmt: skip
    assert result.exit_code == 2
    assert 'pip install "moectl[tracking]"' in " ".join(result.output.split())


def tensorboard_scalars(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    texts: list[str] = []
    for events in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        texts += acc.Tags()["tensors"]
    return scalars, texts


def test_tensorboard_and_wandb_get_routing_and_wandb_resumes_its_run(
    tiny_corpus, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = resolve_run_config(
        "tiny",
        overrides=[
            "moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "train.max_steps=12",
            "train.save_every=5", "train.log_every=3", "train.router_log_every=2",
            "train.eval_every=6", "train.collapse.threshold=0.26",
            "train.sinks=[tensorboard, wandb]", "train.wandb.mode=offline",
            "train.wandb.project=moectl-test", "train.wandb.tags=[ci]",
        ],
    )  # fmt: skip
    run = tmp_path / "run"

    def interrupt_at_7(event):
        if event.stage == "train" and event.completed == 7:
            os.kill(os.getpid(), signal.SIGINT)

    assert train_run(config, tiny_corpus, run, callback=interrupt_at_7).steps == 7
    first_id = json.loads((run / "wandb.json").read_text())["id"]
    assert train_run(config, tiny_corpus, run, resume=True).stop_reason == "completed"
    assert json.loads((run / "wandb.json").read_text())["id"] == first_id
    wandb_runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2 and all(p.name.endswith(first_id) for p in wandb_runs)
    logged = b"".join(p.read_bytes() for p in run.glob("wandb/offline-run-*/run-*.wandb"))
    for name in (b"routing/layer_1/max_fraction", b"routing/layer_1/code/expert_0",
                 b"eval/domain_loss/math", b"collapse/warning"):  # fmt: skip
        assert name in logged

    scalars, texts = tensorboard_scalars(run / "tensorboard")
    routing = read_jsonl(run / "routing.jsonl")
    assert [step for step, _ in scalars["routing/layer_1/max_fraction"]] == [
        row["step"] for row in routing
    ]  # one point per routing row, across the interrupted and the resumed session
    for (step, value), row in zip(scalars["routing/layer_1/max_fraction"], routing, strict=True):
        assert step == row["step"] and value == pytest.approx(row["layers"]["1"]["max_fraction"])
    for tag in ("routing/layer_1/entropy", "routing/layer_1/expert_3",
                "routing/layer_1/prose/expert_0", "collapse/consecutive", "train/loss",
                "train/domain_loss/code", "eval/loss", "eval/domain_loss/prose"):  # fmt: skip
        assert tag in scalars, tag
    assert routing[0]["step"] == 0 and routing[0]["collapse"] is None  # the init router's row
    assert any(row["collapse"]["warning"] for row in routing[1:])
    assert "collapse/text_summary" in texts
