"""`sequence`: the Switch LB loss per sequence, then averaged over the batch's sequences.

The strict form: every sequence on its own must spread its tokens over all experts, which Qiu
et al. 2025 ("Demons in the Detail") show suppresses domain specialization.
"""

from __future__ import annotations

from torch import Tensor

from moectl.model.balance.base import Balance, register
from moectl.model.router import Assignment


@register
class SequenceBalance(Balance):
    """mean over sequences b of n_experts * sum_i f_bi * P_bi."""

    name = "sequence"

    def aux_loss(self, assignment: Assignment) -> Tensor:
        n_seq, n_experts = assignment.n_sequences, self.n_experts
        index = assignment.expert_index.reshape(n_seq, -1)
        ones = index.new_ones(index.shape, dtype=assignment.noisy_probs.dtype)
        counts = ones.new_zeros(n_seq, n_experts).scatter_add_(1, index, ones)
        fractions = counts / index.shape[1]
        probs = assignment.noisy_probs.reshape(n_seq, -1, n_experts).mean(dim=1)
        return n_experts * (fractions * probs).sum(dim=1).mean()
