"""One door to any model directory: a moectl artifact or a transformers directory.

A moectl artifact (model.json + model.safetensors) is read by moectl.model.io; a directory that
`moectl export` or `save_pretrained` wrote (config.json, no model.json) by
moectl.interop.hf_format. Everything that takes "a model directory" from a user (evaluation,
generation, --init-from, `moectl.load_model`) comes through here, so the model layer never reads
a transformers directory itself.
"""

from __future__ import annotations

from pathlib import Path

import torch

from moectl.device import resolve_device
from moectl.interop.hf_format import is_hf_dir, load_hf_dir, read_hf_meta
from moectl.model.artifact import LoadedModel, ModelMeta
from moectl.model.io import load_artifact, read_artifact_meta


def read_meta(path: Path) -> ModelMeta:
    """The ModelMeta of the model at `path`: model.json of an artifact, or what a transformers
    directory's config.json says (no weights read); a ModelError saying what is wrong."""
    path = Path(path)
    return read_hf_meta(path) if is_hf_dir(path) else read_artifact_meta(path)


def load_model(path: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """The dense or MoE model at `path` (a moectl artifact, a `moectl export` directory or any
    save_pretrained directory of a supported family), in eval mode on `device`."""
    path = Path(path)
    if is_hf_dir(path):
        return load_hf_dir(path, resolve_device(device) if isinstance(device, str) else device)
    return load_artifact(path, device)
