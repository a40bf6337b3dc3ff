"""`switch`: the Switch Transformer LB loss over each micro-batch (moectl's original)."""

from __future__ import annotations

from torch import Tensor

from moectl.model.balance.base import Balance, register
from moectl.model.router import Assignment, load_balancing_loss


@register
class SwitchBalance(Balance):
    """n_experts * sum_i f_i * P_i over the tokens of one forward (Fedus et al. 2021)."""

    name = "switch"

    def aux_loss(self, assignment: Assignment) -> Tensor:
        return load_balancing_loss(assignment.noisy_probs, assignment.expert_index, self.n_experts)
