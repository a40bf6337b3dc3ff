"""Model factory: scratch / local / hub GPT-2, MoE surgery, parameter counts."""

from __future__ import annotations

import pytest
import torch

from moectl.config import ModelConfig, MoEConfig
from moectl.errors import ConfigError, ModelError, OfflineError
from moectl.model.factory import build_model, count_parameters
from moectl.model.moe import MoEMLP
from moectl.model.routing import moe_layers
from moectl.model.surgery import apply_moe

SCRATCH = ModelConfig(n_layer=3, n_embd=32, n_head=2)


def test_scratch_model_takes_sizes_from_config_and_vocab_from_tokenizer():
    model = build_model(SCRATCH, vocab_size=100, n_positions=24, eos_token_id=99)
    cfg = model.config
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head) == (3, 32, 2)
    assert (cfg.vocab_size, cfg.n_positions, cfg.eos_token_id) == (100, 24, 99)
    assert model.lm_head.weight is model.transformer.wte.weight
    wide = build_model(SCRATCH.model_copy(update={"n_positions": 64}), 100, 24)
    assert wide.config.n_positions == 64


def test_from_pretrained_local_directory(tmp_path):
    torch.manual_seed(0)
    source = build_model(SCRATCH, vocab_size=80, n_positions=16, eos_token_id=0).eval()
    source.save_pretrained(tmp_path / "tiny")
    cfg = ModelConfig(pretrained=str(tmp_path / "tiny"), dropout=0.0)
    loaded = build_model(cfg, vocab_size=80, n_positions=16).eval()
    ids = torch.arange(12).reshape(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, source(ids).logits)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_pretrained_model_too_small_for_tokenizer_or_blocks(tmp_path):
    build_model(SCRATCH, vocab_size=80, n_positions=16).save_pretrained(tmp_path / "tiny")
    cfg = ModelConfig(pretrained=str(tmp_path / "tiny"))
    with pytest.raises(ModelError, match="tokenizer has 500 ids") as info:
        build_model(cfg, vocab_size=500, n_positions=16)
    assert "tokenizer" in info.value.hint
    with pytest.raises(ModelError, match="exceed"):
        build_model(cfg, vocab_size=80, n_positions=32)


def test_hub_name_offline_names_local_and_scratch_alternatives():
    with pytest.raises(OfflineError) as info:
        build_model(ModelConfig(pretrained="gpt2"), vocab_size=50257, n_positions=512)
    assert "gpt2" in info.value.message
    assert "model.pretrained=PATH" in info.value.hint
    assert "model.pretrained=null" in info.value.hint


def test_missing_or_non_model_directory_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        build_model(ModelConfig(pretrained=str(tmp_path / "nope")), 80, 16)
    with pytest.raises(ModelError, match=r"no config\.json"):
        build_model(ModelConfig(pretrained=str(tmp_path)), 80, 16)


def test_apply_moe_on_last_n_and_explicit_layers():
    model = build_model(SCRATCH, 80, 16)
    cfg = MoEConfig(enabled=True, last_n=2, n_experts=3)
    assert apply_moe(model, cfg, seed=0) == [1, 2]
    assert isinstance(model.transformer.h[2].mlp, MoEMLP)
    assert not isinstance(model.transformer.h[0].mlp, MoEMLP)
    with pytest.raises(ModelError, match="already has MoE layers"):
        apply_moe(model, cfg, seed=0)
    other = build_model(SCRATCH, 80, 16)
    assert apply_moe(other, MoEConfig(enabled=True, layers=[-1, 0]), seed=0) == [0, 2]
    assert sorted(moe_layers(other)) == [0, 2]
    assert apply_moe(build_model(SCRATCH, 80, 16), MoEConfig(), seed=0) == []
    with pytest.raises(ConfigError):
        apply_moe(build_model(SCRATCH, 80, 16), MoEConfig(enabled=True, layers=[5]), seed=0)


def test_parameter_counts_by_hand():
    vocab, pos, d, n_layer = 80, 16, 32, 3
    model = build_model(SCRATCH, vocab, pos)
    embeddings = vocab * d + pos * d
    ln = 2 * d
    attn = (d * 3 * d + 3 * d) + (d * d + d)
    mlp = (d * 4 * d + 4 * d) + (4 * d * d + d)
    block = 2 * ln + attn + mlp
    dense_total = embeddings + n_layer * block + ln  # lm_head is tied to wte
    assert count_parameters(model).total == dense_total
    assert count_parameters(model).active == dense_total

    apply_moe(model, MoEConfig(enabled=True, last_n=2, n_experts=4, top_k=2), seed=0)
    gate = d * 4
    moe_total = dense_total + 2 * (3 * mlp + gate)
    counts = count_parameters(model)
    assert counts.total == moe_total
    assert counts.active == moe_total - 2 * (4 - 2) * mlp


def test_models_use_sdpa_attention_and_the_fused_gelu(tmp_path):
    from transformers.activations import GELUTanh, NewGELUActivation

    from moectl.interop.loading import load_model
    from moectl.model.artifact import ModelMeta
    from moectl.model.io import save_model

    model = build_model(SCRATCH, 80, 16).eval()
    assert model.config._attn_implementation == "sdpa"
    assert all(isinstance(block.mlp.act, GELUTanh) for block in model.transformer.h)
    assert model.config.activation_function == "gelu_new"
    ids = torch.arange(16).reshape(1, 16)
    with torch.no_grad():
        fused = model(ids).logits
        for block in model.transformer.h:
            block.mlp.act = NewGELUActivation()
        torch.testing.assert_close(model(ids).logits, fused, atol=1e-5, rtol=1e-5)
    model.config._attn_implementation = "eager"
    save_model(model, tmp_path / "m", ModelMeta())
    assert load_model(tmp_path / "m").model.config._attn_implementation == "sdpa"
