"""The study's findings over constructed results: every verdict path, seed counts and the
seed-level interval, and the collapse finding naming every setting its arms differ in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moectl.analysis.bootstrap import seed_interval, verdict_of
from moectl.analysis.results import (
    Emergence,
    EvaluationResult,
    FunctionalArm,
    FunctionalScore,
    GateNull,
    GateRank,
    Probe,
    RoutingAnalysis,
    SpecializationScore,
    TokenIdScore,
)
from moectl.analysis.runs import RunLogs
from moectl.config import RunConfig
from moectl.study.findings import (
    collapse_finding,
    layer_source,
    loss_finding,
    specialization_finding,
)

DOMAINS = ["code", "math", "prose"]


def _emergence(difference: float | None, half: float = 0.01) -> Emergence:
    if difference is None:
        return Emergence()
    ci = (difference - half, difference + half)
    return Emergence(difference=difference, ci=ci, verdict=verdict_of(ci))


def _gate_null(p: float, excess: float = 0.1) -> GateNull:
    rank = GateRank(
        p_value=p, percentile=100 * (1 - p), trained_nmi=0.1 + excess, mean=0.1, q05=0.05,
        q95=0.2, raw_mean=0.11, excess=excess, excess_se=0.01,
    )  # fmt: skip
    return GateNull(n=199, p_value=p, plain=rank, balanced=rank, n_permutations=32)


def _layer(
    layer: int,
    nmi: float,
    init: float | None,
    frozen: float | None,
    *,
    top_k: int = 1,
    first_choice: float | None = None,
    half: float = 0.01,
    p: float | None = None,
) -> RoutingAnalysis:
    """A layer whose router has gate-null p-value `p` (default: beats the null when it beats
    its frozen gate by more than the interval, else sits at its median)."""
    if p is None and frozen is not None:
        p = 0.005 if nmi - frozen > half else 0.5
    spec = SpecializationScore(
        mutual_information=nmi,
        label_entropy=float(np.log(3)),
        nmi=nmi,
        nmi_ci=(nmi - half, nmi + half),
        baseline_nmi=0.001,
        baseline_nmi_std=0.0005,
        n_permutations=5,
        init_nmi=init,
        emergent=_emergence(None if init is None else nmi - init, half),
        frozen_gate_nmi=frozen,
        router_made=_emergence(None if frozen is None else nmi - frozen, half),
        gate_null=_gate_null(p, nmi - (frozen or 0.0)) if p is not None else None,
        probe=Probe(accuracy=0.9, nmi=0.7, chance=0.34, train_documents=30, test_documents=30),
        token_id=TokenIdScore(nmi=0.02, ci=(0.01, 0.03)),
        first_choice_nmi=first_choice,
        first_choice_nmi_ci=None if first_choice is None else (first_choice - 0.01, first_choice),
    )
    counts = [[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0]]
    return RoutingAnalysis(
        layer=layer, n_experts=4, top_k=top_k, tokens=30, domains=DOMAINS, counts=counts,
        domain_fractions={}, utilization=[0.25] * 4, max_over_mean=1.0, cv=0.0, entropy=1.0,
        domain_entropy={}, specialization=spec, top_expert={},
    )  # fmt: skip


def _result(name: str, layers: list[RoutingAnalysis], loss: list[float] | None = None, **kw):
    block_loss = loss if loss is not None else [2.0] * 6
    return EvaluationResult(
        name=name, model_path=name, kind="moe" if layers else "dense", corpus="c",
        corpus_name="c", split="eval", blocks=len(block_loss), tokens=60,
        loss=float(np.mean(block_loss)), ppl=7.0, domain_loss={d: 2.0 for d in DOMAINS},
        domain_ppl={}, domain_tokens={}, routing=layers, top_k=layers[0].top_k if layers else None,
        block_index=list(range(len(block_loss))), block_domain=[0, 0, 1, 1, 2, 2],
        block_loss=block_loss, **kw,
    )  # fmt: skip


def test_layer_sources_never_credit_a_router_inside_the_gate_null():
    assert layer_source("made by the router", "emerged") == "made by the router"
    assert layer_source("kept by the router", "inherited") == "kept by the router"
    assert layer_source("not the router", "emerged") == "from the representation"
    assert layer_source(None, "emerged") == "rose, router not separated"
    assert layer_source("not the router", "reduced") == "reduced by training"
    assert layer_source("not the router", "inherited") == "inherited"
    assert layer_source(None, None) == "no control"
    assert layer_source("kept by the router", None) == "no control"


def test_made_by_the_router_is_decided_by_the_gate_null():
    top1 = _result("moe", [_layer(2, 0.05, 0.003, 0.12), _layer(3, 0.17, 0.007, 0.21)])
    top2 = _result(
        "top2",
        [
            _layer(2, 0.23, 0.001, 0.10, top_k=2, first_choice=0.2),
            _layer(3, 0.33, 0.004, 0.16, top_k=2, first_choice=0.3),
        ],
    )
    finding = specialization_finding({"top-1": [top1], "top-2": [top2]})
    assert finding.verdict == "made by the router" and finding.reproduced
    assert finding.measure.startswith("top-2 layer 3") and finding.value == pytest.approx(0.17)
    assert finding.ci == pytest.approx((0.17 - 0.0196, 0.17 + 0.0196), abs=1e-4)
    assert "random gates" in finding.control and "Holm over 4 comparisons" in finding.control
    assert "4 comparisons" in finding.text
    top1_lines = [line for line in finding.details if line.startswith("top-1 layer")]
    assert len(top1_lines) == 2
    assert all("from the representation" in line for line in top1_lines)
    assert "top-1 layer 2: from the representation" in finding.details[0]
    assert "percentile 50" in finding.details[0] and "probe ceiling" in finding.details[0]
    assert "Holm-adjusted" in finding.details[0]
    assert "given the token id 0.020" in finding.details[0]
    assert any("first choice only" in line and "0.200" in line for line in finding.details)


def test_from_the_representation_never_says_the_router_made_it():
    top1 = _result("moe", [_layer(2, 0.05, 0.003, 0.12), _layer(3, 0.17, 0.007, 0.21)])
    top2 = _result("top2", [_layer(2, 0.2, 0.001, 0.2, top_k=2), _layer(3, 0.3, 0.0, 0.31)])
    finding = specialization_finding({"top-1": [top1], "top-2": [top2]})
    assert finding.verdict == "from the representation" and not finding.reproduced
    assert "emerged" not in finding.text and "made it" not in finding.text
    assert finding.value is not None and finding.ci[1] >= 0 > finding.ci[0] - 1
    assert any("not comparable" in line for line in finding.details)


def test_reduced_by_training_and_inherited():
    reduced = _result("moe", [_layer(2, 0.1, 0.3, 0.2), _layer(3, 0.2, 0.2, 0.2)])
    finding = specialization_finding({"top-1": [reduced]})
    assert finding.verdict == "reduced by training"
    assert finding.value == pytest.approx(-0.2) and "step-0 model" in finding.control
    assert finding.measure == "top-1 layer 2: corrected NMI, trained - step-0 model"
    same = _result("moe", [_layer(2, 0.2, 0.2, 0.2), _layer(3, 0.2, 0.2, 0.2)])
    assert specialization_finding({"top-1": [same]}).verdict == "inherited"


def test_holm_over_the_layers_and_arms_the_finding_scans():
    # Each p-value alone is below 0.05, so four separate tests would call all four layers
    # "made by the router"; Holm over the 4 comparisons rejects only the smallest.
    top1 = _result("moe", [_layer(2, 0.3, 0.0, 0.2, p=0.04), _layer(3, 0.3, 0.0, 0.2, p=0.01)])
    top2 = _result("top2", [_layer(2, 0.3, 0.0, 0.2, p=0.02), _layer(3, 0.3, 0.0, 0.2, p=0.03)])
    finding = specialization_finding({"top-1": [top1], "top-2": [top2]})
    assert finding.verdict == "made by the router"
    assert "(top-1 layer 3)" in finding.text and "4 comparisons" in finding.text
    made = [line for line in finding.details if ": made by the router." in line]
    assert len(made) == 1 and made[0].startswith("top-1 layer 3")
    inside = [line for line in finding.details if ": from the representation." in line]
    assert len(inside) == 3 and all("Holm-adjusted" in line for line in inside)
    # A router that beats the null without any rise over step 0 only keeps domain routing.
    kept = _result("moe", [_layer(2, 0.3, 0.3, 0.2, p=0.001)])
    finding = specialization_finding({"top-1": [kept]})
    assert finding.verdict == "kept by the router" and not finding.reproduced
    assert "made it" not in finding.text


def test_no_init_record_is_said_plainly():
    missing = "no init record (an artifact without its run)"
    result = _result("moe", [_layer(2, 0.2, None, None)], init_control=missing)
    finding = specialization_finding({"top-1": [result]})
    assert finding.verdict == "no control" and not finding.reproduced
    assert missing in finding.text and finding.value is None


def test_seed_counts_and_the_seed_level_interval_when_seeds_disagree():
    # Seed 0: the router beats the gate null; seed 1: it sits inside it; seed 2: beats it.
    # Per seed for now, a router claim over seeds needs every seed.
    seeds = [
        _result("moe", [_layer(2, 0.30, 0.0, 0.22)]),
        _result("moe-seed1", [_layer(2, 0.20, 0.0, 0.22)]),
        _result("moe-seed2", [_layer(2, 0.27, 0.0, 0.22)]),
    ]
    finding = specialization_finding({"top-1": seeds})
    assert finding.seed_verdicts == {"made by the router": 2, "from the representation": 1}
    assert finding.verdict == "from the representation" and "in 2 of 3" in finding.text
    assert finding.value == pytest.approx((0.30 + 0.20 + 0.27) / 3)
    # Wider than any one seed's interval: the seeds disagree more than the documents say.
    assert finding.ci[1] - finding.ci[0] > 0.02


def test_seed_interval_resamples_seeds_then_documents():
    agree = seed_interval([0.1, 0.1, 0.1], [(0.08, 0.12)] * 3)
    assert agree.mean == pytest.approx(0.1) and agree.n_seeds == 3
    assert 0.08 < agree.ci[0] < 0.1 < agree.ci[1] < 0.12  # three seeds' documents: narrower
    disagree = seed_interval([0.1, -0.1, 0.1], [(0.08, 0.12), (-0.12, -0.08), (0.08, 0.12)])
    assert disagree.ci[0] < -0.05 and disagree.ci[1] > 0.09
    with pytest.raises(ValueError):
        seed_interval([], [])


def test_loss_finding_over_seeds_counts_verdicts():
    dense = [_result(f"dense{s}", [], [2.0, 2.1, 2.0, 2.1, 2.0, 2.1]) for s in range(2)]
    moe = [
        _result("moe", [], [1.9, 2.0, 1.9, 2.0, 1.9, 2.0]),
        _result("moe-seed1", [], [2.1, 2.2, 2.1, 2.2, 2.1, 2.2]),
    ]
    finding = loss_finding(moe, dense)
    assert finding.seed_verdicts == {"better": 1, "worse": 1}
    assert finding.verdict == "no detectable difference"
    assert finding.value == pytest.approx(0.0, abs=1e-9) and finding.ci[0] < 0 < finding.ci[1]
    assert len([d for d in finding.details if ", run moe" in d]) == 2


def test_functional_cases_are_counted():
    arm = FunctionalArm(
        experts=[0], own_loss=2.0, random_loss=2.5, n_draws=16, difference=-0.5,
        ci=(-0.6, -0.4), verdict="specialized",
    )  # fmt: skip
    score = FunctionalScore(domain="code", layer=2, m=1, full_loss=1.9, trained=arm)
    result = _result("moe", [_layer(2, 0.3, 0.0, 0.1)], functional=[score])
    finding = specialization_finding({"top-1": [result]})
    assert any("specialized in 1 of 1" in line for line in finding.details)


def _run(name: str, moe: dict, streaks: list[int]) -> RunLogs:
    config = RunConfig.model_validate({"name": name, "moe": {"enabled": True, "last_n": 1, **moe}})

    def layer(top: float) -> dict:
        rest = (1 - top) / 3
        return {"1": {"fractions": [top, rest, rest, rest], "entropy": 1.0, "max_fraction": top}}

    rows = [{"step": 0, "layers": layer(0.3), "collapse": None}]
    for i, consecutive in enumerate(streaks, start=1):
        fraction = 0.7 if consecutive else 0.3
        rows.append(
            {
                "step": 10 * i,
                "layers": layer(fraction),
                "collapse": {"warning": bool(consecutive), "layers": [1] if consecutive else [],
                             "consecutive": consecutive, "stop": consecutive >= 3},
            }
        )  # fmt: skip
    return RunLogs(path=Path(name), name=name, config=config, routing=rows)


def test_collapse_finding_names_the_noise_when_the_arms_differ_in_it():
    lb = _run("moe", {"lb_coef": 0.01, "noise_std": 0.1}, [0, 0, 0, 0])
    no_lb = _run("no-lb", {"lb_coef": 0.0, "noise_std": 0.0}, [0, 1, 2, 3])
    finding = collapse_finding([no_lb], [lb])
    assert finding.verdict == "reproduced" and "noise" in finding.title
    assert "moe.lb_coef 0.01 -> 0.0" in finding.text and "moe.noise_std 0.1 -> 0.0" in finding.text
    assert "not separated" in finding.text and finding.value == 3
    only_lb = _run("no-lb", {"lb_coef": 0.0, "noise_std": 0.1}, [0, 1, 2, 3])
    finding = collapse_finding([only_lb], [lb])
    assert "noise" not in finding.title and "load-balancing loss" in finding.text
    calm = _run("no-lb-seed1", {"lb_coef": 0.0, "noise_std": 0.1}, [0, 1, 0, 0])
    mixed = collapse_finding([only_lb, calm], [lb, lb])
    assert mixed.verdict == "mixed over seeds" and not mixed.reproduced
    assert mixed.seed_verdicts == {"reproduced": 1, "not reproduced": 1}
