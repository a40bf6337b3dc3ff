"""train_run end to end on a tiny corpus: exact resume, collapse stop, upcycling, bad input."""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers.training import COLLAPSING

from moectl.config import resolve_run_config
from moectl.errors import ConfigError, ModelError, MoectlError, TrainingError
from moectl.training.trainer import train_run

MOE = ["moe.enabled=true", "moe.last_n=1", "moe.n_experts=4", "train.max_steps=12"]


def rows(run_dir, name="metrics.jsonl", kind=None):
    lines = (run_dir / name).read_text().splitlines()
    parsed = [json.loads(line) for line in lines]
    return [r for r in parsed if kind is None or r.get("kind") == kind]


def test_interrupted_then_resumed_run_matches_uninterrupted_bitwise(tiny_corpus, tmp_path):
    config = resolve_run_config("tiny", overrides=[*MOE, "train.save_every=5", "train.log_every=3"])
    full = train_run(config, tiny_corpus, tmp_path / "full")
    assert full.stop_reason == "completed" and full.steps == 12

    def interrupt_at_7(event):
        if event.stage == "train" and event.completed == 7:
            os.kill(os.getpid(), signal.SIGINT)

    cut = train_run(config, tiny_corpus, tmp_path / "cut", callback=interrupt_at_7)
    assert cut.stop_reason == "interrupted" and cut.steps == 7
    assert cut.last_checkpoint.endswith("step-7")
    with pytest.raises(TrainingError, match="already has checkpoints"):
        train_run(config, tiny_corpus, tmp_path / "cut")
    resumed = train_run(config, tiny_corpus, tmp_path / "cut", resume=True)
    assert resumed.stop_reason == "completed" and resumed.steps == 12
    assert resumed.resumed_from.endswith("step-7")

    def losses(run):
        return [(r["step"], r["loss"], r["domain_loss"]) for r in rows(run, kind="train")]

    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
    assert [r["step"] for r in rows(tmp_path / "full", kind="train")] == [3, 6, 9, 12]
    assert rows(tmp_path / "cut", kind="eval") == rows(tmp_path / "full", kind="eval")
    assert rows(tmp_path / "cut", "routing.jsonl") == rows(tmp_path / "full", "routing.jsonl")
    assert resumed.best_eval_loss == full.best_eval_loss
    checkpoints = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert checkpoints == ["step-10", "step-12"]


def test_compiled_run_saves_plain_keys_and_resumes_to_the_same_losses(
    tiny_corpus, tmp_path, monkeypatch
):
    """train.compile wraps the forward only; checkpoints hold the bare model's keys. The eager
    backend (graph capture, no code generation) keeps this fast; inductor is benchmarked."""
    import torch._dynamo
    from safetensors.torch import load_file

    from moectl.training import compiling

    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this platform")
    monkeypatch.setattr(compiling, "BACKEND", "eager")
    overrides = [*MOE, "train.max_steps=6", "train.save_every=3", "train.log_every=1"]
    config = resolve_run_config("tiny", overrides=[*overrides, "train.compile=true"])
    run = tmp_path / "run"
    train_run(config, tiny_corpus, run)
    keys = load_file(str(run / "checkpoints" / "step-3" / "model.safetensors"))
    assert "transformer.h.1.mlp.experts.fc_weight" in keys
    assert not any("_orig_mod" in key for key in keys)
    full = rows(run, kind="train")
    train_run(config, tiny_corpus, run, resume=run / "checkpoints" / "step-3")
    assert [r["loss"] for r in rows(run, kind="train")] == [r["loss"] for r in full]
    eager = resolve_run_config("tiny", overrides=overrides)
    train_run(eager, tiny_corpus, tmp_path / "eager")
    losses = [r["loss"] for r in rows(tmp_path / "eager", kind="train")]
    assert losses == pytest.approx([r["loss"] for r in full], rel=1e-5)


def test_collapse_without_load_balancing_stops_the_run(tiny_corpus, tmp_path):
    config = resolve_run_config("tiny", overrides=[*COLLAPSING, "train.collapse.patience=2"])
    result = train_run(config, tiny_corpus, tmp_path / "nolb")
    assert result.stop_reason == "collapse"
    assert result.steps < 60
    last = rows(tmp_path / "nolb", "routing.jsonl")[-1]
    assert last["step"] == result.steps
    assert last["collapse"]["stop"] and last["collapse"]["consecutive"] == 2
    assert max(layer["max_fraction"] for layer in last["layers"].values()) > 0.5
    assert result.collapse_events[-1].stop
    assert (tmp_path / "nolb" / "checkpoints" / f"step-{result.steps}").is_dir()


def test_dense_run_then_upcycle_with_init_from(tiny_corpus, tmp_path):
    dense_cfg = resolve_run_config("tiny", overrides=["train.max_steps=4", "train.eval_every=2"])
    dense = train_run(dense_cfg, tiny_corpus, tmp_path / "dense")
    assert dense.best_step is not None
    metrics = rows(tmp_path / "dense", kind="train")
    assert metrics[-1]["lb_loss"] is None and set(metrics[-1]["domain_loss"]) == {
        "code",
        "math",
        "prose",
    }
    best = tmp_path / "dense" / "best"
    assert (best / "tokenizer").is_dir()
    moe_cfg = resolve_run_config(
        "tiny", overrides=["moe.enabled=true", "moe.layers=[0,1]", "train.max_steps=2"]
    )
    moe = train_run(moe_cfg, tiny_corpus, tmp_path / "moe", init_from=best)
    assert moe.steps == 2
    routing = rows(tmp_path / "moe", "routing.jsonl")
    assert [r["step"] for r in routing] == [0, 2]
    assert routing[0]["collapse"] is None and routing[-1]["collapse"]["warning"] is not None
    tokens = 4 * 16  # the first update's batch: 4 blocks of 16 tokens, routed by the init gate
    assert sum(map(sum, routing[0]["layers"]["0"]["counts"])) == tokens
    assert set(routing[-1]["layers"]) == {"0", "1"}
    assert sum(routing[-1]["layers"]["0"]["fractions"]) == pytest.approx(1.0)
    again = train_run(moe_cfg, tiny_corpus, tmp_path / "moe2", init_from=tmp_path / "moe" / "best")
    assert again.steps == 2
    other = resolve_run_config("tiny", overrides=["moe.enabled=true", "moe.layers=[1]"])
    with pytest.raises(ModelError, match=r"moe\.layers is \[0, 1\] there, \[1\] in the config"):
        train_run(other, tiny_corpus, tmp_path / "moe3", init_from=tmp_path / "moe" / "best")
    info = json.loads((tmp_path / "moe" / "run.json").read_text())
    assert info["init_from"] == str(best) and info["domains"] == ["code", "math", "prose"]


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["moe.enabled=true", "moe.layers=[5]"], ConfigError, "out of range"),
        (["model.pretrained=/nonexistent/model"], ModelError, "does not exist"),
    ],
)
def test_bad_model_settings_fail_before_training(tiny_corpus, tmp_path, overrides, error, match):
    config = resolve_run_config("tiny", overrides=overrides)
    with pytest.raises(error, match=match):
        train_run(config, tiny_corpus, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_resume_checks_architecture_and_missing_inputs(tiny_corpus, tmp_path):
    config = resolve_run_config("tiny", overrides=["train.max_steps=2", "train.save_every=2"])
    train_run(config, tiny_corpus, tmp_path / "run")
    wider = resolve_run_config(
        "tiny", overrides=["train.max_steps=4", "train.save_every=2", "model.n_embd=64"]
    )
    with pytest.raises(TrainingError, match=r"differs in model\.n_embd \("):
        train_run(wider, tiny_corpus, tmp_path / "run", resume=True)
    with pytest.raises(TrainingError, match="no checkpoint"):
        (tmp_path / "empty").mkdir()
        train_run(config, tiny_corpus, tmp_path / "empty", resume=True)
    with pytest.raises(TrainingError, match="init-from"):
        train_run(config, tiny_corpus, tmp_path / "x", init_from=tmp_path / "missing")
    with pytest.raises(MoectlError, match="does not exist"):
        train_run(config, tmp_path / "no-corpus", tmp_path / "y")


def test_corpus_tokenizer_larger_than_model_vocabulary_is_refused(tiny_corpus, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    small = GPT2Config(vocab_size=100, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(small).save_pretrained(tmp_path / "small")
    config = resolve_run_config("tiny", overrides=[f"model.pretrained={tmp_path / 'small'}"])
    with pytest.raises(ModelError, match="300 ids"):
        train_run(config, tiny_corpus, tmp_path / "run")
