"""A routed mixture of GPT-2 MLP experts that drops in for `GPT2MLP`.

The experts are stacked weights (moectl.model.experts) run by a grouped dispatch
(moectl.model.dispatch). The router runs in float32 even under bf16 autocast: softmax and
logsumexp over a handful of logits are where low precision bites (ST-MoE). Nothing in the
forward or backward reads a device value on the host (no .item(), .tolist() or bool(tensor) on
the CUDA path), so a training step queues without waiting for the GPU and the layer compiles to
one graph; the annealed noise scale is a buffer for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moectl.model.experts import StackedExperts
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
        experts: StackedExperts,
        hidden_size: int,
        *,
        layer_index: int,
        top_k: int = 1,
        noise_std: float = 0.0,
        anneal_fraction: float = 0.25,
    ) -> None:
        super().__init__()
        n_experts = experts.n_experts
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in 1..{n_experts}, got {top_k}")
        self.experts = experts
        self.gate = nn.Linear(hidden_size, n_experts, bias=False)
        self.layer_index = layer_index
        self.n_experts = n_experts
        self.top_k = top_k
        # The current noise std, kept on the layer's device: a Python float that changes every
        # step would make torch.compile re-trace the layer at each step.
        self.register_buffer("routing_noise", torch.tensor(float(noise_std)), persistent=False)
        # The functional test's hook (moectl.analysis.functional): a (E,) bool tensor, True for
        # the experts a token may be routed to; the others' logits are pushed to the float32
        # minimum before `route`, so they get probability 0. None (the default) costs nothing.
        self.register_buffer("expert_mask", None, persistent=False)
        self.progress: tuple[int, int] | None = None
        self.noise_std = noise_std
        self.anneal_fraction = anneal_fraction
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
        experts = StackedExperts.upcycle(dense, n_experts, perturbation_std, generator)
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
        return layer.to(device).train(dense.training)

    def set_progress(self, step: int, total_steps: int) -> None:
        """Anneal the routing noise linearly to 0 over anneal_fraction of training.

        Also where a changed noise_std or anneal_fraction reaches the noise buffer: the trainer
        calls this before every step.
        """
        self.progress = (step, total_steps)
        self.routing_noise.fill_(self.current_noise_std)

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
            if self.expert_mask is not None:
                logits = logits.masked_fill(~self.expert_mask, torch.finfo(logits.dtype).min)
            noisy = self.training and self.noise_std > 0
            routing = route(logits, self.top_k, self.routing_noise if noisy else 0.0)
            lb = load_balancing_loss(routing.probs, routing.expert_index, self.n_experts)
            z = z_loss(logits)
        out = self.experts(x, routing.expert_index, routing.weights)
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
