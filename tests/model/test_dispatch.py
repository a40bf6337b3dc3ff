"""The one dispatch path (issue 19): torch's grouped_mm kernel on this CPU, the per-expert loop as
its fallback, and their agreement, eager and compiled."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.models import mlp_layer

from moectl.model import expert_ops
from moectl.model.dispatch import (
    expert_counts,
    expert_linear,
    group,
    grouped_mm_runs,
    grouped_mm_supported,
)
from moectl.model.router import route

DTYPES = [torch.float32, torch.bfloat16]


def routed(n_tokens: int, n_experts: int, top_k: int, seed: int):
    """Top-k routing of random logits with uneven groups and expert 2 starved (an empty group)."""
    logits = torch.randn(n_tokens, n_experts, generator=torch.Generator().manual_seed(seed))
    logits[:, 0] += 1.5  # expert 0 takes the most rows
    logits[:, 2] -= 100
    return route(logits, top_k)


def random(*shape, dtype, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_grouped_mm_runs_on_this_cpu_in_fp32_and_bf16_and_not_in_fp64():
    assert grouped_mm_runs("cpu", torch.float32) and grouped_mm_runs("cpu", torch.bfloat16)
    assert not grouped_mm_runs("cpu", torch.float64)


def test_rows_must_be_16_byte_aligned_for_the_grouped_kernel():
    weight = torch.empty(4, 32, 128)
    assert grouped_mm_supported(torch.empty(10, 32), weight)
    assert not grouped_mm_supported(torch.empty(10, 30), torch.empty(4, 30, 128))
    assert not grouped_mm_supported(torch.empty(10, 32), torch.empty(4, 32, 126))
    assert not grouped_mm_supported(torch.empty(10, 32, dtype=torch.float64), weight.double())
    half = weight.bfloat16()  # 2 bytes a value: widths in multiples of 8
    assert grouped_mm_supported(torch.empty(10, 24, dtype=torch.bfloat16), half[:, :24])
    assert not grouped_mm_supported(torch.empty(10, 20, dtype=torch.bfloat16), half[:, :20])


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_grouped_and_loop_kernels_are_exactly_equal_forward_and_backward(dtype, top_k):
    """Uneven groups and an empty one; odd sizes (24 -> 40) that are still 16-byte aligned."""
    routing = routed(37, 4, top_k, seed=top_k)
    groups = group(routing.expert_index, routing.expert_weight, 4)
    assert expert_counts(routing.expert_index, 4)[2] == 0
    rows = groups.offsets[-1].item()
    results = []
    for grouped in (True, False):
        x = random(rows, 24, dtype=dtype, seed=1).requires_grad_()
        weight = random(4, 24, 40, dtype=dtype, seed=2).requires_grad_()
        bias = random(4, 40, dtype=dtype, seed=3).requires_grad_()
        out = expert_linear(x, weight, bias, groups, grouped)
        out.backward(random(rows, 40, dtype=dtype, seed=4))
        results.append((out, x.grad, weight.grad, bias.grad))
    for got, want in zip(*results, strict=True):
        assert torch.equal(got, want)
    assert results[0][2][2].abs().max() == 0  # the empty group's weight gradient


def test_the_grouped_backward_takes_an_expanded_incoming_gradient():
    """`y.sum().backward()` hands grouped_mm an expanded (stride 0) gradient, which torch's own
    kernel refuses; the dispatch makes it contiguous at the op's boundary."""
    groups = group(torch.tensor([[1], [0], [1], [3]]), torch.ones(4, 1), n_experts=4)
    x = torch.randn(4, 16, requires_grad=True)
    weight = torch.randn(4, 16, 8, requires_grad=True)
    expert_linear(x, weight, torch.zeros(4, 8), groups, grouped=True).sum().backward()
    # sorted rows: expert 0 (token 1), expert 1 (tokens 0, 2), expert 3 (token 3)
    want = weight.detach()[[0, 1, 1, 3]].sum(2)
    torch.testing.assert_close(x.grad, want)
    torch.testing.assert_close(weight.grad[3], x.detach()[3].unsqueeze(1).expand(16, 8))
    assert weight.grad[2].abs().max() == 0


def layer_pass(layer, x, grouped: bool | None):
    """Output and gradients (input, gate, all expert parameters) of one MoE forward+backward."""
    layer.zero_grad()
    layer.experts.grouped = grouped
    xg = x.clone().requires_grad_()
    out = layer(xg)
    lb_loss, z_loss = layer.last_losses
    (out.float().square().sum() + lb_loss + z_loss).backward()
    grads = [xg.grad] + [p.grad for p in layer.parameters()]
    return [out.detach(), *grads]


class GroupedMMCalls:
    """Counts the calls of torch's grouped_mm made by the dispatch's kernel."""

    def __init__(self, monkeypatch) -> None:
        self.calls = 0
        monkeypatch.setattr(expert_ops, "GROUPED_MM", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return F.grouped_mm(*args, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_layer_runs_grouped_mm_forward_and_backward_and_agrees_with_the_loop(
    monkeypatch, dtype, top_k
):
    layer = mlp_layer(top_k=top_k, n_experts=4, noise_std=0.0).to(dtype).train()
    layer.experts.dropout.p = 0.0
    x = random(3, 16, 32, dtype=dtype, seed=5)
    assert grouped_mm_supported(x[0], layer.experts.fc_weight)  # probed before counting
    counter = GroupedMMCalls(monkeypatch)
    grouped = layer_pass(layer, x, grouped=None)
    assert counter.calls == 6  # fc and proj: 1 forward and 2 backward (dx, dW) calls each
    loop = layer_pass(layer, x, grouped=False)
    assert counter.calls == 6
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {}
    for got, want in zip(grouped, loop, strict=True):
        torch.testing.assert_close(got, want, **tolerance)


@pytest.mark.slow
def test_inductor_compiles_the_grouped_moe_layer_in_one_graph_and_runs_grouped_mm(monkeypatch):
    """torch.compile(fullgraph=True) with the default (inductor) backend on this CPU, fp32: the
    compiled layer still calls torch's grouped_mm and gives the eager loop's results."""
    torch._dynamo.reset()
    layer = mlp_layer(top_k=2, n_experts=4, noise_std=0.0).train()
    layer.experts.dropout.p = 0.0
    x = random(2, 8, 32, dtype=torch.float32, seed=6)
    want = layer_pass(layer, x, grouped=False)
    compiled = torch.compile(layer, fullgraph=True)
    assert grouped_mm_runs("cpu", torch.float32)  # probed before counting
    counter = GroupedMMCalls(monkeypatch)
    layer.experts.grouped = None
    got = layer_pass(compiled, x, grouped=None)
    assert counter.calls == 6
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
