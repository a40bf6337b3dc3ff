"""Token dispatch over stacked expert weights, without reading a device value on the host.

The token-expert assignments are sorted once by expert (a stable argsort); per-expert counts
come from a scatter-add and their running sum gives int32 group offsets, all on the device.
Each projection is then one grouped matrix multiply over the sorted rows, the custom op
`moectl::expert_mm` (moectl.model.expert_ops), on every device. Its kernel:

- torch's `grouped_mm` wherever it exists and runs: a capability check, not a device name. A
  tiny probe call, forward and backward, per (device type, dtype), cached, must give the loop's
  exact results; and every row stride must be a multiple of 16 bytes, as its kernels require
  (CPU fp32/bf16/fp16 in torch 2.13; CUDA where the kernel exists). One call for all experts,
  no host sync;
- the per-expert loop only as the fallback (float64, unaligned widths, a torch without
  grouped_mm); it reads the offsets on the host.

tests/model/test_dispatch.py checks the two kernels equal, forward and backward.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from moectl.model.expert_ops import (
    GROUPED_MM,
    grouped_kernel,
    grouped_kernel_backward,
    loop_kernel,
    loop_kernel_backward,
)


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


@functools.cache
def _probe(device_type: str, dtype: torch.dtype) -> bool:
    """Whether grouped_mm runs here and equals the loop, forward and backward (uneven groups,
    an empty one), on small integers that every dtype holds exactly."""
    if GROUPED_MM is None:
        return False

    def small_integers(*shape: int, modulo: int) -> Tensor:
        values = torch.arange(torch.Size(shape).numel()).remainder(modulo).reshape(shape)
        return values.to(device_type, dtype)

    x, grad = small_integers(48, 16, modulo=5), small_integers(48, 16, modulo=2)
    weight = small_integers(3, 16, 16, modulo=3)
    offsets = torch.tensor([16, 16, 48], device=device_type, dtype=torch.int32)
    try:
        grouped = (grouped_kernel(x, weight, offsets),)
        grouped += grouped_kernel_backward(grad, x, weight, offsets)
    except (RuntimeError, NotImplementedError):
        return False
    loop = (loop_kernel(x, weight, offsets), *loop_kernel_backward(grad, x, weight, offsets))
    return all(torch.equal(a, b) for a, b in zip(grouped, loop, strict=True))


@torch.compiler.assume_constant_result
def grouped_mm_runs(device_type: str, dtype: torch.dtype) -> bool:
    """The cached probe; a constant to torch.compile, which never traces the probe call."""
    return _probe(device_type, dtype)


def grouped_mm_supported(x: Tensor, weight: Tensor) -> bool:
    """Whether `x @ weight[e]` per group runs as torch's grouped_mm for these tensors."""
    widths = (x.shape[1], weight.shape[2])
    aligned = all(width * x.element_size() % 16 == 0 for width in widths)
    same = x.dtype == weight.dtype and x.device == weight.device
    return aligned and same and grouped_mm_runs(x.device.type, x.dtype)


def expert_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, groups: Groups, grouped: bool | None = None
) -> Tensor:
    """x[rows of e] @ weight[e] + bias[e] for every expert e: x (N, K), weight (E, K, M).

    The groups cover every row (offsets[-1] == N). `grouped` picks the kernel (None:
    grouped_mm where supported, else the loop). A bias-free projection (SwiGLU's) passes None.
    """
    if grouped is None:
        grouped = grouped_mm_supported(x, weight)
    out = torch.ops.moectl.expert_mm(x, weight, groups.offsets, grouped)
    return out if bias is None else out + bias.index_select(0, groups.expert)


def combine(y: Tensor, groups: Groups, n_tokens: int) -> Tensor:
    """sum over each token's assignments of weight * expert output: (N, D) -> (T, D)."""
    weighted = y * groups.weight.unsqueeze(1).to(y.dtype)
    return y.new_zeros(n_tokens, y.shape[1]).index_add_(0, groups.token, weighted)
