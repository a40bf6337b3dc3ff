"""Model-level access to the MoE layers: their losses, router statistics and noise schedule.

The trainer and the analysis work on a whole GPT-2; these helpers find its `MoEMLP`s by layer
index so neither needs to know where the surgery put them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from moectl.model.moe import MoEMLP
from moectl.model.router import Assignment


def moe_layers(model: nn.Module) -> dict[int, MoEMLP]:
    """The model's MoE layers keyed by transformer layer index, in layer order (empty if dense)."""
    layers = {m.layer_index: m for m in model.modules() if isinstance(m, MoEMLP)}
    return dict(sorted(layers.items()))


def last_router_stats(model: nn.Module) -> dict[int, Assignment]:
    """The (detached) routing assignment of the last forward pass, per MoE layer that has run."""
    return {i: m.last_stats for i, m in moe_layers(model).items() if m.last_stats is not None}


def balance_states(model: nn.Module) -> dict[int, dict[str, float]]:
    """Each MoE layer's balancing-scheme state (moectl.model.balance), for logs and trackers."""
    return {i: m.balance.state() for i, m in moe_layers(model).items()}


def aux_losses(model: nn.Module) -> tuple[Tensor, Tensor]:
    """(balancing loss, z-loss) of the last forward, each averaged over the MoE layers.

    A dense model gives two zero tensors, so the trainer's loss formula needs no special case.
    """
    layers = moe_layers(model)
    if not layers:
        device = next(model.parameters()).device
        zero = torch.zeros((), device=device)
        return zero, zero.clone()
    missing = [i for i, m in layers.items() if m.last_losses is None]
    if missing:
        raise RuntimeError(f"MoE layers {missing} have no router statistics: run a forward first")
    losses = [m.last_losses for m in layers.values()]
    lb = torch.stack([lb for lb, _ in losses]).mean()
    z = torch.stack([z for _, z in losses]).mean()
    return lb, z


def set_router_progress(model: nn.Module, step: int, total_steps: int) -> None:
    """Set every router's noise for `step` of `total_steps` (linear anneal, DESIGN.md section 2)."""
    for layer in moe_layers(model).values():
        layer.set_progress(step, total_steps)
