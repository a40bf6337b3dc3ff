"""n GPT-2 MLP experts as stacked weights: one parameter per projection, leading expert dim.

This is the layout transformers' own MoE models use (Mixtral, Qwen-MoE, OLMoE): `fc_weight`
(E, D, H), `fc_bias` (E, H), `proj_weight` (E, H, D), `proj_bias` (E, D), each expert slice in
GPT-2's Conv1D orientation (in, out), so upcycling stacks the dense MLP's tensors as they are
and a whole layer's experts run as one grouped matrix multiply per projection
(moectl.model.dispatch). Model artifacts of format 1 held one `GPT2MLP` per expert;
moectl.model.io stacks those on load.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moectl.model.dispatch import combine, expert_linear, group

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
        dense: nn.Module,
        n_experts: int,
        perturbation_std: float = 0.0,
        generator: torch.Generator | None = None,
        granularity: int = 1,
    ) -> StackedExperts:
        """`n_experts` copies of the GPT2MLP `dense`, each parameter (numel > 1) plus noise.

        With `granularity` g each copy is split into g experts of inner width H/g (DeepSeekMoE's
        fine-grained experts): slice j keeps fc columns and proj rows j*H/g..(j+1)*H/g, its proj
        weight scaled by g and the full proj bias, so the g slices weighted 1/g each sum to the
        dense MLP. Expert e*g + j is slice j of copy e. The noise is perturbation_std * (the
        dense parameter's std) * N(0, 1), drawn from `generator` expert by expert in the order
        c_fc.weight, c_fc.bias, c_proj.weight, c_proj.bias: the draws of format-1 upcycling, so
        a seed gives the same experts.
        """
        fc, proj = dense.c_fc, dense.c_proj
        hidden, inner = fc.weight.shape
        if inner % granularity:
            raise ValueError(f"granularity {granularity} does not divide the MLP width {inner}")
        width = inner // granularity
        n_total = n_experts * granularity
        experts = cls(n_total, hidden, width, copy.deepcopy(dense.act), dense.dropout.p)
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
                            shape = target.shape[1:]
                            noise = torch.randn(shape, generator=generator).to(source)
                            target[e].add_(noise * (perturbation_std * source.std()))
        return experts

    def forward(self, x: Tensor, expert_index: Tensor, weights: Tensor) -> Tensor:
        """sum_k weights[t, k] * expert_{expert_index[t, k]}(x[t]) for x (T, D)."""
        groups = group(expert_index, weights, self.n_experts)
        # The dispatch's op is opaque to autocast, so cast to the autocast dtype here, as
        # F.linear would.
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
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
