"""n MLP experts as stacked weights: one parameter per projection, leading expert dim.

This is the layout transformers' own MoE models use (Mixtral, Qwen-MoE, OLMoE), in two kinds:

- `StackedExperts`, GPT-2's GELU MLP: `fc_weight` (E, D, H), `fc_bias` (E, H), `proj_weight`
  (E, H, D), `proj_bias` (E, D), each expert slice in GPT-2's Conv1D orientation (in, out), so
  upcycling stacks the dense MLP's tensors as they are. Model artifacts of format 1 held one
  `GPT2MLP` per expert; moectl.model.io stacks those on load.
- `SwiGLUExperts`, the Llama family's bias-free gated MLP: `gate_up` (E, D, 2F) holding the gate
  and up projections side by side, `down` (E, F, D), in (in, out) orientation (nn.Linear's
  weights transposed).

Either way a whole layer's experts run as one grouped matrix multiply per projection
(moectl.model.dispatch), and `upcycle` has one signature, so the MoE layer never asks which
kind it holds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moectl.model.dispatch import combine, expert_linear, group


@dataclass
class DenseMLP:
    """A block's dense MLP as the experts copy it, its projections under generic roles that the
    architecture family fills in (moectl.model.arch): `fc`, `proj` (GELU, Conv1D (in, out)
    weights with biases) or `gate`, `up`, `down` (SwiGLU, bias-free nn.Linear)."""

    projections: dict[str, nn.Module]
    act: nn.Module
    dropout: float
    training: bool

    @property
    def device(self) -> torch.device:
        return next(iter(self.projections.values())).weight.device


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the experts compute in: the dispatch's op is opaque to autocast, so the experts
    cast to the autocast dtype themselves, as F.linear would."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def slice_width(inner: int, granularity: int) -> int:
    """The inner width of each of the `granularity` fine-grained experts an MLP `inner` wide is
    split into (both expert kinds' upcycle); a ValueError when it does not divide."""
    if inner % granularity:
        raise ValueError(f"granularity {granularity} does not divide the MLP width {inner}")
    return inner // granularity


def _noise(shape: torch.Size, source: Tensor, std: float, generator: torch.Generator | None):
    """perturbation noise for one expert's slice: std * (the dense parameter's std) * N(0, 1)."""
    return torch.randn(shape, generator=generator).to(source) * (std * source.std())


# transformers' GELU modules -> F.gelu's `approximate`: gelu_new (GPT-2's) and
# gelu_pytorch_tanh are the tanh form, gelu the exact one. Other activations run as modules.
GELU_FORMS = {"NewGELUActivation": "tanh", "GELUTanh": "tanh", "GELUActivation": "none"}


class StackedExperts(nn.Module):
    """The experts of one MoE layer; `forward` runs each token through its top-k experts.

    The activation and the output dropout are the dense MLP's own modules. Dropout applies once
    to the combined output, as it does to a dense MLP's output. `grouped` forces the grouped_mm
    path (True) or the per-expert loop (False); None picks grouped_mm where it is supported.
    """

    def __init__(
        self, n_experts: int, hidden_size: int, inner_size: int, act: nn.Module, dropout: float
    ) -> None:
        super().__init__()
        self.fc_weight = nn.Parameter(torch.empty(n_experts, hidden_size, inner_size))
        self.fc_bias = nn.Parameter(torch.empty(n_experts, inner_size))
        self.proj_weight = nn.Parameter(torch.empty(n_experts, inner_size, hidden_size))
        self.proj_bias = nn.Parameter(torch.empty(n_experts, hidden_size))
        self.act = act
        self.gelu = GELU_FORMS.get(type(act).__name__)
        self.dropout = nn.Dropout(dropout)
        self.grouped: bool | None = None

    @property
    def n_experts(self) -> int:
        return self.fc_weight.shape[0]

    @classmethod
    def upcycle(
        cls,
        dense: DenseMLP,
        n_experts: int,
        perturbation_std: float = 0.0,
        generator: torch.Generator | None = None,
        granularity: int = 1,
    ) -> StackedExperts:
        """`n_experts` copies of the GELU MLP `dense`, each parameter (numel > 1) plus noise.

        With `granularity` g each copy is split into g experts of inner width H/g (DeepSeekMoE's
        fine-grained experts): slice j keeps fc columns and proj rows j*H/g..(j+1)*H/g, its proj
        weight scaled by g and the full proj bias, so the g slices weighted 1/g each sum to the
        dense MLP. Expert e*g + j is slice j of copy e. The noise is perturbation_std * (the
        dense parameter's std) * N(0, 1), drawn from `generator` expert by expert in the order
        fc weight, fc bias, proj weight, proj bias: the draws of format-1 upcycling, so a seed
        gives the same experts.
        """
        fc, proj = dense.projections["fc"], dense.projections["proj"]
        hidden, inner = fc.weight.shape
        width = slice_width(inner, granularity)
        n_total = n_experts * granularity
        experts = cls(n_total, hidden, width, copy.deepcopy(dense.act), dense.dropout)
        dense_params = [fc.weight, fc.bias, proj.weight, proj.bias]
        slices = [
            fc.weight.detach().reshape(hidden, granularity, width).transpose(0, 1),
            fc.bias.detach().reshape(granularity, width),
            proj.weight.detach().reshape(granularity, width, hidden) * granularity,
            proj.bias.detach().expand(granularity, hidden),
        ]
        stacked = [experts.fc_weight, experts.fc_bias, experts.proj_weight, experts.proj_bias]
        experts.to(device=fc.weight.device, dtype=fc.weight.dtype).train(dense.training)
        with torch.no_grad():
            for target, source in zip(stacked, slices, strict=True):
                target.copy_(source.repeat(n_experts, *[1] * (source.dim() - 1)))
            if perturbation_std > 0:
                for e in range(n_total):
                    for target, source in zip(stacked, dense_params, strict=True):
                        if source.numel() > 1:
                            target[e].add_(
                                _noise(target.shape[1:], source, perturbation_std, generator)
                            )
        return experts

    def forward(self, x: Tensor, expert_index: Tensor, weights: Tensor) -> Tensor:
        """sum_k weights[t, k] * expert_{expert_index[t, k]}(x[t]) for x (T, D)."""
        groups = group(expert_index, weights, self.n_experts)
        dtype = compute_dtype(x)
        rows = x.to(dtype).index_select(0, groups.token)
        params = [p.to(dtype) for p in (self.fc_weight, self.fc_bias)]
        params += [p.to(dtype) for p in (self.proj_weight, self.proj_bias)]
        fc_weight, fc_bias, proj_weight, proj_bias = params
        hidden = expert_linear(rows, fc_weight, fc_bias, groups, self.grouped)
        hidden = F.gelu(hidden, approximate=self.gelu) if self.gelu else self.act(hidden)
        out = expert_linear(hidden, proj_weight, proj_bias, groups, self.grouped)
        return self.dropout(combine(out, groups, x.shape[0]))

    def extra_repr(self) -> str:
        n, hidden, inner = self.fc_weight.shape
        return f"n_experts={n}, hidden_size={hidden}, inner_size={inner}, grouped={self.grouped}"


class SwiGLUExperts(nn.Module):
    """Bias-free SwiGLU experts (the Llama family's MLP): down(act(x @ gate) * (x @ up)).

    `gate_up` (E, D, 2F) holds each expert's gate columns then its up columns, so both
    projections run as one grouped matrix multiply; `down` is (E, F, D). The activation is the
    dense MLP's own module (SiLU for every supported checkpoint). `grouped` as StackedExperts.
    """

    def __init__(self, n_experts: int, hidden_size: int, inner_size: int, act: nn.Module) -> None:
        super().__init__()
        self.gate_up = nn.Parameter(torch.empty(n_experts, hidden_size, 2 * inner_size))
        self.down = nn.Parameter(torch.empty(n_experts, inner_size, hidden_size))
        self.act = act
        self.grouped: bool | None = None

    @property
    def n_experts(self) -> int:
        return self.gate_up.shape[0]

    @classmethod
    def upcycle(
        cls,
        dense: DenseMLP,
        n_experts: int,
        perturbation_std: float = 0.0,
        generator: torch.Generator | None = None,
        granularity: int = 1,
    ) -> SwiGLUExperts:
        """`n_experts` copies of the SwiGLU MLP `dense` (gate, up, down), plus noise.

        With `granularity` g each copy is split into g experts of inner width F/g: slice j keeps
        gate and up rows j*F/g..(j+1)*F/g and the matching down columns, scaled by g, so the g
        slices weighted 1/g each sum to the dense MLP (the product gate * up is elementwise per
        inner unit, so the split is exact). Expert e*g + j is slice j of copy e. The noise is
        perturbation_std * (the dense weight's std) * N(0, 1), drawn from `generator` expert by
        expert in the order gate, up, down.
        """
        gate, up, down = (dense.projections[role].weight for role in ("gate", "up", "down"))
        inner, hidden = gate.shape
        width = slice_width(inner, granularity)
        n_total = n_experts * granularity
        experts = cls(n_total, hidden, width, copy.deepcopy(dense.act))
        experts.to(device=gate.device, dtype=gate.dtype).train(dense.training)

        def columns(weight: Tensor) -> Tensor:  # (F, D) nn.Linear weight -> (g, D, F/g)
            return weight.detach().t().reshape(hidden, granularity, width).transpose(0, 1)

        gate_up = torch.cat([columns(gate), columns(up)], dim=2)
        rows = down.detach().t().reshape(granularity, width, hidden) * granularity
        with torch.no_grad():
            experts.gate_up.copy_(gate_up.repeat(n_experts, 1, 1))
            experts.down.copy_(rows.repeat(n_experts, 1, 1))
            if perturbation_std > 0:
                for e in range(n_total):
                    half = torch.Size((hidden, width))
                    noise = [_noise(half, w, perturbation_std, generator) for w in (gate, up)]
                    experts.gate_up[e].add_(torch.cat(noise, dim=1))
                    shape = experts.down.shape[1:]
                    experts.down[e].add_(_noise(shape, down, perturbation_std, generator))
        return experts

    def forward(self, x: Tensor, expert_index: Tensor, weights: Tensor) -> Tensor:
        """sum_k weights[t, k] * expert_{expert_index[t, k]}(x[t]) for x (T, D)."""
        groups = group(expert_index, weights, self.n_experts)
        dtype = compute_dtype(x)
        rows = x.to(dtype).index_select(0, groups.token)
        both = expert_linear(rows, self.gate_up.to(dtype), None, groups, self.grouped)
        gate, up = both.chunk(2, dim=1)
        hidden = self.act(gate) * up
        out = expert_linear(hidden, self.down.to(dtype), None, groups, self.grouped)
        return combine(out, groups, x.shape[0])

    def extra_repr(self) -> str:
        n, hidden, inner = self.down.shape[0], self.down.shape[2], self.down.shape[1]
        return f"n_experts={n}, hidden_size={hidden}, inner_size={inner}, grouped={self.grouped}"
