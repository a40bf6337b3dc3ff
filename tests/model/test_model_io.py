"""Model artifacts: save/load round trips, tied weights, tokenizer, atomic writes, corruption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.models import small_tokenizer, tiny
from safetensors.torch import load_file, save_file
from stored import assert_tensor_matches_stored, fixture

import moectl
from moectl.config import MoEConfig
from moectl.errors import ModelError
from moectl.interop.loading import load_model
from moectl.model.artifact import ModelMeta
from moectl.model.io import save_model
from moectl.model.routing import moe_layers

IDS = torch.arange(24).remainder(50).reshape(2, 12)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def test_dense_round_trip_identical_logits_and_tie(tmp_path):
    model = tiny()
    meta = ModelMeta(step=7, metrics={"eval_loss": 3.5}, tokenizer={"name": "t", "hash": "ab"})
    save_model(model, tmp_path / "m", meta)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    loaded = load_model(tmp_path / "m")
    assert not loaded.model.training and loaded.tokenizer is None
    assert torch.equal(logits(loaded.model), logits(model))
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    assert loaded.meta.step == 7 and loaded.meta.metrics == {"eval_loss": 3.5}
    assert loaded.meta.tied == {"lm_head.weight": "transformer.wte.weight"}
    assert loaded.meta.hf_config["n_embd"] == 32 and loaded.meta.moe is None
    assert loaded.meta.tokenizer == {"name": "t", "hash": "ab"}


def test_moe_round_trip_identical_logits_and_layout(tmp_path):
    cfg = MoEConfig(enabled=True, last_n=1, n_experts=4, top_k=2, perturbation_std=0.05)
    model = tiny(cfg)
    save_model(model, tmp_path / "moe", ModelMeta(moe=cfg))
    loaded = moectl.load_model(tmp_path / "moe")
    assert loaded.meta.moe_layers == [1]
    layers = moe_layers(loaded.model)
    assert list(layers) == [1] and (layers[1].n_experts, layers[1].top_k) == (4, 2)
    assert torch.equal(logits(loaded.model), logits(model))
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    assert loaded.meta.moe.last_n == 1  # the config is kept as given; layers are resolved
    assert loaded.meta.format_version == 2
    keys = load_file(str(tmp_path / "moe" / "model.safetensors"))
    experts = {k: tuple(v.shape) for k, v in keys.items() if ".mlp.experts." in k}
    assert experts == {
        "transformer.h.1.mlp.experts.fc_weight": (4, 32, 128),
        "transformer.h.1.mlp.experts.fc_bias": (4, 128),
        "transformer.h.1.mlp.experts.proj_weight": (4, 128, 32),
        "transformer.h.1.mlp.experts.proj_bias": (4, 32),
    }


def test_format_1_artifact_loads_with_the_logits_it_was_saved_with(tmp_path):
    """tests/fixtures/README.md: written by moectl before experts were stacked."""
    reference = load_file(str(fixture("model_v1_moe_logits.safetensors")))
    loaded = load_model(fixture("model_v1_moe"))
    assert loaded.meta.format_version == 1 and loaded.meta.moe_layers == [1]
    with torch.no_grad():
        got = loaded.model(reference["input_ids"]).logits
    assert_tensor_matches_stored("model_v1_moe_logits.safetensors", got, reference["logits"])
    resaved = save_model(loaded.model, tmp_path / "v2", loaded.meta)
    again = load_model(resaved)
    assert again.meta.format_version == 2
    with torch.no_grad():
        assert torch.equal(again.model(reference["input_ids"]).logits, got)


def test_format_1_artifact_missing_an_expert_tensor_names_it(tmp_path):
    path = Path(shutil.copytree(fixture("model_v1_moe"), tmp_path / "v1"))
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["transformer.h.1.mlp.experts.2.c_proj.bias"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(ModelError, match=r"lacks expert tensor transformer\.h\.1\.mlp\.experts\.2"):
        load_model(path)


def test_moe_config_is_derived_from_the_model_when_not_given(tmp_path):
    model = tiny(MoEConfig(enabled=True, layers=[0], n_experts=3, top_k=1, noise_std=0.2))
    save_model(model, tmp_path / "moe", ModelMeta())
    meta = load_model(tmp_path / "moe").meta
    assert (meta.moe.n_experts, meta.moe.top_k, meta.moe.noise_std) == (3, 1, 0.2)
    assert meta.moe_layers == [0]


def test_a_derived_moe_config_keeps_scheme_scores_shared_and_fine_grained_experts(tmp_path):
    """Saved without its MoEConfig, a model whose routing options are all non-default loads
    back as the same model (before, the derived config dropped them and the load failed)."""
    moe = MoEConfig(
        enabled=True, layers=[1], n_experts=2, top_k=1, perturbation_std=0.5, balance="bias",
        bias_update_rate=0.01, score="sigmoid", shared_experts=1, granularity=2,
    )  # fmt: skip
    model = tiny(moe)
    for layer in moe_layers(model).values():
        layer.balance.bias.copy_(torch.linspace(0.3, -0.3, moe.routed_experts))
    save_model(model, tmp_path / "moe", ModelMeta())
    loaded = load_model(tmp_path / "moe")
    fields = ["n_experts", "top_k", "granularity", "score", "balance", "bias_update_rate",
              "shared_experts"]  # fmt: skip
    assert {f: getattr(loaded.meta.moe, f) for f in fields} == {f: getattr(moe, f) for f in fields}
    assert torch.equal(logits(loaded.model), logits(model))


def test_tokenizer_saved_and_returned(tmp_path):
    tok = small_tokenizer()
    save_model(tiny(), tmp_path / "m", ModelMeta(), tokenizer=tok)
    loaded = load_model(tmp_path / "m")
    text = "def f(x): return two"
    assert loaded.tokenizer.encode(text) == tok.encode(text)
    assert loaded.meta.tokenizer["vocab_size"] == len(tok)
    assert loaded.meta.tokenizer["eos_id"] == tok.eos_token_id


def test_overwrite_is_atomic_and_leaves_no_temp_dirs(tmp_path):
    save_model(tiny(), tmp_path / "m", ModelMeta(step=1))
    save_model(tiny(), tmp_path / "m", ModelMeta(step=2))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    assert load_model(tmp_path / "m").meta.step == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="refusing to overwrite"):
        save_model(tiny(), tmp_path / "other", ModelMeta())
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_missing_and_corrupt_artifacts_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="no model artifact"):
        load_model(tmp_path / "absent")
    path = save_model(tiny(), tmp_path / "m", ModelMeta())
    weights = (path / "model.safetensors").read_bytes()

    (path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelError, match="cannot load the weights"):
        load_model(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"no model\.safetensors"):
        load_model(path)

    (path / "model.safetensors").write_bytes(weights)
    meta = json.loads((path / "model.json").read_text())
    (path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="corrupt"):
        load_model(path)
    (path / "model.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ModelError, match="format 99"):
        load_model(path)
    wrong_width = {**meta, "gpt2_config": {**meta["gpt2_config"], "n_embd": 64}}
    (path / "model.json").write_text(json.dumps(wrong_width))
    with pytest.raises(ModelError, match="cannot load the weights"):
        load_model(path)
    moe = {**meta, "moe": MoEConfig(enabled=True, last_n=1).model_dump(), "moe_layers": [1]}
    (path / "model.json").write_text(json.dumps(moe))
    with pytest.raises(ModelError, match="does not match"):
        load_model(path)
    untied = {**meta, "gpt2_config": {**meta["gpt2_config"], "tie_word_embeddings": False}}
    (path / "model.json").write_text(json.dumps(untied))
    with pytest.raises(ModelError, match="share its tensor"):
        load_model(path)
