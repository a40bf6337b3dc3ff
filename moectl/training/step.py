"""One forward pass and its losses: LM, per-domain LM from the same logits, and the router terms.

Per-token cross-entropy is computed once (moectl.training.loss); the batch mean and the
per-domain means are both read from it, so per-domain logging costs no second pass over the
vocabulary.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moectl.config import MoEConfig
from moectl.model.routing import aux_losses
from moectl.training.loss import IGNORE_INDEX, token_cross_entropy


@dataclass
class StepLosses:
    """Losses of one forward; `loss` carries gradient, the rest is for logging."""

    loss: Tensor
    lm_loss: Tensor
    lb_loss: Tensor
    z_loss: Tensor
    domain_sum: Tensor  # (D,) summed per-token CE per domain, detached
    domain_count: Tensor  # (D,) predicted tokens per domain


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA and CPU where `precision` resolves to bf16 (device.resolve_precision:
    auto is bf16 on CUDA and on a CPU with bf16 tiles); full precision elsewhere."""
    from moectl.device import resolve_precision

    if device.type in ("cuda", "cpu") and resolve_precision(device, precision) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def forward_losses(
    model: nn.Module,
    core: nn.Module,
    input_ids: Tensor,
    domain: Tensor,
    n_domains: int,
    moe: MoEConfig,
    autocast: contextlib.AbstractContextManager,
) -> StepLosses:
    """Run `model` (maybe DDP-wrapped; `core` is the bare model) and compute every loss term."""
    with autocast:
        logits = model(input_ids=input_ids, use_cache=False).logits
    # Shift the targets, not the logits: slicing (B, S, V) logits would cost a full-size copy
    # in backward. The last position has no target and contributes exactly 0.
    targets = F.pad(input_ids[:, 1:], (0, 1), value=IGNORE_INDEX)
    flat = logits.reshape(-1, logits.shape[-1])
    ce = token_cross_entropy(flat, targets.reshape(-1)).view(targets.shape)
    predicted = input_ids.shape[1] - 1
    lm = ce.sum() / (ce.shape[0] * predicted)
    lb, z = aux_losses(core)
    loss = lm + moe.lb_coef * lb + moe.z_coef * z
    row_sum = ce.detach().sum(dim=1)
    domain_sum = torch.zeros(n_domains, device=ce.device, dtype=torch.float64)
    domain_sum.index_add_(0, domain, row_sum.double())
    # index_add, not bincount: bincount reads its input's maximum on the host (a CUDA sync).
    tokens = torch.full_like(row_sum, predicted, dtype=torch.float64)
    domain_count = torch.zeros_like(domain_sum).index_add_(0, domain, tokens)
    return StepLosses(loss, lm.detach(), lb.detach(), z.detach(), domain_sum, domain_count)


def token_domains(domain: Tensor, seq_len: int) -> Tensor:
    """Each token's domain id, flattened row-major like the router's tokens."""
    return domain[:, None].expand(-1, seq_len).reshape(-1)


class MetricWindow:
    """Sums of the train metrics since the last logged row (averaged when the row is written).

    The sums stay on `device` and are read only when a row is written, so a step never waits
    for the GPU. Tokens and seconds only feed the throughput figure, so they restart at zero on
    resume.
    """

    def __init__(self, n_domains: int, device: torch.device | str = "cpu") -> None:
        self.n_domains = n_domains
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.tokens = 0
        self.seconds = 0.0
        zeros = {"dtype": torch.float64, "device": self.device}
        self.sums = torch.zeros(4, **zeros)  # loss, lm, lb, z
        self.domain_sum = torch.zeros(self.n_domains, **zeros)
        self.domain_count = torch.zeros(self.n_domains, **zeros)

    def add(self, values: Tensor, domain_sum: Tensor, domain_count: Tensor) -> None:
        """One optimizer step: `values` (4,) = loss, lm, lb, z averaged over its micro-batches."""
        self.steps += 1
        self.sums += values
        self.domain_sum += domain_sum
        self.domain_count += domain_count

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "sums": self.sums.cpu().clone(),
            "domain_sum": self.domain_sum.cpu().clone(),
            "domain_count": self.domain_count.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.tokens = 0
        self.seconds = 0.0
        self.sums = state["sums"].to(self.device, torch.float64, copy=True)
        self.domain_sum = state["domain_sum"].to(self.device, torch.float64, copy=True)
        self.domain_count = state["domain_count"].to(self.device, torch.float64, copy=True)
