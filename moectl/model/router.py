"""The router: its math as plain functions over float32 tensors, and the module that runs it.

The formulas (DESIGN.md section 2: straight-through top-1, renormalized top-k, Switch load
balancing, ST-MoE z-loss, annealed noise; DeepSeek-V3's sigmoid scores and selection bias) are
kept as functions so they can be read and tested on their own. `Router` is the gate as a module,
as in transformers' Mixtral and Qwen3-MoE: it returns one `Assignment`, the only thing dispatch,
balancing, the routing log, analysis and export read of a routing decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moectl.model.dispatch import expert_counts

Score = Literal["softmax", "sigmoid"]


@dataclass
class Assignment:
    """One routing decision for T tokens (n_sequences rows of the batch) over E experts, top-k.

    `logits`, `probs` and `entropy` are the clean router's (before noise; what gets logged);
    `noisy_probs` are the probabilities the choice was made from (what load balancing
    balances); `expert_weight` carries gradient into the router. With sigmoid scores, `probs` are
    the scores normalized over all experts, so they are a distribution either way.
    """

    logits: Tensor  # (T, E) clean logits, float32
    probs: Tensor  # (T, E) clean probabilities
    entropy: Tensor  # (T,) nats
    noisy_probs: Tensor  # (T, E)
    expert_index: Tensor  # (T, k) long
    expert_weight: Tensor  # (T, k)
    n_sequences: int = 1

    def detached(self) -> Assignment:
        """A copy without autograd history (what a layer keeps after its forward)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Assignment(
            **{k: v.detach() if isinstance(v, Tensor) else v for k, v in values.items()}
        )


def noise_scale(noise_std: float, anneal_fraction: float, step: int, total_steps: int) -> float:
    """Std of the routing noise at `step`: noise_std * (1 - step/anneal_steps), floored at 0.

    anneal_steps = anneal_fraction * total_steps; a zero anneal length means no noise at all.
    """
    anneal_steps = anneal_fraction * total_steps
    if noise_std <= 0 or anneal_steps <= 0:
        return 0.0
    return noise_std * max(0.0, 1.0 - step / anneal_steps)


def scores_of(logits: Tensor, score: Score) -> Tensor:
    """Per-expert affinities: softmax over experts, or DeepSeek-V3's independent sigmoids."""
    return logits.softmax(dim=-1) if score == "softmax" else logits.sigmoid()


def route(
    logits: Tensor,
    top_k: int,
    noise_std: float | Tensor = 0.0,
    *,
    score: Score = "softmax",
    selection_bias: Tensor | None = None,
    n_sequences: int = 1,
) -> Assignment:
    """Pick `top_k` experts per token from float32 `logits` (T, E).

    Gaussian noise of `noise_std` is added to the logits for the choice (the caller passes 0 in
    eval). A tensor `noise_std` (the layer's annealed scale, kept on the device) always draws
    the noise, even once it has annealed to 0, so the choice never reads the device.
    `selection_bias` (E,) is added to the scores for the choice only (DeepSeek-V3's aux-loss-free
    balancing); the weights come from the unbiased scores. Top-1 uses a straight-through
    weight: exactly 1.0 forward, gradient of the chosen score. Top-k > 1 renormalizes the chosen
    scores to sum to 1 (DeepSeek-V3 does the same with sigmoid scores).
    """
    if score == "softmax":
        scores = probs = logits.softmax(dim=-1)
        entropy = -(probs * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    else:
        scores = logits.sigmoid()
        probs = scores / scores.sum(dim=-1, keepdim=True)
        entropy = -torch.xlogy(probs, probs).sum(dim=-1)
    if isinstance(noise_std, Tensor) or noise_std > 0:
        scores = scores_of(logits + torch.randn_like(logits) * noise_std, score)
    noisy_probs = scores if score == "softmax" else scores / scores.sum(dim=-1, keepdim=True)
    if selection_bias is None:
        top_scores, expert_index = scores.topk(top_k, dim=-1)
    else:
        expert_index = (scores + selection_bias).topk(top_k, dim=-1).indices
        top_scores = scores.gather(1, expert_index)
    if top_k == 1:
        # s - s.detach() is exactly 0.0, so the forward weight is exactly 1.0; d/ds is 1.
        weights = top_scores - top_scores.detach() + 1.0
    else:
        weights = top_scores / top_scores.sum(dim=-1, keepdim=True)
    return Assignment(logits, probs, entropy, noisy_probs, expert_index, weights, n_sequences)


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


class Router(nn.Module):
    """The gate: a linear map without bias to E logits, then `route`, in float32.

    It runs with autocast off even under bf16: softmax and logsumexp over a handful of logits
    are where low precision bites (ST-MoE). `selectable` (bool (E,), or None for all) restricts
    which experts may be chosen: the others' logits become the float32 minimum before scoring,
    so they get probability 0 (a functional test switches experts off this way).
    """

    def __init__(self, hidden_size: int, n_experts: int, top_k: int, score: Score) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in 1..{n_experts}, got {top_k}")
        self.weight = nn.Parameter(torch.empty(n_experts, hidden_size))
        # nn.Linear's init (the gate was one): upcycling overwrites it, and drawing it keeps the
        # global RNG stream, hence the routing noise of existing seeds, unchanged.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.top_k = top_k
        self.score: Score = score
        self.selectable: Tensor | None = None

    def forward(
        self,
        x: Tensor,
        noise_std: float | Tensor = 0.0,
        selection_bias: Tensor | None = None,
        n_sequences: int = 1,
    ) -> Assignment:
        """Route the tokens `x` (T, D); the z-loss is read from the returned logits."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.weight.float())
            if self.selectable is not None:
                blocked = ~self.selectable.to(logits.device)
                logits = logits.masked_fill(blocked, torch.finfo(logits.dtype).min)
            return route(
                logits,
                self.top_k,
                noise_std,
                score=self.score,
                selection_bias=selection_bias,
                n_sequences=n_sequences,
            )

    def extra_repr(self) -> str:
        n_experts, hidden = self.weight.shape
        return f"{hidden} -> {n_experts} experts, top_k={self.top_k}, score={self.score}"
