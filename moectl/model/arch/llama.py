"""The Llama family: Llama, Mistral, Qwen2, Qwen3 and SmolLM2 (a Llama) through transformers'
own modeling classes.

moectl replaces `model.layers[i].mlp`, a bias-free SwiGLU (gate_proj, up_proj, down_proj), and
leaves attention, RMSNorm and rotary positions to transformers. A scratch model is a
`LlamaForCausalLM` with tied embeddings (as SmolLM2 and Qwen3-0.6B have).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from moectl.config import ModelConfig
from moectl.errors import ModelError
from moectl.model.arch.base import ATTENTION, Family, Sizes, quiet_loading, register
from moectl.model.experts import DenseMLP, SwiGLUExperts


def swiglu_width(hidden: int) -> int:
    """A scratch SwiGLU's inner width: 8/3 of the hidden width (three matrices of that width
    hold as many parameters as GPT-2's two of 4x), rounded up to a multiple of 32."""
    return -(-8 * hidden // (3 * 32)) * 32


class LlamaFamily(Family):
    name = "llama"
    label = "Llama-family model"
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    experts = SwiGLUExperts
    blocks_path = "model.layers"

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.model.layers

    def body(self, model: nn.Module) -> nn.Module:
        return model.model

    def dense_mlp(self, mlp: nn.Module) -> DenseMLP:
        projections = {"gate": mlp.gate_proj, "up": mlp.up_proj, "down": mlp.down_proj}
        return DenseMLP(projections, mlp.act_fn, 0.0, mlp.training)

    def sizes(self, config: PretrainedConfig) -> Sizes:
        return Sizes(
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            kv_heads=config.num_key_value_heads or config.num_attention_heads,
            positions=config.max_position_embeddings,
            vocab=config.vocab_size,
        )

    def scratch_config(
        self, model_cfg: ModelConfig, vocab_size: int, positions: int, eos_id: int | None
    ) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=model_cfg.n_embd,
            intermediate_size=model_cfg.intermediate_size or swiglu_width(model_cfg.n_embd),
            num_hidden_layers=model_cfg.n_layer,
            num_attention_heads=model_cfg.n_head,
            num_key_value_heads=model_cfg.n_kv_head or model_cfg.n_head,
            max_position_embeddings=positions,
            tie_word_embeddings=True,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            **self.dropout_overrides(model_cfg.dropout),
        )

    def dropout_overrides(self, dropout: float) -> dict[str, float]:
        # The Llama family has no residual or embedding dropout, only attention dropout.
        return {"attention_dropout": dropout}

    def build(self, config: PretrainedConfig) -> PreTrainedModel:
        model = AutoModelForCausalLM.from_config(config, attn_implementation=ATTENTION)
        self.check_mlp(model)
        return model.float()

    def config_from_dict(self, data: dict[str, Any]) -> PretrainedConfig:
        model_type = data.get("model_type", "llama")
        return CONFIG_MAPPING[model_type].from_dict(data, attn_implementation=ATTENTION)

    def from_pretrained(self, source: str, config: PretrainedConfig) -> PreTrainedModel:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(
                source, config=config, attn_implementation=ATTENTION, dtype=torch.float32
            )
        self.check_mlp(model)
        return model

    def residual_divisor(self, config: PretrainedConfig) -> float:
        return 1.0  # transformers' Llama init draws every linear layer with the same std

    def check_mlp(self, model: nn.Module) -> None:
        for block in self.blocks(model):
            mlp = block.mlp
            projections = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
            if any(not isinstance(p, nn.Linear) for p in projections):
                raise ModelError(
                    f"{type(mlp).__name__} is not a SwiGLU MLP (gate_proj, up_proj, down_proj)",
                    hint="choose a dense Llama, Mistral, Qwen2 or Qwen3 checkpoint",
                )
            if any(p.bias is not None for p in projections):
                raise ModelError(
                    "the model's MLP projections have biases (mlp_bias); moectl's SwiGLU "
                    "experts are bias-free",
                    hint="choose a checkpoint with mlp_bias false (every released Llama, "
                    "Mistral, Qwen2 and Qwen3)",
                )


LLAMA = register(LlamaFamily())
