"""A routed mixture of MLP experts that drops in for a block's dense MLP (GPT-2's or SwiGLU).

The seam: the router (moectl.model.router.Router) turns tokens into one `Assignment`; the
experts (stacked weights, moectl.model.experts, run by moectl.model.dispatch) consume its
indices and weights; the layer's balancing scheme (moectl.model.balance) turns it into an aux
loss and lends the router its selection bias. Shared experts are a stacked group every token
visits with weight 1. Nothing in the forward or backward reads a device value on the host (no
.item(), .tolist() or bool(tensor) on the CUDA path), so a training step queues without waiting
for the GPU and the layer compiles to one graph; the annealed noise scale is a buffer for the
same reason.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from moectl.config import MoEConfig
from moectl.model.balance import Balance, make_balance
from moectl.model.balance.switch import SwitchBalance
from moectl.model.experts import DenseMLP, StackedExperts, SwiGLUExperts
from moectl.model.router import Assignment, Router, Score, noise_scale, z_loss

Experts = StackedExperts | SwiGLUExperts


class MoEMLP(nn.Module):
    """Router + routed experts (+ shared experts); same call signature as the dense MLP.

    `last_stats` holds the detached `Assignment` of the latest forward and `last_losses` its
    (balancing loss, z-loss), so the trainer and the analysis read them without running the
    model again.
    """

    def __init__(
        self,
        experts: Experts,
        hidden_size: int,
        *,
        layer_index: int,
        top_k: int = 1,
        noise_std: float = 0.0,
        anneal_fraction: float = 0.25,
        score: Score = "softmax",
        balance: Balance | None = None,
        shared: Experts | None = None,
        granularity: int = 1,
    ) -> None:
        super().__init__()
        n_experts = experts.n_experts
        # Experts before the gate: the parameter order (and so the float sums over it, as in
        # the gradient norm) stays the one of moectl's original layer.
        self.experts = experts
        self.gate = Router(hidden_size, n_experts, top_k, score)
        self.shared = shared
        self.balance = balance if balance is not None else SwitchBalance(n_experts)
        self.layer_index = layer_index
        self.n_experts = n_experts
        self.top_k = top_k
        self.granularity = granularity  # each upcycled copy is this many of the n_experts
        # The current noise std, kept on the layer's device: a Python float that changes every
        # step would make torch.compile re-trace the layer at each step.
        self.register_buffer("routing_noise", torch.tensor(float(noise_std)), persistent=False)
        self.progress: tuple[int, int] | None = None
        self.noise_std = noise_std
        self.anneal_fraction = anneal_fraction
        self.last_stats: Assignment | None = None
        self.last_losses: tuple[Tensor, Tensor] | None = None

    @classmethod
    def upcycle(
        cls,
        dense: DenseMLP,
        moe: MoEConfig,
        *,
        experts: type[Experts] = StackedExperts,
        hidden_size: int,
        layer_index: int,
        perturbation_std: float = 0.0,
        gate_init_std: float = 0.02,
        generator: torch.Generator | None = None,
    ) -> MoEMLP:
        """The MoE layer `moe` describes, its `experts` (the family's kind) made from `dense`.

        Routed experts copy `dense` (split into moe.granularity slices each) plus
        perturbation_std * param.std() * N(0, 1) noise; shared experts copy it exactly. The
        noise and the gate's N(0, gate_init_std) init come from `generator`, so a seed fixes
        the upcycled model. The g slices of one copy share a gate row, so with perturbation 0
        they are chosen together and the layer computes the dense MLP exactly.
        """
        g = moe.granularity
        routed = experts.upcycle(dense, moe.n_experts, perturbation_std, generator, g)
        shared = experts.upcycle(dense, moe.shared_experts) if moe.shared_experts else None
        layer = cls(
            routed,
            hidden_size,
            layer_index=layer_index,
            top_k=moe.routed_top_k,
            noise_std=moe.noise_std,
            anneal_fraction=moe.anneal_fraction,
            score=moe.score,
            balance=make_balance(moe, routed.n_experts),
            shared=shared,
            granularity=g,
        )
        gate = torch.randn((moe.n_experts, hidden_size), generator=generator) * gate_init_std
        device = dense.device
        gate = gate.repeat_interleave(g, dim=0) if g > 1 else gate
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
        noise = self.routing_noise if self.training and self.noise_std > 0 else 0.0
        sequences = x.shape[0] // shape[-2] if len(shape) > 2 else 1
        assignment = self.gate(x, noise, self.balance.selection_bias(), sequences)
        with torch.autocast(device_type=x.device.type, enabled=False):
            self.last_losses = (self.balance.aux_loss(assignment), z_loss(assignment.logits))
        out = self.experts(x, assignment.expert_index, assignment.expert_weight)
        if self.shared is not None:
            index = torch.arange(self.shared.n_experts, device=x.device).expand(x.shape[0], -1)
            out = out + self.shared(x, index, torch.ones(index.shape, device=x.device))
        self.last_stats = assignment.detached()
        return out.reshape(*shape[:-1], out.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"layer_index={self.layer_index}, n_experts={self.n_experts}, top_k={self.top_k}, "
            f"noise_std={self.noise_std}, anneal_fraction={self.anneal_fraction}"
        )
