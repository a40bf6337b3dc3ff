"""The balancing schemes behind the routing seam, the router's score options, shared and
fine-grained experts: each checked against what the formula must give, on tiny models."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from moectl.config import MoEConfig
from moectl.errors import ConfigError
from moectl.model.balance import SCHEMES, make_balance
from moectl.model.balance.bias import BiasBalance
from moectl.model.balance.global_batch import GlobalBalance
from moectl.model.balance.switch import SwitchBalance
from moectl.model.router import Assignment, load_balancing_loss, route
from moectl.model.routing import aux_losses, moe_layers
from moectl.model.surgery import apply_moe


def tiny_gpt2(n_embd: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=n_embd, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config).eval()


def moe(**kw) -> MoEConfig:
    base = {"enabled": True, "last_n": 1, "n_experts": 4, "top_k": 1, "noise_std": 0.0}
    return MoEConfig(**{**base, **kw})


def assignment(index: list[list[int]], n_experts: int, n_sequences: int) -> Assignment:
    """Uniform probabilities over n_experts for tokens routed to `index` (T, k)."""
    index_t = torch.tensor(index)
    logits = torch.zeros(index_t.shape[0], n_experts, requires_grad=True)
    probs = logits.softmax(-1)
    weights = torch.ones(index_t.shape, dtype=torch.float32)
    entropy = torch.zeros(index_t.shape[0])
    return Assignment(logits, probs, entropy, probs, index_t, weights, n_sequences)


def test_config_names_exactly_the_schemes_in_the_package():
    from typing import get_args

    assert set(get_args(MoEConfig.model_fields["balance"].annotation)) == set(SCHEMES)


def test_every_scheme_a_balance_module_defines_is_selectable():
    """A scheme class left without @register (or without its own name) would train nowhere."""
    from helpers.registry import defined_subclasses

    import moectl.model.balance as package
    from moectl.model.balance.base import Balance

    defined = defined_subclasses(package, Balance)
    assert len(defined) == len(SCHEMES) >= 5
    for scheme in defined:
        assert SCHEMES.get(scheme.__dict__.get("name")) is scheme, scheme.__name__


class Switch10(SwitchBalance):
    """The Switch loss x 10: trains as lb_coef * 10, and says so to an export."""

    name = "switch10"

    def aux_loss(self, assignment: Assignment) -> torch.Tensor:
        return 10 * super().aux_loss(assignment)

    @classmethod
    def aux_loss_coef(cls, moe: MoEConfig) -> float:
        return 10 * moe.lb_coef


def test_a_subclass_of_a_scheme_registers(monkeypatch):
    from moectl.model.balance import base

    monkeypatch.setattr(base, "REGISTERED", {})
    assert base.register(Switch10) is Switch10 and {"switch10": Switch10} == base.REGISTERED
    with pytest.raises(TypeError, match="its own `name`"):
        base.register(type("Unnamed", (Switch10,), {}))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("shared", [0, 1])  # llama: 0 exports Mixtral, 1 custom code
def test_exports_record_the_coefficient_the_scheme_trains_with(monkeypatch, arch, shared):
    """Both families' exports (custom code and native) take the weight from the scheme."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from moectl.interop.export import export_for

    monkeypatch.setitem(SCHEMES, "switch", Switch10)
    torch.manual_seed(0)
    if arch == "gpt2":
        model = tiny_gpt2()
    else:
        shape = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
        config = LlamaConfig(vocab_size=64, num_hidden_layers=2, **shape)
        model = LlamaForCausalLM(config).eval()
    layout = moe(lb_coef=0.02, shared_experts=shared, last_n=None, layers=[0, 1])
    apply_moe(model, layout)
    exported, plan = export_for(model, layout, [0, 1])
    assert exported.config.router_aux_loss_coef == pytest.approx(0.2)
    assert plan.native == (arch == "llama" and not shared)


def test_sequence_differs_from_switch_when_sequences_route_differently():
    # Sequence 0 sends every token to expert 0, sequence 1 to expert 1: balanced as a batch,
    # each sequence fully unbalanced.
    routed = assignment([[0]] * 4 + [[1]] * 4, n_experts=4, n_sequences=2)
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 4 + [[0.1, 0.7, 0.1, 0.1]] * 4)
    routed.noisy_probs = probs
    switch = make_balance(moe(balance="switch"), 4).aux_loss(routed)
    sequence = make_balance(moe(balance="sequence"), 4).aux_loss(routed)
    # switch: f = (.5, .5, 0, 0), P = (.4, .4, .1, .1) -> 4 * .4 = 1.6
    # sequence: each sequence f = one-hot, P_own = .7 -> 4 * .7 = 2.8
    assert switch.item() == pytest.approx(1.6)
    assert sequence.item() == pytest.approx(2.8)
    # One sequence: the two are the same formula.
    single = assignment([[0]] * 4 + [[1]] * 4, n_experts=4, n_sequences=1)
    single.noisy_probs = probs
    assert make_balance(moe(balance="sequence"), 4).aux_loss(single).item() == pytest.approx(1.6)


def test_global_over_micro_batches_equals_the_full_batch_loss():
    """Each micro-batch's loss with the step's global f_i, averaged, is the full-batch loss."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 4, generator=gen).requires_grad_()
    full = route(logits, 2)
    want = load_balancing_loss(full.noisy_probs, full.expert_index, 4)
    scheme = GlobalBalance(4).train()
    counts = torch.zeros(4)
    for part in (slice(0, 6), slice(6, 12)):
        counts += torch.bincount(full.expert_index[part].reshape(-1), minlength=4)
    scheme.begin_step(counts)
    parts = [route(logits[part], 2) for part in (slice(0, 6), slice(6, 12))]
    got = sum(scheme.aux_loss(p) for p in parts) / 2
    torch.testing.assert_close(got, want)
    (grad_want,) = torch.autograd.grad(want, logits)
    (grad_got,) = torch.autograd.grad(got, logits)
    torch.testing.assert_close(grad_got, grad_want)
    local = sum(load_balancing_loss(p.noisy_probs, p.expert_index, 4) for p in parts) / 2
    assert not torch.allclose(local, want)  # the micro-batch loss is another number
    scheme.end_step(counts)
    assert scheme.state()["f_0"] == pytest.approx(float(counts[0] / counts.sum()))


def test_bias_moves_an_overloaded_experts_bias_down_and_adds_no_loss():
    scheme = BiasBalance(4, rate=0.01)
    scheme.end_step(torch.tensor([10.0, 2.0, 2.0, 2.0]))
    torch.testing.assert_close(scheme.bias, torch.tensor([-0.01, 0.01, 0.01, 0.01]))
    assert scheme.state() == pytest.approx({"bias_min": -0.01, "bias_max": 0.01})
    routed = assignment([[0]] * 4, n_experts=4, n_sequences=1)
    assert scheme.aux_loss(routed).item() == 0.0 and not SCHEMES["bias"].adds_loss


def test_selection_bias_picks_but_never_weighs():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    plain = route(logits, 2)
    biased = route(logits, 2, selection_bias=torch.tensor([-5.0, 0.0, 0.0, 0.0]))
    assert plain.expert_index.tolist() == [[0, 1]] and biased.expert_index.tolist() == [[1, 2]]
    probs = logits.softmax(-1)[0, 1:3]
    torch.testing.assert_close(biased.expert_weight[0], probs / probs.sum())
    torch.testing.assert_close(biased.probs, plain.probs)


def test_bias_layer_balances_without_a_gradient_to_the_gate():
    model = tiny_gpt2()
    apply_moe(model, moe(balance="bias", lb_coef=1.0), seed=0)
    layer = moe_layers(model)[1]
    layer.balance.bias.copy_(torch.tensor([-9.0, 0.0, 0.0, 0.0]))
    model.train()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    model(ids)
    assert 0 not in layer.last_stats.expert_index.tolist()
    lb, _ = aux_losses(model)
    assert lb.item() == 0.0 and not lb.requires_grad
    assert "balance.bias" in layer.state_dict()


def test_sigmoid_scores_normalize_over_the_chosen_experts():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    routed = route(logits, 2, score="sigmoid")
    chosen = logits.sigmoid()[0, :2]
    torch.testing.assert_close(routed.expert_weight[0], chosen / chosen.sum())
    sig = logits.sigmoid()
    torch.testing.assert_close(routed.probs, sig / sig.sum())


def test_shared_experts_see_every_token():
    """Upcycled without perturbation, every routed and shared expert is the dense MLP: the
    layer gives (1 + n_shared) times the dense MLP's output for every token."""
    model = tiny_gpt2()
    dense = model.transformer.h[1].mlp
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = dense(x)
    apply_moe(model, moe(shared_experts=2, top_k=2, perturbation_std=0.0), seed=0)
    layer = moe_layers(model)[1]
    with torch.no_grad():
        got = layer(x)
    torch.testing.assert_close(got, 3 * want, atol=1e-5, rtol=1e-5)
    layer.zero_grad()
    layer(x).sum().backward()
    # Each shared expert's output bias collects a gradient of 1 per token and output dim.
    torch.testing.assert_close(layer.shared.proj_bias.grad, torch.full((2, 32), 10.0))


@pytest.mark.parametrize(("top_k", "granularity", "score"), [(1, 2, "softmax"), (2, 4, "sigmoid")])
def test_fine_grained_upcycling_without_perturbation_gives_dense_logits(top_k, granularity, score):
    model = tiny_gpt2()
    ids = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense = model(ids).logits
    cfg = moe(last_n=2, top_k=top_k, granularity=granularity, score=score, perturbation_std=0.0)
    apply_moe(model, cfg, seed=3)
    layer = moe_layers(model)[1]
    assert layer.n_experts == 4 * granularity and layer.top_k == top_k * granularity
    assert layer.experts.fc_weight.shape == (4 * granularity, 32, 128 // granularity)
    with torch.no_grad():
        fine = model(ids).logits
    torch.testing.assert_close(fine, dense, atol=1e-5, rtol=0)


def test_granularity_must_divide_the_mlp_width():
    with pytest.raises(ConfigError, match="does not divide the MLP hidden width 128"):
        apply_moe(tiny_gpt2(), moe(granularity=3))


def test_router_restricts_the_selectable_experts():
    model = tiny_gpt2()
    apply_moe(model, moe(top_k=2), seed=0)
    layer = moe_layers(model)[1]
    layer.gate.selectable = torch.tensor([False, True, True, False])
    x = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer(x)
    stats = layer.last_stats
    assert set(stats.expert_index.unique().tolist()) == {1, 2}
    assert stats.probs[:, [0, 3]].max().item() == 0.0 and torch.isfinite(stats.entropy).all()


def test_every_option_compiles_to_one_graph_with_the_eager_results():
    """Selection bias, sigmoid scores, shared and fine-grained experts add no host reads or
    data-dependent branches: fullgraph capture works and gives the eager outputs."""
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this platform")
    torch._dynamo.reset()
    model = tiny_gpt2()
    cfg = moe(balance="bias", score="sigmoid", shared_experts=1, granularity=2, top_k=2)
    apply_moe(model, cfg, seed=0)
    layer = moe_layers(model)[1]
    layer.balance.bias.copy_(torch.linspace(-0.2, 0.2, 8))
    x = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        want, got = layer(x), compiled(x)
    torch.testing.assert_close(got, want)


def test_shared_experts_are_active_and_fine_grained_keep_the_active_count():
    from moectl.model.factory import count_parameters

    coarse, fine = tiny_gpt2(), tiny_gpt2()
    apply_moe(coarse, moe(top_k=2, shared_experts=1), seed=0)
    apply_moe(fine, moe(top_k=2, shared_experts=1, granularity=4), seed=0)
    mlp = 32 * 128 + 128 + 128 * 32 + 32
    c, f = count_parameters(coarse), count_parameters(fine)
    assert c.total - c.active == 2 * mlp  # 4 routed, 2 active, the shared one always
    # Fine-grained: 16 narrower experts, 8 active; each has its own output bias and gate row.
    assert f.total - c.total == 12 * 32 + 12 * 32
    assert f.total - f.active == 8 * (mlp - 32) // 4 + 8 * 32
