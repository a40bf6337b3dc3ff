"""GPT-2: GELU MLPs (c_fc, c_proj in Conv1D orientation, with biases), learned positions."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import GELUTanh, NewGELUActivation

from moectl.config import ModelConfig
from moectl.model.arch.base import ATTENTION, Family, Sizes, quiet_loading, register
from moectl.model.experts import DenseMLP, StackedExperts


class GPT2Family(Family):
    name = "gpt2"
    label = "GPT-2"
    model_types = ("gpt2",)
    experts = StackedExperts
    blocks_path = "transformer.h"
    v1_expert_tensors: ClassVar[dict[str, str]] = {
        "fc_weight": "c_fc.weight",
        "fc_bias": "c_fc.bias",
        "proj_weight": "c_proj.weight",
        "proj_bias": "c_proj.bias",
    }

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.transformer.h

    def body(self, model: nn.Module) -> nn.Module:
        return model.transformer

    def dense_mlp(self, mlp: nn.Module) -> DenseMLP:
        projections = {"fc": mlp.c_fc, "proj": mlp.c_proj}
        return DenseMLP(projections, mlp.act, mlp.dropout.p, mlp.training)

    def sizes(self, config: GPT2Config) -> Sizes:
        return Sizes(
            hidden=config.n_embd,
            intermediate=config.n_inner if config.n_inner is not None else 4 * config.n_embd,
            layers=config.n_layer,
            heads=config.n_head,
            kv_heads=config.n_head,
            positions=config.n_positions,
            vocab=config.vocab_size,
        )

    def scratch_config(
        self, model_cfg: ModelConfig, vocab_size: int, positions: int, eos_id: int | None
    ) -> GPT2Config:
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=positions,
            n_embd=model_cfg.n_embd,
            n_layer=model_cfg.n_layer,
            n_head=model_cfg.n_head,
            n_inner=model_cfg.intermediate_size,
            **self.dropout_overrides(model_cfg.dropout),
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            attn_implementation=ATTENTION,
        )

    def dropout_overrides(self, dropout: float) -> dict[str, float]:
        return {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}

    def build(self, config: GPT2Config) -> GPT2LMHeadModel:
        return self.prepare(GPT2LMHeadModel(config))

    def config_from_dict(self, data: dict[str, Any]) -> GPT2Config:
        return GPT2Config.from_dict(data, attn_implementation=ATTENTION)

    def from_pretrained(self, source: str, config: GPT2Config) -> GPT2LMHeadModel:
        with quiet_loading():
            loaded = GPT2LMHeadModel.from_pretrained(
                source, config=config, attn_implementation=ATTENTION
            )
        return self.prepare(loaded)

    def residual_divisor(self, config: GPT2Config) -> float:
        return math.sqrt(2 * config.n_layer)

    def prepare(self, model: GPT2LMHeadModel) -> GPT2LMHeadModel:
        """GPT-2's gelu_new as torch's fused kernel (F.gelu tanh, the same formula) in every MLP.

        transformers computes gelu_new as eight elementwise ops in Python; the fused kernel is
        ~3x faster on the CPU. The config keeps `gelu_new`, so artifacts and exports are
        unchanged.
        """
        for block in self.blocks(model):
            if isinstance(getattr(block.mlp, "act", None), NewGELUActivation):
                block.mlp.act = GELUTanh()
        return model


GPT2 = register(GPT2Family())
