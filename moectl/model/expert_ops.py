"""The grouped matrix multiply behind the dispatch, and its per-expert loop, as torch custom ops.

`moectl::expert_mm(x, weight, offsets, grouped)` is x[rows of e] @ weight[e] for every expert e
over rows sorted by expert (offsets: int32 end of each expert's rows). The last offset must equal
the row count: grouped_mm leaves rows past it unwritten (dispatch.group's counts sum to it). It
has two kernels: torch's `grouped_mm` (`grouped=True`: one call for all experts, no host read)
and a loop of matmuls over the experts' slices (`grouped=False`, the fallback; it reads the
offsets on the host). Its backward op runs the same kernel for dx and dW and makes the incoming
gradient contiguous first: grouped_mm refuses an expanded one (as from `y.sum()`), "Invalid
strides/sizes". As opaque ops with shape-only fake implementations they leave torch.compile a
single graph in any dtype; torch's own fake grouped_mm accepts bf16 only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GROUPED_MM = getattr(F, "grouped_mm", None)


def _spans(offsets: Tensor) -> list[tuple[int, int, int]]:
    """(expert, start, end) for every expert with rows; a host read (free on the CPU)."""
    spans, start = [], 0
    for e, end in enumerate(offsets.tolist()):
        if end > start:
            spans.append((e, start, end))
        start = end
    return spans


def grouped_kernel(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    """x[rows of e] @ weight[e] per expert in one call of torch's grouped_mm."""
    return GROUPED_MM(x.contiguous(), weight, offs=offsets)


def grouped_kernel_backward(
    grad: Tensor, x: Tensor, weight: Tensor, offsets: Tensor
) -> tuple[Tensor, Tensor]:
    """(dx, dW) of grouped_kernel: grad @ weight[e]^T per group, x[rows of e]^T @ grad[rows]."""
    grad_x = GROUPED_MM(grad, weight.transpose(1, 2), offs=offsets)
    return grad_x, GROUPED_MM(x.contiguous().t(), grad, offs=offsets)


def loop_kernel(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    """x[rows of e] @ weight[e] per expert, one matmul per expert with rows."""
    out = x.new_empty(x.shape[0], weight.shape[2])
    for e, start, end in _spans(offsets):
        torch.mm(x[start:end], weight[e], out=out[start:end])
    return out


def loop_kernel_backward(
    grad: Tensor, x: Tensor, weight: Tensor, offsets: Tensor
) -> tuple[Tensor, Tensor]:
    """(dx, dW) of loop_kernel; an expert without rows gets a zero weight gradient."""
    grad_x = torch.empty_like(x)
    grad_weight = torch.zeros_like(weight)
    for e, start, end in _spans(offsets):
        rows = grad[start:end]
        torch.mm(rows, weight[e].t(), out=grad_x[start:end])
        torch.mm(x[start:end].t(), rows, out=grad_weight[e])
    return grad_x, grad_weight


@torch.library.custom_op("moectl::expert_mm", mutates_args=())
def _expert_mm(x: Tensor, weight: Tensor, offsets: Tensor, grouped: bool) -> Tensor:
    return (grouped_kernel if grouped else loop_kernel)(x, weight, offsets)


@_expert_mm.register_fake
def _(x: Tensor, weight: Tensor, offsets: Tensor, grouped: bool) -> Tensor:
    return x.new_empty(x.shape[0], weight.shape[2])


@torch.library.custom_op("moectl::expert_mm_backward", mutates_args=())
def _expert_mm_backward(
    grad: Tensor, x: Tensor, weight: Tensor, offsets: Tensor, grouped: bool
) -> tuple[Tensor, Tensor]:
    backward = grouped_kernel_backward if grouped else loop_kernel_backward
    return backward(grad.contiguous(), x, weight, offsets)


@_expert_mm_backward.register_fake
def _(grad: Tensor, x: Tensor, weight: Tensor, offsets: Tensor, grouped: bool):
    return torch.empty_like(x), torch.empty_like(weight)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, offsets, grouped = inputs
    ctx.save_for_backward(x, weight, offsets)
    ctx.grouped = grouped


def _backward(ctx, grad: Tensor):
    x, weight, offsets = ctx.saved_tensors
    grad_x, grad_weight = torch.ops.moectl.expert_mm_backward(grad, x, weight, offsets, ctx.grouped)
    return grad_x, grad_weight, None, None


_expert_mm.register_autograd(_backward, setup_context=_setup_context)
