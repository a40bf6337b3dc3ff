"""The token-id control: NMI(domain; expert | token id) against labels permuted within each token
id across documents. Routing that follows the token id plus context noise, never the domain
given the token, must come out null (its raw NMI is well above 0: that was the old statistic's
error); routing that depends on the domain given the token must be detected."""

from __future__ import annotations

import numpy as np
import pytest

from moectl.analysis import bootstrap
from moectl.analysis.token_id import _Groups, token_id_score

N_DOMAINS, N_EXPERTS = 3, 8


def _routing(seed: int, noise: float, shift: float = 0.0, vocab: int = 1000, docs: int = 30):
    """Documents of 3 domains with overlapping Zipf vocabularies, routed top-1 by argmax of a
    per-token-id logit vector plus context noise (per token, and per document: a document's
    context moves all its tokens alike), plus `shift` x a per-domain logit vector: with shift 0
    the expert depends on the token id and the noise alone, never on the domain given the token.
    Returns (tokens, labels, experts (T, 1), units, strata)."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, vocab + 1)
    vocabularies = [zipf * rng.gamma(1.0, 1.0, vocab) for _ in range(N_DOMAINS)]
    token_logits = rng.standard_normal((vocab, N_EXPERTS))
    domain_logits = rng.standard_normal((N_DOMAINS, N_EXPERTS)) * shift
    tokens, labels, experts, units = [], [], [], []
    for unit in range(N_DOMAINS * docs):
        domain = unit % N_DOMAINS
        p = vocabularies[domain] / vocabularies[domain].sum()
        ids = rng.choice(vocab, rng.integers(20, 120), p=p)
        context = 0.5 * rng.standard_normal(N_EXPERTS)
        noisy = rng.standard_normal((len(ids), N_EXPERTS)) + context
        logits = token_logits[ids] + domain_logits[domain] + noise * noisy
        tokens.append(ids)
        labels.append(np.full(len(ids), domain))
        experts.append(logits.argmax(axis=1)[:, None])
        units.append(np.full(len(ids), unit))
    strata = np.arange(N_DOMAINS * docs) % N_DOMAINS
    return (*(np.concatenate(x) for x in (tokens, labels, experts, units)), strata)


@pytest.mark.parametrize("noise", [0.1, 0.3, 0.6])
def test_routing_by_token_plus_context_noise_has_no_excess_over_the_null(noise):
    score = token_id_score(*_routing(0, noise), n_bootstrap=300)
    # The raw conditional NMI is plug-in bias, far from 0 with an interval excluding it (what
    # the old statistic reported as "domain routing beyond vocabulary").
    assert score.ci[0] > 0.01 and score.nmi > 0.02
    assert score.null_nmi == pytest.approx(score.nmi, abs=0.01)
    assert abs(score.excess) < 0.01
    assert score.excess_ci[0] < 0 < score.excess_ci[1]
    assert score.beyond_vocabulary is False and "none shown" in score.describe()


def test_routing_that_depends_on_the_domain_given_the_token_is_detected():
    score = token_id_score(*_routing(0, 0.3, shift=0.3), n_bootstrap=300)
    assert score.excess > 0.05 and score.excess_ci[0] > 0.03
    assert score.beyond_vocabulary is True and "domain beyond the token id" in score.describe()


def test_the_null_interval_excludes_zero_rarely_across_replications():
    """16 seeded null worlds at the noisiest setting: a 95% interval excludes 0 in about 5% of
    them (0.8 expected; 4 or more has probability 0.7% under Binomial(16, 0.05))."""
    scores = [
        token_id_score(*_routing(seed, 0.6, vocab=600, docs=20), n_bootstrap=100)
        for seed in range(1, 17)
    ]
    excluded = sum(not (s.excess_ci[0] <= 0 <= s.excess_ci[1]) for s in scores)
    assert excluded <= 3
    assert abs(np.mean([s.excess for s in scores])) < 0.003


def test_an_expert_that_is_a_function_of_the_token_scores_exactly_zero():
    rng = np.random.default_rng(0)
    units = np.repeat(np.arange(30), 20)
    labels = units % 3
    tokens = rng.integers(0, 12, size=len(units))
    score = token_id_score(tokens, labels, (tokens % 4)[:, None], units, np.arange(30) % 3, 200)
    assert score.nmi == pytest.approx(0.0, abs=1e-12)
    assert score.excess == pytest.approx(0.0, abs=1e-12)
    assert score.beyond_vocabulary is False


def _reference_nmi(tokens, labels, experts, weights):
    """I(label; expert | token) / H(label | token) from a dense weighted (token, label, expert)
    table, written out directly."""
    table = np.zeros((tokens.max() + 1, labels.max() + 1, experts.max() + 1))
    np.add.at(table, (tokens, labels, experts), weights)
    p = table / table.sum()
    p_t = p.sum(axis=(1, 2), keepdims=True)
    p_tl = p.sum(axis=2, keepdims=True)
    p_te = p.sum(axis=1, keepdims=True)
    seen = p > 0
    mi = (p[seen] * np.log((p * p_t)[seen] / (p_tl * p_te)[seen])).sum()
    rows = p_tl > 0
    h = -(p_tl[rows] * np.log(p_tl[rows] / np.broadcast_to(p_t, p_tl.shape)[rows])).sum()
    return mi / h


def test_conditional_nmi_matches_a_direct_computation_and_the_null_keeps_token_counts():
    tokens, labels, experts, units, strata = _routing(3, 0.6, shift=0.2, vocab=200, docs=10)
    groups = _Groups.of(tokens, labels, experts, units)
    weights = bootstrap.resample_counts(strata, 1, seed=1)[0]
    expected = _reference_nmi(tokens, labels, experts[:, 0], weights[units])
    assert groups.nmi(groups.group_label, weights) == pytest.approx(expected, rel=1e-9)

    permuted = groups.permuted_labels(np.random.default_rng(0))
    assert (permuted != groups.group_label).mean() > 0.2
    # Every label keeps its count of every token id, so H(label | token) is the observed one.
    label_of_entry = lambda lab: lab[groups.entry_group]  # noqa: E731
    counts = [
        np.bincount(
            groups.entry_token * N_DOMAINS + label_of_entry(lab), groups.entry_count,
            groups.n_tokens * N_DOMAINS,
        )
        for lab in (groups.group_label, permuted)
    ]  # fmt: skip
    assert np.array_equal(counts[0], counts[1])
