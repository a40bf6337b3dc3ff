"""The GPU presets on hub checkpoints (smollm2-moe, qwen3-moe), their whole path offline.

The hub is unreachable here, so each preset runs on a tiny random model of its checkpoint's
config shape (same model_type, layer count, grouped-query ratio, tied embeddings; small widths)
saved with save_pretrained together with a tiny tokenizer, with model.pretrained and
data.tokenizer pointed at that directory as a user with a local copy would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_domain_texts
from transformers import AutoConfig, AutoModelForCausalLM

from moectl.config import resolve_run_config
from moectl.data.prepare import prepare_corpus
from moectl.data.tokenizer import train_bpe
from moectl.interop.loading import load_model

# The checkpoints' shapes (config.json on the hub), shrunk in width only.
SHAPES = {
    "smollm2-moe": ("llama", {"num_hidden_layers": 30, "num_attention_heads": 3, "kv": 1}),
    "qwen3-moe": ("qwen3", {"num_hidden_layers": 28, "num_attention_heads": 4, "kv": 2}),
}


def tiny_checkpoint(root: Path, model_type: str, shape: dict) -> Path:
    folders = [Path(f) for group in write_domain_texts(root / "texts").values() for f in group]
    tokenizer = train_bpe(300, (p.read_text() for f in folders for p in sorted(f.iterdir())))
    torch.manual_seed(0)
    heads = shape["num_attention_heads"]
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=8 * heads,
        head_dim=8,
        intermediate_size=32,
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=shape["kv"],
        max_position_embeddings=64,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    path = root / "checkpoint"
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def overrides_for(checkpoint: Path) -> list[str]:
    return [
        f"model.pretrained={checkpoint}",
        f"data.tokenizer={checkpoint}",
        "data.source=builtin",
        "data.size_mb=0.03",
        "data.block_size=32",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.grad_accum=1",
        "train.eval_every=2",
        "train.save_every=2",
        "train.eval_max_blocks=4",
        "train.log_every=1",
        "train.router_log_every=1",
        "train.device=cpu",
        "train.precision=fp32",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(SHAPES))
def test_preset_trains_evaluates_and_generates_on_a_tiny_model_of_its_shape(
    cli, tmp_path: Path, preset: str
):
    model_type, shape = SHAPES[preset]
    checkpoint = tiny_checkpoint(tmp_path, model_type, shape)
    overrides = overrides_for(checkpoint)
    config = resolve_run_config(preset, overrides=overrides)
    assert config.model.arch == "llama" and config.moe.last_n == shape["num_hidden_layers"] // 2
    corpus = prepare_corpus(config.data, tmp_path / "data").path
    sets = [arg for item in overrides for arg in ("--set", item)]
    run = tmp_path / "run"
    trained = cli("train", "--preset", preset, "--data", corpus, "--run-dir", run, *sets)
    assert trained.exit_code == 0, trained.output
    loaded = load_model(run / "best")
    n_layers = shape["num_hidden_layers"]
    assert loaded.model.config.model_type == model_type
    assert loaded.meta.moe_layers == list(range(n_layers // 2, n_layers))
    assert loaded.meta.tokenizer["name"] == str(checkpoint)
    quick = ["--max-blocks", "12", "--permutations", "20", "--bootstrap", "100", "--samples", "0"]
    evaluated = cli("evaluate", run, "--json", *quick, "--random-gates", "64")
    assert evaluated.exit_code == 0, evaluated.output
    layers = json.loads(evaluated.output)
    assert layers
    generated = cli("generate", run, "--prompt", "def add", "--max-new-tokens", "4")
    assert generated.exit_code == 0, generated.output
    assert generated.output.strip().startswith("def add")


def test_a_local_qwen3_directory_upcycles_without_model_arch(cli, tmp_path: Path):
    """model.pretrained at a local directory: its config.json's model_type names the family
    (issue 16), so no model.arch is needed; one that contradicts it is refused in one line."""
    shape = {"num_hidden_layers": 2, "num_attention_heads": 2, "kv": 1}
    checkpoint = tiny_checkpoint(tmp_path, "qwen3", shape)
    overrides = [*overrides_for(checkpoint), "moe.enabled=true", "moe.last_n=2", "moe.n_experts=4"]
    corpus = prepare_corpus(resolve_run_config("tiny", overrides=overrides).data, tmp_path / "d")
    sets = [arg for item in overrides for arg in ("--set", item)]
    run = tmp_path / "run"
    trained = cli("train", "--preset", "tiny", "--data", corpus.path, "--run-dir", run, *sets)
    assert trained.exit_code == 0, trained.output
    assert "arch: llama" in (run / "config.yaml").read_text()
    loaded = load_model(run / "best")
    assert loaded.model.config.model_type == "qwen3" and loaded.meta.moe_layers == [0, 1]
    other = tmp_path / "other"
    refused = cli(
        "train", "--preset", "tiny", "--data", corpus.path, "--run-dir", other, *sets,
        "--set", "model.arch=gpt2",
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "is a 'qwen3' model (llama family) but model.arch is gpt2" in refused.output
    assert "hint: drop model.arch" in refused.output and not other.exists()
