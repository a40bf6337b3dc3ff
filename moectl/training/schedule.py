"""The optimiser and learning-rate schedule of a run: AdamW, linear warmup, then cosine decay."""

from __future__ import annotations

import math

import torch

from moectl.config import TrainConfig
from moectl.model.routing import moe_layers


def lr_factor(step: int, max_steps: int, warmup_fraction: float, min_lr_ratio: float) -> float:
    """Multiplier of the base lr for optimizer update `step` (0-based).

    Warmup counts from 1, so the first update already moves the weights; after warmup the
    factor follows a half cosine from 1 down to `min_lr_ratio` at the last update.
    """
    warmup = round(warmup_fraction * max_steps)
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    decay_steps = max(1, max_steps - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / decay_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(
    model: torch.nn.Module, weight_decay: float, lr: float, router_lr_scale: float = 1.0
) -> list[dict]:
    """Decay matrices only: biases and LayerNorm gains are not shrunk to zero. Stacked expert
    biases are 2-D (experts x width), hence the name test next to the shape test.

    With `router_lr_scale` != 1 the MoE gates get a group of their own at `lr * router_lr_scale`
    (a router that learns faster than the experts it chooses between); otherwise the groups stay
    the two above, so checkpoints of either kind resume into the optimizer that wrote them.
    With 0 the gates are left out of the optimizer altogether, so they stay bitwise at their
    initial weights (no update, no weight decay).
    """
    gates: set[int] = set()
    if router_lr_scale != 1.0:
        gates = {id(p) for layer in moe_layers(model).values() for p in layer.gate.parameters()}
    decay, no_decay, router = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in gates:
            router.append(param)
        else:
            matrix = param.ndim >= 2 and not name.endswith("bias")
            (decay if matrix else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr": lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr},
    ]
    if router and router_lr_scale > 0:
        groups.append({"params": router, "weight_decay": weight_decay, "lr": lr * router_lr_scale})
    return groups


def build_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, router_lr_scale: float = 1.0
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the model's parameters with the run's warmup + cosine schedule.

    The fused kernel (one pass per parameter instead of ~10 elementwise ops) where torch has it.
    """
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())
    groups = parameter_groups(model, cfg.weight_decay, cfg.lr, router_lr_scale)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, cfg.max_steps, cfg.warmup_fraction, cfg.min_lr_ratio),
    )
    return optimizer, scheduler
