"""`model.arch=llama` through the CLI: train, exact resume, evaluate with the init control, the
dense export as the plain transformers class, and the bad inputs of issue 16 (one line, exit 2,
nothing written)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import snapshot
from transformers import AutoConfig, AutoModelForCausalLM

from moectl.config import resolve_run_config
from moectl.training.trainer import train_run

LLAMA_MOE = [
    "model.arch=llama",
    "moe.enabled=true",
    "moe.last_n=1",
    "moe.n_experts=4",
    "moe.top_k=2",
    "moe.granularity=2",
    "moe.shared_experts=1",
    "train.max_steps=6",
    "train.save_every=3",
    "train.log_every=1",
    "train.router_log_every=3",
    "train.eval_every=6",
]


def _rows(run_dir, name):
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


def _train_rows(run_dir):
    keys = ("step", "loss", "lm_loss", "lb_loss", "z_loss", "grad_norm")
    rows = _rows(run_dir, "metrics.jsonl")
    return [tuple(r[k] for k in keys) for r in rows if r.get("kind") == "train"]


def test_llama_moe_trains_resumes_bitwise_and_evaluates_with_the_init_control(
    cli, tiny_corpus, tmp_path
):
    config = resolve_run_config("tiny", overrides=LLAMA_MOE)
    run = tmp_path / "run"
    train_run(config, tiny_corpus, run)
    full = (_train_rows(run), _rows(run, "routing.jsonl"))
    train_run(config, tiny_corpus, run, resume=run / "checkpoints" / "step-3")
    assert (_train_rows(run), _rows(run, "routing.jsonl")) == full
    assert full[0][-1][1] < full[0][0][1]  # it learns
    quick = ["--max-blocks", "24", "--permutations", "20", "--bootstrap", "100"]
    result = cli("evaluate", run, "--json", *quick, "--random-gates", "64")
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)["results"][0]
    assert evaluated["init_control"] is None  # the step-0 llama was rebuilt and verified
    routing = evaluated["routing"][0]
    assert routing["layer"] == 1 and routing["n_experts"] == 8  # 4 experts split in 2
    assert routing["specialization"]["init_nmi"] is not None


def test_dense_llama_exports_as_its_transformers_class_and_generates(cli, tiny_corpus, tmp_path):
    run = tmp_path / "dense"
    sets = ["--set", "model.arch=llama", "--set", "train.max_steps=2"]
    trained = cli("train", "--preset", "tiny", "--data", tiny_corpus, "--run-dir", run, *sets)
    assert trained.exit_code == 0, trained.output
    exported = cli("export", run, "--out", tmp_path / "hf")
    assert exported.exit_code == 0, exported.output
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([[1, 2, 3]])
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)
    generated = cli("generate", tmp_path / "hf", "--prompt", "def", "--max-new-tokens", "3")
    assert generated.exit_code == 0, generated.output


def _neox(path):
    config = AutoConfig.for_model(
        "gpt_neox", vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["model.pretrained={neox}"], "moectl supports model_type gpt2, llama, mistral, qwen2"),
        (["moe.enabled=true", "moe.last_n=3"], "moe.last_n: 3 exceeds the model's 2 layers"),
        (
            ["moe.enabled=true", "moe.last_n=1", "moe.granularity=5"],
            "5 does not divide the MLP hidden width 32",
        ),
    ],
    ids=["unsupported-architecture", "last-n", "swiglu-granularity"],
)
def test_bad_llama_input_is_one_line_exit_2_and_writes_nothing(
    cli, tiny_corpus, tmp_path, sets, needle
):
    neox = _neox(tmp_path / "neox")
    before = snapshot(tmp_path)
    args = [arg for item in sets for arg in ("--set", item.format(neox=neox))]
    args += ["--set", "model.arch=llama", "--set", "model.intermediate_size=32"]
    result = cli(
        "train", "--preset", "tiny", "--data", tiny_corpus, "--run-dir", tmp_path / "r", *args
    )
    assert result.exit_code == 2
    assert needle in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert snapshot(tmp_path) == before
