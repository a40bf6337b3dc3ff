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
from helpers.training import read_tensorboard

from moectl.config import resolve_run_config
from moectl.errors import TrainingError
from moectl.rundir.reading import read_jsonl
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

    board = read_tensorboard(run / "tensorboard")
    scalars = board.scalars
    routing = read_jsonl(run / "routing.jsonl")
    routing_steps = [row["step"] for row in routing]
    assert [step for step, _ in scalars["routing/layer_1/max_fraction"]] == routing_steps
    # one point per routing row, across the interrupted and the resumed session
    for (step, value), row in zip(scalars["routing/layer_1/max_fraction"], routing, strict=True):
        assert step == row["step"] and value == pytest.approx(row["layers"]["1"]["max_fraction"])
    for tag in ("routing/layer_1/entropy", "routing/layer_1/expert_3", "routing/layer_1/nmi",
                "routing/layer_1/prose/expert_0", "collapse/consecutive", "train/loss",
                "train/domain_loss/code", "eval/loss", "eval/domain_loss/prose"):  # fmt: skip
        assert tag in scalars, tag
    assert routing[0]["step"] == 0 and routing[0]["collapse"] is None  # the init router's row
    assert any(row["collapse"]["warning"] for row in routing[1:])
    assert len(board.texts["collapse/text_summary"]) == sum(
        bool(row["collapse"] and row["collapse"]["warning"]) for row in routing
    )
    # The heatmap at every router-log step: decodable PNGs of a real size.
    heatmaps = board.images["routing/heatmap"]
    assert [step for step, *_ in heatmaps] == routing_steps
    assert all(png.startswith(b"\x89PNG") and w > 200 and h > 100 for _, w, h, png in heatmaps)
    # The config once (the resumed session does not repeat it): hparams and YAML text.
    assert board.hparams["moe.n_experts"] == 4 and board.hparams["train.max_steps"] == 12
    assert board.hparams["train.sinks"] == '["tensorboard", "wandb"]'
    assert set(board.hparam_metrics) == {"eval/loss", "train/loss"}
    (config_text,) = board.texts["config/text_summary"]
    assert "n_experts: 4" in config_text
    # One chart holding every expert share of the MoE layer, and one of the NMI.
    assert board.charts["layer 1 expert shares"] == [r"routing/layer_1/expert_\d+$"]
    assert board.charts["NMI(domain; expert)"] == [r"routing/layer_\d+/nmi$"]
    # W&B: the config as wandb.config and the heatmaps as wandb.Image files.
    media = sorted(run.glob("wandb/offline-run-*/files/media/images/routing/heatmap_*.png"))
    assert len(media) == len(routing)
    assert b"n_experts" in logged  # the config record of the offline run


def test_train_help_names_the_sinks_and_a_tensorboard_field_suggests_them(cli, tmp_path) -> None:
    shown = " ".join(cli("train", "--help").output.split())
    # (quoted names: a bracket followed by a letter would read as rich markup in the help)
    assert """--set 'train.sinks=["tensorboard", "wandb"]'""" in shown
    wrong = cli("train", "--preset", "tiny", "--run-dir", tmp_path / "run", "--data",
                tmp_path / "none", "--set", "train.tensorboard=true")  # fmt: skip
    assert wrong.exit_code == 2 and "Traceback" not in wrong.output
    assert "did you mean 'sinks=[tensorboard]'" in " ".join(wrong.output.split())
    assert not (tmp_path / "run").exists()


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_log_sends_a_finished_run_and_a_study_to_tensorboard_and_wandb(
    cli, tiny_corpus, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = resolve_run_config(
        "tiny",
        overrides=["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "train.max_steps=6",
                   "train.log_every=2", "train.router_log_every=3", "train.eval_every=3"],
    )  # fmt: skip
    study = tmp_path / "study"
    run = study / "runs" / "moe"
    train_run(config, tiny_corpus, run)
    (study / "study.json").write_text("{}")
    before = _tree_bytes(study)
    routing = read_jsonl(run / "routing.jsonl")

    sent = cli("log", run, "--to", "tensorboard", "--out", tmp_path / "tb")
    assert sent.exit_code == 0, sent.output
    board = read_tensorboard(tmp_path / "tb" / "moe")
    assert [s for s, _ in board.scalars["routing/layer_1/nmi"]] == [r["step"] for r in routing]
    for (_, value), row in zip(board.scalars["routing/layer_1/nmi"], routing, strict=True):
        assert value == pytest.approx(row["layers"]["1"]["nmi"])
    assert [s for s, *_ in board.images["routing/heatmap"]] == [r["step"] for r in routing]
    assert board.scalars["eval/loss"][-1][0] == 6 and board.hparams["moe.n_experts"] == 4
    assert board.charts["layer 1 expert shares"] == [r"routing/layer_1/expert_\d+$"]
    logged = _tree_bytes(tmp_path / "tb")

    # Again into the same folder: refused, nothing written; a study logs all its runs.
    again = cli("log", study, "--to", "tensorboard", "--out", tmp_path / "tb")
    assert again.exit_code == 0, again.output  # the study's runs go to tb/study/moe
    assert read_tensorboard(tmp_path / "tb" / "study" / "moe").images["routing/heatmap"]
    refused = cli("log", run, "--to", "tensorboard", "--out", tmp_path / "tb")
    assert refused.exit_code == 2 and "already exists" in refused.output
    assert "Traceback" not in refused.output
    now = _tree_bytes(tmp_path / "tb")
    assert {k: v for k, v in now.items() if k.startswith("moe/")} == logged
    wrong = cli("log", tiny_corpus, "--to", "tensorboard", "--out", tmp_path / "tb2")
    assert wrong.exit_code == 2 and "not a run directory or a study folder" in wrong.output
    assert not (tmp_path / "tb2").exists()

    wandb = cli("log", run, "--to", "wandb", "--mode", "offline", "--project", "moectl-test",
                "--out", tmp_path / "wb")  # fmt: skip
    assert wandb.exit_code == 0, wandb.output
    (record,) = (tmp_path / "wb").glob("wandb/offline-run-*/run-*.wandb")
    for name in (b"routing/layer_1/nmi", b"eval/domain_loss/code", b"n_experts"):
        assert name in record.read_bytes()
    assert len(list(record.parent.glob("files/media/images/routing/heatmap_*.png"))) == len(routing)
    assert _tree_bytes(study) == before  # the runs were only read
