"""The architecture families register themselves: every family a module of model/arch/ defines
is selectable by its name, and every config.json model_type is loaded by exactly one family."""

from __future__ import annotations

from typing import get_args

import pytest
from helpers.registry import defined_subclasses

import moectl.model.arch as package
from moectl.config import ModelConfig
from moectl.model.arch import FAMILIES, MODEL_TYPES, Family, _owners, family, is_of_family
from moectl.model.arch.llama import LlamaFamily


class Qwen3Family(LlamaFamily):
    """A family built on another's blocks, taking one of its model_types."""

    name = "qwen3"
    model_types = ("qwen3",)


def test_config_names_exactly_the_families_in_the_package():
    assert set(get_args(ModelConfig.model_fields["arch"].annotation)) == set(FAMILIES)


def test_every_family_an_arch_module_defines_is_selectable():
    """A Family class whose module does not `register` an instance would build nowhere."""
    defined = defined_subclasses(package, Family)
    assert len(defined) == len(FAMILIES) >= 2
    for cls in defined:
        assert type(FAMILIES.get(cls.__dict__.get("name"))) is cls, cls.__name__


def test_a_subclass_of_a_family_registers_and_takes_its_model_type(monkeypatch):
    from moectl.model.arch import base

    llama = FAMILIES["llama"]
    monkeypatch.setattr(base, "REGISTERED", {"llama": llama})
    qwen3 = base.register(Qwen3Family())
    assert {"llama": llama, "qwen3": qwen3} == base.REGISTERED
    owners = _owners(base.REGISTERED)
    assert owners["qwen3"] is qwen3 and owners["qwen2"] is llama
    with pytest.raises(TypeError, match="its own `name`"):
        base.register(type("Unnamed", (Qwen3Family,), {})())
    with pytest.raises(TypeError, match="two architecture families are named 'qwen3'"):
        base.register(type("Other", (Qwen3Family,), {"name": "qwen3"})())


def test_a_model_type_two_families_list_and_neither_is_named_after_is_refused():
    mistral = type("Mistral", (LlamaFamily,), {"name": "mistral7", "model_types": ("mistral",)})
    with pytest.raises(TypeError, match="'llama' and 'mistral7' both load model_type 'mistral'"):
        _owners({**FAMILIES, "mistral7": mistral()})


def test_every_model_type_a_family_lists_loads_with_its_owner():
    """The family named after a model_type loads it, else the one family that lists it."""
    assert {"gpt2", "llama", "qwen3"} <= set(MODEL_TYPES)
    for listing in FAMILIES.values():
        for model_type in listing.model_types:
            owner = FAMILIES.get(model_type, listing)
            assert family(model_type) is MODEL_TYPES[model_type] is owner, model_type
    assert all(family(name) is f for name, f in FAMILIES.items())


def test_a_checkpoint_of_a_family_built_on_the_named_one_is_of_it():
    """model.arch=llama stays valid for the checkpoints a family on Llama's blocks takes."""
    qwen3 = Qwen3Family()
    assert is_of_family(qwen3, "llama") and is_of_family(FAMILIES["llama"], "llama")
    assert not is_of_family(qwen3, "gpt2") and not is_of_family(FAMILIES["gpt2"], "llama")
    assert not is_of_family(FAMILIES["llama"], "gpt2")
