"""`moectl inspect` on a run directory, a checkpoint and a best/ model artifact."""

from __future__ import annotations

import json

import pytest
from stored import fixture as stored_fixture

from moectl.config import resolve_run_config
from moectl.training.trainer import train_run


@pytest.fixture(scope="module")
def moe_run(tiny_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("inspect") / "run"
    overrides = ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "moe.top_k=2"]
    config = resolve_run_config("tiny", overrides=[*overrides, "train.max_steps=4"])
    train_run(config, tiny_corpus, run)
    return run


def test_inspect_run_json_and_rich(cli, moe_run):
    summary = json.loads(cli("inspect", moe_run, "--json").output)
    assert summary["kind"] == "run" and summary["steps_done"] == 4
    assert summary["moe"]["n_experts"] == 4 and summary["moe"]["top_k"] == 2
    assert summary["best_eval"]["step"] == 4
    assert set(summary["last_eval"]["domain_loss"]) == {"code", "math", "prose"}
    assert [c["step"] for c in summary["checkpoints"]] == [4]
    text = cli("inspect", moe_run)
    assert text.exit_code == 0 and "4 / 4 steps" in text.output and "prose" in text.output


def test_inspect_checkpoint_and_model(cli, moe_run):
    ckpt = json.loads(cli("inspect", moe_run / "checkpoints" / "step-4", "--json").output)
    assert ckpt["kind"] == "checkpoint" and ckpt["step"] == 4
    assert ckpt["experts"] == {"1": 4} and ckpt["top_k"] == 2
    params = ckpt["parameters"]
    expert = (32 * 128 + 128) + (128 * 32 + 32)
    assert params["total"] - params["active"] == 2 * expert
    assert ckpt["trainer"]["tokens"] == 4 * 4 * 16
    best = json.loads(cli("inspect", moe_run / "best", "--json").output)
    assert best["kind"] == "model" and best["has_tokenizer"]
    assert set(best["metrics"]["eval"]["domain_loss"]) == {"code", "math", "prose"}
    text = cli("inspect", moe_run / "best")
    assert text.exit_code == 0 and "active per token" in text.output


def test_inspect_format_1_artifact(cli):
    """tests/fixtures/model_v1_moe: per-expert tensors, stacked on load; counted the same."""
    summary = json.loads(cli("inspect", stored_fixture("model_v1_moe"), "--json").output)
    assert summary["kind"] == "model" and summary["step"] == 7
    assert summary["experts"] == {"1": 3} and summary["top_k"] == 2
    expert = (4 * 16 + 16) + (16 * 4 + 4)
    params = summary["parameters"]
    assert params["total"] - params["active"] == expert
