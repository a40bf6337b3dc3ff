"""Tests that catch the study's own bugs: six plausible single-line mutations (issue 28
section 4) that the rest of the suite let through. docs/testing.md names the mutation each
test was checked against (applied by hand to a scratch copy: the test fails there).

1. `global` balancing in one process with gradient accumulation must use the step's fractions.
2. The top-1 straight-through weight: 1.0 forward, the chosen score's gradient backward.
3. Sigmoid routers keep sigmoid combine weights while routing noise is on.
4. Every interval of the evaluation resamples documents, not blocks.
5. First-choice NMI reads the first choice.
6. A resume on another world size sums the ranks' partial routing counts once each.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.evaluation import make_run
from helpers.training import DDP, FULL, SPLIT, _rows

from moectl.analysis import bootstrap, metrics
from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.evaluate import evaluate_models
from moectl.analysis.results import EvaluationResult
from moectl.analysis.routing import LayerRouting
from moectl.config import MoEConfig, resolve_run_config
from moectl.data.store import load_corpus
from moectl.model.router import route
from moectl.study.findings.seed_combination import paired_difference
from moectl.training.trainer import train_run

# 1. `global` in one process ------------------------------------------------------------------

# The DDP equality test's settings (no noise, lb_coef 0.5, 3 steps) in one process, where
# SPLIT (`global`, 2 micro-batches of 4 rows) takes the 8 rows FULL (`switch`) takes in one
# forward: the sampler hands out consecutive positions of one permutation.
TRAIN_KEYS = ("lb_loss", "loss", "lm_loss", "z_loss", "grad_norm")


def _train(tiny_corpus, run_dir, *overrides: str) -> list[dict]:
    config = resolve_run_config("tiny", overrides=[*DDP, *overrides])
    train_run(config, tiny_corpus, run_dir)
    return _rows(run_dir, kind="train")


def test_one_process_global_over_accumulated_micro_batches_equals_a_whole_batch_switch(
    tiny_corpus, tmp_path
):
    """`global` on 2 accumulated micro-batches in one process trains as `switch` does on the
    same 8 rows in one forward: same LB loss and, the update being the same, same later
    steps. The micro-batches' own fractions (`switch` on the same split) give another LB loss."""
    whole = _train(tiny_corpus, tmp_path / "whole", *FULL)
    split = _train(tiny_corpus, tmp_path / "split", *SPLIT)
    assert [r["step"] for r in split] == [1, 2, 3]
    for key in TRAIN_KEYS:
        assert [r[key] for r in split] == pytest.approx([r[key] for r in whole], rel=1e-5), key
    local = _train(tiny_corpus, tmp_path / "local", *SPLIT, "moe.balance=switch")
    assert local[0]["lb_loss"] != pytest.approx(whole[0]["lb_loss"], rel=1e-4)


# 2. and 3. the router's weights ---------------------------------------------------------------


def _logits(seed: int = 0, shape: tuple[int, int] = (16, 4)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def _noise(logits: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    """The noise `route` adds after torch.manual_seed(seed) (its one randn_like draw)."""
    torch.manual_seed(seed)
    return torch.randn_like(logits) * std


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
@pytest.mark.parametrize("noise_std", [0.0, 0.7])
def test_top1_straight_through_weight_has_the_gradient_of_the_chosen_score(score, noise_std):
    """Forward exactly 1.0; backward, d weight / d logits is that of the chosen (noisy) score:
    softmax(logits + noise)[chosen], or sigmoid(logits + noise)[chosen] (router.route)."""
    logits = _logits(1)
    upstream = torch.randn(16, 1, generator=torch.Generator().manual_seed(2))
    noise = _noise(logits, noise_std, seed=3)
    torch.manual_seed(3)
    routed = route(logits, 1, noise_std, score=score)
    assert torch.equal(routed.expert_weight, torch.ones(16, 1))
    (got,) = torch.autograd.grad((routed.expert_weight * upstream).sum(), logits)
    noisy = logits + noise
    scores = noisy.softmax(-1) if score == "softmax" else noisy.sigmoid()
    chosen = scores.gather(1, routed.expert_index)
    assert torch.equal(routed.expert_index, scores.argmax(-1, keepdim=True))
    (want,) = torch.autograd.grad((chosen * upstream).sum(), logits)
    torch.testing.assert_close(got, want)
    assert got.abs().sum() > 0


def test_sigmoid_combine_weights_stay_sigmoid_with_noise_on():
    """With noise, a sigmoid router chooses from sigmoid(logits + noise) and weighs the chosen
    experts by those scores renormalized over the chosen ones; `noisy_probs` are the same
    scores normalized over all experts. Softmax scores give other weights and choices."""
    logits = _logits(4, (32, 6))
    noise = _noise(logits, 1.0, seed=5)
    torch.manual_seed(5)
    routed = route(logits, 2, 1.0, score="sigmoid")
    scores = (logits + noise).sigmoid()
    top, index = scores.topk(2, dim=-1)
    assert torch.equal(routed.expert_index, index)
    torch.testing.assert_close(routed.expert_weight, top / top.sum(-1, keepdim=True))
    torch.testing.assert_close(routed.noisy_probs, scores / scores.sum(-1, keepdim=True))
    soft = (logits + noise).softmax(-1).topk(2, dim=-1).values
    assert not torch.allclose(routed.expert_weight, soft / soft.sum(-1, keepdim=True), atol=1e-3)


# 4. documents, not blocks, as the bootstrap's units -------------------------------------------


def _result(name: str, block_loss, block_domain, block_document) -> EvaluationResult:
    n = len(block_loss)
    return EvaluationResult(
        name=name,
        model_path=name,
        kind="dense",
        corpus="c",
        corpus_name="c",
        split="eval",
        blocks=n,
        tokens=16 * n,
        loss=float(np.mean(block_loss)),
        ppl=float(np.exp(np.mean(block_loss))),
        domain_loss={},
        domain_ppl={},
        domain_tokens={},
        block_index=list(range(n)),
        block_domain=[int(d) for d in block_domain],
        block_loss=[float(v) for v in block_loss],
        block_document=[int(d) for d in block_document],
    )


def _document_interval(a: EvaluationResult, b: EvaluationResult) -> bootstrap.PairedDifference:
    """a - b written out over documents: each document's mean block loss under each model,
    weighed by its blocks, the documents resampled within their domain."""
    _, unit = np.unique(a.block_document, return_inverse=True)
    blocks = np.bincount(unit).astype(np.float64)
    means = [np.bincount(unit, weights=r.block_loss) / blocks for r in (a, b)]
    strata = np.zeros(len(blocks), np.int64)
    strata[unit] = a.block_domain
    return bootstrap.paired_loss_difference(*means, strata, size=blocks)


def test_paired_difference_resamples_documents_that_span_several_blocks():
    """8 documents of 6 blocks in each of 2 domains; the difference between the two models
    is mostly a per-document offset, so the 96 blocks are far from independent. The interval
    must be the documents' (wide), not the blocks' (about sqrt(6) times narrower)."""
    rng = np.random.default_rng(0)
    document = np.repeat(np.arange(16), 6)
    domain = document // 8
    difference = rng.normal(0.0, 0.3, 16)[document] + rng.normal(0.0, 0.02, 96)
    base = rng.normal(3.0, 0.1, 96)
    a = _result("a", base + difference, domain, document)
    b = _result("b", base, domain, document)
    got = paired_difference(a, b)
    want = _document_interval(a, b)
    assert got.difference == pytest.approx(float(difference.mean()))
    assert got.ci == pytest.approx(want.ci, rel=1e-9)
    by_block = bootstrap.paired_block_difference(
        np.array(a.block_loss), np.array(b.block_loss), domain, np.arange(96)
    )
    width = got.ci[1] - got.ci[0]
    assert width > 1.8 * (by_block.ci[1] - by_block.ci[0])


@pytest.fixture(scope="module")
def long_document_evaluation(tiny_corpus, tmp_path_factory):
    """Two untrained tiny MoEs (drawn from different seeds) evaluated on every eval block of
    `tiny_corpus`, whose documents (10 per domain) span several blocks of 16 tokens each; with
    the unit each token was handed to the routing analysis."""
    root = tmp_path_factory.mktemp("long-documents")
    moe = MoEConfig(enabled=True, last_n=1, n_experts=4, top_k=1)
    runs = [make_run(root, "top1", tiny_corpus, moe)]
    top2 = moe.model_copy(update={"top_k": 2})
    runs.append(make_run(root, "top2", tiny_corpus, top2, seed=1))
    units: dict[int, list[np.ndarray]] = {}
    real_add = LayerRouting.add

    def spy(self, domain_ids, block_ids, *args, **kwargs):
        units.setdefault(id(self), []).append(np.asarray(block_ids).copy())
        return real_add(self, domain_ids, block_ids, *args, **kwargs)

    options = EvaluationOptions(
        batch_size=33, n_permutations=2, n_bootstrap=200, random_gates=32, samples_per_domain=0
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LayerRouting, "add", spy)
        results = evaluate_models(runs, load_corpus(tiny_corpus), options=options)
    return results, [np.concatenate(batches) for batches in units.values()]


def test_evaluation_hands_the_routing_analysis_document_units(long_document_evaluation):
    """Every token's bootstrap unit is its block's document (numbered 0..n-1), in every
    routing recorder of both models, so the routing intervals resample documents."""
    (first, _), units = long_document_evaluation
    documents = np.asarray(first.block_document)
    assert len(documents) == first.blocks and len(set(documents.tolist())) == 30
    assert len(documents) > 3 * 30  # several blocks per document
    _, want = np.unique(documents, return_inverse=True)
    assert len(units) >= 2  # one recorder per model's MoE layer, at least
    for per_token in units:
        assert np.array_equal(per_token, np.repeat(want, 16))


def test_evaluated_models_compare_over_documents(long_document_evaluation):
    """Two models evaluated on the same multi-block documents: their loss difference's
    interval is the one over documents, measurably unlike the one over blocks."""
    (first, second), _ = long_document_evaluation
    assert first.block_document == second.block_document
    domain = np.array(first.block_domain)
    got = paired_difference(first, second)
    want = _document_interval(first, second)
    assert got.ci == pytest.approx(want.ci, rel=1e-9)
    by_block = bootstrap.paired_block_difference(
        np.array(first.block_loss), np.array(second.block_loss), domain, np.array(first.block_index)
    )
    assert got.ci != by_block.ci  # blocks as units would give exactly the block interval


# 5. first choice ------------------------------------------------------------------------------


def test_first_choice_nmi_reads_the_first_choice_when_the_second_is_domain_blind():
    """Top-2 over 5 experts: the first choice is the domain's expert (0, 1 or 2), the second
    expert 3 or 4 at random, whatever the domain. First-choice NMI is then 1, all-choice NMI
    lower, and the last choice alone carries no domain information."""
    rng = np.random.default_rng(0)
    n_docs, per_doc = 30, 20
    domains = np.repeat(np.arange(n_docs) % 3, per_doc)
    units = np.repeat(np.arange(n_docs), per_doc)
    first = domains.copy()
    second = rng.integers(3, 5, len(first))
    experts = np.stack([first, second], axis=1)
    routing = LayerRouting(layer=0, n_experts=5, top_k=2)
    routing.add(domains, units, experts, np.zeros(len(domains)))
    score = routing.analyse(["a", "b", "c"], {}, {}, n_permutations=2, n_bootstrap=100)
    score = score.specialization
    last = metrics.normalized_mi(metrics.count_matrix(domains, second[:, None], 3, 5))
    assert last < 0.1
    assert score.first_choice_nmi == pytest.approx(1.0)
    assert score.first_choice_nmi_ci[0] > 0.9
    assert score.nmi < 0.9


# 6. partial routing counts across world sizes -------------------------------------------------

RESUMED = [
    "moe.enabled=true",
    "moe.last_n=1",
    "moe.n_experts=4",
    "moe.top_k=2",
    "train.max_steps=3",
    "train.log_every=1",
    "train.eval_every=3",
    "train.save_every=2",
    "train.router_log_every=3",  # the checkpoint at step 2 holds 2 steps of partial counts
]


def _split_routing(state: dict) -> list[dict]:
    """Two ranks' partial counts that sum to `state` (rank 0 about a quarter, not a half)."""

    def part(tensor: torch.Tensor) -> torch.Tensor:
        return torch.floor(tensor / 4)

    rank0 = {
        "tokens": part(state["tokens"]),
        "counts": {k: part(v) for k, v in state["counts"].items()},
        "entropy_sum": {k: v / 4 for k, v in state["entropy_sum"].items()},
    }
    rank1 = {
        "tokens": state["tokens"] - rank0["tokens"],
        "counts": {k: v - rank0["counts"][k] for k, v in state["counts"].items()},
        "entropy_sum": {k: v - rank0["entropy_sum"][k] for k, v in state["entropy_sum"].items()},
    }
    return [rank0, rank1]


def test_resume_on_one_process_sums_two_ranks_partial_routing_counts_once(tiny_corpus, tmp_path):
    """A step-2 checkpoint laid out as a 2-rank run writes it (`routing_ranks`: each rank's
    counts since the last routing row; `routing`: rank 0's), resumed in one process: the
    step-3 routing row counts every token of steps 1-3 once, as the uninterrupted run did."""
    config = resolve_run_config("tiny", overrides=RESUMED)
    run = tmp_path / "run"
    train_run(config, tiny_corpus, run)
    want = _rows(run, "routing.jsonl")
    assert want[-1]["step"] == 3
    path = run / "checkpoints" / "step-2" / "trainer_state.pt"
    state = torch.load(path, weights_only=True)
    assert state["routing"]["tokens"].sum() > 0  # non-zero partial counts
    ranks = _split_routing(state["routing"])
    assert all(r["tokens"].sum() > 0 for r in ranks)
    state.update(routing=ranks[0], routing_ranks=ranks, world_size=2)
    torch.save(state, path)
    train_run(config, tiny_corpus, run, resume=path.parent)
    got = _rows(run, "routing.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert got[-1]["layers"]["1"]["counts"] == want[-1]["layers"]["1"]["counts"]
    # Entropies are sums of float64 parts split and added back: equal within rounding.
    flat_got, flat_want = _flatten(got[-1]), _flatten(want[-1])
    assert flat_got.keys() == flat_want.keys()
    for key, value in flat_want.items():
        assert flat_got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for key in value for k, v in _flatten(value[key], f"{prefix}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, x in enumerate(value) for k, v in _flatten(x, f"{prefix}[{i}]").items()}
    return {prefix: value}


# A survivor of the partial mutmut run over training/balancing.py (docs/testing.md) ----------


def test_bias_moves_against_the_load_its_step_counted(tiny_corpus, tmp_path):
    """After one optimizer step over 2 micro-batches, each expert's selection bias is
    rate * sign(mean load - its load) for the assignments that step made (the step-0 routing
    row counts those same forwards). Counts summed with the wrong sign would push the
    overloaded experts up; the fractions `global` takes would not show it."""
    from safetensors.torch import load_file

    sets = ["moe.balance=bias", "moe.bias_update_rate=0.01", "train.max_steps=1"]
    sets += ["train.save_every=1", "train.grad_accum=2"]
    config = resolve_run_config("tiny", overrides=[*RESUMED, *sets])
    run = tmp_path / "run"
    train_run(config, tiny_corpus, run)
    (row,) = [r for r in _rows(run, "routing.jsonl") if r["step"] == 0]
    load = torch.tensor(row["layers"]["1"]["counts"], dtype=torch.float32).sum(dim=0)
    assert load.max() > load.min()
    weights = load_file(str(run / "checkpoints" / "step-1" / "model.safetensors"))
    (bias,) = [value for key, value in weights.items() if key.endswith("balance.bias")]
    torch.testing.assert_close(bias, 0.01 * torch.sign(load.mean() - load))
