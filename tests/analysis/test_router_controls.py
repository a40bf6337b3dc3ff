"""The router controls on synthetic inputs whose answers are known: random-gate percentile,
domain probe, the expert mask and the functional verdict's interval."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moectl.analysis.bootstrap import NUMERICAL_NOISE
from moectl.analysis.controls import LayerControls, draw_gates, split_units
from moectl.analysis.functional import (
    _unit_interval,
    experts_sizes,
    functional_verdict,
    keep_experts,
    most_used,
    with_family_verdicts,
)
from moectl.analysis.results import FunctionalArm, FunctionalScore
from moectl.model.experts import StackedExperts
from moectl.model.moe import MoEMLP


def _domain_hidden(n_blocks: int, seq: int, width: int, signal: float, seed: int = 0):
    """Hidden states of blocks of 3 domains (block b has domain b % 3): noise plus `signal` on
    the domain's own coordinate."""
    rng = np.random.default_rng(seed)
    domains = np.repeat(np.arange(n_blocks) % 3, seq)
    blocks = np.repeat(np.arange(n_blocks), seq)
    hidden = rng.normal(size=(len(domains), width))
    hidden[np.arange(len(domains)), domains] += signal
    return torch.tensor(hidden, dtype=torch.float32), domains, blocks


def _controls(hidden, domains, blocks, n_gates: int = 32) -> LayerControls:
    control = LayerControls(
        layer=0,
        n_labels=3,
        top_k=1,
        random_gates=draw_gates(n_gates, 4, hidden.shape[1], 0.02, seed=0),
    )
    for start in range(0, len(domains), 64):
        part = slice(start, start + 64)
        control.add(hidden[part], domains[part], blocks[part])
    return control


def test_random_gates_are_drawn_like_the_init_gate_and_seeded():
    gates = draw_gates(64, 8, 32, 0.02, seed=5)
    assert gates.dtype == torch.float32 and gates.shape == (64, 8, 32)
    assert float(gates.std()) == pytest.approx(0.02, rel=0.05)
    assert torch.equal(gates, draw_gates(64, 8, 32, 0.02, seed=5))
    assert not torch.equal(gates, draw_gates(64, 8, 32, 0.02, seed=6))
    # A fine-grained split: each upcycled copy's slices share one gate row, as upcycling does.
    fine = draw_gates(4, 8, 32, 0.02, seed=5, granularity=2)
    assert fine.shape == (4, 8, 32) and torch.equal(fine[:, 0], fine[:, 1])
    assert not torch.equal(fine[:, 1], fine[:, 2])


def test_probe_reads_a_domain_signal_and_finds_none_in_noise():
    hidden, domains, blocks = _domain_hidden(24, 16, 8, signal=4.0)
    probe = _controls(hidden, domains, blocks).probe_score()
    assert probe.accuracy > 0.95 and probe.nmi > 0.8
    assert probe.train_documents == probe.test_documents == 12
    assert probe.chance == pytest.approx(1 / 3)

    noise, domains, blocks = _domain_hidden(24, 16, 8, signal=0.0)
    blind = _controls(noise, domains, blocks).probe_score()
    assert blind.accuracy < 0.5 and blind.nmi < 0.05


def test_probe_splits_each_domains_documents_in_half_and_needs_two_per_domain():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    units = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7])
    train, test = split_units(labels, units, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(8))
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) == 1 + 2 and len(test) == 2 + 3
    train, test = split_units(np.array([0, 1, 1]), np.array([0, 1, 2]), seed=0)
    assert len(train) == len(test) == 0


def _moe(n_experts: int = 4, top_k: int = 1) -> MoEMLP:
    torch.manual_seed(0)
    experts = StackedExperts(n_experts, 8, 16, torch.nn.GELU(), 0.0)
    for param in experts.parameters():
        torch.nn.init.normal_(param, std=0.5)
    return MoEMLP(experts, 8, layer_index=0, top_k=top_k).eval()


def test_expert_mask_routes_only_among_the_kept_experts_and_is_removed_after():
    layer = _moe()
    x = torch.randn(2, 50, 8)
    layer(x)
    assert len(layer.last_stats.expert_index.unique()) == 4
    with keep_experts(layer, [1, 3]):
        layer(x)
        assert set(layer.last_stats.expert_index.unique().tolist()) == {1, 3}
        assert torch.isfinite(layer.last_stats.entropy).all()
    assert layer.gate.selectable is None
    assert not any("selectable" in key for key in layer.state_dict())


def test_functional_sizes_and_most_used_experts():
    assert experts_sizes(8) == [2, 4] and experts_sizes(4) == [1, 2] and experts_sizes(2) == [1]
    assert most_used(np.array([5, 9, 9, 1]), 2) == [1, 2]


def test_functional_interval_resamples_documents_and_says_specialized_only_below_zero():
    rng = np.random.default_rng(0)
    units = np.repeat(np.arange(10), 3)
    below = -0.5 + 0.1 * rng.normal(size=30)
    (lo, hi), p_below = _unit_interval(below, units, 500, 0)
    assert lo < below.mean() < hi < 0 and p_below < 0.01
    around = 0.1 * rng.normal(size=30)
    (lo, hi), p_around = _unit_interval(around - around.mean(), units, 500, 0)
    assert lo < 0 < hi and p_around > 0.5
    # Three blocks of one document move together: resampling documents gives a wider interval
    # than treating the 30 blocks as independent.
    clustered = np.repeat(-0.5 + 0.1 * rng.normal(size=10), 3)
    (lo, hi), _ = _unit_interval(clustered, units, 500, 0)
    (lo_b, hi_b), _ = _unit_interval(clustered, np.arange(30), 500, 0)
    assert hi_b - lo_b < 0.8 * (hi - lo)


def _cell(difference: float, p_value: float, domain: str = "code") -> FunctionalScore:
    arm = FunctionalArm(
        experts=[0], own_loss=4.0 + difference, random_loss=4.0, n_draws=16,
        difference=difference, ci=(difference - 0.01, difference + 0.01), p_value=p_value,
    )  # fmt: skip
    return FunctionalScore(domain=domain, layer=0, m=1, full_loss=4.0, trained=arm, init=arm)


def test_functional_verdicts_are_family_wise_over_the_cells():
    # Six cells at p = 0.02 each: every one "significant" alone, none after Holm over six.
    scores = with_family_verdicts([_cell(-0.05, 0.02, str(i)) for i in range(6)])
    assert all(s.trained.verdict == "not specialized" for s in scores)
    assert all(s.trained.comparisons == s.init.comparisons == 6 for s in scores)
    # One strong cell among them is kept; a strong cell whose loss goes up is not specialized.
    scores = with_family_verdicts(
        [_cell(-0.05, 0.001), _cell(0.05, 0.001, "math"), *[_cell(-0.05, 0.02, "x")] * 4]
    )
    assert [s.trained.verdict for s in scores[:2]] == ["specialized", "not specialized"]


def test_a_loss_difference_within_numerical_noise_is_never_specialized():
    noise = NUMERICAL_NOISE * 5.0
    assert functional_verdict((-3e-8, -1e-8), 5.0, rejected=True) == "not specialized"
    assert functional_verdict((-0.9 * noise, -0.5 * noise), 5.0, True) == "not specialized"
    assert functional_verdict((-4 * noise, -2 * noise), 5.0, rejected=True) == "specialized"
    assert functional_verdict((-0.2, -0.1), 5.0, rejected=False) == "not specialized"


def test_first_choice_nmi_counts_each_token_once():
    from moectl.analysis.routing import LayerRouting

    rng = np.random.default_rng(0)
    blocks = np.repeat(np.arange(12), 10)
    domains = blocks % 2
    first = domains * 2  # the first choice names the domain
    second = np.where(first == 0, 1 + 2 * rng.integers(0, 2, len(first)), 0)  # anything else
    layer = LayerRouting(layer=0, n_experts=4, top_k=2)
    layer.add(domains, blocks, np.stack([first, second], axis=1), np.zeros(len(blocks)))
    score = layer.analyse(["a", "b"], {}, {}, n_permutations=2, n_bootstrap=100).specialization
    assert score.first_choice_nmi == pytest.approx(1.0)
    assert score.nmi < 0.9 and score.first_choice_nmi_ci[1] == pytest.approx(1.0)
    assert score.frozen_gate_nmi is None and score.router_made.verdict is None
