"""Reading an exported (or any save_pretrained) transformers directory back into moectl.

A dense model is its family's own transformers class (GPT-2, Llama, Qwen3, ...). A GPT-2 MoE is
the custom-code model in `hf_code/` (model_type `moectl_gpt2_moe`,
moectl.interop.families.gpt2), whose experts are stacked along a leading expert dimension
exactly as moectl's own (`...mlp.experts.{fc_weight (E, D, H), fc_bias, proj_weight (E, H, D),
proj_bias}`, gate `...mlp.gate.weight`), so the state dict is the same both ways. Reading an
exported directory back (`load_hf_dir`) needs neither trust_remote_code nor the modeling file:
the config is read as JSON and the weights go into moectl's own model. A Llama-family MoE
export (moectl.interop.families.llama: a native transformers MoE class or custom code) is
rebuilt from the base config and MoE layers its `moectl` entry saved; a native one's weights
are read by transformers and mapped back to moectl's layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from moectl.config import MoEConfig
from moectl.errors import ModelError
from moectl.interop.families.gpt2 import MOE_MODEL_TYPE
from moectl.interop.families.llama import NATIVE_MODEL_TYPES, moectl_state_dict
from moectl.model.arch import family, supported_model_types
from moectl.model.artifact import LoadedModel, ModelMeta
from moectl.model.surgery import apply_moe

MOE_FIELDS = (
    "moe_layers",
    "num_local_experts",
    "num_experts_per_tok",
    "output_router_logits",
    "router_aux_loss_coef",
    "scoring_func",
    "balance",
    "n_shared_experts",
    "moe_intermediate_size",
    "auto_map",
    "moectl",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
HF_DIR_HINT = "give a directory written by `moectl export` or by save_pretrained (config.json)"


def is_hf_dir(path: Path) -> bool:
    """A transformers model directory (config.json + weights) rather than a moectl artifact."""
    path = Path(path)
    return (path / "config.json").is_file() and not (path / "model.json").is_file()


def read_hf_config(path: Path) -> dict[str, Any]:
    """config.json of a dense model of a supported family or an exported moectl MoE directory,
    or a ModelError (for another architecture, naming the supported ones)."""
    file = Path(path) / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {file}: {exc}", hint=HF_DIR_HINT) from None
    model_type = str(config.get("model_type"))
    if model_type != MOE_MODEL_TYPE and _llama_base(config) is None:
        try:
            family(model_type)
        except ModelError:
            raise ModelError(
                f"{path} is a '{model_type}' model; moectl supports model_type "
                f"{supported_model_types()}",
                hint="choose a checkpoint of one of those architectures or a directory from "
                "moectl export",
            ) from None
    return config


def moe_config_of(config: dict[str, Any]) -> MoEConfig | None:
    """The MoEConfig an exported config describes (None for a dense model)."""
    saved = (config.get("moectl") or {}).get("moe") or {}
    if _llama_base(config) is not None:  # the MoE settings and layers as moectl saved them
        layers = config["moectl"]["moe_layers"]
        return MoEConfig.model_validate({**saved, "layers": layers, "last_n": None})
    if config.get("model_type") != MOE_MODEL_TYPE:
        return None
    granularity = saved.get("granularity", 1)
    layout = {
        "enabled": True,
        "layers": list(config["moe_layers"]),
        "last_n": None,
        "n_experts": config["num_local_experts"] // granularity,
        "top_k": config["num_experts_per_tok"] // granularity,
        "score": config.get("scoring_func", "softmax"),
        "balance": config.get("balance", saved.get("balance", "switch")),
        "shared_experts": config.get("n_shared_experts", 0),
    }
    return MoEConfig.model_validate({**saved, **layout})


def dense_config_of(config: dict[str, Any]) -> dict[str, Any]:
    """The dense model's part of a config.json (what moectl's ModelMeta.hf_config holds): an
    exported moectl MoE's config less its MoE fields, as GPT-2's; a Llama-family MoE export's
    saved base config; a dense config as it is."""
    base = _llama_base(config)
    if base is not None:
        return base
    if config.get("model_type") != MOE_MODEL_TYPE:
        return config
    gpt2 = {k: v for k, v in config.items() if k not in MOE_FIELDS}
    return {**gpt2, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}


def load_hf_weights(path: Path) -> dict[str, Tensor]:
    """model.safetensors of a transformers directory mapped to moectl's keys."""
    file = Path(path) / "model.safetensors"
    if not file.is_file():
        raise ModelError(f"no model.safetensors in {path}", hint=HF_DIR_HINT)
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"cannot load the weights in {file}: {exc}", hint=HF_DIR_HINT) from None


def load_hf_dir(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A transformers dense or exported moectl MoE directory as moectl's own model, eval mode."""
    path = Path(path)
    config = read_hf_config(path)
    moe = moe_config_of(config)
    dense = dense_config_of(config)
    arch = family(dense["model_type"])
    if moe is None:
        try:
            model = arch.from_pretrained(str(path), arch.config_from_dict(dense))
        except (OSError, ValueError, SafetensorError) as exc:
            raise ModelError(f"cannot load the model in {path}: {exc}", hint=HF_DIR_HINT) from None
    else:
        model = arch.build(arch.config_from_dict(dense))
        apply_moe(model, moe.model_copy(update={"perturbation_std": 0.0, "init": "upcycle"}))
        weights = _native_weights(path) if _is_native_moe(config) else load_hf_weights(path)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
        missing = [key for key in missing if key not in tied]
        if missing or unexpected:
            raise ModelError(
                f"{path / 'model.safetensors'} does not match its config.json (missing "
                f"{missing[:3]}, unexpected {unexpected[:3]})",
                hint=HF_DIR_HINT,
            )
    meta = _meta_of(config, dense_config_of(model.config.to_dict()))
    return LoadedModel(model=model.to(device).eval(), meta=meta, tokenizer=_hf_tokenizer(path))


def is_moe_export(path: Path) -> bool:
    """A directory `moectl export` wrote for an MoE model: GPT-2's custom code, or a
    Llama-family one as custom code or as a native transformers MoE class."""
    if not is_hf_dir(path):
        return False
    config = read_hf_config(path)
    return config.get("model_type") == MOE_MODEL_TYPE or moe_config_of(config) is not None


def _llama_base(config: dict[str, Any]) -> dict[str, Any] | None:
    """The dense base config a Llama-family MoE export saved (moectl.interop.export), else
    None."""
    return (config.get("moectl") or {}).get("base_config")


def _is_native_moe(config: dict[str, Any]) -> bool:
    return _llama_base(config) is not None and config.get("model_type") in NATIVE_MODEL_TYPES


def _native_weights(path: Path) -> dict[str, Tensor]:
    """A native transformers MoE export's weights in moectl's layout: transformers reads its
    checkpoint layout (one tensor per expert and projection) and moectl's is restored from it."""
    from transformers import AutoModelForCausalLM

    try:
        native = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelError(f"cannot load the model in {path}: {exc}", hint=HF_DIR_HINT) from None
    return moectl_state_dict(native.state_dict())


def read_hf_meta(path: Path) -> ModelMeta:
    """A transformers directory's ModelMeta from its config.json alone (no weights read)."""
    config = read_hf_config(Path(path))
    return _meta_of(config, dense_config_of(config))


def _meta_of(config: dict[str, Any], dense_config: dict[str, Any]) -> ModelMeta:
    moe = moe_config_of(config)
    provenance = config.get("moectl") or {}
    return ModelMeta(
        hf_config=dense_config,
        moe=moe,
        moe_layers=moe.layers if moe else [],
        tokenizer=provenance.get("tokenizer") or {},
        step=provenance.get("step", 0),
        metrics=provenance.get("metrics") or {},
    )


def _hf_tokenizer(path: Path) -> Any | None:
    """The tokenizer saved at the top level of `path`, if any.

    With tokenizer.json it is loaded as a fast tokenizer directly: AutoTokenizer would read
    config.json and, for an exported MoE, ask to run its custom code.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return None
    loader = PreTrainedTokenizerFast if (path / "tokenizer.json").is_file() else AutoTokenizer
    try:
        return loader.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer in {path}: {exc}", hint=HF_DIR_HINT) from None
