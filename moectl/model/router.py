"""The router's math (DESIGN.md section 2), as plain functions over float32 tensors.

Kept apart from the layer so that the exact formulas (straight-through top-1, renormalized
top-k, Switch load balancing, ST-MoE z-loss, annealed noise) can be read and tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from moectl.model.dispatch import expert_counts


@dataclass
class Routing:
    """One routing decision for T tokens over E experts, top-k each.

    `clean_probs` and `entropy` come from the logits before noise (what gets logged); `probs` are
    the routing probabilities after noise (what the LB loss balances); `weights` carry gradient.
    """

    clean_probs: Tensor  # (T, E)
    entropy: Tensor  # (T,) nats
    probs: Tensor  # (T, E)
    expert_index: Tensor  # (T, k) long
    weights: Tensor  # (T, k)


def noise_scale(noise_std: float, anneal_fraction: float, step: int, total_steps: int) -> float:
    """Std of the routing noise at `step`: noise_std * (1 - step/anneal_steps), floored at 0.

    anneal_steps = anneal_fraction * total_steps; a zero anneal length means no noise at all.
    """
    anneal_steps = anneal_fraction * total_steps
    if noise_std <= 0 or anneal_steps <= 0:
        return 0.0
    return noise_std * max(0.0, 1.0 - step / anneal_steps)


def route(logits: Tensor, top_k: int, noise_std: float | Tensor = 0.0) -> Routing:
    """Pick `top_k` experts per token from float32 `logits` (T, E).

    Gaussian noise of `noise_std` is added to the logits for the choice (the caller passes 0 in
    eval). A tensor `noise_std` (the layer's annealed scale, kept on the device) always draws
    the noise, even once it has annealed to 0, so the choice never reads the device. Top-1 uses
    a straight-through weight: exactly 1.0 forward, gradient of the soft prob.
    Top-k > 1 renormalizes the chosen probs to sum to 1.
    """
    clean_probs = logits.softmax(dim=-1)
    entropy = -(clean_probs * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    if isinstance(noise_std, Tensor) or noise_std > 0:
        probs = (logits + torch.randn_like(logits) * noise_std).softmax(dim=-1)
    else:
        probs = clean_probs
    top_probs, expert_index = probs.topk(top_k, dim=-1)
    if top_k == 1:
        # p - p.detach() is exactly 0.0, so the forward weight is exactly 1.0; d/dp is 1.
        weights = top_probs - top_probs.detach() + 1.0
    else:
        weights = top_probs / top_probs.sum(dim=-1, keepdim=True)
    return Routing(clean_probs, entropy, probs, expert_index, weights)


def load_balancing_loss(probs: Tensor, expert_index: Tensor, n_experts: int) -> Tensor:
    """Switch LB loss: n_experts * sum_i f_i * P_i; 1.0 at perfect balance.

    f_i is the fraction of the top-k assignments that went to expert i (no gradient); P_i the
    mean routing probability of expert i (carries the gradient).
    """
    fractions = expert_counts(expert_index, n_experts).to(probs.dtype) / expert_index.numel()
    return n_experts * (fractions * probs.mean(dim=0)).sum()


def z_loss(logits: Tensor) -> Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()
