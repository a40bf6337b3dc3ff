"""Formulas a one-character change would break silently, each pinned against a hand computation:
the LB loss on the *noisy* routing probabilities, the collapse boundary at exactly the threshold,
and atomic text/JSON writes under a crash between write and rename."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
from pydantic import BaseModel
from transformers import GPT2Config, GPT2LMHeadModel

from moectl.analysis import bootstrap, metrics
from moectl.config import CollapseConfig, MoEConfig
from moectl.fs import replace_directory, write_json, write_text
from moectl.model.router import load_balancing_loss, noise_scale, route
from moectl.model.routing import aux_losses, moe_layers
from moectl.model.surgery import apply_moe
from moectl.training.collapse import CollapseDetector

LOGITS = torch.tensor(
    [[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.4], [-1.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.5]]
)
NOISE = torch.tensor(
    [[-4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, -8.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
)


def hand_lb(probs: torch.Tensor, chosen: list[int], n_experts: int) -> float:
    """n_experts * sum_i f_i * P_i, written out with Python loops."""
    tokens = len(chosen)
    total = 0.0
    for expert in range(n_experts):
        fraction = chosen.count(expert) / tokens
        mean_prob = sum(float(probs[t, expert]) for t in range(tokens)) / tokens
        total += fraction * mean_prob
    return n_experts * total


def test_route_balances_the_noisy_probabilities_and_logs_the_clean_ones(monkeypatch):
    """A fixed noise draw (replacing randn_like) changes every token's choice; the LB loss must
    follow the noisy probabilities the choice was made from, as the reference study does."""
    monkeypatch.setattr(torch, "randn_like", lambda t: NOISE.clone())
    routing = route(LOGITS, top_k=1, noise_std=0.5)
    noisy = (LOGITS + 0.5 * NOISE).softmax(dim=-1)
    torch.testing.assert_close(routing.noisy_probs, noisy)
    torch.testing.assert_close(routing.probs, LOGITS.softmax(dim=-1))
    chosen = routing.expert_index[:, 0].tolist()
    assert chosen == [3, 2, 2, 3]  # clean argmax would be [0, 3, 1, 3]
    lb = load_balancing_loss(routing.noisy_probs, routing.expert_index, 4)
    assert lb.item() == pytest.approx(hand_lb(noisy, chosen, 4), rel=1e-6)
    assert lb.item() != pytest.approx(hand_lb(LOGITS.softmax(-1), chosen, 4), rel=1e-3)


def test_model_forward_lb_loss_is_that_of_the_noisy_probabilities():
    """End to end through a GPT-2 with an MoE layer in training mode: the layer's input and the
    RNG state at its entry are captured, the noise redrawn by hand, and the LB loss recomputed."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    moe = MoEConfig(enabled=True, last_n=1, n_experts=4, top_k=1, noise_std=1.0)
    apply_moe(model, moe, seed=0)
    layer = moe_layers(model)[1]
    model.train()
    seen: dict[str, torch.Tensor] = {}

    def capture(module, args):
        seen["input"] = args[0].detach().reshape(-1, 32).clone()
        seen["rng"] = torch.get_rng_state()

    layer.register_forward_pre_hook(capture)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    model(ids)
    lb, _ = aux_losses(model)

    gate = model.state_dict()["transformer.h.1.mlp.gate.weight"]  # the saved layout's name
    logits = seen["input"] @ gate.T
    torch.set_rng_state(seen["rng"])
    noisy = (logits + torch.randn(logits.shape) * 1.0).softmax(dim=-1)
    chosen = noisy.argmax(dim=-1).tolist()
    assert layer.last_stats.expert_index[:, 0].tolist() == chosen
    assert lb.item() == pytest.approx(hand_lb(noisy, chosen, 4), rel=1e-5)
    clean = hand_lb(logits.softmax(dim=-1), chosen, 4)
    assert abs(lb.item() - clean) > 1e-3, "noise of std 1 must move the balanced probabilities"


def test_routing_without_noise_draws_no_random_numbers():
    """Eval routes with noise 0: it must not advance the RNG, or how often a run evaluates
    would change the noise its training steps draw."""
    state = torch.get_rng_state()
    routing = route(LOGITS, top_k=1, noise_std=0.0)
    assert torch.equal(torch.get_rng_state(), state)
    assert routing.noisy_probs is routing.probs


def test_noise_anneals_over_a_single_step_too():
    """anneal_fraction * total_steps = 1: full noise at step 0, none from step 1."""
    assert noise_scale(0.1, 0.25, 0, 4) == pytest.approx(0.1)
    assert noise_scale(0.1, 0.25, 1, 4) == 0.0
    assert noise_scale(0.1, 0.5, 1, 4) == pytest.approx(0.05)  # anneal_steps = 2


def test_moe_layer_contract_top_k_up_to_all_experts_seeded_and_no_saved_noise():
    """top_k may equal n_experts; the upcycled weights follow the seed, not the global RNG;
    the noise scale is not part of the saved state (checkpoints keep their keys); a layer
    whose progress was never set reports its full noise; training without noise draws no
    random numbers."""
    import copy

    torch.manual_seed(0)
    dense = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2,
                                       n_head=2, resid_pdrop=0.0))  # fmt: skip
    moe = MoEConfig(
        enabled=True, last_n=1, n_experts=4, top_k=4, noise_std=0.0, perturbation_std=0.01
    )
    states = []
    for global_seed in (1, 2):
        model = copy.deepcopy(dense)
        torch.manual_seed(global_seed)
        apply_moe(model, moe, seed=7)
        states.append(model.state_dict())
    keys = sorted(k.split(".mlp.")[1] for k in states[0] if ".h.1.mlp." in k)
    assert keys == ["experts.fc_bias", "experts.fc_weight", "experts.proj_bias",
                    "experts.proj_weight", "gate.weight"]  # fmt: skip
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    layer = moe_layers(model)[1]
    assert layer.top_k == 4 and layer.current_noise_std == 0.0
    layer.noise_std = 0.5
    assert layer.current_noise_std == 0.5
    layer.noise_std = 0.0
    layer.train()
    state = torch.get_rng_state()
    layer(torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.75])
def test_collapse_warns_only_strictly_above_the_threshold(threshold):
    """DESIGN.md: a warning is a busiest expert taking *more than* the threshold."""
    detector = CollapseDetector(CollapseConfig(threshold=threshold, patience=1, stop=True))
    at = detector.update(1, {0: threshold, 1: 0.1})
    assert not at.warning and not at.stop and detector.events == []
    above = detector.update(2, {0: threshold, 1: threshold + 1e-9})
    assert above.warning and above.stop and above.layers == [1]
    assert detector.events[0].max_fraction == {"1": threshold + 1e-9}


def test_the_product_level_is_95_percent():
    samples = np.arange(1001, dtype=float)
    assert bootstrap.CI_LEVEL == 0.95
    assert bootstrap.percentile_ci(samples) == pytest.approx((25.0, 975.0))


T_975 = {5: 2.570582, 11: 2.200985, 19: 2.093024}
"""Student's t 97.5% quantiles from a printed table, by degrees of freedom."""


def expanded_percentiles(n: int) -> list[float]:
    """Hesterberg's expanded 95% percentile interval's percentiles for n units per stratum:
    the normal tail beyond sqrt(n / (n - 1)) t_{n-1, 0.975}."""
    tail = 100 * NormalDist().cdf(-np.sqrt(n / (n - 1)) * T_975[n - 1])
    return [tail, 100 - tail]


def test_t_quantiles_and_the_expanded_level_against_printed_values():
    for df, quantile in T_975.items():
        assert bootstrap.t_quantile(0.975, df) == pytest.approx(quantile, abs=2e-6)
        assert bootstrap.t_quantile(0.025, df) == pytest.approx(-quantile, abs=2e-6)
    assert bootstrap.t_quantile(0.975, 1) == pytest.approx(12.706205, abs=2e-6)
    assert bootstrap.t_quantile(0.95, 4) == pytest.approx(2.131847, abs=2e-6)
    assert bootstrap.expanded_level(0.95, 20) == pytest.approx(1 - expanded_percentiles(20)[0] / 50)
    assert bootstrap.expanded_level(0.95, 1) == 0.95


def test_paired_loss_intervals_are_shifted_percentiles_of_the_resampled_means():
    """Hand computation from the same resamples: mean differences (absolute and relative to
    b), shifted by their bootstrap bias, the expanded percentiles of 12 documents per domain.
    Repeatable by seed."""
    rng = np.random.default_rng(3)
    strata = np.repeat([0, 1, 2], 12)
    loss_b = 3.0 + rng.normal(0, 0.4, len(strata))
    loss_a = loss_b * 1.05 + rng.normal(0, 0.1, len(strata))
    found = bootstrap.paired_loss_difference(loss_a, loss_b, strata, 300, seed=5)
    weights = bootstrap.resample_counts(strata, 300, 5)
    mean_a = weights @ loss_a / weights.sum(1)
    mean_b = weights @ loss_b / weights.sum(1)

    def shifted(samples, point):
        return tuple(np.percentile(samples - (samples.mean() - point), expanded_percentiles(12)))

    difference = loss_a.mean() - loss_b.mean()
    assert found.difference == pytest.approx(difference)
    assert found.relative == pytest.approx(difference / loss_b.mean())
    assert found.ci == pytest.approx(shifted(mean_a - mean_b, difference))
    relative = (mean_a - mean_b) / mean_b
    assert found.relative_ci == pytest.approx(shifted(relative, found.relative))
    again = bootstrap.paired_loss_difference(loss_a, loss_b, strata, 300, seed=5)
    assert again == found
    counts = np.random.default_rng(4).integers(0, 9, size=(36, 3, 4))
    shares = bootstrap.top_share_intervals(counts, strata, 200)
    assert shares == bootstrap.top_share_intervals(counts, strata, 200)


def shifted_ci(samples: np.ndarray, point: float, floor: float) -> tuple[float, float]:
    """The documented interval: samples shifted by their bootstrap bias, the expanded
    percentiles of 6 units per stratum, then clipped at the quantity's natural bound."""
    low, high = np.percentile(samples - (samples.mean() - point), expanded_percentiles(6))
    return max(low, floor), max(high, floor)


def test_nmi_and_top_share_intervals_against_a_hand_computation():
    """Per resample (the same multiplicities): the NMI of the pooled table and each label's
    busiest-expert share x E (0 for a label absent from the resample); points from the
    actual blocks; intervals shifted and floored (NMI at 0, share over uniform at 1)."""
    rng = np.random.default_rng(8)
    strata = np.repeat([0, 1, 2], 6)
    counts = rng.integers(0, 6, size=(18, 3, 4)).astype(float)
    counts[:, 2] = 0
    counts[0, 2, 1] = 1  # a label with one assignment: absent from many resamples
    found = bootstrap.nmi_intervals(counts, None, strata, 400, seed=2)
    weights = bootstrap.resample_counts(strata, 400, 2)
    joints = np.einsum("bn,nle->ble", weights, counts)
    samples = np.array([metrics.normalized_mi(joint) for joint in joints])
    point = metrics.normalized_mi(counts.sum(axis=0))
    assert found.nmi_ci == pytest.approx(shifted_ci(samples, point, 0.0))
    assert found.nmi_ci[0] == 0.0  # near-independent routing: the floor is reached
    assert found == bootstrap.nmi_intervals(counts, None, strata, 400, seed=2)

    shares = bootstrap.top_share_intervals(counts, strata, 400, seed=2)
    joint = counts.sum(axis=0)
    for label in range(3):
        per_resample = np.array(
            [j[label].max() / j[label].sum() * 4 if j[label].sum() > 0 else 0.0 for j in joints]
        )
        label_point = joint[label].max() / max(joint[label].sum(), 1) * 4
        assert shares[label] == pytest.approx(shifted_ci(per_resample, label_point, 1.0))
    assert shares == bootstrap.top_share_intervals(counts, strata, 400, seed=2)


def test_vectorized_nmi_of_empty_and_sparse_tables():
    """An empty table has NMI 0 (not NaN); zero cells contribute nothing (0 log 0 = 0)."""
    sparse = np.array([[5.0, 0.0, 0.0], [0.0, 3.0, 1.0]])
    stack = np.stack([np.zeros((2, 3)), sparse, np.full((2, 3), 2.0)])
    found = bootstrap.nmi_of_joints(stack)
    assert found.tolist() == pytest.approx([0.0, metrics.normalized_mi(sparse), 0.0])
    assert np.isfinite(found).all() and found[1] > 0.5


def test_intervals_are_spelled_one_way():
    assert bootstrap.format_interval((0.1234, -0.5)) == "[+0.123, -0.500]"
    assert bootstrap.format_interval((1.25, 3.0), digits=1, signed=False) == "[1.2, 3.0]"
    assert bootstrap.format_interval(None) == "-"


class _Record(BaseModel):
    name: str
    value: int


WRITERS = {
    "write_text": (lambda path: write_text(path, "new text\n"), "new text\n"),
    "write_json": (
        lambda path: write_json(path, _Record(name="new", value=2)),
        '{\n  "name": "new",\n  "value": 2\n}\n',
    ),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_failure_between_write_and_rename_leaves_the_old_file(writer, tmp_path, monkeypatch):
    import moectl.fs

    write, expected = WRITERS[writer]
    target = tmp_path / "file.json"
    target.write_text("old\n")

    def crash(src, dst):
        assert Path(src).read_text() == expected  # complete before the rename
        raise OSError("disk gone")

    monkeypatch.setattr(moectl.fs.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        write(target)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]
    monkeypatch.undo()
    write(target)
    assert target.read_text() == expected


def test_a_replaced_directory_is_moved_aside_beside_itself_under_a_dot_name(tmp_path, monkeypatch):
    """The old folder is renamed next to the target (same file system: a rename, never a
    copy) under a hidden name, then removed: a reader never sees a stray folder."""
    import moectl.fs

    target, new = tmp_path / "out", tmp_path / "new"
    target.mkdir()
    (target / "a.txt").write_text("old")
    new.mkdir()
    (new / "b.txt").write_text("new")
    moves: list[tuple[Path, Path]] = []
    rename = os.replace

    def recorded(src, dst):
        moves.append((Path(src), Path(dst)))
        rename(src, dst)

    monkeypatch.setattr(moectl.fs.os, "replace", recorded)
    replace_directory(new, target)
    (old, aside), (moved, final) = moves
    assert old == target and aside.parent.parent == tmp_path
    assert aside.parent.name.startswith(".out.old-") and (moved, final) == (new, target)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["b.txt"]


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.timeout(60)
def test_a_process_killed_between_write_and_rename_leaves_the_old_file(writer, tmp_path):
    """A hard exit (no `finally` runs) after the new bytes are written but before the rename:
    the target still holds the old content; only a dot-named temp file is left beside it."""
    target = tmp_path / "file.json"
    target.write_text("old\n")
    script = f"""
import os, sys
from pydantic import BaseModel
import moectl.fs as fs

class Record(BaseModel):
    name: str

def die(src, dst):
    sys.stdout.write(open(src).read())
    sys.stdout.flush()
    os._exit(9)

fs.os.replace = die
target = {str(target)!r}
if {writer!r} == "write_text":
    fs.write_text(target, "new text\\n")
else:
    fs.write_json(target, Record(name="new"))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=50
    )
    assert done.returncode == 9, done.stderr
    assert "new" in done.stdout  # the new bytes were complete in the temp file
    assert target.read_text() == "old\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "file.json"]
    assert all(name.startswith(".file.json.") for name in leftovers), leftovers
