"""The standard transformers form of a moectl model, both ways.

A dense model is GPT-2 itself. An MoE model is the custom-code model in `hf_code/` (model_type
`moectl_gpt2_moe`), whose experts are stacked along a leading expert dimension. The whole weight
mapping between moectl's module tree and that layout is `to_hf_state_dict` /
`from_hf_state_dict`, so a change of moectl's in-memory expert layout touches only those two.
Reading an exported directory back (`load_hf_dir`) needs neither trust_remote_code nor the
modeling file: the config is read as JSON and the weights are mapped into moectl's own model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from moectl.config import MoEConfig
from moectl.errors import ModelError
from moectl.model.io import LoadedModel, ModelMeta

HF_CODE = Path(__file__).parent / "hf_code"
MOE_MODEL_TYPE = "moectl_gpt2_moe"
CODE_FILES = ("configuration_moectl_gpt2_moe.py", "modeling_moectl_gpt2_moe.py")
AUTO_MAP = {
    "AutoConfig": "configuration_moectl_gpt2_moe.MoectlGPT2MoEConfig",
    "AutoModelForCausalLM": "modeling_moectl_gpt2_moe.MoectlGPT2MoEForCausalLM",
}
MOE_FIELDS = (
    "moe_layers",
    "num_local_experts",
    "num_experts_per_tok",
    "output_router_logits",
    "router_aux_loss_coef",
    "auto_map",
    "moectl",
)
# moectl expert parameter (GPT2MLP copy) -> stacked exported parameter (E, ...) in Conv1D order.
_STACKED = {
    "c_fc.weight": "fc_weight",
    "c_fc.bias": "fc_bias",
    "c_proj.weight": "proj_weight",
    "c_proj.bias": "proj_bias",
}
_EXPERT_KEY = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(c_fc|c_proj)\.(weight|bias)$")
_STACKED_KEY = re.compile(r"^(.*\.mlp\.experts)\.(fc_weight|fc_bias|proj_weight|proj_bias)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
HF_DIR_HINT = "give a directory written by `moectl export` or by save_pretrained (config.json)"


def to_hf_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """moectl model -> exported weights: each MoE layer's experts stacked on a new dim 0.

    The gate keeps its name (`...mlp.gate.weight`, (E, D)); all other weights are GPT-2's.
    """
    state: dict[str, Tensor] = {}
    experts: dict[tuple[str, str], dict[int, Tensor]] = {}
    for key, value in model.state_dict().items():
        match = _EXPERT_KEY.match(key)
        if match is None:
            state[key] = value
            continue
        prefix, expert, param = match[1], int(match[2]), f"{match[3]}.{match[4]}"
        experts.setdefault((prefix, _STACKED[param]), {})[expert] = value
    for (prefix, name), by_expert in experts.items():
        state[f"{prefix}.{name}"] = torch.stack([by_expert[e] for e in sorted(by_expert)])
    return state


def from_hf_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Exported weights -> moectl model keys: the inverse of `to_hf_state_dict`."""
    names = {stacked: param for param, stacked in _STACKED.items()}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        match = _STACKED_KEY.match(key)
        if match is None:
            out[key] = value
            continue
        for expert, tensor in enumerate(value.unbind(0)):
            out[f"{match[1]}.{expert}.{names[match[2]]}"] = tensor.contiguous()
    return out


def is_hf_dir(path: Path) -> bool:
    """A transformers model directory (config.json + weights) rather than a moectl artifact."""
    path = Path(path)
    return (path / "config.json").is_file() and not (path / "model.json").is_file()


def read_hf_config(path: Path) -> dict[str, Any]:
    """config.json of a GPT-2 or exported moectl MoE directory, or a ModelError."""
    file = Path(path) / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {file}: {exc}", hint=HF_DIR_HINT) from None
    if config.get("model_type") not in ("gpt2", MOE_MODEL_TYPE):
        raise ModelError(
            f"{path} is a '{config.get('model_type')}' model; moectl works with GPT-2 models",
            hint="choose a GPT-2 checkpoint (model_type gpt2) or a directory from moectl export",
        )
    return config


def moe_config_of(config: dict[str, Any]) -> MoEConfig | None:
    """The MoEConfig an exported config describes (None for a dense GPT-2)."""
    if config.get("model_type") != MOE_MODEL_TYPE:
        return None
    saved = (config.get("moectl") or {}).get("moe") or {}
    layout = {
        "enabled": True,
        "layers": list(config["moe_layers"]),
        "last_n": None,
        "n_experts": config["num_local_experts"],
        "top_k": config["num_experts_per_tok"],
    }
    return MoEConfig.model_validate({**saved, **layout})


def gpt2_config_of(config: dict[str, Any]) -> dict[str, Any]:
    """The plain GPT-2 part of a config.json (what moectl's ModelMeta.gpt2_config holds)."""
    gpt2 = {k: v for k, v in config.items() if k not in MOE_FIELDS}
    return {**gpt2, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}


def load_hf_weights(path: Path) -> dict[str, Tensor]:
    """model.safetensors of a transformers directory mapped to moectl's keys."""
    file = Path(path) / "model.safetensors"
    if not file.is_file():
        raise ModelError(f"no model.safetensors in {path}", hint=HF_DIR_HINT)
    try:
        return from_hf_state_dict(load_file(str(file)))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"cannot load the weights in {file}: {exc}", hint=HF_DIR_HINT) from None


def load_hf_dir(path: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A transformers GPT-2 or exported moectl MoE directory as moectl's own model, eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from moectl.model.factory import apply_moe

    path = Path(path)
    config = read_hf_config(path)
    moe = moe_config_of(config)
    if moe is None:
        try:
            model = GPT2LMHeadModel.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the GPT-2 in {path}: {exc}", hint=HF_DIR_HINT) from None
    else:
        model = GPT2LMHeadModel(GPT2Config.from_dict(gpt2_config_of(config)))
        apply_moe(model, moe.model_copy(update={"perturbation_std": 0.0, "init": "upcycle"}))
        missing, unexpected = model.load_state_dict(load_hf_weights(path), strict=False)
        tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
        missing = [key for key in missing if key not in tied]
        if missing or unexpected:
            raise ModelError(
                f"{path / 'model.safetensors'} does not match its config.json (missing "
                f"{missing[:3]}, unexpected {unexpected[:3]})",
                hint=HF_DIR_HINT,
            )
    meta = _meta_of(config, gpt2_config_of(model.config.to_dict()))
    return LoadedModel(model=model.to(device).eval(), meta=meta, tokenizer=_hf_tokenizer(path))


def read_hf_meta(path: Path) -> ModelMeta:
    """A transformers directory's ModelMeta from its config.json alone (no weights read)."""
    config = read_hf_config(Path(path))
    return _meta_of(config, gpt2_config_of(config))


def _meta_of(config: dict[str, Any], gpt2_config: dict[str, Any]) -> ModelMeta:
    moe = moe_config_of(config)
    provenance = config.get("moectl") or {}
    return ModelMeta(
        gpt2_config=gpt2_config,
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
