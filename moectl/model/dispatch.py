"""Token dispatch over stacked expert weights, without reading a device value on the host.

The token-expert assignments are sorted once by expert (a stable argsort); per-expert counts
come from a scatter-add and their running sum gives int32 group offsets, all on the device.
Each projection is then one grouped matrix multiply over the sorted rows:

- `torch.nn.functional.grouped_mm` where the kernel exists (CUDA, bf16, SM90 or later, rows
  16-byte aligned): one launch for all experts, no host sync;
- elsewhere a loop over the experts' slices, as custom ops: `moectl::expert_mlp` runs a whole
  GELU expert MLP per expert (both projections and the GELU on one expert's rows at a time, so
  the (rows, 4D) intermediates stay in cache on the CPU, and backward recomputes the GELU rather
  than keeping its output), `moectl::expert_linear` one projection for any other activation.
  They read the offsets on the host, which costs nothing on the CPU; being opaque ops, they
  leave torch.compile a single graph for the layer.

Both run the same index logic and are tested equal in tests/test_model_moe.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

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


def _spans(offsets: Tensor) -> list[tuple[int, int, int]]:
    """(expert, start, end) for every expert with rows; a host read (free on the CPU)."""
    spans, start = [], 0
    for e, end in enumerate(offsets.tolist()):
        if end > start:
            spans.append((e, start, end))
        start = end
    return spans


@torch.library.custom_op("moectl::expert_linear", mutates_args=())
def _expert_linear_loop(x: Tensor, weight: Tensor, bias: Tensor, offsets: Tensor) -> Tensor:
    out = x.new_empty(x.shape[0], weight.shape[2])
    for e, start, end in _spans(offsets):
        torch.addmm(bias[e], x[start:end], weight[e], out=out[start:end])
    return out


@_expert_linear_loop.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor, offsets: Tensor) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[2])


@torch.library.custom_op("moectl::expert_linear_backward", mutates_args=())
def _expert_linear_loop_backward(
    grad: Tensor, x: Tensor, weight: Tensor, offsets: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    grad = grad.contiguous()
    grad_x = torch.empty_like(x)
    grad_weight = torch.zeros_like(weight)
    grad_bias = weight.new_zeros(weight.shape[0], weight.shape[2])
    for e, start, end in _spans(offsets):
        rows = grad[start:end]
        torch.mm(rows, weight[e].t(), out=grad_x[start:end])
        torch.mm(x[start:end].t(), rows, out=grad_weight[e])
        torch.sum(rows, dim=0, out=grad_bias[e])
    return grad_x, grad_weight, grad_bias


@_expert_linear_loop_backward.register_fake
def _(grad: Tensor, x: Tensor, weight: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    bias = weight.new_empty(weight.shape[0], weight.shape[2])
    return torch.empty_like(x), torch.empty_like(weight), bias


def _setup_context(ctx, inputs, output) -> None:
    x, weight, _, offsets = inputs
    ctx.save_for_backward(x, weight, offsets)


def _backward(ctx, grad: Tensor):
    x, weight, offsets = ctx.saved_tensors
    grad_x, grad_weight, grad_bias = torch.ops.moectl.expert_linear_backward(
        grad, x, weight, offsets
    )
    return grad_x, grad_weight, grad_bias, None


_expert_linear_loop.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("moectl::expert_mlp", mutates_args=())
def _expert_mlp_loop(
    x: Tensor,
    fc_weight: Tensor,
    fc_bias: Tensor,
    proj_weight: Tensor,
    proj_bias: Tensor,
    offsets: Tensor,
    approximate: str,
) -> tuple[Tensor, Tensor]:
    out = x.new_empty(x.shape[0], proj_weight.shape[2])
    pre = x.new_empty(x.shape[0], fc_weight.shape[2])
    for e, start, end in _spans(offsets):
        torch.addmm(fc_bias[e], x[start:end], fc_weight[e], out=pre[start:end])
        hidden = F.gelu(pre[start:end], approximate=approximate)
        torch.addmm(proj_bias[e], hidden, proj_weight[e], out=out[start:end])
    return out, pre


@_expert_mlp_loop.register_fake
def _(x, fc_weight, fc_bias, proj_weight, proj_bias, offsets, approximate):
    out = x.new_empty(x.shape[0], proj_weight.shape[2])
    return out, x.new_empty(x.shape[0], fc_weight.shape[2])


@torch.library.custom_op("moectl::expert_mlp_backward", mutates_args=())
def _expert_mlp_loop_backward(
    grad: Tensor,
    x: Tensor,
    pre: Tensor,
    fc_weight: Tensor,
    proj_weight: Tensor,
    offsets: Tensor,
    approximate: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    grad = grad.contiguous()
    grad_x = torch.empty_like(x)
    grads = [torch.zeros_like(fc_weight), fc_weight.new_zeros(fc_weight.shape[::2])]
    grads += [torch.zeros_like(proj_weight), proj_weight.new_zeros(proj_weight.shape[::2])]
    grad_fc_weight, grad_fc_bias, grad_proj_weight, grad_proj_bias = grads
    for e, start, end in _spans(offsets):
        rows, pre_rows = grad[start:end], pre[start:end]
        torch.mm(F.gelu(pre_rows, approximate=approximate).t(), rows, out=grad_proj_weight[e])
        torch.sum(rows, dim=0, out=grad_proj_bias[e])
        grad_hidden = torch.ops.aten.gelu_backward(
            rows.mm(proj_weight[e].t()), pre_rows, approximate=approximate
        )
        torch.mm(x[start:end].t(), grad_hidden, out=grad_fc_weight[e])
        torch.sum(grad_hidden, dim=0, out=grad_fc_bias[e])
        torch.mm(grad_hidden, fc_weight[e].t(), out=grad_x[start:end])
    return grad_x, grad_fc_weight, grad_fc_bias, grad_proj_weight, grad_proj_bias


@_expert_mlp_loop_backward.register_fake
def _(grad, x, pre, fc_weight, proj_weight, offsets, approximate):
    fc_bias = fc_weight.new_empty(fc_weight.shape[::2])
    proj_bias = proj_weight.new_empty(proj_weight.shape[::2])
    return (
        torch.empty_like(x),
        torch.empty_like(fc_weight),
        fc_bias,
        torch.empty_like(proj_weight),
        proj_bias,
    )


def _mlp_setup_context(ctx, inputs, output) -> None:
    x, fc_weight, _, proj_weight, _, offsets, approximate = inputs
    ctx.save_for_backward(x, output[1], fc_weight, proj_weight, offsets)
    ctx.approximate = approximate


def _mlp_backward(ctx, grad: Tensor, _grad_pre: Tensor | None):
    x, pre, fc_weight, proj_weight, offsets = ctx.saved_tensors
    grads = torch.ops.moectl.expert_mlp_backward(
        grad, x, pre, fc_weight, proj_weight, offsets, ctx.approximate
    )
    return *grads, None, None


_expert_mlp_loop.register_autograd(_mlp_backward, setup_context=_mlp_setup_context)


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
