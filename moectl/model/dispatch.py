"""Token dispatch over stacked expert weights, without reading a device value on the host.

The token-expert assignments are sorted once by expert (a stable argsort); per-expert counts
come from a scatter-add and their running sum gives int32 group offsets, all on the device.
Each projection is then one grouped matrix multiply over the sorted rows:

- `torch.nn.functional.grouped_mm` where the kernel exists (CUDA, bf16, SM90 or later, rows
  16-byte aligned): one launch for all experts, no host sync;
- elsewhere a loop over the experts' slices (moectl.model.expert_ops): a whole GELU expert MLP
  per expert (`moectl::expert_mlp`, the CPU path), or one projection for other activations
  (`moectl::expert_linear`). Opaque custom ops: torch.compile still sees one graph.

Both run the same index logic and are tested equal in tests/test_model_moe.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from moectl.model import expert_ops  # noqa: F401 - registers the torch.ops.moectl loop ops

_grouped_mm = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


@dataclass
class Groups:
    """The top-k assignments of T tokens sorted by expert (N = T * k rows)."""

    token: Tensor  # (N,) long: the token of each sorted row
    expert: Tensor  # (N,) long: its expert, non-decreasing
    weight: Tensor  # (N,) its routing weight (carries gradient)
    offsets: Tensor  # (E,) int32: end of each expert's rows


def expert_counts(expert_index: Tensor, n_experts: int) -> Tensor:
    """Assignments per expert (E,) long, by scatter-add: bincount would sync on CUDA."""
    flat = expert_index.reshape(-1)
    counts = torch.zeros(n_experts, dtype=torch.long, device=flat.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat))


def group(expert_index: Tensor, weights: Tensor, n_experts: int) -> Groups:
    """Sort the (T, k) assignments by expert; ties keep token order (stable)."""
    top_k = expert_index.shape[1]
    flat = expert_index.reshape(-1)
    order = flat.argsort(stable=True)
    token = order // top_k if top_k > 1 else order
    offsets = expert_counts(flat, n_experts).cumsum(0).to(torch.int32)
    weight = weights.reshape(-1).index_select(0, order)
    return Groups(token=token, expert=flat.index_select(0, order), weight=weight, offsets=offsets)


@torch.compiler.assume_constant_result
def _sm90_or_later(index: int) -> bool:
    return torch.version.hip is None and torch.cuda.get_device_capability(index) >= (9, 0)


def grouped_mm_supported(x: Tensor, weight: Tensor) -> bool:
    """Whether `x @ weight[e]` per group can run as one grouped_mm kernel on this device."""
    if _grouped_mm is None or x.device.type != "cuda":
        return False
    aligned = x.shape[1] % 8 == 0 and weight.shape[2] % 8 == 0
    bf16 = x.dtype == torch.bfloat16 and weight.dtype == torch.bfloat16
    return aligned and bf16 and _sm90_or_later(x.device.index or 0)


def expert_linear(
    x: Tensor, weight: Tensor, bias: Tensor, groups: Groups, grouped: bool | None = None
) -> Tensor:
    """x[rows of e] @ weight[e] + bias[e] for every expert e: x (N, K), weight (E, K, M).

    The groups cover every row (offsets[-1] == N). `grouped` picks the implementation (None:
    grouped_mm where supported, else the loop).
    """
    if grouped is None:
        grouped = grouped_mm_supported(x, weight)
    if grouped:
        out = _grouped_mm(x, weight, offs=groups.offsets)
        return out + bias.index_select(0, groups.expert)
    return torch.ops.moectl.expert_linear(x, weight, bias, groups.offsets)


def expert_gelu_mlp(
    x: Tensor,
    fc_weight: Tensor,
    fc_bias: Tensor,
    proj_weight: Tensor,
    proj_bias: Tensor,
    groups: Groups,
    approximate: str,
) -> Tensor:
    """The per-expert loop of a whole GELU MLP (F.gelu with `approximate`) over the sorted rows."""
    out, _ = torch.ops.moectl.expert_mlp(
        x, fc_weight, fc_bias, proj_weight, proj_bias, groups.offsets, approximate
    )
    return out


def combine(y: Tensor, groups: Groups, n_tokens: int) -> Tensor:
    """sum over each token's assignments of weight * expert output: (N, D) -> (T, D)."""
    weighted = y * groups.weight.unsqueeze(1).to(y.dtype)
    return y.new_zeros(n_tokens, y.shape[1]).index_add_(0, groups.token, weighted)
