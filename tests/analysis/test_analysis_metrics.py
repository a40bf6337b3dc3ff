"""Routing metrics on hand-made count matrices and token assignments with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moectl.analysis import metrics
from moectl.analysis.routing import LayerRouting


def test_perfect_specialization_scores_one() -> None:
    counts = np.array([[50, 0, 0, 0], [0, 50, 0, 0], [0, 0, 25, 25]])
    assert metrics.mutual_information(counts) == pytest.approx(math.log(3))
    assert metrics.normalized_mi(counts) == pytest.approx(1.0)


def test_independent_routing_scores_zero() -> None:
    counts = np.outer([10, 20, 30], [1, 2, 3, 4])
    assert metrics.mutual_information(counts) == pytest.approx(0.0, abs=1e-12)
    assert metrics.normalized_mi(counts) == pytest.approx(0.0, abs=1e-12)


def test_partial_specialization_matches_hand_computation() -> None:
    # Two equally likely domains; domain 0 -> expert 0 always, domain 1 -> experts 0/1 evenly.
    counts = np.array([[2, 0], [1, 1]])
    p_joint = np.array([[0.5, 0.0], [0.25, 0.25]])
    p_expert = np.array([0.75, 0.25])
    expected = sum(
        p_joint[i, j] * math.log(p_joint[i, j] / (0.5 * p_expert[j]))
        for i in range(2)
        for j in range(2)
        if p_joint[i, j] > 0
    )
    assert metrics.mutual_information(counts) == pytest.approx(expected)
    assert metrics.normalized_mi(counts) == pytest.approx(expected / math.log(2))


def test_utilization_imbalance_and_top_expert() -> None:
    counts = np.array([[6, 2, 0, 0], [0, 0, 1, 3]])
    usage = metrics.utilization(counts)
    np.testing.assert_allclose(usage, [0.5, 1 / 6, 1 / 12, 0.25])
    max_over_mean, cv = metrics.imbalance(usage)
    assert max_over_mean == pytest.approx(2.0)
    assert cv == pytest.approx(np.std(usage) / 0.25)
    assert metrics.imbalance(np.full(8, 1 / 8)) == (pytest.approx(1.0), pytest.approx(0.0))
    assert metrics.top_expert_shares(counts) == [
        (0, pytest.approx(0.75), pytest.approx(3.0)),
        (3, pytest.approx(0.75), pytest.approx(3.0)),
    ]


def test_count_matrix_counts_every_topk_assignment() -> None:
    labels = np.array([0, 0, 1])
    experts = np.array([[0, 1], [0, 2], [2, 1]])
    np.testing.assert_array_equal(
        metrics.count_matrix(labels, experts, 2, 3), [[2, 1, 1], [0, 1, 1]]
    )


def test_permutation_baseline_is_small_but_positive_bias() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=300)
    experts = rng.integers(0, 8, size=(300, 1))
    mean, std = metrics.permutation_baseline(labels, experts, 3, 8, n_permutations=30)
    # Finite-sample bias of MI is about (D-1)(E-1)/(2N) nats = 14/600 -> NMI ~ 0.02.
    assert 0.005 < mean < 0.06
    assert std > 0
    specialized = labels[:, None] * 2  # domain d -> expert 2d: fully determined
    assert metrics.normalized_mi(metrics.count_matrix(labels, specialized, 3, 8)) > 10 * mean


def test_layer_routing_analysis() -> None:
    layer = LayerRouting(layer=3, n_experts=4, top_k=1)
    domains = np.array([0, 0, 0, 1, 1, 1])
    experts = np.array([[0], [0], [1], [2], [2], [2]])
    types = np.array([0, 1, 0, -1, -1, -1])
    blocks = np.array([0, 0, 1, 2, 2, 3])
    entropy = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
    layer.add(domains, blocks, experts, entropy, {"code": types})
    result = layer.analyse(
        ["code", "prose"], {"code": ("keyword", "name")}, {"code": "code"}, n_permutations=5
    )
    assert result.counts == [[2, 1, 0, 0], [0, 0, 3, 0]]
    assert result.domain_fractions["code"] == pytest.approx([2 / 3, 1 / 3, 0, 0])
    assert result.domain_entropy == {"code": 1.0, "prose": 0.5}
    assert result.entropy == pytest.approx(0.75)
    assert result.top_expert["prose"].ratio_to_uniform == pytest.approx(4.0)
    assert result.specialization.nmi == pytest.approx(1.0)
    assert result.max_over_mean == pytest.approx(2.0)
    (code_types,) = result.token_types
    assert code_types.tokens == {"keyword": 2, "name": 1}
    assert code_types.counts == [[1, 1, 0, 0], [1, 0, 0, 0]]
    assert result.specialization.nmi_ci is not None and result.specialization.init_nmi is None
    assert result.specialization.emergent.verdict is None
    assert result.top_expert["prose"].ratio_ci == pytest.approx((4.0, 4.0))


def test_random_assignment_level_from_counts_matches_the_token_permutation() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, size=400)
    experts = np.where(rng.random(400) < 0.3, labels, rng.integers(0, 8, size=400))[:, None]
    counts = metrics.count_matrix(labels, experts, 3, 8)
    from_tokens, _ = metrics.permutation_baseline(labels, experts, 3, 8, n_permutations=60)
    from_counts = metrics.random_assignment_nmi(counts, n_draws=60)
    assert from_counts == pytest.approx(from_tokens, rel=0.25)
    assert from_counts < metrics.normalized_mi(counts) / 3


def test_random_assignment_tables_keep_both_margins():
    """Two labels of 5 tokens, two experts of 5: a random table is [[k, 5-k], [5-k, k]] with k
    hypergeometric (10 tokens, 5 of label 0, 5 drawn), so the mean NMI is an exact sum over k;
    the second expert takes what the first left. No tokens or no draws: 0."""
    from math import comb

    counts = np.array([[5, 0], [0, 5]])
    exact = sum(
        comb(5, k) * comb(5, 5 - k) / comb(10, 5)
        * metrics.normalized_mi(np.array([[k, 5 - k], [5 - k, k]]))
        for k in range(6)
    )  # fmt: skip
    assert metrics.random_assignment_nmi(counts, n_draws=4000) == pytest.approx(exact, abs=0.01)
    assert metrics.random_assignment_nmi(counts, n_draws=1) > 0.0
    assert metrics.random_assignment_nmi(np.zeros((2, 2)), n_draws=5) == 0.0
