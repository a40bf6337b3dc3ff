"""The model a run trains: scratch or pretrained, from an artifact (--init-from), or a checkpoint.

Each path ends in the same place (a GPT-2 whose MoE layers match the run's MoEConfig) or in a
clear error before any step runs: a layout that does not fit, a tokenizer that does not match the
corpus, a checkpoint of another architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from moectl import __version__
from moectl.config import RunConfig
from moectl.data.store import Corpus
from moectl.errors import ModelError, TrainingError
from moectl.model.factory import apply_moe, build_model
from moectl.model.io import LoadedModel, ModelMeta, load_model
from moectl.model.routing import moe_layers


def corpus_tokenizer_info(corpus: Corpus) -> dict[str, Any]:
    return corpus.manifest.tokenizer.model_dump()


def fresh_model(config: RunConfig, corpus: Corpus, init_from: Path | None) -> nn.Module:
    """The model a new run starts from, with the run's MoE surgery applied."""
    info = corpus.manifest.tokenizer
    if init_from is None:
        if config.model.pretrained is None:
            config.moe.resolve_layers(config.model.n_layer)
        model = build_model(config.model, info.vocab_size, corpus.block_size, info.eos_id)
        apply_moe(model, config.moe, seed=config.train.seed)
        return model
    loaded = load_artifact(init_from)
    check_tokenizer(loaded.meta, corpus, str(init_from))
    check_positions(loaded.model, corpus)
    existing = moe_layers(loaded.model)
    if not existing:
        apply_moe(loaded.model, config.moe, seed=config.train.seed)
        return loaded.model
    if not config.moe.enabled:
        raise ModelError(
            f"{init_from} is an MoE model but the run's config is dense (moe.enabled is false)",
            hint="use an MoE preset (e.g. --preset cpu-moe) or start from a dense model",
        )
    wanted = layout_of_config(config, loaded.model.config.n_layer)
    have = layout_of_model(loaded.model)
    if wanted != have:
        raise ModelError(
            f"{init_from} has MoE layout {describe(have)}, the run asks for {describe(wanted)}",
            hint="start from a dense model to upcycle it with this layout, or match moe.* to it",
        )
    return loaded.model


def load_artifact(path: Path) -> LoadedModel:
    if not path.is_dir() or not any((path / f).is_file() for f in ("model.json", "config.json")):
        raise TrainingError(
            f"--init-from {path} is not a model directory (no model.json or config.json)",
            hint="pass a run's best/ or checkpoints/step-N directory, or a `moectl export` "
            "directory",
        )
    return load_model(path)


def check_tokenizer(meta: ModelMeta, corpus: Corpus, where: str) -> None:
    """ModelError if the model was trained on other token ids than the corpus uses."""
    theirs = meta.tokenizer or {}
    ours = corpus.manifest.tokenizer
    folder = Path(where) / "tokenizer" if (Path(where) / "tokenizer").is_dir() else Path(where)
    if theirs.get("hash") and theirs["hash"] != ours.hash:
        raise ModelError(
            f"{where} was trained with tokenizer {theirs.get('name')} (hash {theirs['hash'][:12]}) "
            f"but corpus {corpus.path} uses {ours.name} (hash {ours.hash[:12]})",
            hint=f"prepare the corpus with the model's tokenizer (data.tokenizer={folder})",
        )
    if ours.vocab_size > meta.gpt2_config.get("vocab_size", ours.vocab_size):
        raise ModelError(
            f"corpus {corpus.path} has {ours.vocab_size} token ids but {where} embeds only "
            f"{meta.gpt2_config['vocab_size']}",
            hint="prepare the corpus with the model's tokenizer",
        )


def check_positions(model: nn.Module, corpus: Corpus) -> None:
    if corpus.block_size > model.config.n_positions:
        raise ModelError(
            f"corpus blocks of {corpus.block_size} tokens exceed the model's "
            f"{model.config.n_positions} positions",
            hint=f"prepare the corpus with data.block_size <= {model.config.n_positions}",
        )


def layout_of_config(config: RunConfig, n_layer: int) -> dict[str, Any]:
    moe = config.moe
    layers = moe.resolve_layers(n_layer)
    return {
        "layers": layers,
        "n_experts": moe.n_experts if layers else 0,
        "top_k": moe.top_k if layers else 0,
    }


def layout_of_model(model: nn.Module) -> dict[str, Any]:
    layers = moe_layers(model)
    first = next(iter(layers.values()), None)
    return {
        "layers": list(layers),
        "n_experts": first.n_experts if first else 0,
        "top_k": first.top_k if first else 0,
    }


def describe(layout: dict[str, Any]) -> str:
    if not layout["layers"]:
        return "dense"
    return f"layers {layout['layers']}, {layout['n_experts']} experts, top-{layout['top_k']}"


def architecture(model: nn.Module) -> dict[str, Any]:
    """What must match between a checkpoint and the run resuming it."""
    cfg = model.config
    return {
        "n_layer": cfg.n_layer,
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "vocab_size": cfg.vocab_size,
        **layout_of_model(model),
    }


def resumed_model(config: RunConfig, corpus: Corpus, checkpoint: Path) -> nn.Module:
    """The checkpoint's model, after checking it is the architecture the config describes."""
    loaded = load_artifact(checkpoint)
    model = loaded.model
    check_tokenizer(loaded.meta, corpus, str(checkpoint))
    have = architecture(model)
    wanted = {"layers": have["layers"], "n_experts": have["n_experts"], "top_k": have["top_k"]}
    wanted.update(layout_of_config(config, model.config.n_layer))
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
        gpt2_config=model.config.to_dict(),
        moe=config.moe if layers else None,
        moe_layers=layers,
        tokenizer=corpus_tokenizer_info(corpus),
        step=step,
        metrics=metrics,
    )


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if not available[name]:
        raise TrainingError(
            f"train.device is {name} but no {name} device is available",
            hint="use --set train.device=auto (or cpu)",
        )
    return torch.device(name)
