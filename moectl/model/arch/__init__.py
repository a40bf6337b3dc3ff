"""The architecture adapter: one module per decoder family behind one interface (`Family`).

`gpt2` (GELU MLPs) and `llama` (SwiGLU MLPs: Llama, Mistral, Qwen2, Qwen3, SmolLM2). A model's
family is read from its config's `model_type`. A third family is a module here implementing
`Family` and declaring itself with `register` (found by `_families`, no list to edit) and a value
of ModelConfig.arch (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from moectl.errors import ModelError
from moectl.model.arch.base import ATTENTION, REGISTERED, Family, Sizes


def _families() -> dict[str, Family]:
    """Every module of this package imported, so each registers its family."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(REGISTERED)


def _owners(families: dict[str, Family]) -> dict[str, Family]:
    """Each config.json model_type and the family that loads it: the family named after it
    (a `qwen3` family takes Qwen3 checkpoints from `llama`, which lists them too), else the one
    family that lists it. Two families listing a model_type that neither is named after is a
    TypeError: which one loads such a checkpoint would depend on the order of the modules."""
    owners: dict[str, Family] = {}
    for candidate in families.values():
        for model_type in candidate.model_types:
            if model_type in families:
                owners[model_type] = families[model_type]
            elif owners.setdefault(model_type, candidate) is not candidate:
                raise TypeError(
                    f"the families '{owners[model_type].name}' and '{candidate.name}' both load "
                    f"model_type '{model_type}'"
                )
    return owners


FAMILIES = _families()
MODEL_TYPES = _owners(FAMILIES)

__all__ = [
    "ATTENTION",
    "FAMILIES",
    "MODEL_TYPES",
    "Family",
    "Sizes",
    "blocks",
    "config_sizes",
    "family",
    "family_of",
    "is_of_family",
    "model_sizes",
]


def supported_model_types() -> str:
    """The config.json model_type values moectl loads, for messages."""
    return ", ".join(MODEL_TYPES)


def family(name_or_model_type: str) -> Family:
    """The family of an arch name (`gpt2`, `llama`) or of a config.json model_type."""
    found = FAMILIES.get(name_or_model_type) or MODEL_TYPES.get(name_or_model_type)
    if found is not None:
        return found
    raise ModelError(
        f"moectl supports model_type {supported_model_types()}, not '{name_or_model_type}'",
        hint="choose a checkpoint of one of those architectures",
    )


def is_of_family(found: Family, arch: str) -> bool:
    """Whether a checkpoint of family `found` is of the family model.arch=`arch` names: that
    family or one built on it (a `qwen3` family subclassing `llama`'s takes Qwen3 checkpoints
    from it, and a config naming llama for them stays valid)."""
    return isinstance(found, type(family(arch)))


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
