"""The eval sample: random, stratified, spread over documents; and the document bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from moectl.analysis import bootstrap, metrics
from moectl.analysis.eval_blocks import sample_rows

# Domain 0: 6 documents of 5 blocks; domain 1: 2 documents of 10; domain 2: 3 blocks, 3 docs.
DOMAINS = np.array([0] * 30 + [1] * 20 + [2] * 3)
DOCUMENTS = np.array([i // 5 for i in range(30)] + [10 + i // 10 for i in range(20)] + [20, 21, 22])


def test_sample_is_stratified_spread_over_documents_and_seeded() -> None:
    rows = sample_rows(DOMAINS, DOCUMENTS, 12, seed=0)
    assert np.bincount(DOMAINS[rows], minlength=3).tolist() == [5, 4, 3], "2's unused share"
    assert len(set(DOCUMENTS[rows[DOMAINS[rows] == 0]])) == 5, "one block from 5 of 6 documents"
    assert np.bincount(DOCUMENTS[rows[DOMAINS[rows] == 1]]).tolist()[10:] == [2, 2]
    assert (sample_rows(DOMAINS, DOCUMENTS, 12, seed=0) == rows).all()
    draws = {tuple(sample_rows(DOMAINS, DOCUMENTS, 12, seed=s)) for s in range(8)}
    assert len(draws) == 8, "the seed picks which blocks"
    firsts = {int(sample_rows(DOMAINS, DOCUMENTS, 3, seed=s)[0]) for s in range(20)}
    assert len(firsts) > 3, "never the first rows in file order"
    assert sample_rows(DOMAINS, DOCUMENTS, None, seed=0).tolist() == list(range(len(DOMAINS)))


def test_every_document_gives_a_block_before_any_gives_a_second() -> None:
    for seed in range(10):
        rows = sample_rows(DOMAINS, DOCUMENTS, 21, seed=seed)  # 9, 9 and all 3 of domain 2
        per_document = np.bincount(DOCUMENTS[rows], minlength=23)
        assert sorted(per_document[:6].tolist()) == [1, 1, 1, 2, 2, 2]
        assert sorted(per_document[10:12].tolist()) == [4, 5]
        assert per_document[20:].tolist() == [1, 1, 1]


def _clustered(seed: int, n_documents: int = 12, blocks_per_document: int = 6):
    """Two domains whose documents each favour one expert: blocks of a document alike."""
    rng = np.random.default_rng(seed)
    tables, block_domain, block_document = [], [], []
    for domain in (0, 1):
        for document in range(n_documents):
            favourite = rng.integers(0, 4) if rng.random() < 0.6 else domain
            for _ in range(blocks_per_document):
                experts = np.where(rng.random(16) < 0.9, favourite, rng.integers(0, 4, 16))
                table = np.zeros((2, 4))
                np.add.at(table[domain], experts, 1)
                tables.append(table)
                block_domain.append(domain)
                block_document.append(domain * 100 + document)
    return np.array(tables), np.array(block_domain), np.array(block_document)


def test_document_bootstrap_is_wider_than_a_block_bootstrap_on_correlated_blocks() -> None:
    per_block, block_domain, block_document = _clustered(0)
    per_document = bootstrap.unit_counts(per_block, block_document)
    strata = bootstrap.unit_strata(block_domain, block_document)
    assert per_document.shape == (24, 2, 4) and (per_document.sum(0) == per_block.sum(0)).all()
    weights = bootstrap.resample_counts(strata, 100, seed=1)
    assert (weights[:, strata == 0].sum(1) == 12).all() and (
        weights[:, strata == 1].sum(1) == 12
    ).all()
    by_block = bootstrap.nmi_intervals(per_block, None, block_domain, 400, seed=2).nmi_ci
    by_document = bootstrap.nmi_intervals(per_document, None, strata, 400, seed=2).nmi_ci
    assert by_document[1] - by_document[0] > 1.5 * (by_block[1] - by_block[0])


def test_paired_loss_difference_weighs_documents_by_their_blocks() -> None:
    rng = np.random.default_rng(4)
    block_domain = np.repeat([0, 1], 30)
    block_document = np.repeat(np.arange(12), [1, 2, 3, 4, 8, 12, 5, 5, 5, 5, 5, 5])
    shift = np.repeat(rng.normal(0, 0.5, 12), [1, 2, 3, 4, 8, 12, 5, 5, 5, 5, 5, 5])
    loss_b = 3.0 + rng.normal(0, 0.01, 60)
    loss_a = loss_b + shift
    by_document = bootstrap.paired_block_difference(loss_a, loss_b, block_domain, block_document)
    assert by_document.difference == pytest.approx(float((loss_a - loss_b).mean()))
    by_block = bootstrap.paired_loss_difference(loss_a, loss_b, block_domain)
    assert by_block.difference == pytest.approx(by_document.difference)
    width = by_document.ci[1] - by_document.ci[0]
    assert width > 1.5 * (by_block.ci[1] - by_block.ci[0])


def test_baseline_shuffles_labels_across_whole_documents() -> None:
    rng = np.random.default_rng(5)
    units = np.repeat(np.arange(20), 50)
    labels = np.repeat(np.arange(20) % 2, 50)
    experts = np.repeat(rng.integers(0, 4, 20), 50)[:, None]  # a document routes alike
    by_token, _ = metrics.permutation_baseline(labels, experts, 2, 4, 20, seed=0)
    by_document, _ = metrics.permutation_baseline(labels, experts, 2, 4, 20, seed=0, units=units)
    assert by_token < 0.01 < by_document
