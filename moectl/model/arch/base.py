"""The interface every architecture family implements (moectl.model.arch).

A family knows one kind of transformers decoder: where its blocks and their MLPs are, which MLP
kind they hold and so which stacked experts replace them, its sizes, how to build a scratch
model of a given size and how to load a pretrained one. (What `moectl export` writes for it is
its interop module's job: moectl.interop.exporters.) Everything else in moectl asks a
family instead of naming a module path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

    from moectl.config import ModelConfig
    from moectl.model.experts import DenseMLP

FamilyType = TypeVar("FamilyType", bound="Family")
# Every selectable family by its name; `register` fills it (moectl.model.arch.FAMILIES).
REGISTERED: dict[str, Family] = {}

# Attention kernel for every model moectl builds: torch's scaled_dot_product_attention (flash or
# memory-efficient kernels on GPUs, in training too) rather than transformers' eager matmuls.
ATTENTION = "sdpa"


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' "Loading weights" progress bar off while a checkpoint loads: the library
    never prints (a CLI's --json output stays JSON), and the setting is restored after."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


@dataclass(frozen=True)
class Sizes:
    """What a model is, in the words every family shares."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    positions: int
    vocab: int


def register(family: FamilyType) -> FamilyType:
    """A family module's declaration `NAME = register(SomeFamily())`: the family is selectable as
    model.arch=<family.name>. Explicit, so a subclass of another family (a Qwen3 family built on
    Llama's blocks) registers just as a direct subclass of Family does."""
    name = type(family).__dict__.get("name")
    if name is None:
        raise TypeError(f"{type(family).__name__} needs its own `name` to be registered")
    if name in REGISTERED and type(REGISTERED[name]) is not type(family):
        raise TypeError(f"two architecture families are named '{name}'")
    REGISTERED[name] = family
    return family


class Family(ABC):
    """One architecture family; a stateless singleton per family, registered by its module."""

    name: str
    label: str  # for people: "GPT-2", "Llama-family model"
    model_types: tuple[str, ...]  # the config.json model_type values it loads
    experts: type[nn.Module]  # the stacked experts that replace its MLP
    blocks_path: str  # the blocks' state-dict prefix: block i's keys start "{blocks_path}.{i}."
    # Format-1 artifacts (one MLP module per expert): stacked tensor name -> per-expert name.
    v1_expert_tensors: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The decoder blocks in layer order; each has the MLP as `.mlp`."""

    @abstractmethod
    def body(self, model: nn.Module) -> nn.Module:
        """The decoder without its LM head (runs the blocks, returns hidden states)."""

    @abstractmethod
    def dense_mlp(self, mlp: nn.Module) -> DenseMLP:
        """A block's dense MLP under the generic roles its experts class copies."""

    @abstractmethod
    def sizes(self, config: PretrainedConfig) -> Sizes: ...

    @abstractmethod
    def scratch_config(
        self, model_cfg: ModelConfig, vocab_size: int, positions: int, eos_id: int | None
    ) -> PretrainedConfig:
        """The config of a scratch model sized by `model_cfg`."""

    @abstractmethod
    def dropout_overrides(self, dropout: float) -> dict[str, float]:
        """The config fields that set the run's dropout."""

    @abstractmethod
    def build(self, config: PretrainedConfig) -> PreTrainedModel:
        """A freshly initialized model of `config` (draws from the global torch RNG)."""

    @abstractmethod
    def config_from_dict(self, data: dict[str, Any]) -> PretrainedConfig: ...

    @abstractmethod
    def from_pretrained(self, source: str, config: PretrainedConfig) -> PreTrainedModel: ...

    @abstractmethod
    def residual_divisor(self, config: PretrainedConfig) -> float:
        """What a scratch expert's output projection std is divided by (the family's own init
        of residual writes)."""

    def stack_v1_experts(
        self, tensors: dict[str, Tensor], layers: list[int], n_experts: int
    ) -> str | None:
        """Format 1 -> 2 in place: each MoE layer's per-expert tensors stacked into one per
        projection; returns the first missing per-expert key (None when all were there)."""
        for layer in layers:
            prefix = f"{self.blocks_path}.{layer}.mlp.experts"
            for name, old in self.v1_expert_tensors.items():
                keys = [f"{prefix}.{e}.{old}" for e in range(n_experts)]
                absent = [key for key in keys if key not in tensors]
                if absent:
                    return absent[0]
                tensors[f"{prefix}.{name}"] = torch.stack([tensors.pop(key) for key in keys])
        return None

    def prepare(self, model: PreTrainedModel) -> PreTrainedModel:
        """Family-specific speedups that leave the computation and the config unchanged."""
        return model

    def check_mlp(self, model: nn.Module) -> None:  # noqa: B027 - optional hook
        """A ModelError when the model's MLPs are a variant the experts cannot copy."""
