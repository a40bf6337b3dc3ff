"""The study's findings over constructed results: every verdict path, seed counts and the
seed-level interval, and the collapse finding naming every setting its arms differ in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moectl.analysis import bootstrap
from moectl.analysis.bootstrap import verdict_of
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
    UnitCounts,
)
from moectl.analysis.runs import RunLogs
from moectl.analysis.seeds import seed_interval, shared_resamples
from moectl.config import RunConfig
from moectl.study.findings.collapse import collapse_finding
from moectl.study.findings.layer_sources import (
    layer_source,
    layer_source_over_seeds,
    nmi_replicates,
)
from moectl.study.findings.loss import loss_comparison, loss_finding
from moectl.study.findings.seed_combination import loss_replicates, paired_difference
from moectl.study.findings.specialization import specialization_finding

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
        token_id=TokenIdScore(
            nmi=0.02, ci=(0.01, 0.03), null_nmi=0.019, excess=0.001, excess_ci=(-0.004, 0.006)
        ),
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
    """A result evaluated on blocks of equal numbers per domain, one document each (10 per
    domain unless `loss` gives other blocks), in domain order."""
    block_loss = loss if loss is not None else [2.0] * 30
    return EvaluationResult(
        name=name, model_path=name, kind="moe" if layers else "dense", corpus="c",
        corpus_name="c", split="eval", blocks=len(block_loss), tokens=60,
        loss=float(np.mean(block_loss)), ppl=7.0, domain_loss={d: 2.0 for d in DOMAINS},
        domain_ppl={}, domain_tokens={}, routing=layers, top_k=layers[0].top_k if layers else None,
        block_index=list(range(len(block_loss))),
        block_domain=[i * 3 // len(block_loss) for i in range(len(block_loss))],
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
    assert (
        "given the token id, over its within-token-id null: +0.001 [-0.004, +0.006] over "
        "null, raw 0.020: none shown" in finding.details[0]
    )
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
    # Wider than any one seed's interval: the seeds disagree more than the documents say; a t
    # interval on 2 degrees of freedom, not a resample of three values.
    assert finding.ci[1] - finding.ci[0] > 0.02
    assert "t interval on 2 degrees of freedom" in finding.text
    assert "resamples seeds" not in finding.text


def test_the_seed_counts_are_the_deciding_layers_own():
    # Each seed's router beats the gate null in one layer: layer 2 in seeds 0 and 2, layer 3 in
    # seed 1. Every seed has some layer "made by the router", but no layer has it in every
    # seed: the finding's per-seed counts are those of the layer it reports (layer 2: 2 of 3),
    # not of each seed's best layer (which would say 3 of 3).
    nmis = {"moe": (0.30, 0.20), "moe-seed1": (0.20, 0.30), "moe-seed2": (0.30, 0.20)}
    seeds = [
        _result(name, [_layer(2, a, 0.0, 0.22), _layer(3, b, 0.0, 0.22)])
        for name, (a, b) in nmis.items()
    ]
    finding = specialization_finding({"top-1": seeds})
    assert finding.verdict == "from the representation"
    assert finding.measure.startswith("top-1 layer 2")
    assert finding.seed_verdicts == {"made by the router": 2, "from the representation": 1}
    assert "made by the router in 2 of 3" in finding.text


def test_one_seed_says_it_cannot_speak_for_another_seed():
    finding = specialization_finding({"top-1": [_result("moe", [_layer(2, 0.3, 0.0, 0.22)])]})
    # one seed: the router's excess over the gate null with its document interval (SE 0.01)
    assert finding.ci == pytest.approx((0.08 - 0.0196, 0.08 + 0.0196), abs=1e-4)
    assert finding.seed_verdicts
    assert "One seed" in finding.text and "another training seed" in finding.text
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_interval([0.1], doc_se=[0.01])


def _losses(rng: np.random.Generator, offset: float, spread: float = 0.3) -> list[float]:
    """Per-block losses of 30 one-block documents (10 per domain): shared difficulty (seeded
    by `rng`'s first draw) plus a model offset."""
    return list(2.0 + offset + spread * rng.standard_normal(30))


def test_loss_seeds_use_the_document_variance_they_share():
    """Two MoE seeds scored on the same documents: each seed's replicates are its own paired
    bootstrap (the same resamples), so they reproduce its document interval; the seeds' errors
    share the documents, and the combined interval is the t interval with their covariance."""
    hard = _losses(np.random.default_rng(0), 0.0)
    noise = np.random.default_rng(1).normal(0, 0.05, size=(2, 30))
    dense = [_result(f"dense{s}", [], hard) for s in range(2)]
    moe = [_result(f"moe{s}", [], list(np.array(hard) - 0.1 + noise[s])) for s in range(2)]
    replicates = loss_replicates(moe, dense)
    assert replicates.shape == (2, bootstrap.N_BOOTSTRAP)
    strata = np.repeat([0, 1, 2], 10)
    for row, (x, y) in zip(replicates, zip(moe, dense, strict=True), strict=True):
        own = paired_difference(x, y)
        assert bootstrap.percentile_ci(row, own.difference, strata=strata) == pytest.approx(own.ci)
    finding = loss_finding(moe, dense)
    combined = seed_interval(
        [paired_difference(x, y).difference for x, y in zip(moe, dense, strict=True)], replicates
    )
    assert finding.ci == pytest.approx(combined.ci) and finding.verdict == "better"
    # Results evaluated on other blocks share no resample: the bound from each interval instead.
    other = _result("moe-other", [], list(np.array(hard) - 0.1), block_document=list(range(1, 31)))
    assert loss_replicates([moe[0], other], dense) is None


def test_a_layer_source_over_seeds_uses_the_seeds_shared_replicates():
    """With the seeds' replicates on shared resamples, the seed interval adds only the document
    variance the seeds share (here none: independent replicates); without them it is bounded
    from each seed's own interval. Three seeds agreeing closely, each with a wide interval: the
    model change and the router's gain over its own gate are resolved only with replicates, and
    each verdict reads its own replicates."""
    layers = [_layer(2, 0.30 + 0.01 * s, 0.20, 0.20, half=0.2, p=0.001) for s in range(3)]
    independent = np.random.default_rng(5).normal(0.0, 0.01, size=(3, bootstrap.N_BOOTSTRAP))
    adjusted = [0.01, 0.01, 0.01]
    both = {"emergent": independent, "router_made": independent}
    assert layer_source_over_seeds(layers, adjusted, both) == "made by the router"
    # Holm rejects at adjusted p <= alpha, the boundary included
    assert layer_source_over_seeds(layers, [0.05] * 3, both) == "made by the router"
    assert layer_source_over_seeds(layers, [0.05, 0.05, 0.051], both) != "made by the router"
    only_model = {"emergent": independent, "router_made": None}
    assert layer_source_over_seeds(layers, adjusted, only_model) == "from the representation"
    assert layer_source_over_seeds(layers, adjusted) == "inherited"
    assert layer_source_over_seeds(layers, adjusted, {"emergent": None, "router_made": None}) == (
        "inherited"
    )


def test_loss_replicates_resample_documents_of_several_blocks():
    """Seeds' loss replicates on documents of 1-4 blocks: each resample's mean is over the
    resampled documents' blocks (a document weighs as many blocks as it has), computed here
    by hand from the shared document multiplicities."""
    sizes = [1, 2, 3, 4] * 3  # 4 documents per domain, 10 blocks each
    document = np.repeat(np.arange(12), sizes)
    rng = np.random.default_rng(3)
    losses = [list(2.0 + rng.standard_normal(30)) for _ in range(4)]
    a = [_result(f"a{s}", [], losses[s], block_document=list(document)) for s in range(2)]
    b = [_result(f"b{s}", [], losses[2 + s], block_document=list(document)) for s in range(2)]
    replicates = loss_replicates(a, b)
    assert replicates is not None and replicates.shape == (2, bootstrap.N_BOOTSTRAP)
    counts = shared_resamples(np.repeat([0, 1, 2], 4))  # (B, 12) document multiplicities
    per_block = counts[:, document]  # each block weighs its document's multiplicity
    for s in range(2):
        diff = np.array(losses[s]) - np.array(losses[2 + s])
        expected = per_block @ diff / per_block.sum(axis=1)
        assert replicates[s] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_a_loss_comparison_between_two_arms_is_antisymmetric():
    """The experiment's `comparisons` (arm - against) read loss_comparison either way round: b - a
    is a - b mirrored, interval and per-seed differences included, and the verdict flips."""
    hard = _losses(np.random.default_rng(0), 0.0)
    noise = np.random.default_rng(1).normal(0, 0.05, size=(3, 30))
    a = [_result(f"a{s}", [], list(np.array(hard) - 0.1 + noise[s])) for s in range(3)]
    b = [_result(f"b{s}", [], list(np.array(hard) + noise[2 - s] / 2)) for s in range(3)]
    mean, ci, verdict, _, diffs = loss_comparison(a, b)
    back_mean, back_ci, back_verdict, _, back_diffs = loss_comparison(b, a)
    assert verdict == "better" and back_verdict == "worse" and ci is not None
    assert back_mean == pytest.approx(-mean, abs=1e-12)
    assert back_ci == pytest.approx((-ci[1], -ci[0]), abs=1e-12)
    assert [d.difference for d in back_diffs] == pytest.approx(
        [-d.difference for d in diffs], abs=1e-12
    )


def test_loss_finding_over_seeds_counts_verdicts():
    dense = [_result(f"dense{s}", [], [2.0, 2.1, 2.0, 2.1, 2.0, 2.1] * 5) for s in range(2)]
    moe = [
        _result("moe", [], [1.9, 2.05, 1.92, 2.0, 1.88, 2.03] * 5),
        _result("moe-seed1", [], [2.1, 2.15, 2.12, 2.2, 2.08, 2.17] * 5),
    ]
    finding = loss_finding(moe, dense)
    assert finding.seed_verdicts == {"better": 1, "worse": 1}
    assert finding.verdict == "no detectable difference"
    assert finding.value == pytest.approx(0.0, abs=1e-9) and finding.ci[0] < 0 < finding.ci[1]
    assert len([d for d in finding.details if ", run moe" in d]) == 2


def _few_documents(name: str, layers: list[RoutingAnalysis], loss: list[float]) -> EvaluationResult:
    """A result like `prepare-data --source builtin --size-mb 0.1`'s eval split: code 1
    document (2 blocks), math 16, prose 10."""
    documents = [0, 0, *range(1, 17), *range(17, 27)]
    return _result(name, layers, loss, block_document=documents).model_copy(
        update={"block_domain": [0, 0] + [1] * 16 + [2] * 10}
    )


def test_too_few_documents_in_a_domain_gives_no_verdict():
    rng = np.random.default_rng(2)
    hard = _losses(rng, 0.0)[:28]
    dense = _few_documents("dense", [], hard)
    moe = _few_documents("moe", [_layer(2, 0.3, 0.0, 0.1)], list(np.array(hard) - 0.3))
    finding = loss_finding([moe], [dense])
    assert finding.verdict == "too few documents" and not finding.reproduced
    assert finding.ci is None and finding.seed_verdicts == {"too few documents": 1}
    assert "code 1, math 16, prose 10" in finding.text and "at least 10" in finding.text
    special = specialization_finding({"top-1": [moe]})
    assert special.verdict == "too few documents" and not special.reproduced
    assert "code 1, math 16, prose 10" in special.text
    assert layer_source("too few documents", "emerged") == "too few documents"
    # Ten documents in every domain are enough.
    assert (
        loss_finding(
            [_result("moe", [], list(np.array(_losses(rng, 0.0)) - 0.3))],
            [_result("dense", [], _losses(rng, 0.0))],
        ).verdict
        != "too few documents"
    )


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


def _unit_counts(rng: np.random.Generator, strength: float) -> list[list[int]]:
    """(30, 4) per-document expert counts: document d of domain d // 10 sends a share
    `strength` (plus document noise) of its 40 tokens to the domain's own expert."""
    rows = []
    for unit in range(30):
        p = np.full(4, 1.0)
        p[unit // 10] += strength * rng.uniform(2, 6)
        rows.append(rng.multinomial(40, p / p.sum()).tolist())
    return rows


def _in_domain_rows(per_unit: list[list[int]], strata: np.ndarray) -> np.ndarray:
    """(U, L, E) tables: each document's (E,) counts in its domain's row, as nmi_intervals
    takes them."""
    return np.eye(3)[strata][:, :, None] * np.asarray(per_unit, np.float64)[:, None, :]


def test_nmi_seed_intervals_use_the_shared_document_resamples_of_the_stored_tables():
    """Three seeds scored on the same 30 documents: the step-0 difference's seed interval adds
    the covariance of the seeds' paired NMI replicates, recomputed from the per-document tables
    on one set of resamples (the same weights for every seed)."""
    rng = np.random.default_rng(7)
    results = []
    for seed in range(3):
        layer = _layer(2, 0.25 + 0.02 * seed, 0.05, None)
        counts = UnitCounts(
            trained=_unit_counts(rng, 1.0 + 0.2 * seed), first_choice=_unit_counts(rng, 1.0),
            init=_unit_counts(rng, 0.05),
        )  # fmt: skip
        layer.specialization.unit_counts = counts
        results.append(_result(f"moe{seed}", [layer], block_document=list(range(30))))
    reps = nmi_replicates(results, 0)
    assert reps["router_made"] is None  # no frozen-gate tables stored
    assert reps["emergent"].shape == (3, bootstrap.N_BOOTSTRAP)
    # each seed's row is its own paired bootstrap of trained - step-0 (the same resamples as
    # its document interval): the percentile interval of the row is that seed's interval
    strata = np.repeat([0, 1, 2], 10)
    tables = results[1].routing[0].specialization.unit_counts
    one = bootstrap.nmi_intervals(
        _in_domain_rows(tables.trained, strata), _in_domain_rows(tables.init, strata), strata
    )
    row = reps["emergent"][1]
    assert bootstrap.percentile_ci(row, one.difference, strata=strata) == pytest.approx(
        one.difference_ci, rel=1e-9
    )
    finding = specialization_finding({"top-1": results})
    values = [0.20, 0.22, 0.24]
    want = seed_interval(values, reps["emergent"])
    assert finding.value == pytest.approx(want.mean)
    assert finding.ci == pytest.approx(want.ci)
