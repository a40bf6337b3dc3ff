"""Grouped token dispatch: each expert runs one dense matmul on exactly its tokens.

The token-expert assignments are grouped once (a stable sort and a bincount). Two autograd
functions move rows between token order and expert order without the copies plain autograd
would add: the gather's backward scatters each expert's input gradient straight into the token
gradient (no concatenation), and the combine scatters each expert's output into the layer output
(no concatenation; for top-1, whose weights are exactly 1.0 and whose assignment order is a
permutation of the tokens, no multiply, no zero fill, and one row-wise dot for the router).
docs/benchmarks.md has the timings against the dense MLP and a per-expert mask loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

Spans = list[tuple[int, int]]


class _Gather(torch.autograd.Function):
    """x (T, D) -> x[token] in expert order, split into one tensor per busy expert."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, token: Tensor, spans: Spans, permutation: bool):
        ctx.save_for_backward(token)
        ctx.spans, ctx.permutation, ctx.n_tokens = spans, permutation, x.shape[0]
        return x.index_select(0, token).split([b - a for a, b in spans])

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None):
        (token,) = ctx.saved_tensors
        present = [(span, g) for span, g in zip(ctx.spans, grads, strict=True) if g is not None]
        like = present[0][1]
        shape = (ctx.n_tokens, like.shape[1])
        complete = ctx.permutation and len(present) == len(ctx.spans)
        grad_x = like.new_empty(shape) if complete else like.new_zeros(shape)
        for (a, b), g in present:
            if complete:
                grad_x.index_copy_(0, token[a:b], g)
            else:
                grad_x.index_add_(0, token[a:b], g)
        return grad_x, None, None, None


class _Combine(torch.autograd.Function):
    """Expert outputs in expert order -> sum over assignments of weight * output, per token."""

    @staticmethod
    def forward(
        ctx: Any,
        token: Tensor,
        weight: Tensor,
        spans: Spans,
        n_tokens: int,
        permutation: bool,
        *outputs: Tensor,
    ):
        # Top-1: every weight is exactly 1.0 and each token appears once, so y is a pure scatter.
        fast = permutation and bool((weight == 1).all())
        first = outputs[0]
        shape = (n_tokens, first.shape[1])
        y = first.new_empty(shape) if permutation else first.new_zeros(shape)
        for (a, b), out in zip(spans, outputs, strict=True):
            src = out if fast else out * weight[a:b].unsqueeze(1).to(out.dtype)
            if permutation:
                y.index_copy_(0, token[a:b], src)
            else:
                y.index_add_(0, token[a:b], src)
        ctx.spans, ctx.fast = spans, fast
        ctx.save_for_backward(token, weight, y, *([] if fast else outputs))
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor):
        token, weight, y, *outputs = ctx.saved_tensors
        grad_sorted = grad_y.index_select(0, token)
        sizes = [b - a for a, b in ctx.spans]
        want_weight = ctx.needs_input_grad[1]
        if ctx.fast:
            # y[token[i]] is output row i, so d/dweight is a row-wise dot with y.
            grad_weight = None
            if want_weight:
                dots = torch.linalg.vecdot(grad_y, y.to(grad_y.dtype))
                grad_weight = dots.index_select(0, token).to(weight.dtype)
            return None, grad_weight, None, None, None, *grad_sorted.split(sizes)
        grad_weight = torch.zeros_like(weight) if want_weight else None
        grad_outputs = []
        for (a, b), g, out in zip(ctx.spans, grad_sorted.split(sizes), outputs, strict=True):
            if grad_weight is not None:
                grad_weight[a:b] = torch.linalg.vecdot(g, out.to(g.dtype)).to(weight.dtype)
            grad_outputs.append(g * weight[a:b].unsqueeze(1).to(g.dtype))
        return None, grad_weight, None, None, None, *grad_outputs


def dispatch(x: Tensor, expert_index: Tensor, weights: Tensor, experts: nn.ModuleList) -> Tensor:
    """sum_k weights[t, k] * experts[expert_index[t, k]](x[t]) for every token t of `x` (T, D)."""
    n_tokens, top_k = expert_index.shape
    flat = expert_index.reshape(-1)
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=len(experts)).tolist()
    token = order // top_k if top_k > 1 else order
    starts = [sum(counts[:e]) for e in range(len(counts))]
    busy = [e for e, n in enumerate(counts) if n]
    spans = [(starts[e], starts[e] + counts[e]) for e in busy]
    permutation = top_k == 1
    chunks = _Gather.apply(x, token, spans, permutation)
    outputs = [experts[e](chunk) for e, chunk in zip(busy, chunks, strict=True)]
    weight = weights.reshape(-1).index_select(0, order)
    return _Combine.apply(token, weight, spans, n_tokens, permutation, *outputs)
