"""Tiny models and tokenizers: a GPT-2 (dense or MoE), a small BPE tokenizer, a saved Llama-family
checkpoint and one MoE layer.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from moectl.config import ModelConfig, MoEConfig
from moectl.model.factory import build_model
from moectl.model.routing import moe_layers
from moectl.model.surgery import apply_moe


def tiny(moe: MoEConfig | None = None):
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=2, n_embd=32, n_head=2), 50, 16, eos_token_id=0)
    if moe is not None:
        apply_moe(model, moe, seed=1)
    return model.eval()


def small_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=50, special_tokens=["<eos>", "<unk>"])
    tok.train_from_iterator(["def f(x): return x + 1", "two plus two is four"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")


VOCAB = 64


TINY = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
    "bos_token_id": 0,
    "eos_token_id": 0,
}


def tiny_dir(tmp_path, model_type: str, **overrides):
    """A randomly initialized dense model of `model_type` saved with save_pretrained."""
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **{**TINY, **overrides})
    path = tmp_path / model_type
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def llama_cfg(path) -> ModelConfig:
    return ModelConfig(arch="llama", pretrained=str(path))


def tiny_gpt2(n_layer: int = 2, n_embd: int = 32, vocab: int = 64) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=16,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def moe_cfg(**kw) -> MoEConfig:
    base = {"enabled": True, "last_n": 1, "n_experts": 4, "top_k": 1, "noise_std": 0.0}
    return MoEConfig(**{**base, **kw})


def mlp_layer(top_k: int = 1, n_experts: int = 4, noise_std: float = 0.0, seed: int = 0):
    model = tiny_gpt2()
    apply_moe(model, moe_cfg(top_k=top_k, n_experts=n_experts, noise_std=noise_std), seed=seed)
    return moe_layers(model)[1]
