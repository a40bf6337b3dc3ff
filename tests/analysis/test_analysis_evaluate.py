"""evaluate_models on a tiny prepared corpus and tiny dense / MoE GPT-2 models (untrained)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.evaluation import DOMAINS

from moectl.analysis.eval_blocks import SAMPLE_NOTE, select_blocks
from moectl.analysis.eval_files import corpus_for, save_results
from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.evaluate import evaluate_models
from moectl.analysis.results import load_results
from moectl.analysis.tokentypes import CODE_TYPES
from moectl.data.store import load_corpus
from moectl.errors import ModelError, MoectlError


def test_evaluate_dense_and_moe(tiny_study) -> None:
    corpus = load_corpus(tiny_study["corpus"])
    options = EvaluationOptions(batch_size=4, n_permutations=5, samples_per_domain=1)
    dense, moe, top2 = evaluate_models(
        [tiny_study["dense"], tiny_study["moe"], tiny_study["top2"]],
        corpus,
        max_blocks=9,
        options=options,
    )
    assert dense.kind == "dense" and not dense.routing and dense.notes
    assert moe.kind == "moe" and moe.moe_layers == [0, 1] and moe.top_k == 1
    for result in (dense, moe, top2):
        assert result.blocks == 9 and result.tokens == 9 * 32
        assert set(result.domain_loss) == set(DOMAINS)
        # An untrained model is close to uniform over the vocabulary.
        vocab = corpus.manifest.tokenizer.vocab_size
        assert abs(result.loss - np.log(vocab)) < 1.0
        assert result.ppl == pytest.approx(np.exp(result.loss))
        weighted = sum(result.domain_loss[d] * result.domain_tokens[d] for d in DOMAINS)
        assert weighted / sum(result.domain_tokens.values()) == pytest.approx(result.loss)
    for result, k in ((moe, 1), (top2, 2)):
        for layer in result.routing:
            assert layer.tokens == 9 * 32
            assert sum(map(sum, layer.counts)) == 9 * 32 * k
            assert sum(layer.utilization) == pytest.approx(1.0)
            for fractions in layer.domain_fractions.values():
                assert sum(fractions) == pytest.approx(1.0)
            assert 0 <= layer.specialization.nmi <= 1
            assert 0 < layer.entropy <= np.log(4) + 1e-6
            code = next(tt for tt in layer.token_types if tt.group == "code")
            assert code.types == list(CODE_TYPES)
            assert code.tokens["keyword"] > 0 and code.tokens["name"] > 0
            assert sum(code.tokens.values()) <= result.domain_tokens["code"] + 3
        assert result.block_index and len(result.block_loss) == 9
        assert np.mean(result.block_loss) == pytest.approx(result.loss)
    for result in (moe, top2):
        assert "has no init/init.json" in (result.init_control or "")
        for layer in result.routing:
            score = layer.specialization
            assert score.init_nmi is None and score.init_nmi_ci is None
            assert score.emergent.verdict is None and score.emergent.ci is None
            assert score.nmi_ci[0] <= score.nmi <= score.nmi_ci[1]
    assert [s.domain for s in moe.samples] == list(DOMAINS)
    sample = moe.samples[0]
    assert set(sample.layers) == {"0", "1"} and len(sample.layers["0"]) == len(sample.tokens)
    # eval routing has no noise, so the chosen expert is the argmax: at least 1/E of the mass
    assert all(0.25 - 1e-6 <= p <= 1.0 for p in sample.probs["0"])


def test_routing_counts_match_a_direct_forward(tiny_study) -> None:
    from moectl.interop.loading import load_model
    from moectl.model.routing import last_router_stats

    corpus = load_corpus(tiny_study["corpus"])
    options = EvaluationOptions(batch_size=2, n_permutations=2)
    (result,) = evaluate_models([tiny_study["moe"]], corpus, max_blocks=3, options=options)
    loaded = load_model(tiny_study["moe"] / "best")
    assert sorted(result.block_domain) == [0, 1, 2]  # one block drawn from each domain
    ids = torch.tensor(corpus.eval.select(result.block_index)["input_ids"], dtype=torch.long)
    with torch.no_grad():
        loaded.model(input_ids=ids)
    stats = last_router_stats(loaded.model)
    for layer in result.routing:
        chosen = stats[layer.layer].expert_index[:, 0].numpy()
        expected = np.bincount(chosen, minlength=4)
        assert np.array_equal(np.sum(layer.counts, axis=0), expected)


def test_results_round_trip_and_default_paths(tiny_study, tmp_path: Path) -> None:
    corpus = load_corpus(tiny_study["corpus"])
    assert corpus_for([tiny_study["moe"]]) == tiny_study["corpus"]
    results = evaluate_models(
        [tiny_study["moe"]], corpus, max_blocks=3, options=EvaluationOptions(n_permutations=2)
    )
    (path,) = save_results(results)
    assert path == tiny_study["moe"] / "eval" / "mix.json"
    assert load_results(path) == results
    (combined,) = save_results(results, tmp_path / "all.json")
    assert load_results(combined) == results


def test_tokenizer_mismatch_and_bad_paths(tiny_study, tmp_path: Path) -> None:
    corpus = load_corpus(tiny_study["corpus"])
    meta_path = tiny_study["dense"] / "best" / "model.json"
    other = tmp_path / "other"
    other.mkdir()
    for item in (tiny_study["dense"] / "best").iterdir():
        if item.is_file():
            (other / item.name).write_bytes(item.read_bytes())
    meta = json.loads(meta_path.read_text())
    meta["tokenizer"]["hash"] = "0" * 16
    (other / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="tokenizer"):
        evaluate_models([other], corpus, max_blocks=2)
    with pytest.raises(MoectlError, match="does not exist"):
        evaluate_models([tmp_path / "missing"], corpus)
    with pytest.raises(MoectlError, match="neither a run directory"):
        evaluate_models([tmp_path], corpus)


def test_documents_are_unique_across_the_split(tiny_study) -> None:
    corpus = load_corpus(tiny_study["corpus"])
    blocks = select_blocks(corpus, EvaluationOptions())
    by_document: dict[int, set[int]] = {}
    for block in blocks:
        by_document.setdefault(block.document, set()).add(block.domain)
    assert all(len(domains) == 1 for domains in by_document.values())
    stored = {
        (int(d), int(doc))
        for d, doc in zip(corpus.eval["domain"], corpus.eval["document"], strict=True)
    }
    assert len(by_document) == len(stored)


def test_evaluation_records_the_sample_and_warns_of_few_documents(tiny_study) -> None:
    corpus = load_corpus(tiny_study["corpus"])
    options = EvaluationOptions(n_permutations=2, n_bootstrap=50, seed=3)
    (result,) = evaluate_models([tiny_study["moe"]], corpus, max_blocks=6, options=options)
    assert result.sample_seed == 3 and len(result.block_document) == 6
    assert {d: s.blocks for d, s in result.sample.items()} == {"code": 2, "math": 2, "prose": 2}
    for domain, size in result.sample.items():
        index = corpus.domains.index(domain)
        documents = {
            d for d, k in zip(result.block_document, result.block_domain, strict=True) if k == index
        }
        assert size.documents == len(documents) == 2
    notes = [n for n in result.notes if n.startswith(SAMPLE_NOTE)]
    assert len(notes) == 3 and all("fewer than 20" in n for n in notes)


def _without_documents(source: Path, target: Path) -> Path:
    """A copy of a corpus as format 1 wrote it: no document column, no document counts."""
    from datasets import load_from_disk

    shutil.copytree(source / "tokenizer", target / "tokenizer")
    shutil.copy(source / "dataset_dict.json", target / "dataset_dict.json")
    for split in ("train", "eval"):
        dataset = load_from_disk(str(source / split)).remove_columns(["document"])
        dataset.save_to_disk(str(target / split))
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["format_version"] = 1
    for stats in manifest["stats"].values():
        for stat in stats:
            del stat["documents"]
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_a_corpus_without_documents_evaluates_with_blocks_as_units(tiny_study, tmp_path) -> None:
    corpus = load_corpus(_without_documents(tiny_study["corpus"], tmp_path / "old"))
    assert not corpus.has_documents
    options = EvaluationOptions(n_permutations=2, n_bootstrap=50)
    (result,) = evaluate_models([tiny_study["moe"]], corpus, max_blocks=6, options=options)
    assert len(set(result.block_document)) == 6
    assert all(s.documents == s.blocks for s in result.sample.values())
    (note,) = [n for n in result.notes if n.startswith(SAMPLE_NOTE)]
    assert "re-run `moectl prepare-data`" in note
    assert result.routing[0].specialization.nmi_ci is not None
