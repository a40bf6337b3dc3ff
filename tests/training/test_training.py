"""Training building blocks: schedule, sampler, collapse detector, routing counts, checkpoints."""

from __future__ import annotations

import itertools
import math
import random
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from moectl.config import CollapseConfig, RunConfig
from moectl.errors import TrainingError
from moectl.rundir.locate import latest_checkpoint, list_checkpoints
from moectl.rundir.writing import truncate_after
from moectl.training.batches import BlockSampler, eval_subset
from moectl.training.checkpoint import (
    capture_rng_state,
    restore_rng_state,
    write_checkpoint,
)
from moectl.training.collapse import CollapseDetector
from moectl.training.routing_log import RoutingAccumulator
from moectl.training.schedule import lr_factor, parameter_groups
from moectl.training.sinks import check_sinks
from moectl.training.step import forward_losses


def test_lr_warmup_then_cosine_to_min_ratio():
    factors = [lr_factor(s, 100, 0.1, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert lr_factor(100, 100, 0.1, 0.1) == pytest.approx(0.1)
    assert lr_factor(0, 10, 0.0, 0.0) == pytest.approx(1.0)


def test_no_weight_decay_on_biases_and_layernorm():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = parameter_groups(model, 0.01, 1e-3)
    assert [p.ndim for p in decay["params"]] == [2]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_router_lr_scale_gives_the_gates_their_own_scheduled_lr():
    from transformers import GPT2Config, GPT2LMHeadModel

    from moectl.config import MoEConfig, TrainConfig
    from moectl.model.routing import moe_layers
    from moectl.model.surgery import apply_moe
    from moectl.training.schedule import build_optimizer

    config = GPT2Config(vocab_size=32, n_positions=8, n_embd=16, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config)
    apply_moe(model, MoEConfig(enabled=True, last_n=2, n_experts=4))
    gates = {id(layer.gate.weight) for layer in moe_layers(model).values()}
    train = TrainConfig(lr=1e-3, max_steps=10, warmup_fraction=0.5)
    assert len(parameter_groups(model, 0.01, 1e-3)) == 2
    optimizer, scheduler = build_optimizer(model, train, router_lr_scale=10.0)
    *_, router = optimizer.param_groups
    assert {id(p) for p in router["params"]} == gates
    for _ in range(3):
        optimizer.step()
        scheduler.step()
        lrs = [group["lr"] for group in optimizer.param_groups]
        assert lrs[2] == pytest.approx(10 * lrs[0]) and lrs[0] == lrs[1] > 0
    grouped = sum(len(g["params"]) for g in optimizer.param_groups)
    assert grouped == len(list(model.parameters()))
    # 0 is the frozen-router arm: the gates are in no group, everything else is.
    frozen, _ = build_optimizer(model, train, router_lr_scale=0.0)
    frozen_params = {id(p) for g in frozen.param_groups for p in g["params"]}
    assert len(frozen.param_groups) == 2 and not gates & frozen_params
    assert len(frozen_params) == len(list(model.parameters())) - len(gates)


def test_stacked_expert_biases_are_not_decayed():
    from transformers import GPT2Config, GPT2LMHeadModel

    from moectl.config import MoEConfig
    from moectl.model.surgery import apply_moe

    model = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2))
    apply_moe(model, MoEConfig(enabled=True, last_n=1, n_experts=3))
    decay, _ = parameter_groups(model, 0.01, 1e-3)
    experts = model.transformer.h[0].mlp.experts
    decayed = {id(p) for p in decay["params"]}
    assert id(experts.fc_weight) in decayed and id(experts.proj_weight) in decayed
    assert id(experts.fc_bias) not in decayed and id(experts.proj_bias) not in decayed


def test_sampler_resumes_the_same_order_and_never_repeats_within_epoch():
    sampler = BlockSampler(10, 3, seed=7)
    first = [sampler.next_batch() for _ in range(3)]
    assert len({i for batch in first for i in batch}) == 9
    state = sampler.state_dict()
    expected = [sampler.next_batch() for _ in range(4)]
    restored = BlockSampler(10, 3, seed=7)
    restored.load_state_dict(state)
    assert [restored.next_batch() for _ in range(4)] == expected
    assert restored.epoch == 2
    with pytest.raises(TrainingError, match="fewer than one batch"):
        BlockSampler(2, 3, seed=0)


def test_eval_subset_is_fixed_and_spreads_over_domains():
    domains = np.array([0] * 50 + [1] * 30 + [2] * 5)
    subset = eval_subset(domains, 12, seed=3)
    assert subset == eval_subset(domains, 12, seed=3)
    assert len(subset) == 12 and len(set(subset)) == 12
    assert np.bincount(domains[subset]).tolist() == [4, 4, 4]
    assert eval_subset(domains, None, seed=3) == list(range(85))


def test_collapse_detector_needs_patience_consecutive_warnings():
    detector = CollapseDetector(CollapseConfig(threshold=0.6, patience=2, stop=True))
    assert not detector.update(10, {8: 0.7, 9: 0.3}).stop
    reset = detector.update(20, {8: 0.5, 9: 0.5})
    assert not reset.warning and reset.consecutive == 0
    detector.update(30, {8: 0.61, 9: 0.2})
    clone = CollapseDetector(CollapseConfig(threshold=0.6, patience=2, stop=True))
    clone.load_state_dict(detector.state_dict())
    status = clone.update(40, {8: 0.2, 9: 0.9})
    assert status.stop and status.layers == [9] and status.consecutive == 2
    assert [e.step for e in clone.events] == [10, 30, 40]
    no_stop = CollapseDetector(CollapseConfig(threshold=0.6, patience=1, stop=False))
    assert no_stop.update(1, {0: 0.99}).warning and not no_stop.events[-1].stop


def test_routing_accumulator_fractions_per_domain():
    acc = RoutingAccumulator([3], n_experts=4, domains=["code", "prose"])
    index = torch.tensor([[0, 1], [0, 2], [3, 0]])  # top-2 for three tokens
    stats = SimpleNamespace(expert_index=index, entropy=torch.tensor([1.0, 2.0, 3.0]))
    acc.update({3: stats}, torch.tensor([0, 0, 1]))
    row = acc.row(5)
    layer = row["layers"]["3"]
    assert layer["fractions"] == pytest.approx([0.5, 1 / 6, 1 / 6, 1 / 6])
    assert layer["domain_fractions"]["code"] == pytest.approx([0.5, 0.25, 0.25, 0.0])
    assert layer["domain_fractions"]["prose"] == pytest.approx([0.5, 0.0, 0.0, 0.5])
    assert layer["entropy"] == pytest.approx(2.0)
    assert layer["domain_entropy"] == pytest.approx({"code": 1.5, "prose": 3.0})
    assert layer["max_fraction"] == pytest.approx(0.5)
    assert layer["counts"] == [[2, 1, 1, 0], [1, 0, 0, 1]]
    # MI over the 6 assignments: experts 1, 2 are code-only and 3 prose-only; H(domain) = H(2/3)
    h_domain = -(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)
    mi = 2 * (1 / 6) * math.log(3 / 2) + (1 / 6) * math.log(3) + 0.5 * 0
    assert layer["nmi"] == pytest.approx(mi / h_domain)
    assert acc.max_fractions() == {3: pytest.approx(0.5)}
    acc.reset()
    assert acc.row(6)["layers"]["3"]["domain_fractions"] == {}


def test_per_domain_loss_comes_from_the_same_cross_entropy():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50, n_positions=8, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 50, (3, 8))
    domain = torch.tensor([1, 0, 1])
    with torch.no_grad():
        losses = forward_losses(model, model, ids, domain, 2, RunConfig().moe, nullcontext())
        reference = model(input_ids=ids, labels=ids).loss
        rows = [model(input_ids=ids[i : i + 1], labels=ids[i : i + 1]).loss for i in range(3)]
    assert float(losses.lm_loss) == pytest.approx(float(reference), rel=1e-5)
    assert losses.domain_count.tolist() == [7.0, 14.0]
    code = float(losses.domain_sum[0] / losses.domain_count[0])
    prose = float(losses.domain_sum[1] / losses.domain_count[1])
    assert code == pytest.approx(float(rows[1]), rel=1e-5)
    assert prose == pytest.approx(float(rows[0] + rows[2]) / 2, rel=1e-5)


def test_checkpoints_rotate_and_skip_half_written(tmp_path):
    def write_model(path):
        (path / "model.json").write_text("{}")

    for step in (10, 20, 30):
        write_checkpoint(tmp_path, step, write_model, {"step": step}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 30]
    (tmp_path / "checkpoints" / "step-40").mkdir()  # no trainer state: not a checkpoint
    assert latest_checkpoint(tmp_path).name == "step-30"

    def failing(path):
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_checkpoint(tmp_path, 50, failing, {"step": 50}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-20", "step-30", "step-40"]


def test_rng_state_round_trip():
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(2), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(2), expected[1])
    assert random.random() == expected[2]


def test_missing_sink_package_is_a_clear_error(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TrainingError, match="tensorboard") as info:
        check_sinks(["tensorboard"])
    assert 'pip install "moectl[tracking]"' in info.value.hint


def test_truncate_after_drops_later_rows(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4')
    truncate_after([path], 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_cross_entropy_matches_torch_in_value_and_gradient(dtype, monkeypatch):
    import torch.nn.functional as F

    from moectl.training import loss

    monkeypatch.setitem(loss._CHUNK, "cpu", 50 * 64)  # several row chunks
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(300, 50, generator=gen) * 3).to(dtype).requires_grad_()
    targets = torch.randint(0, 50, (300,), generator=gen)
    targets[::7] = -100
    grad = torch.randn(300, generator=gen)
    ours = loss.token_cross_entropy(logits, targets)
    ours.backward(grad)
    ours_grad, logits.grad = logits.grad, None
    ref = F.cross_entropy(logits.float(), targets, reduction="none", ignore_index=-100)
    ref.backward(grad)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_grad, logits.grad)
    assert ours[::7].abs().max() == 0 and ours_grad[::7].abs().max() == 0
    x = torch.randn(9, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, 4, -100, 1, 2, 3])
    assert torch.autograd.gradcheck(lambda a: loss.token_cross_entropy(a, t), (x,))


def test_domain_batches_take_turns_never_repeat_and_resume():
    from moectl.training.batches import DomainBlockSampler, train_sampler

    domain_ids = np.array([0] * 7 + [1] * 5 + [2] * 9)
    sampler = train_sampler("domain", domain_ids, 2, seed=3)
    assert isinstance(sampler, DomainBlockSampler)
    batches = [sampler.next_batch() for _ in range(6)]
    assert [set(domain_ids[b]) for b in batches] == [{0}, {1}, {2}] * 2
    seen = [i for b in batches[1::3] for i in b]  # domain 1: 5 blocks, 2 full batches
    assert len(set(seen)) == 4
    state = sampler.state_dict()
    ahead = [sampler.next_batch() for _ in range(7)]
    again = DomainBlockSampler(domain_ids, 2, seed=3)
    again.load_state_dict(state)
    assert [again.next_batch() for _ in range(7)] == ahead
    with pytest.raises(TrainingError, match="fewer than one batch of 6"):
        DomainBlockSampler(domain_ids, 6, seed=0)
