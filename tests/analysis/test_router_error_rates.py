"""The null and planted worlds of scripts/router_error_rates.py, reduced: three frozen-router
runs on the test corpus, each judged with its own gate, a redrawn gate and a planted domain gate."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from moectl.analysis.step_zero import load_initial_model
from moectl.interop.loading import load_model
from moectl.model.routing import moe_layers
from moectl.study.findings.specialization import specialization_finding

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "router_error_rates.py"
SEEDS = [0, 1, 2]


def _load_script():
    spec = importlib.util.spec_from_file_location("router_error_rates", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


rer = _load_script()


@pytest.fixture(scope="module")
def worlds(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("router-error-rates")
    by_world = rer.run_worlds(
        out, tiny_corpus, SEEDS, steps=20, eval_blocks=48, n_gates=39, n_bootstrap=200
    )
    return out, by_world


def test_a_frozen_router_keeps_every_gate_bitwise_while_the_body_trains(worlds):
    out, _ = worlds
    for seed in SEEDS:
        run = out / "runs" / f"seed-{seed}"
        assert rer.gates_unchanged(run)
        trained, initial = load_model(run / "best").model, load_initial_model(run).model
        for index, layer in moe_layers(trained).items():
            assert torch.equal(layer.gate.weight, moe_layers(initial)[index].gate.weight)
            assert not torch.equal(
                layer.experts.fc_weight, moe_layers(initial)[index].experts.fc_weight
            )


def test_the_redrawn_and_planted_worlds_change_only_the_gates(worlds):
    out, _ = worlds
    trained = load_model(out / "runs" / "seed-0" / "best").model.state_dict()
    for world in ("redrawn", "planted"):
        derived = load_model(out / "runs" / f"seed-0-{world}" / "best").model.state_dict()
        changed = {key for key in trained if not torch.equal(trained[key], derived[key])}
        assert changed == {f"transformer.h.{i}.mlp.gate.weight" for i in (0, 1)}
        # The step-0 control is the run's own: the same init record.
        assert load_initial_model(out / "runs" / f"seed-0-{world}").meta.step == 0


def test_planted_gates_beat_every_gate_and_the_null_router_is_its_own_frozen_gate(worlds):
    _, by_world = worlds
    for null, planted in zip(by_world["null"], by_world["planted"], strict=True):
        for null_layer, planted_layer in zip(null.routing, planted.routing, strict=True):
            null_score, planted_score = null_layer.specialization, planted_layer.specialization
            assert null_score.router_made.difference == 0.0
            assert null_score.frozen_gate_nmi == pytest.approx(null_score.nmi, abs=1e-12)
            assert planted_score.gate_null.n == 39
            assert planted_score.gate_null.plain.percentile == 100.0
            assert planted_score.gate_null.p_value == pytest.approx(1 / 40)
            assert planted_score.router_made.verdict == "emerged"
    for rule in rer.RULES.values():
        planted_rate, per_layer = rer.rates(by_world["planted"], rule)
        assert (planted_rate.k, planted_rate.n) == (3, 3)
        assert [(r.k, r.n) for r in per_layer.values()] == [(3, 3), (3, 3)]
    null_rate, _ = rer.rates(by_world["null"], rer.frozen_gate_rule)
    assert (null_rate.k, null_rate.n) == (0, 3)


def test_the_gate_null_rule_is_the_study_findings_verdict(worlds):
    _, by_world = worlds
    for results in by_world.values():
        for result in results:
            finding = specialization_finding({"moe": [result]})
            assert finding.verdict != "too few documents"  # 10 eval documents per domain
            made = any(rer.gate_null_rule(result))
            assert made == (finding.verdict == "made by the router")
            if not made:
                assert any(rer.router_claim_rule(result)) == (
                    finding.verdict == "kept by the router"
                )


def test_the_table_counts_a_run_once_whatever_number_of_layers_fire(worlds):
    _, by_world = worlds
    results = by_world["planted"]
    calls = iter([[True, True], [False, True], [False, False]])
    run_rate, per_layer = rer.rates(results, lambda _: next(calls))
    assert (run_rate.k, run_rate.n) == (2, 3)
    assert {layer: rate.k for layer, rate in per_layer.items()} == {0: 1, 1: 2}
    lines = rer.table(by_world)
    assert len(lines) == 2 + len(rer.RULES) * len(rer.WORLDS)
    assert "| planted | 3/3 = 100%" in next(line for line in lines if "| planted |" in line)


@pytest.mark.parametrize(
    ("k", "n", "lower", "upper"),
    [
        (0, 24, 0.0, 1 - 0.025 ** (1 / 24)),
        (24, 24, 0.025 ** (1 / 24), 1.0),
        (5, 20, 0.0866, 0.4910),
    ],
)
def test_clopper_pearson_matches_the_exact_binomial_interval(k, n, lower, upper):
    lo, hi = rer.clopper_pearson(k, n)
    assert lo == pytest.approx(lower, abs=1e-4) and hi == pytest.approx(upper, abs=1e-4)
