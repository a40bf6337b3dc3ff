"""Scoring the fixed eval subset: overall and per-domain loss, and the router losses."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from moectl.config import MoEConfig
from moectl.training.batches import fetch
from moectl.training.distributed import DistContext, all_reduce_sum
from moectl.training.step import forward_losses


@dataclass
class EvalResult:
    loss: float
    domain_loss: list[float | None]  # per domain id; None for a domain with no eval tokens
    lb_loss: float
    z_loss: float


@torch.no_grad()
def evaluate_blocks(
    model: nn.Module,
    dataset: Any,
    indices: list[int],
    n_domains: int,
    batch_size: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager,
    ctx: DistContext,
    forwards: int = 0,
) -> EvalResult:
    """Token-weighted mean loss over `indices` (this rank's share), summed across ranks.

    The router terms are averaged per batch, weighted by the batch's tokens. Eval mode turns off
    dropout and routing noise, so scoring draws nothing from the RNGs a resume must replay.
    A sharded model gathers each block's weights from all ranks in every forward, so every rank
    must run as many: a rank with fewer batches than `forwards` runs the rest on a block it
    already scored and discards them.
    """
    was_training = model.training
    model.eval()
    no_aux = MoEConfig()
    sums = torch.zeros(2 * n_domains + 3, dtype=torch.float64, device=device)
    starts = range(0, len(indices), batch_size)
    for start in starts:
        input_ids, domain = fetch(dataset, indices[start : start + batch_size], device)
        losses = forward_losses(model, model, input_ids, domain, n_domains, no_aux, autocast)
        tokens = float(losses.domain_count.sum())
        sums[:n_domains] += losses.domain_sum
        sums[n_domains : 2 * n_domains] += losses.domain_count
        sums[-3] += float(losses.lb_loss) * tokens
        sums[-2] += float(losses.z_loss) * tokens
        sums[-1] += tokens
    for _ in range(len(starts), forwards):
        filler, _ = fetch(dataset, indices[:1] or [0], device)
        with autocast:
            model(input_ids=filler, use_cache=False)
    all_reduce_sum(ctx, [sums], device)
    model.train(was_training)
    sums = sums.cpu()
    total = float(sums[-1])
    domain_loss = [
        float(sums[d] / sums[n_domains + d]) if sums[n_domains + d] > 0 else None
        for d in range(n_domains)
    ]
    return EvalResult(
        loss=float(sums[:n_domains].sum() / total) if total else float("nan"),
        domain_loss=domain_loss,
        lb_loss=float(sums[-3] / total) if total else float("nan"),
        z_loss=float(sums[-2] / total) if total else float("nan"),
    )
