"""The trainer's side of the balancing schemes: the optimizer step's expert counts.

Schemes that want the step's global counts before its forwards (`global`) get them from a
routing-only pass over the step's micro-batches: no gradient, under a forked RNG so the real
forwards then draw the very same routing noise and dropout, and route exactly as counted.
Schemes that act after the step (`bias`) get the counts its forwards made. Both are summed
over micro-batches and DDP ranks, so every rank hands its schemes the same numbers.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from moectl.model.dispatch import expert_counts
from moectl.model.router import Assignment
from moectl.model.routing import last_router_stats, moe_layers
from moectl.training.distributed import DistContext, all_reduce_sum


def count_before_step(
    core: nn.Module,
    micro_batches: list[Tensor],
    autocast: contextlib.AbstractContextManager,
    ctx: DistContext,
    device: torch.device,
) -> None:
    """Hand every `counts_before_step` scheme the step's global expert counts.

    One micro-batch on one rank needs no extra pass: its forward sees the whole batch, and the
    scheme is told so (begin_step(None)).
    """
    layers = {i: m for i, m in moe_layers(core).items() if m.balance.counts_before_step}
    if not layers:
        return
    if len(micro_batches) == 1 and not ctx.enabled:
        for layer in layers.values():
            layer.balance.begin_step(None)
        return
    counts = StepCounts(layers, device)
    devices = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        for input_ids in micro_batches:
            with autocast:
                core(input_ids=input_ids, use_cache=False)
            counts.add(last_router_stats(core))
    counts.reduce(ctx, device)
    for index, layer in layers.items():
        layer.balance.begin_step(counts.counts[index])


class StepCounts:
    """Expert counts per MoE layer over one optimizer step's forwards."""

    def __init__(self, layers: dict[int, nn.Module], device: torch.device) -> None:
        self.layers = layers
        self.counts = {i: torch.zeros(m.n_experts, device=device) for i, m in layers.items()}

    @classmethod
    def after_step(cls, core: nn.Module, device: torch.device) -> StepCounts:
        """Counts for the layers whose scheme acts after each optimizer step."""
        layers = {i: m for i, m in moe_layers(core).items() if m.balance.counts_after_step}
        return cls(layers, device)

    def add(self, stats: dict[int, Assignment]) -> None:
        for index, layer in self.layers.items():
            found = expert_counts(stats[index].expert_index, layer.n_experts)
            self.counts[index] += found.to(self.counts[index].dtype)

    def reduce(self, ctx: DistContext, device: torch.device) -> None:
        all_reduce_sum(ctx, list(self.counts.values()), device)

    def end_step(self, ctx: DistContext, device: torch.device) -> None:
        """Sum over ranks, hand each scheme its layer's counts, and start the next step at 0."""
        if not self.layers:
            return
        self.reduce(ctx, device)
        for index, layer in self.layers.items():
            layer.balance.end_step(self.counts[index])
            self.counts[index].zero_()
