"""Model surgery: some of a dense model's MLPs replaced, in place, by routed MoE layers.

`apply_moe` upcycles (experts copy the dense MLP, perturbed) or, with `moe.init: scratch`,
draws every expert afresh with the family's own initialization; the family (moectl.model.arch)
says where the blocks and MLPs are and which experts class replaces them.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig, PreTrainedModel

from moectl.config import MoEConfig
from moectl.errors import ConfigError, ModelError
from moectl.model.arch import Family, family_of
from moectl.model.moe import MoEMLP
from moectl.model.routing import moe_layers


def apply_moe(model: PreTrainedModel, moe_cfg: MoEConfig, seed: int = 0) -> list[int]:
    """Replace the chosen layers' MLPs by upcycled MoE layers, in place; returns those layers.

    Experts copy the dense MLP with perturbation_std-relative noise and the gates start at
    N(0, initializer_range), all drawn from a generator seeded with `seed`.
    """
    if not moe_cfg.enabled:
        return []
    if moe_layers(model):
        raise ModelError(
            "this model already has MoE layers",
            hint="upcycle a dense model (disable moe, or start from a dense checkpoint)",
        )
    arch = family_of(model)
    sizes = arch.sizes(model.config)
    layers = moe_cfg.resolve_layers(sizes.layers)
    check_granularity(moe_cfg, sizes.intermediate)
    generator = torch.Generator().manual_seed(seed)
    scratch = moe_cfg.init == "scratch"
    blocks = arch.blocks(model)
    for index in layers:
        block = blocks[index]
        block.mlp = MoEMLP.upcycle(
            arch.dense_mlp(block.mlp),
            moe_cfg,
            experts=arch.experts,
            hidden_size=sizes.hidden,
            layer_index=index,
            perturbation_std=0.0 if scratch else moe_cfg.perturbation_std,
            gate_init_std=model.config.initializer_range,
            generator=generator,
        )
        if scratch:
            init_experts_from_scratch(block.mlp, model.config, arch, generator)
    return layers


def check_granularity(moe_cfg: MoEConfig, inner: int) -> None:
    """ConfigError unless moe.granularity divides the MLP's inner width (GELU or SwiGLU)."""
    if inner % moe_cfg.granularity:
        raise ConfigError(
            "invalid MoE granularity",
            [
                (
                    "moe.granularity",
                    f"{moe_cfg.granularity} does not divide the MLP hidden width {inner}; "
                    "pick a divisor of it",
                )
            ],
        )


def init_experts_from_scratch(
    layer: MoEMLP, config: PretrainedConfig, arch: Family, generator: torch.Generator
) -> None:
    """Draw every expert's weights afresh with the family's own initialization, independently.

    Matrices ~ N(0, initializer_range), the output projections (proj, down) divided by the
    family's residual divisor (sqrt(2 n_layer) for GPT-2's residual writes, 1 for Llama),
    biases zero: experts that share nothing with the dense MLP or with each other, the setting
    of an MoE trained from scratch (OLMoE).
    """
    std = config.initializer_range
    divisor = arch.residual_divisor(config)
    with torch.no_grad():
        experts = [layer.experts] if layer.shared is None else [layer.experts, layer.shared]
        params = [item for module in experts for item in module.named_parameters()]
        for name, param in params:
            if name.endswith("bias"):
                param.zero_()
                continue
            scale = std / divisor if name.startswith(("proj", "down")) else std
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
