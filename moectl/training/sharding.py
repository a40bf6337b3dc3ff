"""`train.parallel: fsdp`: FSDP2 (`fully_shard`) per decoder block and then the root, and the
full state dicts that keep checkpoints in one format whichever way a run trained.

Under DDP every rank holds the whole model, its gradients and both AdamW moments; under FSDP each
rank holds 1/N of each and gathers a block's parameters only while that block runs (the memory
arithmetic is in docs/scaling.md). What goes to disk is the same either way: the model artifact
from the gathered full state dict (ties kept, so the safetensors keys are those of a plain
save), and the optimizer state in torch's own layout (`optimizer.state_dict()` of the unsharded
model: parameters numbered in group order). So a run trained with FSDP resumes on one process or
under DDP, and the reverse, and evaluate and export never see a shard.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moectl.config import TrainConfig
from moectl.errors import ConfigError
from moectl.model.arch import blocks
from moectl.training.compiling import COMPILE_HINT

FSDP_LAUNCH_HINT = (
    "launch with torchrun (python -m torch.distributed.run --nproc-per-node=N -m moectl train "
    "...), or set train.parallel=ddp"
)


def check_parallel(cfg: TrainConfig, world_size: int) -> None:
    """ConfigError (one line, exit 2 in the CLI) for an FSDP run that cannot be one: a single
    process (nothing to shard across) or torch.compile (the trainer compiles the whole wrapped
    model, which FSDP2's per-block hooks do not support)."""
    if cfg.parallel != "fsdp":
        return
    if world_size <= 1:
        raise ConfigError(
            "train.parallel=fsdp needs a distributed launch, but this is a single process",
            hint=FSDP_LAUNCH_HINT,
        )
    if cfg.compile:
        raise ConfigError(
            "train.compile is not supported with train.parallel=fsdp", hint=COMPILE_HINT
        )


def shard_model(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """Shard `model` in place across the job's ranks (each block, then the root, which keeps
    the embeddings, the tied head and the final norm). FSDP moves each block to `device` as
    it shards it, so the full model never has to fit there. Every rank must pass the same
    weights: a fresh model is built from the same seed, a resumed one read from the same file.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    for block in blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _full_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The sharded model's whole state dict, on the CPU of rank 0 (empty on the others).

    A collective: every rank calls it. Gathering copies each parameter, so tied parameters
    (GPT-2's head and token embedding) are tied again here, as in a plain model's state dict.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_full_options())
    if state:
        first: dict[int, str] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            kept = first.setdefault(id(param), name)
            if kept != name:
                state[name] = state[kept]
    return state


def _names_in_order(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Each optimized parameter's name, in the order optimizer.state_dict() numbers them."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [names[id(param)] for group in optimizer.param_groups for param in group["params"]]


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state for a checkpoint: `optimizer.state_dict()` of a plain model; of a
    sharded one the gathered full state (a collective, empty on ranks other than 0) renumbered
    to that same layout."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_full_options())
    if not state:
        return state
    number = {name: i for i, name in enumerate(_names_in_order(model, optimizer))}
    return {
        "state": {number[name]: value for name, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [number[name] for name in group["params"]]}
            for group in state["param_groups"]
        ],
    }


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a checkpoint's optimizer state (torch's own layout, whichever way it was written):
    directly into a plain model's optimizer; into a sharded one's by name, each rank keeping
    its shard of every full tensor."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    names = _names_in_order(model, optimizer)
    by_name = {
        "state": {names[number]: value for number, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[number] for number in group["params"]]}
            for group in state["param_groups"]
        ],
    }
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, by_name, options=options)
    # It hands the hyperparameters back rebuilt (AdamW's betas tuple as a list); keep them as
    # saved, as optimizer.load_state_dict does, so the next checkpoint writes them the same.
    for group, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
        group.update({key: value for key, value in saved.items() if key != "params"})


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor of a DTensor (a sharded run's gradient norm), or the tensor itself."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value
