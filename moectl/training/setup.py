"""The model a run trains: scratch or pretrained, from an artifact (--init-from), or a checkpoint.

Each path ends in the same place (a model whose MoE layers match the run's MoEConfig) or in a
clear error before any step runs: a layout that does not fit, a checkpoint of another
architecture (whether an artifact fits the corpus is checked before, by `moectl.model.compat`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from moectl.config import RunConfig
from moectl.data.store import Corpus
from moectl.errors import ModelError, TrainingError
from moectl.interop.loading import load_model, read_meta
from moectl.model.arch import config_sizes, family, family_of, is_of_family, model_sizes
from moectl.model.artifact import LoadedModel, ModelMeta
from moectl.model.factory import moe_base_error
from moectl.model.initial import InitRecord, build_initial
from moectl.model.routing import moe_layers
from moectl.version import __version__


def corpus_tokenizer_info(corpus: Corpus) -> dict[str, Any]:
    return corpus.manifest.tokenizer.model_dump()


def fresh_model(
    config: RunConfig, corpus: Corpus, init_from: Path | None
) -> tuple[nn.Module, InitRecord]:
    """The model a new run starts from, with the run's MoE surgery applied, and the record that
    rebuilds exactly this model later (the init-router control, moectl.model.initial)."""
    info = corpus.manifest.tokenizer
    record = InitRecord(
        init_from=str(init_from.resolve()) if init_from is not None else None,
        model=config.model,
        moe=config.moe,
        seed=config.train.seed,
        vocab_size=info.vocab_size,
        n_positions=corpus.block_size,
        eos_id=info.eos_id,
        tokenizer=corpus_tokenizer_info(corpus),
    )
    if init_from is None:
        if config.model.pretrained is None:
            config.moe.resolve_layers(config.model.n_layer)
        return build_initial(record), record
    return build_initial(record, load_model_dir(init_from)), record


def architecture_fields(hf_config: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig's architecture fields as a saved transformers config gives them."""
    sizes = config_sizes(hf_config)
    fields = {
        "arch": family(str(hf_config.get("model_type", "gpt2"))).name,
        "n_layer": sizes.layers,
        "n_embd": sizes.hidden,
        "n_head": sizes.heads,
        "n_positions": sizes.positions,
    }
    if fields["arch"] != "gpt2":  # GPT-2 has neither: its records stay as they were
        fields.update(n_kv_head=sizes.kv_heads, intermediate_size=sizes.intermediate)
    return fields


def config_of_pretrained(config: RunConfig) -> RunConfig:
    """`config` with model.arch the family of a local model.pretrained (the family that owns its
    config.json's, or model.json's, model_type), so a run on a local Qwen3 or Llama directory
    needs no model.arch (one naming the family the checkpoint's is built on becomes the
    checkpoint's: llama -> a qwen3 family's). An explicit model.arch that names another family
    is a ModelError, and so is an MoE model (an artifact or a `moectl export` directory:
    model.pretrained is the dense base a run upcycles); a hub name, or a directory whose
    model_type no family owns, is left to `build_model`."""
    spec = config.model.pretrained
    if spec is None or not Path(spec).expanduser().is_dir():
        return config
    try:
        meta = read_meta(Path(spec).expanduser())
        model_type = str(meta.hf_config.get("model_type"))
        found = family(model_type)
    except ModelError:
        return config
    if meta.moe_layers:
        raise moe_base_error(spec)
    if found.name == config.model.arch:
        return config
    if "arch" in config.model.model_fields_set and not is_of_family(found, config.model.arch):
        raise ModelError(
            f"{spec} is a '{model_type}' model ({found.name} family) but model.arch is "
            f"{config.model.arch}",
            hint=f"drop model.arch (it is read from the checkpoint) or set model.arch={found.name}",
        )
    model = config.model.model_copy(update={"arch": found.name})
    return config.model_copy(update={"model": model})


def config_of_artifact(config: RunConfig, meta: ModelMeta) -> RunConfig:
    """The config of a run that starts from an artifact (--init-from), its model section
    giving the artifact's architecture where the config names another: that model is what
    trains, whatever size the preset named, and config.yaml records what trained. (An unset
    n_positions stays unset, so a resume that brings the same preset matches the record.)"""
    have = architecture_fields(meta.hf_config) if meta.hf_config else {}
    found = {
        key: value for key, value in have.items() if getattr(config.model, key) not in (None, value)
    }
    if not found:
        return config
    model = config.model.model_copy(update=found)
    return config.model_copy(update={"model": model})


def load_model_dir(path: Path) -> LoadedModel:
    if not path.is_dir() or not any((path / f).is_file() for f in ("model.json", "config.json")):
        raise TrainingError(
            f"--init-from {path} is not a model directory (no model.json or config.json)",
            hint="pass a run's best/ or checkpoints/step-N directory, or a `moectl export` "
            "directory",
        )
    return load_model(path)


def layout_of_config(config: RunConfig, n_layer: int) -> dict[str, Any]:
    moe = config.moe
    layers = moe.resolve_layers(n_layer)
    return {
        "layers": layers,
        "n_experts": moe.routed_experts if layers else 0,
        "top_k": moe.routed_top_k if layers else 0,
    }


# The MoEConfig fields an MoE module is built with (moectl.model.io rebuilds it from them): an
# artifact continued under other values would train one routing and record another.
ROUTING_FIELDS = ("n_experts", "top_k", "granularity", "score", "shared_experts", "balance")


def check_init_routing(config: RunConfig, artifact: ModelMeta, where: Path) -> None:
    """A ModelError, before anything is written, when the --init-from artifact's MoE routing is
    not the run config's: the continued module keeps the artifact's routing (its gate scores,
    balancing state, shared and fine-grained experts), so a run that recorded the config's would
    save checkpoints that reload to another model or not at all. Each differing field is named
    with both values and the --set that continues the artifact as it is."""
    theirs, ours = artifact.moe, config.moe
    if theirs is None:
        return
    if not ours.enabled:
        raise ModelError(
            f"{where} is an MoE model but the run's config is dense (moe.enabled is false)",
            hint="use an MoE preset (e.g. --preset cpu-moe) or start from a dense model",
        )
    differ: dict[str, tuple[Any, Any]] = {}
    layers = ours.resolve_layers(config_sizes(artifact.hf_config).layers)
    if layers != artifact.moe_layers:
        differ["layers"] = (artifact.moe_layers, layers)
    both_bias = theirs.balance == ours.balance == "bias"
    for field in ROUTING_FIELDS + (("bias_update_rate",) if both_bias else ()):
        if getattr(theirs, field) != getattr(ours, field):
            differ[field] = (getattr(theirs, field), getattr(ours, field))
    if not differ:
        return
    detail = "; ".join(f"moe.{k} is {a} there, {b} in the config" for k, (a, b) in differ.items())
    fixes = [f"--set moe.{k}={_set_value(a)}" for k, (a, _) in differ.items()]
    if "layers" in differ and ours.last_n is not None:
        fixes.append("--set moe.last_n=null")
    raise ModelError(
        f"--init-from {where} routes differently from the run's config: {detail}",
        hint=f"continue it as it is with {' '.join(fixes)}, or upcycle a dense model to train "
        "another routing",
    )


def _set_value(value: Any) -> str:
    """`value` as --set reads it back: a list without spaces (one shell word), else as is."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list) else str(value)


def layout_of_model(model: nn.Module) -> dict[str, Any]:
    layers = moe_layers(model)
    first = next(iter(layers.values()), None)
    return {
        "layers": list(layers),
        "n_experts": first.n_experts if first else 0,
        "top_k": first.top_k if first else 0,
    }


def architecture(model: nn.Module) -> dict[str, Any]:
    """What must match between a checkpoint and the run resuming it."""
    sizes = model_sizes(model)
    return {
        "arch": family_of(model).name,
        "n_layer": sizes.layers,
        "n_embd": sizes.hidden,
        "n_head": sizes.heads,
        "vocab_size": sizes.vocab,
        **layout_of_model(model),
    }


def resumed_model(config: RunConfig, checkpoint: Path) -> nn.Module:
    """The checkpoint's model, after checking it is the architecture the config describes."""
    loaded = load_model_dir(checkpoint)
    model = loaded.model
    have = architecture(model)
    wanted = {"layers": have["layers"], "n_experts": have["n_experts"], "top_k": have["top_k"]}
    wanted.update(layout_of_config(config, have["n_layer"]), arch=config.model.arch)
    if config.model.pretrained is None:
        wanted.update(n_layer=config.model.n_layer, n_embd=config.model.n_embd)
        wanted.update(n_head=config.model.n_head)
    mismatched = [key for key in wanted if wanted[key] != have[key]]
    if mismatched:
        detail = ", ".join(f"{k}: checkpoint {have[k]} vs config {wanted[k]}" for k in mismatched)
        raise TrainingError(
            f"checkpoint {checkpoint} is another architecture than the run config ({detail})",
            hint="resume with the run's own config (moectl train --run-dir DIR --resume, "
            "without --preset) or start a new --run-dir",
        )
    return model


def configure_routers(model: nn.Module, config: RunConfig) -> None:
    """Router noise settings come from the run config, also for a loaded model."""
    for layer in moe_layers(model).values():
        layer.noise_std = config.moe.noise_std
        layer.anneal_fraction = config.moe.anneal_fraction


def model_meta(
    model: nn.Module, config: RunConfig, corpus: Corpus, step: int, metrics: dict[str, Any]
) -> ModelMeta:
    layers = list(moe_layers(model))
    return ModelMeta(
        moectl_version=__version__,
        hf_config=model.config.to_dict(),
        moe=config.moe if layers else None,
        moe_layers=layers,
        tokenizer=corpus_tokenizer_info(corpus),
        step=step,
        metrics=metrics,
    )
