"""The architecture adapter: one module per decoder family behind one interface (`Family`).

`gpt2` (GELU MLPs) and `llama` (SwiGLU MLPs: Llama, Mistral, Qwen2, Qwen3, SmolLM2). A model's
family is read from its config's `model_type`. A third family is a module here implementing
`Family`, an entry in FAMILIES and a value of ModelConfig.arch (docs/architecture.md).
"""

from __future__ import annotations

from torch import nn

from moectl.errors import ModelError
from moectl.model.arch.base import ATTENTION, Family, Sizes
from moectl.model.arch.gpt2 import GPT2
from moectl.model.arch.llama import LLAMA

FAMILIES: dict[str, Family] = {family.name: family for family in (GPT2, LLAMA)}

__all__ = [
    "ATTENTION",
    "FAMILIES",
    "Family",
    "Sizes",
    "blocks",
    "config_sizes",
    "family",
    "family_of",
    "model_sizes",
]


def supported_model_types() -> str:
    """The config.json model_type values moectl loads, for messages."""
    return ", ".join(t for f in FAMILIES.values() for t in f.model_types)


def family(name_or_model_type: str) -> Family:
    """The family of an arch name (`gpt2`, `llama`) or of a config.json model_type."""
    for candidate in FAMILIES.values():
        if name_or_model_type == candidate.name or name_or_model_type in candidate.model_types:
            return candidate
    raise ModelError(
        f"'{name_or_model_type}' is not an architecture moectl supports (model_type "
        f"{supported_model_types()})",
        hint="choose a checkpoint of one of those architectures",
    )


def family_of(model: nn.Module) -> Family:
    """The family of a built model, from its config's model_type."""
    return family(model.config.model_type)


def model_sizes(model: nn.Module) -> Sizes:
    """The sizes of a built model."""
    return family_of(model).sizes(model.config)


def config_sizes(data: dict) -> Sizes:
    """The sizes a saved config dict (model.json's, config.json's) describes."""
    arch = family(str(data.get("model_type", "gpt2")))
    return arch.sizes(arch.config_from_dict(data))


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's decoder blocks in layer order (each with its MLP as `.mlp`): what FSDP wraps
    one by one and the MoE surgery edits."""
    return list(family_of(model).blocks(model))
