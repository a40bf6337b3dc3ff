"""Router math, the MoE layer and model-level routing helpers (DESIGN.md section 2)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.models import mlp_layer, moe_cfg, tiny_gpt2

from moectl.model.dispatch import expert_counts, expert_linear, group
from moectl.model.experts import StackedExperts
from moectl.model.moe import MoEMLP
from moectl.model.router import Assignment, load_balancing_loss, noise_scale, route, z_loss
from moectl.model.routing import aux_losses, last_router_stats, moe_layers, set_router_progress
from moectl.model.surgery import apply_moe


@pytest.mark.parametrize("top_k", [1, 2])
def test_upcycled_model_without_perturbation_reproduces_dense_logits(top_k):
    model = tiny_gpt2()
    ids = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense = model(ids).logits
    layers = apply_moe(model, moe_cfg(last_n=2, top_k=top_k, perturbation_std=0.0), seed=3)
    assert layers == [0, 1]
    with torch.no_grad():
        moe = model(ids).logits
    torch.testing.assert_close(moe, dense, atol=1e-5, rtol=0)


def test_perturbation_is_relative_to_each_parameter_std_and_seeded():
    model = tiny_gpt2()
    dense_w = model.transformer.h[1].mlp.c_fc.weight.detach().clone()
    apply_moe(model, moe_cfg(perturbation_std=1e-2), seed=5)
    experts = moe_layers(model)[1].experts
    assert experts.fc_weight.shape == (4, 32, 128) and experts.proj_weight.shape == (4, 128, 32)
    assert experts.fc_bias.shape == (4, 128) and experts.proj_bias.shape == (4, 32)
    diffs = [w.detach() - dense_w for w in experts.fc_weight]
    ratio = diffs[0].std() / dense_w.std()
    assert 0.8e-2 < ratio.item() < 1.2e-2
    assert not torch.equal(diffs[0], diffs[1])
    again = tiny_gpt2()
    apply_moe(again, moe_cfg(perturbation_std=1e-2), seed=5)
    torch.testing.assert_close(moe_layers(again)[1].experts.fc_weight, experts.fc_weight)


def test_scratch_experts_are_fresh_gpt2_inits_independent_of_the_dense_mlp():
    model = tiny_gpt2(n_embd=64)
    dense_w = model.transformer.h[1].mlp.c_fc.weight.detach().clone()
    apply_moe(model, moe_cfg(init="scratch", perturbation_std=1e-3), seed=5)
    experts = moe_layers(model)[1].experts
    fc = experts.fc_weight.detach()
    assert all((w - dense_w).abs().max() > 0.01 for w in fc)
    assert not torch.equal(fc[0], fc[1])
    assert 0.018 < fc.std().item() < 0.022
    assert experts.proj_weight.std().item() == pytest.approx(0.02 / math.sqrt(4), rel=0.1)
    assert torch.count_nonzero(experts.fc_bias) == torch.count_nonzero(experts.proj_bias) == 0
    again = tiny_gpt2(n_embd=64)
    apply_moe(again, moe_cfg(init="scratch"), seed=5)
    torch.testing.assert_close(moe_layers(again)[1].experts.fc_weight, experts.fc_weight)


def test_top1_forward_weight_is_exactly_one_and_router_learns_from_lm_loss_alone():
    model = tiny_gpt2()
    apply_moe(model, moe_cfg(perturbation_std=1e-2), seed=0)
    model.train()
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))
    out = model(ids, labels=ids)
    stats = last_router_stats(model)[1]
    assert torch.equal(stats.expert_weight, torch.ones_like(stats.expert_weight))
    out.loss.backward()
    grad = moe_layers(model)[1].gate.weight.grad
    assert grad is not None and grad.abs().sum().item() > 0


def test_top2_weights_are_renormalized_selected_probs():
    logits = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    routing = route(logits, top_k=2)
    torch.testing.assert_close(routing.expert_weight.sum(-1), torch.ones(50))
    chosen = routing.probs.gather(1, routing.expert_index)
    torch.testing.assert_close(routing.expert_weight, chosen / chosen.sum(-1, keepdim=True))
    assert (routing.expert_index[:, 0] != routing.expert_index[:, 1]).all()


def test_load_balancing_loss_is_one_at_perfect_balance_and_larger_when_skewed():
    n_experts = 4
    balanced_index = torch.arange(8).remainder(n_experts).unsqueeze(1)
    uniform = torch.full((8, n_experts), 1 / n_experts)
    assert load_balancing_loss(uniform, balanced_index, n_experts).item() == pytest.approx(1.0)
    skewed_index = torch.zeros(8, 1, dtype=torch.long)
    skewed = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(8, 1)
    # f = (1, 0, 0, 0), P = (0.7, ...): 4 * 0.7
    assert load_balancing_loss(skewed, skewed_index, n_experts).item() == pytest.approx(2.8)


def test_load_balancing_loss_counts_all_top_k_assignments():
    index = torch.tensor([[0, 1], [0, 2]])
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.4, 0.2, 0.4]])
    # f = (2/4, 1/4, 1/4), P = (0.45, 0.25, 0.3)
    expected = 3 * (0.5 * 0.45 + 0.25 * 0.25 + 0.25 * 0.3)
    assert load_balancing_loss(probs, index, 3).item() == pytest.approx(expected)


def test_z_loss_matches_hand_computation():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    first = math.log(math.exp(1) + math.exp(2) + math.exp(3))
    second = math.log(3.0)
    assert z_loss(logits).item() == pytest.approx((first**2 + second**2) / 2, rel=1e-6)


def test_noise_schedule_anneals_linearly_to_zero():
    assert noise_scale(0.1, 0.25, 0, 1000) == pytest.approx(0.1)
    assert noise_scale(0.1, 0.25, 125, 1000) == pytest.approx(0.05)
    assert noise_scale(0.1, 0.25, 250, 1000) == 0.0
    assert noise_scale(0.1, 0.25, 900, 1000) == 0.0
    assert noise_scale(0.1, 0.0, 0, 1000) == 0.0


def test_router_noise_only_in_training_before_annealing_ends():
    model = tiny_gpt2()
    apply_moe(model, moe_cfg(top_k=2, noise_std=1.0, anneal_fraction=0.5), seed=0)
    layer = moe_layers(model)[1]
    x = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(4))

    def clean_weights(stats: Assignment) -> torch.Tensor:
        top = stats.probs.topk(2, dim=-1).values
        return top / top.sum(-1, keepdim=True)

    def weights_after(step: int, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        set_router_progress(model, step, 100)
        layer.train(train)
        with torch.no_grad():
            layer(x)
        return layer.last_stats.expert_weight, clean_weights(layer.last_stats)

    noisy, clean = weights_after(10, train=True)
    assert layer.current_noise_std == pytest.approx(0.8)
    assert (noisy - clean).abs().max().item() > 1e-3
    for step, train in [(10, False), (50, True), (99, True)]:
        weights, clean = weights_after(step, train)
        torch.testing.assert_close(weights, clean)


def naive_moe(x, index, weights, experts: StackedExperts):
    """Reference: every expert scans all tokens with a mask, one matmul pair per expert."""
    out = torch.zeros_like(x)
    for e in range(experts.n_experts):
        for slot in range(index.shape[1]):
            mask = index[:, slot] == e
            if mask.any():
                h = experts.act(x[mask] @ experts.fc_weight[e] + experts.fc_bias[e])
                y = h @ experts.proj_weight[e] + experts.proj_bias[e]
                out[mask] += weights[mask, slot].unsqueeze(1) * y
    return out


def run_experts(experts, x, logits, top_k, grouped):
    """Output and gradients (input, router logits, all four stacked parameters) of one pass."""
    experts.zero_grad()
    xg = x.clone().requires_grad_()
    lg = logits.clone().requires_grad_()
    routing = route(lg, top_k)
    if grouped is None:
        out = naive_moe(xg, routing.expert_index, routing.expert_weight, experts)
    else:
        experts.grouped = grouped
        out = experts(xg, routing.expert_index, routing.expert_weight)
    (out * torch.linspace(-1, 1, x.shape[1])).sum().backward()
    grads = [p.grad.clone() for p in experts.parameters()]
    return out.detach(), xg.grad, lg.grad, grads


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("grouped", [False, True], ids=["loop", "grouped_mm"])
def test_stacked_experts_match_naive_reference_in_outputs_and_gradients(top_k, grouped):
    """float32 on the CPU; grouped=True runs torch's grouped_mm kernel, False the fallback loop."""
    experts = mlp_layer(top_k=top_k, n_experts=4).experts.eval()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(40, 32, generator=gen)
    logits = torch.randn(40, 4, generator=gen)
    logits[:, 2] -= 100  # expert 2 gets no tokens: its group is empty
    got = run_experts(experts, x, logits, top_k, grouped)
    want = run_experts(experts, x, logits, top_k, None)
    for a, b in zip(got[:3], want[:3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(got[3], want[3], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert got[3][0][2].abs().max() == 0  # the idle expert's weight gradient is exactly zero


def test_grouping_sorts_assignments_by_expert_with_device_offsets():
    index = torch.tensor([[2, 0], [0, 1], [2, 1]])
    weights = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]])
    groups = group(index, weights, n_experts=4)
    assert groups.offsets.dtype == torch.int32
    assert groups.offsets.tolist() == [2, 4, 6, 6]
    assert groups.expert.tolist() == [0, 0, 1, 1, 2, 2]
    assert groups.token.tolist() == [0, 1, 1, 2, 0, 2]
    assert groups.weight.tolist() == pytest.approx([0.4, 0.7, 0.3, 0.5, 0.6, 0.5])
    assert expert_counts(index, 4).tolist() == [2, 2, 2, 0]


def test_experts_with_another_activation_run_the_two_projection_loop():
    model = tiny_gpt2()
    model.config.activation_function = "relu"
    for block in model.transformer.h:
        block.mlp.act = torch.nn.ReLU()
    apply_moe(model, moe_cfg(top_k=2, perturbation_std=0.1), seed=0)
    experts = moe_layers(model)[1].experts.eval()
    assert experts.gelu is None
    gen = torch.Generator().manual_seed(9)
    x, logits = torch.randn(12, 32, generator=gen), torch.randn(12, 4, generator=gen)
    got = run_experts(experts, x, logits, 2, grouped=False)
    want = run_experts(experts, x, logits, 2, None)
    torch.testing.assert_close(got[:3], want[:3])
    torch.testing.assert_close(got[3], want[3])


def test_expert_loop_gradients_pass_gradcheck():
    gen = torch.Generator().manual_seed(3)
    groups = group(torch.tensor([[1], [0], [1], [2], [1]]), torch.ones(5, 1), n_experts=4)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, b: expert_linear(a, w, b, groups, grouped=False), (x, weight, bias)
    )


def test_router_stats_shapes_and_aux_losses():
    model = tiny_gpt2()
    apply_moe(model, moe_cfg(last_n=2, top_k=2, n_experts=4), seed=0)
    ids = torch.randint(0, 64, (3, 5), generator=torch.Generator().manual_seed(0))
    model(ids)
    stats = last_router_stats(model)
    assert sorted(stats) == [0, 1]
    s = stats[0]
    assert s.logits.shape == (15, 4) and s.probs.shape == (15, 4)
    assert s.expert_index.shape == (15, 2) and s.expert_index.dtype == torch.long
    assert s.expert_weight.shape == (15, 2) and s.entropy.shape == (15,)
    assert not s.logits.requires_grad and not s.probs.requires_grad
    losses = {i: layer.last_losses for i, layer in moe_layers(model).items()}
    assert all(lb.requires_grad and z.requires_grad for lb, z in losses.values())
    torch.testing.assert_close(s.probs.sum(-1), torch.ones(15))
    expected_entropy = -(s.probs * s.probs.log()).sum(-1)
    torch.testing.assert_close(s.entropy, expected_entropy)
    lb, z = aux_losses(model)
    torch.testing.assert_close(lb, (losses[0][0] + losses[1][0]) / 2)
    torch.testing.assert_close(z, (losses[0][1] + losses[1][1]) / 2)


def test_aux_losses_of_dense_model_are_zero():
    lb, z = aux_losses(tiny_gpt2())
    assert lb.item() == 0.0 and z.item() == 0.0
    assert last_router_stats(tiny_gpt2()) == {}


def test_router_math_stays_float32_under_bf16_autocast():
    layer = mlp_layer(top_k=2)
    x = torch.randn(2, 6, 32)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
    except RuntimeError as exc:  # pragma: no cover - depends on the CPU build
        pytest.skip(f"CPU bf16 autocast unavailable: {exc}")
    assert out.dtype == torch.bfloat16
    stats = layer.last_stats
    assert stats.logits.dtype == torch.float32 and stats.probs.dtype == torch.float32
    assert all(loss.dtype == torch.float32 for loss in layer.last_losses)
    expected = torch.nn.functional.linear(x.reshape(-1, 32), layer.gate.weight)
    torch.testing.assert_close(stats.logits, expected)


def test_moe_layer_reports_its_shape():
    layer = mlp_layer(top_k=2, n_experts=4)
    assert isinstance(layer, MoEMLP)
    assert (layer.layer_index, layer.n_experts, layer.top_k) == (1, 4, 2)
    assert layer.last_stats is None


@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_layer_compiles_to_one_graph_forward_and_backward(top_k):
    """No data-dependent Python control flow: fullgraph capture of forward and backward works,
    gives the eager results, and a new noise scale each step does not re-trace the layer."""
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this platform")
    torch._dynamo.reset()
    layer = mlp_layer(top_k=top_k, noise_std=0.5).train()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(0))
    results = []
    for fn, step in ((layer, 1), (compiled, 1), (compiled, 2)):
        set_router_progress(layer, step, 10)
        layer.zero_grad()
        xg = x.clone().requires_grad_()
        torch.manual_seed(1)
        with torch._dynamo.config.patch(error_on_recompile=len(results) == 2):
            out = fn(xg)
        lb, z = layer.last_losses
        (out.square().sum() + lb + z).backward()
        grads = (xg.grad, layer.gate.weight.grad, layer.experts.fc_weight.grad)
        results.append((out.detach(), *grads))
    torch.testing.assert_close(results[1], results[0])
    assert not torch.equal(results[2][2], results[0][2])  # step 2 routed with less noise


def test_whole_moe_model_forward_and_backward_compile_to_one_graph():
    """The GPT-2 around the layer (SDPA attention included) has no graph break either, and
    the compiled model gives the eager model's logits, aux losses and gradients (same noise)."""
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this platform")
    torch._dynamo.reset()
    model = tiny_gpt2()
    apply_moe(model, moe_cfg(top_k=2, noise_std=0.1), seed=0)
    model.train()
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (model, compiled):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        logits = fn(input_ids=ids, use_cache=False).logits
        lb, z = aux_losses(model)
        (logits.logsumexp(-1).mean() + lb + z).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        results.append((logits.detach(), lb.detach(), z.detach(), grads))
    (eager_logits, eager_lb, eager_z, eager_grads), (logits, lb, z, grads) = results
    torch.testing.assert_close(logits, eager_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((lb, z), (eager_lb, eager_z), rtol=1e-5, atol=1e-7)
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert eager_grads["transformer.h.1.mlp.gate.weight"].abs().sum() > 0
