"""Model artifacts: model.safetensors + model.json (+ tokenizer/), loaded back in one call.

(A transformers directory is read by moectl.interop.hf_format; moectl.interop.loading takes
either kind.)

model.json records everything needed to rebuild the module tree (the transformers config, whose
model_type names the family, and the MoE layout) so a dense or MoE model comes back ready, in
eval mode, without the run config. safetensors refuses tensors that share memory, so tied
weights (an lm_head tied to the token embedding) are stored once and the tie is checked after
loading. Writes go to a temporary sibling directory that is renamed into place.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from moectl.config import MoEConfig
from moectl.device import resolve_device
from moectl.errors import ModelError
from moectl.fs import atomic_directory
from moectl.model.arch import Family, family, family_of
from moectl.model.artifact import FORMAT_VERSION, LoadedModel, ModelMeta
from moectl.model.routing import moe_layers
from moectl.model.surgery import apply_moe

if TYPE_CHECKING:
    from moectl.model.moe import MoEMLP

WEIGHTS = "model.safetensors"
META = "model.json"
TOKENIZER_DIR = "tokenizer"
ARTIFACT_HINT = (
    "give a directory written by moectl (model.json + model.safetensors), e.g. runs/X/best"
)


def save_model(
    model: nn.Module,
    path: Path,
    meta: ModelMeta,
    tokenizer: Any = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the artifact to `path` atomically; replaces an existing artifact there.

    `state` is the weights to write when `model.state_dict()` is not them (a sharded model's
    gathered full state dict, moectl.training.sharding)."""
    path = Path(path)
    if path.exists() and not (path / META).is_file() and any(path.iterdir()):
        raise ModelError(
            f"refusing to overwrite {path}: it exists and is not a model artifact",
            hint="choose an empty or new directory",
        )
    tensors, tied = _unique_tensors(model.state_dict() if state is None else state)
    meta = _complete_meta(model, meta, tied, tokenizer)
    with atomic_directory(path) as tmp:
        _write_artifact(tmp, tensors, meta, tokenizer)
    return path


def _write_artifact(
    folder: Path, tensors: dict[str, torch.Tensor], meta: ModelMeta, tokenizer: Any
) -> None:
    """The artifact's files in `folder` (a staging folder that is renamed into place)."""
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / META).write_text(meta.model_dump_json(indent=2, by_alias=True), encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))


def _unique_tensors(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict with each shared tensor kept once, and {dropped key: kept key}."""
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for key, value in state.items():
        identity = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if identity in seen:
            tied[key] = seen[identity]
            continue
        seen[identity] = key
        tensors[key] = value.detach().to("cpu").contiguous()
    return tensors, tied


def _complete_meta(
    model: nn.Module, meta: ModelMeta, tied: dict[str, str], tokenizer: Any
) -> ModelMeta:
    layers = moe_layers(model)
    moe = meta.moe
    if layers and moe is None:
        moe = _moe_config_of(next(iter(layers.values())), list(layers))
    info = dict(meta.tokenizer)
    if tokenizer is not None and not info:
        info = {
            "name": str(getattr(tokenizer, "name_or_path", "")),
            "vocab_size": len(tokenizer),
            "eos_id": tokenizer.eos_token_id,
        }
    return meta.model_copy(
        update={
            "format_version": FORMAT_VERSION,
            "hf_config": model.config.to_dict(),
            "moe": moe if layers else None,
            "moe_layers": list(layers),
            "tokenizer": info,
            "tied": tied,
        }
    )


def _moe_config_of(layer: MoEMLP, layers: list[int]) -> MoEConfig:
    """The MoEConfig that rebuilds `layer`'s routing in `layers`, for a model saved without one:
    experts and top-k per upcycled copy, scores, scheme, shared experts, noise."""
    g = layer.granularity
    return MoEConfig(
        enabled=True,
        layers=layers,
        n_experts=layer.n_experts // g,
        top_k=layer.top_k // g,
        granularity=g,
        score=layer.gate.score,
        shared_experts=layer.shared.n_experts if layer.shared is not None else 0,
        noise_std=layer.noise_std,
        anneal_fraction=layer.anneal_fraction,
        **layer.balance.config_fields(),
    )


def read_artifact_meta(path: Path) -> ModelMeta:
    """model.json of the artifact at `path`, or a ModelError saying what is wrong."""
    file = Path(path) / META
    if not file.is_file():
        raise ModelError(f"no model artifact at {path} (missing {META})", hint=ARTIFACT_HINT)
    try:
        meta = ModelMeta.model_validate_json(file.read_text(encoding="utf-8"))
    except (ValidationError, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{file} is corrupt: {exc}", hint=ARTIFACT_HINT) from None
    if meta.format_version > FORMAT_VERSION:
        raise ModelError(
            f"{path} uses artifact format {meta.format_version}; this moectl reads up to "
            f"{FORMAT_VERSION}",
            hint="upgrade moectl",
        )
    if meta.moe_layers and meta.moe is None:
        raise ModelError(f"{file} lists MoE layers but no MoE config", hint=ARTIFACT_HINT)
    return meta


def load_artifact(path: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the dense or MoE model saved at `path` (a moectl artifact), in eval mode on
    `device`."""
    path = Path(path)
    target = resolve_device(device) if isinstance(device, str) else device
    meta = read_artifact_meta(path)
    arch = family(meta.hf_config.get("model_type", "gpt2"))
    try:
        model = arch.build(arch.config_from_dict(meta.hf_config))
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"{path / META} has an unusable {arch.name} config: {exc}") from None
    if meta.moe is not None:
        layout = {"enabled": True, "layers": meta.moe_layers, "last_n": None}
        apply_moe(
            model,
            meta.moe.model_copy(update={**layout, "perturbation_std": 0.0, "init": "upcycle"}),
        )
    _load_weights(model, path, meta)
    model.to(target)
    _check_ties(model, meta, path)
    return LoadedModel(model=model.eval(), meta=meta, tokenizer=_load_tokenizer(path))


def _load_weights(model: nn.Module, path: Path, meta: ModelMeta) -> None:
    file = path / WEIGHTS
    if not file.is_file():
        raise ModelError(f"no {WEIGHTS} in {path}", hint=ARTIFACT_HINT)
    try:
        tensors = load_file(str(file))
        if meta.format_version < 2:
            _stack_v1_experts(tensors, meta, file, family_of(model))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ModelError(f"cannot load the weights in {file}: {exc}", hint=ARTIFACT_HINT) from None
    missing = [key for key in missing if key not in meta.tied]
    if missing or unexpected:
        raise ModelError(
            f"{file} does not match model.json (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})",
            hint=ARTIFACT_HINT,
        )


def _stack_v1_experts(
    tensors: dict[str, torch.Tensor], meta: ModelMeta, file: Path, arch: Family
) -> None:
    """Format 1 -> 2 in place: each layer's per-expert MLP tensors become stacked ones."""
    n_experts = meta.moe.n_experts if meta.moe is not None else 0
    absent = arch.stack_v1_experts(tensors, meta.moe_layers, n_experts)
    if absent:
        raise ModelError(f"{file} (format 1) lacks expert tensor {absent}", hint=ARTIFACT_HINT)


def _check_ties(model: nn.Module, meta: ModelMeta, path: Path) -> None:
    """Every weight saved through its partner must be that very tensor after loading."""
    params = dict(model.named_parameters(remove_duplicate=False))
    for key, partner in meta.tied.items():
        if key not in params or partner not in params or params[key] is not params[partner]:
            raise ModelError(
                f"{path}: {key} should share its tensor with {partner} but does not",
                hint="the artifact's config must keep tie_word_embeddings as when saved",
            )


def _load_tokenizer(path: Path) -> Any | None:
    folder = path / TOKENIZER_DIR
    if not folder.is_dir():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        message = f"cannot load the tokenizer in {folder}: {exc}"
        raise ModelError(message, hint=ARTIFACT_HINT) from None
