"""Build the dense model a run starts from, check it fits the corpus, and count parameters.

A model comes from a hub name, a local directory (anything `save_pretrained` wrote, a moectl
artifact), or a scratch config sized by ModelConfig with the corpus tokenizer's vocabulary. Its
family (GPT-2 or the Llama family, moectl.model.arch) knows where the blocks and MLPs are; this
module only asks it.
Offline, a hub name fails with an OfflineError that names the two offline alternatives instead
of a long OSError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from moectl.config import ModelConfig
from moectl.errors import ModelError, OfflineError
from moectl.model.arch import Family, family, family_of, is_of_family
from moectl.model.io import load_artifact
from moectl.model.routing import moe_layers

OFFLINE_HINT = (
    "use a local dense model (--set model.pretrained=PATH: a dense run's best/, a `moectl "
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
) -> PreTrainedModel:
    """A model of family model_cfg.arch for a tokenizer of `vocab_size` ids and blocks of
    `n_positions` tokens.

    A scratch model is sized by `model_cfg` (its n_positions, if set, overrides the block size).
    A pretrained one must be of that family and cover the tokenizer and the block size;
    ModelConfig.dropout applies to both, so a config file states the dropout a run trains with.
    """
    arch = family(model_cfg.arch)
    if model_cfg.pretrained is None:
        positions = model_cfg.n_positions or n_positions
        return arch.build(arch.scratch_config(model_cfg, vocab_size, positions, eos_token_id))
    model = load_pretrained(model_cfg.pretrained, model_cfg.dropout, model_cfg.arch)
    check_fits(model, vocab_size, n_positions, model_cfg.pretrained)
    return model


def load_pretrained(spec: str, dropout: float, arch: str = "gpt2") -> PreTrainedModel:
    """The dense model at a local directory or hub name, with ModelErrors a user can act on:
    its config.json's model_type must be of the family `arch` names."""
    local = Path(spec).expanduser()
    if local.exists():
        if (local / "model.json").is_file():
            return _from_artifact(local, dropout, arch)
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
        found = check_family(config.model_type, spec, arch)
        config.update(found.dropout_overrides(dropout))
        return found.from_pretrained(source, config)
    except (OSError, ValueError, SafetensorError) as exc:
        if not local.exists() and _is_offline(exc):  # a hub name, not a local directory
            raise OfflineError(
                f"cannot download '{spec}' from the Hugging Face hub: "
                "no network and no cached copy",
                hint=OFFLINE_HINT,
            ) from None
        raise ModelError(
            f"cannot load model '{spec}': {exc}",
            hint="check the hub name or the directory in model.pretrained",
        ) from None


def check_family(model_type: str, spec: str, arch: str) -> Family:
    """The family of a checkpoint's model_type; a ModelError when moectl does not support it
    (naming the supported ones) or when it is not the family model.arch names (or one built on
    it)."""
    found = family(model_type)
    if not is_of_family(found, arch):
        raise ModelError(
            f"{spec} is a '{model_type}' model ({found.name} family) but model.arch is {arch}",
            hint=f"set model.arch={found.name}",
        )
    return found


def moe_base_error(path: Path | str) -> ModelError:
    """The refusal of an MoE model (an artifact or an export) as model.pretrained, which takes
    the dense base that a run upcycles, while --init-from continues an MoE model as it is."""
    return ModelError(
        f"{path} is an MoE model, but model.pretrained takes the dense model a run upcycles",
        hint=f"continue it with `moectl train --init-from {path}` and its MoE layout, "
        "or set model.pretrained to the dense model it came from",
    )


def _from_artifact(path: Path, dropout: float, arch: str) -> PreTrainedModel:
    """The dense model of a moectl artifact, rebuilt with the run's dropout; an MoE one is
    refused (`moe_base_error`). (A `moectl export` directory is a save_pretrained directory:
    the trainer refuses an MoE one before building, moectl.training.setup.)"""
    loaded = load_artifact(path)
    if loaded.meta.moe_layers:
        raise moe_base_error(path)
    config = loaded.model.config
    found = check_family(config.model_type, str(path), arch)
    config.update(found.dropout_overrides(dropout))
    model = found.build(config)
    model.load_state_dict(loaded.model.state_dict())
    return model


def _is_offline(exc: Exception) -> bool:
    from huggingface_hub import constants

    flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if constants.HF_HUB_OFFLINE or any(os.environ.get(f, "") in ("1", "true", "ON") for f in flags):
        return True
    text = str(exc).lower()
    return "couldn't connect" in text or "offline" in text or "connection" in text


def check_fits(model: PreTrainedModel, vocab_size: int, n_positions: int, name: str) -> None:
    """ModelError unless the model has an embedding for every token id and every position."""
    sizes = family_of(model).sizes(model.config)
    if vocab_size > sizes.vocab:
        raise ModelError(
            f"the tokenizer has {vocab_size} ids but model {name} embeds only {sizes.vocab}",
            hint="prepare the corpus with the model's own tokenizer (data.tokenizer set to the "
            "model's directory or hub name, or gpt2 for GPT-2 checkpoints), or train a scratch "
            "model (model.pretrained=null)",
        )
    if n_positions > sizes.positions:
        raise ModelError(
            f"blocks of {n_positions} tokens exceed model {name}'s {sizes.positions} positions",
            hint=f"prepare the corpus with data.block_size <= {sizes.positions}",
        )


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
