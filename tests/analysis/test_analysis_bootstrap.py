"""Block bootstrap intervals: they bracket their estimates and can say yes, no and 'no change'."""

from __future__ import annotations

import numpy as np
import pytest

from moectl.analysis import bootstrap, metrics


def _routing(rng, n_blocks, tokens, domain_of_block, pick):
    """Per-token (domain, block, expert) for blocks whose tokens choose experts by `pick`."""
    domains, blocks, experts = [], [], []
    for b in range(n_blocks):
        d = domain_of_block[b]
        domains += [d] * tokens
        blocks += [b] * tokens
        experts += [pick(rng, d) for _ in range(tokens)]
    return np.array(domains), np.array(blocks), np.array(experts)[:, None]


def test_vectorized_nmi_and_block_counts_agree_with_the_plain_metrics():
    rng = np.random.default_rng(0)
    domains, blocks, experts = _routing(
        rng, 12, 20, [b % 3 for b in range(12)], lambda r, d: int(r.integers(0, 4)) if d else 1
    )
    per_block = bootstrap.block_counts(domains, experts, blocks, 12, 3, 4)
    joint = metrics.count_matrix(domains, experts, 3, 4)
    assert (per_block.sum(axis=0) == joint).all() and per_block.shape == (12, 3, 4)
    assert bootstrap.nmi_of_joints(joint) == pytest.approx(metrics.normalized_mi(joint))
    other = joint[:, ::-1].copy()
    other[0] += 5
    stacked = bootstrap.nmi_of_joints(np.stack([joint, other]))
    assert stacked == pytest.approx([metrics.normalized_mi(joint), metrics.normalized_mi(other)])


def test_resamples_keep_the_blocks_per_stratum_and_repeat_by_seed():
    strata = np.array([0, 0, 0, 1, 1, 2])
    weights = bootstrap.resample_counts(strata, 50, seed=3)
    assert weights.shape == (50, 6)
    assert (weights[:, :3].sum(axis=1) == 3).all() and (weights[:, 3:5].sum(axis=1) == 2).all()
    assert (weights[:, 5] == 1).all()
    assert (bootstrap.resample_counts(strata, 50, seed=3) == weights).all()
    assert not (bootstrap.resample_counts(strata, 50, seed=4) == weights).all()


def test_verdicts_follow_the_interval_of_the_difference():
    assert bootstrap.verdict_of((0.01, 0.2)) == "emerged"
    assert bootstrap.verdict_of((-0.01, 0.2)) == "inherited"
    assert bootstrap.verdict_of((0.0, 0.0)) == "inherited"
    assert bootstrap.verdict_of((-0.2, -0.01)) == "reduced"


def test_nmi_intervals_say_emerged_reduced_or_inherited():
    rng = np.random.default_rng(1)
    n_blocks, domain_of_block = 30, [b % 3 for b in range(30)]
    strata = np.array(domain_of_block)

    def counts(pick):
        d, b, e = _routing(rng, n_blocks, 16, domain_of_block, pick)
        return bootstrap.block_counts(d, e, b, n_blocks, 3, 4)

    specialist = counts(lambda r, d: d if r.random() < 0.8 else int(r.integers(0, 4)))
    blind = counts(lambda r, d: int(r.integers(0, 4)))

    up = bootstrap.nmi_intervals(specialist, blind, strata, 500, seed=0)
    assert up.nmi_ci[0] < up.difference + up.init_nmi < up.nmi_ci[1]
    assert up.init_nmi_ci[0] <= up.init_nmi <= up.init_nmi_ci[1]
    assert bootstrap.verdict_of(up.difference_ci) == "emerged"
    down = bootstrap.nmi_intervals(blind, specialist, strata, 500, seed=0)
    assert bootstrap.verdict_of(down.difference_ci) == "reduced"
    same = bootstrap.nmi_intervals(specialist, specialist.copy(), strata, 500, seed=0)
    assert same.difference == 0 and same.difference_ci == (0.0, 0.0)
    assert bootstrap.verdict_of(same.difference_ci) == "inherited"
    alone = bootstrap.nmi_intervals(specialist, None, strata, 500, seed=0)
    assert alone.init_nmi is None and alone.difference_ci is None


def test_top_share_intervals_bracket_the_share_over_uniform():
    rng = np.random.default_rng(2)
    domain_of_block = [b % 2 for b in range(20)]
    d, b, e = _routing(
        rng, 20, 10, domain_of_block, lambda r, d: 0 if r.random() < 0.5 else int(r.integers(0, 4))
    )
    per_block = bootstrap.block_counts(d, e, b, 20, 2, 4)
    tops = metrics.top_expert_shares(per_block.sum(axis=0))
    intervals = bootstrap.top_share_intervals(per_block, np.array(domain_of_block), 400)
    for (_, _, ratio), (lo, hi) in zip(tops, intervals, strict=True):
        assert lo <= ratio <= hi and hi - lo > 0.05


def test_paired_loss_difference_cancels_what_both_models_share():
    rng = np.random.default_rng(3)
    strata = np.arange(40) % 3
    hard = rng.normal(4.0, 1.0, size=40)  # block difficulty, shared by both models
    same = bootstrap.paired_loss_difference(hard, hard, strata, 300)
    assert same.difference == 0 and same.ci == (0.0, 0.0)
    better = hard - 0.05 + rng.normal(0, 0.01, size=40)
    paired = bootstrap.paired_loss_difference(better, hard, strata, 300)
    assert paired.ci[1] < 0 and paired.ci[0] < paired.difference < paired.ci[1]
    assert paired.relative == pytest.approx(paired.difference / hard.mean())
    # no effect, only per-block noise: the interval contains 0
    noisy = hard + rng.normal(0, 1.0, size=40)
    lo, hi = bootstrap.paired_loss_difference(noisy, hard, strata, 300).ci
    assert lo < 0 < hi


def test_an_interval_inside_numerical_noise_is_never_a_verdict():
    """Identical experts scored twice differ by ~1e-8 on a CPU whose kernels sum in another
    order, and a one-document stratum gives a zero-width interval: neither is an effect."""
    from moectl.analysis.bootstrap import resolved, verdict_of

    assert verdict_of((-3e-8, -1e-8)) == "inherited"
    assert verdict_of((2e-8, 5e-8)) == "inherited"
    assert verdict_of((0.2, 0.2)) == "inherited"  # zero width, far from 0
    assert verdict_of((1e-3, 2e-3)) == "emerged" and verdict_of((-2e-3, -1e-3)) == "reduced"
    # the floor is relative to the compared quantities: a loss of 4 nats has 4x the noise
    assert resolved((-5e-6, -2e-6)) and not resolved((-5e-6, -2e-6), scale=4.0 * 10)


def _domain_tables(rng, strata, specialized: bool) -> np.ndarray:
    """(units, 3, 4) counts: each unit's tokens in its domain's row, routed to the expert of
    its domain (specialized) or at random."""
    tables = np.zeros((len(strata), 3, 4))
    for unit, domain in enumerate(strata):
        if specialized:
            tables[unit, domain, domain] = rng.integers(20, 40)
        else:
            tables[unit, domain] = rng.integers(0, 9, size=4)
    return tables


def test_fewer_than_the_minimum_documents_in_a_domain_give_no_verdict():
    """`prepare-data --source builtin --size-mb 0.1` holds code 1, math 16, prose 10 eval
    documents: the code stratum never varies, so its interval is no verdict."""
    rng = np.random.default_rng(4)
    few, enough = np.repeat([0, 1, 2], [1, 16, 10]), np.repeat([0, 1, 2], [10, 16, 10])
    assert bootstrap.MIN_DOCUMENTS == 10
    assert not bootstrap.enough_documents(few) and bootstrap.enough_documents(enough)
    assert not bootstrap.enough_documents(np.zeros(0))
    assert bootstrap.verdict_of((0.1, 0.2), few) == "too few documents"
    assert bootstrap.verdict_of((0.1, 0.2), enough) == "emerged"
    for strata, verdict in ((few, "too few documents"), (enough, "emerged")):
        found = bootstrap.nmi_intervals(
            _domain_tables(rng, strata, True), _domain_tables(rng, strata, False), strata, 200
        )
        assert found.difference_ci[0] > 0 and found.difference_verdict == verdict
        loss = rng.normal(3, 0.2, len(strata))
        paired = bootstrap.paired_loss_difference(loss - 0.5, loss, strata, 200)
        assert paired.ci[1] < 0 and paired.enough_documents == (verdict == "emerged")


def test_expanded_percentile_interval_widens_with_fewer_units_per_stratum():
    """The expansion takes n from the smallest stratum: 20 documents in each of 3 domains
    widen a 95% interval like 20 documents, not 60; without strata it is the plain one."""
    samples = np.random.default_rng(5).normal(0, 1, 20000)
    plain = bootstrap.percentile_ci(samples)
    twenty = bootstrap.percentile_ci(samples, strata=np.repeat([0, 1, 2], 20))
    lopsided = bootstrap.percentile_ci(samples, strata=np.repeat([0, 1, 2], [20, 200, 200]))
    hundred = bootstrap.percentile_ci(samples, strata=np.repeat([0, 1, 2], 100))
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(twenty) == pytest.approx(width(lopsided))
    assert width(twenty) / width(plain) == pytest.approx(1.095, abs=0.01)
    assert 1.0 < width(hundred) / width(plain) < width(twenty) / width(plain)
