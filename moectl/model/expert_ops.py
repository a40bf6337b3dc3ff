"""The per-expert loops behind the dispatch's non-grouped path, as torch custom ops.

`moectl::expert_linear` is one projection, x[rows of e] @ weight[e] + bias[e] per expert;
`moectl::expert_mlp` a whole GELU expert MLP per expert's rows (both projections and the GELU on
one expert's rows at a time, so the (rows, 4D) intermediates stay in cache on the CPU; backward
recomputes the GELU instead of keeping its output). Each reads the int32 group offsets on the
host, which costs nothing on the CPU; as opaque ops with fake (shape-only) implementations and
registered autograd, they leave torch.compile a single graph. Rows must be sorted by expert and
covered by the offsets (offsets[-1] == rows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
