"""`bias`: DeepSeek-V3's auxiliary-loss-free balancing (Wang et al. 2024).

A per-expert bias is added to the router's scores for the top-k choice only; the combine
weights come from the unbiased scores, and no balancing gradient reaches the router. After each
optimizer step the bias moves by `rate` * sign(mean load - load) on the step's expert counts
(summed over micro-batches and DDP ranks, so every rank moves it alike): an overloaded expert
becomes less likely to be chosen. The bias is a buffer: checkpointed, resumed and exported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from moectl.model.balance.base import Balance, register

if TYPE_CHECKING:
    from moectl.config import MoEConfig


@register
class BiasBalance(Balance):
    """Selection bias nudged after every step; no aux loss."""

    name = "bias"
    adds_loss = False
    selects_with_bias = True
    counts_after_step = True

    def __init__(self, n_experts: int, rate: float = 1e-3) -> None:
        super().__init__(n_experts)
        self.rate = rate
        self.register_buffer("bias", torch.zeros(n_experts))

    @classmethod
    def from_config(cls, n_experts: int, moe: MoEConfig) -> BiasBalance:
        return cls(n_experts, moe.bias_update_rate)

    @classmethod
    def setting(cls, moe: MoEConfig) -> str:
        return f"bias rate {moe.bias_update_rate:g}, no LB loss"

    def config_fields(self) -> dict[str, object]:
        return {"balance": self.name, "bias_update_rate": self.rate}

    def selection_bias(self) -> Tensor:
        return self.bias

    def end_step(self, counts: Tensor) -> None:
        load = counts.to(self.bias)
        self.bias.add_(self.rate * torch.sign(load.mean() - load))

    def state(self) -> dict[str, float]:
        return {"bias_min": float(self.bias.min()), "bias_max": float(self.bias.max())}

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, rate={self.rate}"
