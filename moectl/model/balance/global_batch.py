"""`global`: the Switch LB loss with f_i over the optimizer step's whole global batch.

Qiu et al. 2025 ("Demons in the Detail", Qwen3's MoEs): f_i counted over every micro-batch of
the step and every DDP rank before the loss is formed lets sequences (and domains) keep their
own experts, as long as the batch as a whole is balanced. The loss is linear in P_i and f_i
carries no gradient, so each micro-batch's n_experts * sum_i f_i^global * P_i^micro, averaged
as the trainer averages micro-batches and ranks, is exactly the full-batch loss and gradient.
The trainer gets f^global from a routing-only pass over the step's micro-batches (`begin_step`);
a forward that sees the whole batch (one micro-batch, one rank; eval) uses its own f_i.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moectl.model.balance.base import Balance, register
from moectl.model.router import Assignment, load_balancing_loss


@register
class GlobalBalance(Balance):
    """Switch LB with the step's global f_i while a step has set them."""

    name = "global"
    counts_before_step = True
    counts_after_step = True

    def __init__(self, n_experts: int) -> None:
        super().__init__(n_experts)
        # The last step's global f_i (for the log), or this step's once begin_step set them.
        self.register_buffer("fractions", torch.zeros(n_experts), persistent=False)
        self.in_step = False

    def begin_step(self, counts: Tensor | None) -> None:
        self.in_step = counts is not None
        if counts is not None:
            self.fractions.copy_(counts / counts.sum())

    def end_step(self, counts: Tensor) -> None:
        self.in_step = False
        self.fractions.copy_(counts / counts.sum())

    def aux_loss(self, assignment: Assignment) -> Tensor:
        probs = assignment.noisy_probs
        if not (self.training and self.in_step):
            return load_balancing_loss(probs, assignment.expert_index, self.n_experts)
        return self.n_experts * (self.fractions.to(probs.dtype) * probs.mean(dim=0)).sum()

    def state(self) -> dict[str, float]:
        return {f"f_{i}": float(f) for i, f in enumerate(self.fractions.tolist())}
