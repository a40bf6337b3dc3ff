"""Build the GPT-2 a run starts from and turn some of its MLPs into routed experts.

A model comes from a hub name, a local directory (anything `save_pretrained` wrote), or a scratch
config sized by ModelConfig with the corpus tokenizer's vocabulary. Offline, a hub name fails
with an OfflineError that names the two offline alternatives instead of a long OSError.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, GPT2Config, GPT2LMHeadModel
from transformers.activations import GELUTanh, NewGELUActivation

from moectl.config import ModelConfig, MoEConfig
from moectl.errors import ConfigError, ModelError, OfflineError
from moectl.model.moe import MoEMLP
from moectl.model.routing import moe_layers

# Attention kernel for every GPT-2 moectl builds: torch's scaled_dot_product_attention (flash or
# memory-efficient kernels on GPUs, in training too) rather than transformers' eager matmuls.
ATTENTION = "sdpa"
OFFLINE_HINT = (
    "use a local dense GPT-2 (--set model.pretrained=PATH: a dense run's best/, a `moectl "
    "export` directory or any save_pretrained directory) or a scratch model (--set "
    "model.pretrained=null with model.n_layer / model.n_embd / model.n_head)"
)
LOCAL_MODEL_HINT = (
    "point model.pretrained at a dense run's best/, a `moectl export` directory or a "
    "save_pretrained directory"
)


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts; `active` is what one token uses (top_k of each MoE layer's experts)."""

    total: int
    active: int


def build_model(
    model_cfg: ModelConfig, vocab_size: int, n_positions: int, eos_token_id: int | None = None
) -> GPT2LMHeadModel:
    """A GPT-2 for a tokenizer of `vocab_size` ids and blocks of `n_positions` tokens.

    A scratch model is sized by `model_cfg` (its n_positions, if set, overrides the block size).
    A pretrained one must cover the tokenizer and the block size; ModelConfig.dropout applies
    to both, so a config file states the dropout a run trains with.
    """
    dropout = model_cfg.dropout
    if model_cfg.pretrained is None:
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=model_cfg.n_positions or n_positions,
            n_embd=model_cfg.n_embd,
            n_layer=model_cfg.n_layer,
            n_head=model_cfg.n_head,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
            attn_implementation=ATTENTION,
        )
        return fuse_gelu(GPT2LMHeadModel(config))
    model = load_pretrained(model_cfg.pretrained, dropout)
    check_fits(model, vocab_size, n_positions, model_cfg.pretrained)
    return fuse_gelu(model)


def fuse_gelu(model: GPT2LMHeadModel) -> GPT2LMHeadModel:
    """GPT-2's gelu_new as torch's fused kernel (F.gelu tanh, the same formula) in every MLP.

    transformers computes gelu_new as eight elementwise ops in Python; the fused kernel is ~3x
    faster on the CPU. The config keeps `gelu_new`, so artifacts and exports are unchanged.
    """
    for block in model.transformer.h:
        if isinstance(getattr(block.mlp, "act", None), NewGELUActivation):
            block.mlp.act = GELUTanh()
    return model


def load_pretrained(spec: str, dropout: float) -> GPT2LMHeadModel:
    """GPT2LMHeadModel from a local directory or a hub name, with ModelErrors a user can act on."""
    local = Path(spec).expanduser()
    if local.exists():
        if (local / "model.json").is_file() or _is_moe_export(local):
            return _from_moectl_model(local, dropout)
        if not (local / "config.json").is_file():
            raise ModelError(
                f"{local} is not a model directory (no config.json or model.json)",
                hint=LOCAL_MODEL_HINT,
            )
        source = str(local)
    elif spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(
            f"model directory {spec} does not exist",
            hint="check the path in model.pretrained, or give a hub name such as gpt2",
        )
    else:
        source = spec
    try:
        config = AutoConfig.from_pretrained(source)
        if config.model_type != "gpt2":
            raise ModelError(
                f"{spec} is a '{config.model_type}' model; moectl upcycles GPT-2 models",
                hint="choose a GPT-2 checkpoint (model_type gpt2), e.g. gpt2 or distilgpt2",
            )
        overrides = {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
        config.update(overrides)
        return GPT2LMHeadModel.from_pretrained(source, config=config, attn_implementation=ATTENTION)
    except (OSError, ValueError) as exc:
        if source == spec and _is_offline(exc):
            raise OfflineError(
                f"cannot download '{spec}' from the Hugging Face hub: "
                "no network and no cached copy",
                hint=OFFLINE_HINT,
            ) from None
        raise ModelError(
            f"cannot load model '{spec}': {exc}",
            hint="check the hub name or the directory in model.pretrained",
        ) from None


def _is_moe_export(path: Path) -> bool:
    from moectl.model.hf_format import MOE_MODEL_TYPE, is_hf_dir, read_hf_config

    return is_hf_dir(path) and read_hf_config(path).get("model_type") == MOE_MODEL_TYPE


def _from_moectl_model(path: Path, dropout: float) -> GPT2LMHeadModel:
    """The dense GPT-2 of a moectl artifact or export, rebuilt with the run's dropout.

    An MoE model is refused: model.pretrained is the dense base that a run upcycles, while
    --init-from continues an MoE model as it is.
    """
    from moectl.model.io import load_model

    loaded = load_model(path)
    if loaded.meta.moe_layers:
        raise ModelError(
            f"{path} is an MoE model, but model.pretrained takes the dense GPT-2 a run upcycles",
            hint=f"continue it with `moectl train --init-from {path}` and its MoE layout, "
            "or set model.pretrained to the dense model it came from",
        )
    config = loaded.model.config
    config.update({"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout})
    model = GPT2LMHeadModel(config)
    model.load_state_dict(loaded.model.state_dict())
    return model


def _is_offline(exc: Exception) -> bool:
    from huggingface_hub import constants

    flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if constants.HF_HUB_OFFLINE or any(os.environ.get(f, "") in ("1", "true", "ON") for f in flags):
        return True
    text = str(exc).lower()
    return "couldn't connect" in text or "offline" in text or "connection" in text


def check_fits(model: GPT2LMHeadModel, vocab_size: int, n_positions: int, name: str) -> None:
    """ModelError unless the model has an embedding for every token id and every position."""
    if vocab_size > model.config.vocab_size:
        raise ModelError(
            f"the tokenizer has {vocab_size} ids but model {name} embeds only "
            f"{model.config.vocab_size}",
            hint="prepare the corpus with the model's own tokenizer (data.tokenizer=gpt2 for "
            "GPT-2 checkpoints), or train a scratch model (model.pretrained=null)",
        )
    if n_positions > model.config.n_positions:
        raise ModelError(
            f"blocks of {n_positions} tokens exceed model {name}'s {model.config.n_positions} "
            "positions",
            hint=f"prepare the corpus with data.block_size <= {model.config.n_positions}",
        )


def apply_moe(model: GPT2LMHeadModel, moe_cfg: MoEConfig, seed: int = 0) -> list[int]:
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
    layers = moe_cfg.resolve_layers(model.config.n_layer)
    check_granularity(moe_cfg, model.config)
    generator = torch.Generator().manual_seed(seed)
    scratch = moe_cfg.init == "scratch"
    for index in layers:
        block = model.transformer.h[index]
        block.mlp = MoEMLP.upcycle(
            block.mlp,
            moe_cfg,
            hidden_size=model.config.n_embd,
            layer_index=index,
            perturbation_std=0.0 if scratch else moe_cfg.perturbation_std,
            gate_init_std=model.config.initializer_range,
            generator=generator,
        )
        if scratch:
            init_experts_from_scratch(block.mlp, model.config, generator)
    return layers


def check_granularity(moe_cfg: MoEConfig, config: GPT2Config) -> None:
    """ConfigError unless moe.granularity divides the MLP's hidden width."""
    inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
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
    layer: MoEMLP, config: GPT2Config, generator: torch.Generator
) -> None:
    """Draw every expert's weights afresh with GPT-2's own initialization, independently.

    Matrices ~ N(0, initializer_range), the output projections scaled by 1/sqrt(2 n_layer) as
    GPT-2 does for residual writes, biases zero: experts that share nothing with the dense MLP
    or with each other, the setting of an MoE trained from scratch (OLMoE).
    """
    std = config.initializer_range
    with torch.no_grad():
        experts = [layer.experts] if layer.shared is None else [layer.experts, layer.shared]
        params = [item for module in experts for item in module.named_parameters()]
        for name, param in params:
            if name.endswith("bias"):
                param.zero_()
                continue
            scale = std / math.sqrt(2 * config.n_layer) if name.startswith("proj") else std
            param.copy_(torch.randn(param.shape, generator=generator) * scale)


def count_parameters(model: nn.Module) -> ParamCount:
    """Total parameters (tied ones once) and those active per token.

    Active = total minus, per MoE layer, (n_experts - top_k) experts' parameters.
    """
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for layer in moe_layers(model).values():
        per_expert = sum(p.numel() for p in layer.experts.parameters()) // layer.n_experts
        inactive += (layer.n_experts - layer.top_k) * per_expert
    return ParamCount(total=total, active=total - inactive)
