"""The Llama family through the architecture adapter: SwiGLU experts, exact upcycling of tiny
Llama / Mistral / Qwen2 / Qwen3 directories, artifacts, and the bad-input errors (issue 16)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.models import VOCAB, llama_cfg, tiny_dir
from transformers import AutoConfig, AutoModelForCausalLM

from moectl.config import ModelConfig, MoEConfig
from moectl.errors import ConfigError, ModelError
from moectl.interop.loading import load_model
from moectl.model.arch import blocks, family_of, model_sizes
from moectl.model.artifact import ModelMeta
from moectl.model.experts import SwiGLUExperts
from moectl.model.factory import build_model, count_parameters
from moectl.model.io import save_model
from moectl.model.router import route
from moectl.model.routing import moe_layers
from moectl.model.surgery import apply_moe


def moe_cfg(**kw) -> MoEConfig:
    base = {"enabled": True, "last_n": 2, "n_experts": 4, "top_k": 1, "noise_std": 0.0}
    return MoEConfig(**{**base, **kw})


IDS = torch.randint(0, VOCAB, (3, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3"])
@pytest.mark.parametrize(
    "moe", [{"top_k": 1}, {"top_k": 2}, {"top_k": 2, "granularity": 4}], ids=["top1", "top2", "g4"]
)
def test_upcycling_without_perturbation_reproduces_the_dense_logits(tmp_path, model_type, moe):
    model = build_model(llama_cfg(tiny_dir(tmp_path, model_type)), VOCAB, 16).eval()
    assert model.config.model_type == model_type and family_of(model).name == "llama"
    with torch.no_grad():
        dense = model(IDS).logits
    layers = apply_moe(model, moe_cfg(perturbation_std=0.0, **moe), seed=3)
    assert layers == [0, 1]
    assert all(isinstance(blocks(model)[i].mlp.experts, SwiGLUExperts) for i in layers)
    with torch.no_grad():
        upcycled = model(IDS).logits
    torch.testing.assert_close(upcycled, dense, atol=1e-5, rtol=0)


def test_stacked_swiglu_experts_hold_the_dense_weights_bias_free(tmp_path):
    model = build_model(llama_cfg(tiny_dir(tmp_path, "llama")), VOCAB, 16)
    mlp = blocks(model)[1].mlp
    gate, up, down = (
        p.weight.detach().clone() for p in (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    )
    apply_moe(model, moe_cfg(last_n=1, granularity=2, perturbation_std=0.0))
    experts = moe_layers(model)[1].experts
    assert experts.gate_up.shape == (8, 32, 64) and experts.down.shape == (8, 32, 32)
    assert [name for name, _ in experts.named_parameters()] == ["gate_up", "down"]
    # expert 1 = slice 1 of copy 0: gate and up rows 32..63, down columns scaled by g = 2
    torch.testing.assert_close(experts.gate_up[1], torch.cat([gate[32:].t(), up[32:].t()], 1))
    torch.testing.assert_close(experts.down[5], 2 * down[:, 32:].t())


def swiglu_reference(x, index, weights, experts: SwiGLUExperts):
    """Every expert scans all tokens with a mask: sum_k w * down(silu(x gate) * (x up))."""
    out = torch.zeros_like(x)
    width = experts.down.shape[1]
    for e in range(experts.n_experts):
        for slot in range(index.shape[1]):
            mask = index[:, slot] == e
            if mask.any():
                both = x[mask] @ experts.gate_up[e]
                h = torch.nn.functional.silu(both[:, :width]) * both[:, width:]
                out[mask] += weights[mask, slot].unsqueeze(1) * (h @ experts.down[e])
    return out


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("grouped", [False, True], ids=["loop", "grouped_mm"])
def test_swiglu_experts_match_the_reference_in_outputs_and_gradients(tmp_path, top_k, grouped):
    """float32 on the CPU: grouped=True runs torch's grouped_mm kernel, False the fallback loop."""
    model = build_model(llama_cfg(tiny_dir(tmp_path, "qwen3")), VOCAB, 16)
    apply_moe(model, moe_cfg(last_n=1, perturbation_std=0.5), seed=0)
    experts = moe_layers(model)[1].experts
    gen = torch.Generator().manual_seed(7)
    x, logits = torch.randn(40, 32, generator=gen), torch.randn(40, 4, generator=gen)
    logits[:, 2] -= 100  # expert 2 gets no tokens

    def run(reference: bool):
        experts.zero_grad()
        xg, lg = x.clone().requires_grad_(), logits.clone().requires_grad_()
        routing = route(lg, top_k)
        experts.grouped = grouped
        args = (xg, routing.expert_index, routing.expert_weight)
        out = swiglu_reference(*args, experts) if reference else experts(*args)
        (out * torch.linspace(-1, 1, 32)).sum().backward()
        return [out.detach(), xg.grad, lg.grad] + [p.grad.clone() for p in experts.parameters()]

    got, want = run(False), run(True)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert got[3][2].abs().max() == 0 and got[4][2].abs().max() == 0  # the idle expert


def test_shared_swiglu_experts_add_the_dense_mlp_once_each(tmp_path):
    model = build_model(llama_cfg(tiny_dir(tmp_path, "llama")), VOCAB, 16).eval()
    dense_mlp = blocks(model)[1].mlp
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        dense = dense_mlp(x)
    apply_moe(model, moe_cfg(last_n=1, shared_experts=2, perturbation_std=0.0))
    layer = moe_layers(model)[1]
    assert layer.shared.n_experts == 2
    with torch.no_grad():
        torch.testing.assert_close(layer(x), 3 * dense, atol=1e-5, rtol=1e-5)


def test_scratch_experts_are_drawn_with_llamas_init_independently(tmp_path):
    model = build_model(llama_cfg(tiny_dir(tmp_path, "llama")), VOCAB, 16)
    apply_moe(model, moe_cfg(last_n=1, init="scratch"), seed=0)
    experts = moe_layers(model)[1].experts
    assert not torch.equal(experts.gate_up[0], experts.gate_up[1])
    for param in (experts.gate_up, experts.down):  # N(0, 0.02): no residual scaling in Llama
        assert param.std().item() == pytest.approx(0.02, rel=0.1)


def test_scratch_llama_is_sized_by_the_model_config():
    cfg = ModelConfig(arch="llama", n_layer=3, n_embd=48, n_head=4, n_kv_head=2)
    model = build_model(cfg, VOCAB, 24, eos_token_id=0)
    sizes = model_sizes(model)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (sizes.layers, sizes.hidden, sizes.heads, sizes.kv_heads) == (3, 48, 4, 2)
    assert (sizes.intermediate, sizes.positions, sizes.vocab) == (128, 24, VOCAB)  # 8/3*48 -> 128
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert all(not hasattr(block.mlp, "c_fc") for block in blocks(model))


def test_llama_moe_artifact_round_trips_with_identical_logits(tmp_path):
    cfg = ModelConfig(arch="llama", n_layer=2, n_embd=32, n_head=2, dropout=0.1)
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB, 16, eos_token_id=0)
    moe = moe_cfg(last_n=1, top_k=2, perturbation_std=0.1, granularity=2)
    apply_moe(model, moe, seed=0)
    model.eval()
    with torch.no_grad():
        want = model(IDS).logits
    save_model(model, tmp_path / "art", ModelMeta(moe=moe))
    saved = json.loads((tmp_path / "art" / "model.json").read_text())
    assert saved["gpt2_config"]["model_type"] == "llama"  # the key GPT-2 artifacts keep
    assert saved["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    loaded = load_model(tmp_path / "art")
    assert loaded.meta.moe_layers == [1] and loaded.meta.moe.granularity == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(IDS).logits, want, atol=0, rtol=0)
    params = count_parameters(loaded.model)
    per_expert = 3 * 32 * 48  # gate, up, down of width 96 / 2
    assert params.total - params.active == (8 - 4) * per_expert


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    path = tmp_path / "neox"
    config = AutoConfig.for_model(
        "gpt_neox", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    with pytest.raises(ModelError, match="gpt_neox") as err:
        build_model(llama_cfg(path), VOCAB, 16)
    assert "gpt2, llama, mistral, qwen2, qwen3" in err.value.message


def test_a_checkpoint_of_another_family_than_model_arch_is_refused(tmp_path):
    with pytest.raises(ModelError, match=r"model\.arch is gpt2") as err:
        build_model(ModelConfig(pretrained=str(tiny_dir(tmp_path, "qwen2"))), VOCAB, 16)
    assert err.value.hint == "set model.arch=llama"


def test_swiglu_width_that_granularity_does_not_divide_is_a_config_error(tmp_path):
    model = build_model(llama_cfg(tiny_dir(tmp_path, "llama")), VOCAB, 16)
    with pytest.raises(ConfigError, match="granularity") as err:
        apply_moe(model, moe_cfg(granularity=3))
    assert "does not divide the MLP hidden width 64" in str(err.value.problems)
    assert not moe_layers(model)


def test_last_n_above_the_layer_count_is_a_config_error(tmp_path):
    model = build_model(llama_cfg(tiny_dir(tmp_path, "llama")), VOCAB, 16)
    with pytest.raises(ConfigError, match="invalid MoE layers"):
        apply_moe(model, moe_cfg(last_n=3))
