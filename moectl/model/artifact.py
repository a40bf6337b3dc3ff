"""What a model artifact is in memory: its metadata (model.json) and the loaded model.

The types alone, so that what reads or writes an artifact (model.io, interop.hf_format, the
trainer, analysis) shares them without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from moectl.config import MoEConfig
from moectl.version import __version__

# 2: experts stacked per projection (mlp.experts.fc_weight, ...); 1: one GPT-2 MLP per expert,
# stacked on load (moectl.model.arch.gpt2).
FORMAT_VERSION = 2


class ModelMeta(BaseModel):
    """model.json: how to rebuild the model and where it came from.

    `tied` maps each weight stored only through its tie partner (lm_head -> the embedding) and
    is filled in by save_model, as are hf_config and moe_layers, from the model itself.
    `hf_config` is the model's transformers config (any family); model.json keeps the key
    `gpt2_config` it had when GPT-2 was the only family, so GPT-2 artifacts stay byte-identical.
    """

    model_config = ConfigDict(populate_by_name=True)

    format_version: int = FORMAT_VERSION
    moectl_version: str = __version__
    hf_config: dict[str, Any] = Field(default_factory=dict, alias="gpt2_config")
    moe: MoEConfig | None = None
    moe_layers: list[int] = Field(default_factory=list)
    tokenizer: dict[str, Any] = Field(default_factory=dict)
    step: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    tied: dict[str, str] = Field(default_factory=dict)


@dataclass
class LoadedModel:
    """A model artifact in memory: the eval-mode GPT-2, its metadata, its tokenizer if saved."""

    model: nn.Module
    meta: ModelMeta
    tokenizer: Any | None = None
