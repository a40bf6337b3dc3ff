"""A routed mixture of GPT-2 MLP experts that drops in for `GPT2MLP`.

Tokens are dispatched by grouping the token-expert assignments once (moectl.model.dispatch), so
each expert runs a single dense matmul on exactly its tokens. The router runs in float32 even
under bf16 autocast: softmax and logsumexp over a handful of logits are where low precision
bites (ST-MoE).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moectl.model.dispatch import dispatch
from moectl.model.router import load_balancing_loss, noise_scale, route, z_loss


@dataclass
class RouterStats:
    """What one MoE layer's router did in the last forward pass.

    Tokens are flattened row-major from (batch, seq). Everything is detached except the two
    losses, which the trainer adds to the LM loss.
    """

    logits: Tensor  # (T, E) clean logits, float32
    probs: Tensor  # (T, E) clean softmax, float32
    expert_index: Tensor  # (T, k) long
    expert_weight: Tensor  # (T, k)
    entropy: Tensor  # (T,) nats
    lb_loss: Tensor  # scalar, carries gradient
    z_loss: Tensor  # scalar, carries gradient


class MoEMLP(nn.Module):
    """Router + `n_experts` copies of a GPT-2 MLP; same call signature as `GPT2MLP`.

    `last_stats` holds the router statistics of the latest forward so the trainer and the
    analysis read them without running the model again.
    """

    def __init__(
        self,
        experts: nn.ModuleList,
        hidden_size: int,
        *,
        layer_index: int,
        top_k: int = 1,
        noise_std: float = 0.0,
        anneal_fraction: float = 0.25,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= len(experts):
            raise ValueError(f"top_k must be in 1..{len(experts)}, got {top_k}")
        self.experts = experts
        self.gate = nn.Linear(hidden_size, len(experts), bias=False)
        self.layer_index = layer_index
        self.n_experts = len(experts)
        self.top_k = top_k
        self.noise_std = noise_std
        self.anneal_fraction = anneal_fraction
        self.progress: tuple[int, int] | None = None
        self.last_stats: RouterStats | None = None

    @classmethod
    def upcycle(
        cls,
        dense: nn.Module,
        *,
        hidden_size: int,
        layer_index: int,
        n_experts: int,
        top_k: int = 1,
        noise_std: float = 0.0,
        anneal_fraction: float = 0.25,
        perturbation_std: float = 0.0,
        gate_init_std: float = 0.02,
        generator: torch.Generator | None = None,
    ) -> MoEMLP:
        """Experts copied from `dense` plus perturbation_std * param.std() * N(0, 1) noise.

        The noise (and the gate's N(0, gate_init_std) init) come from `generator`, so a seed
        fixes the upcycled model. With perturbation 0 every expert equals the dense MLP.
        """
        experts = nn.ModuleList(copy.deepcopy(dense) for _ in range(n_experts))
        if perturbation_std > 0:
            with torch.no_grad():
                for param in experts.parameters():
                    if param.numel() > 1:
                        noise = torch.randn(param.shape, generator=generator).to(param)
                        param.add_(noise * (perturbation_std * param.std()))
        layer = cls(
            experts,
            hidden_size,
            layer_index=layer_index,
            top_k=top_k,
            noise_std=noise_std,
            anneal_fraction=anneal_fraction,
        )
        gate = torch.randn(layer.gate.weight.shape, generator=generator) * gate_init_std
        device = next(dense.parameters()).device
        layer.gate.weight.data = gate.to(device=device, dtype=torch.float32)
        return layer

    def set_progress(self, step: int, total_steps: int) -> None:
        """Anneal the routing noise linearly to 0 over anneal_fraction of training."""
        self.progress = (step, total_steps)

    @property
    def current_noise_std(self) -> float:
        """The training-time noise std now: full noise_std until progress is first set."""
        if self.progress is None:
            return self.noise_std
        return noise_scale(self.noise_std, self.anneal_fraction, *self.progress)

    def forward(self, hidden_states: Tensor) -> Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.gate.weight.float())
            noise = self.current_noise_std if self.training else 0.0
            routing = route(logits, self.top_k, noise)
            lb = load_balancing_loss(routing.probs, routing.expert_index, self.n_experts)
            z = z_loss(logits)
        out = dispatch(x, routing.expert_index, routing.weights, self.experts)
        self.last_stats = RouterStats(
            logits=logits.detach(),
            probs=routing.clean_probs.detach(),
            expert_index=routing.expert_index,
            expert_weight=routing.weights.detach(),
            entropy=routing.entropy.detach(),
            lb_loss=lb,
            z_loss=z,
        )
        return out.reshape(*shape[:-1], out.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"layer_index={self.layer_index}, n_experts={self.n_experts}, top_k={self.top_k}, "
            f"noise_std={self.noise_std}, anneal_fraction={self.anneal_fraction}"
        )
