"""Seed-level intervals: the t interval over seeds plus the document variance they share."""

from __future__ import annotations

import numpy as np
import pytest

from moectl.analysis import bootstrap, seeds


def test_shared_variance_is_the_mean_covariance_over_seed_pairs_floored_at_zero():
    rng = np.random.default_rng(0)
    common = rng.normal(0, 1, 500)
    replicates = np.stack([common + rng.normal(0, s, 500) for s in (0.5, 1.0, 2.0)])
    covariance = np.cov(replicates)
    pairs = [covariance[0, 1], covariance[0, 2], covariance[1, 2]]
    assert seeds.shared_document_variance(replicates) == pytest.approx(np.mean(pairs))
    assert seeds.shared_document_variance(np.stack([common, -common])) == 0.0
    assert seeds.shared_variance_bound([0.1, 0.1, 0.1]) == pytest.approx(0.01)
    assert seeds.shared_variance_bound([0.1, 0.4]) == pytest.approx(0.04)


def test_seed_interval_is_the_t_interval_with_the_shared_variance():
    values = np.array([0.10, 0.14, 0.07])
    rng = np.random.default_rng(1)
    replicates = rng.normal(0, 0.02, (1, 300)) + rng.normal(0, 0.01, (3, 300))
    found = seeds.seed_interval(values, replicates)
    shared = np.mean([np.cov(replicates)[i, j] for i, j in ((0, 1), (0, 2), (1, 2))])
    half = 4.302653 * np.sqrt(values.var(ddof=1) / 3 + shared)  # t_{2, 0.975}
    assert found.mean == pytest.approx(values.mean()) and found.n_seeds == 3
    assert found.ci == pytest.approx((values.mean() - half, values.mean() + half), rel=1e-6)
    bounded = seeds.seed_interval(values, doc_se=[0.03, 0.03, 0.03])
    assert bounded.ci[1] - bounded.ci[0] > found.ci[1] - found.ci[0]  # the bound is wider
    ninety = seeds.seed_interval(values, replicates, level=0.90)
    assert ninety.ci[1] - ninety.ci[0] < found.ci[1] - found.ci[0]


def test_identical_seeds_keep_their_document_uncertainty():
    """Seeds that agree exactly still share their documents' error: not a zero-width interval
    (the defect of an interval over seed values alone)."""
    replicates = np.tile(np.random.default_rng(2).normal(0.1, 0.02, 400), (3, 1))
    found = seeds.seed_interval([0.1, 0.1, 0.1], replicates)
    assert found.ci[0] < 0.1 - 0.05 and found.ci[1] > 0.1 + 0.05


def test_seed_interval_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seeds.seed_interval([0.1], doc_se=[0.01])
    with pytest.raises(ValueError, match="replicates or their document errors"):
        seeds.seed_interval([0.1, 0.2])
    with pytest.raises(ValueError, match="replicates must be"):
        seeds.seed_interval([0.1, 0.2], np.zeros((3, 10)))
    with pytest.raises(ValueError, match="one standard error per seed"):
        seeds.seed_interval([0.1, 0.2], doc_se=[0.01])


def test_paired_replicates_are_the_paired_bootstrap_of_one_seed():
    """On the shared resamples, a seed's NMI-difference replicates give exactly the interval
    `nmi_intervals` gives it (both resample with seed 0)."""
    rng = np.random.default_rng(3)
    strata = np.repeat([0, 1, 2], 12)
    trained = rng.integers(0, 9, size=(36, 3, 4)) * (
        np.arange(3)[None, :, None] == strata[:, None, None]
    )
    init = rng.integers(0, 9, size=(36, 3, 4)) * (
        np.arange(3)[None, :, None] == strata[:, None, None]
    )
    weights = seeds.shared_resamples(strata, 300)
    replicates = seeds.paired_replicates(bootstrap.resampled_nmi, trained, init, weights)
    found = bootstrap.nmi_intervals(trained, init, strata, 300, seed=0)
    assert replicates.shape == (300,)
    assert (
        bootstrap.percentile_ci(replicates, found.difference, strata=strata) == found.difference_ci
    )


def test_the_standard_error_of_a_normal_interval():
    """A central interval of level L implies the standard error width / (2 z_{(1+L)/2})."""
    from statistics import NormalDist

    z95 = NormalDist().inv_cdf(0.975)
    assert seeds.interval_standard_error((1.0 - z95 * 0.3, 1.0 + z95 * 0.3)) == pytest.approx(0.3)
    z80 = NormalDist().inv_cdf(0.9)
    assert seeds.interval_standard_error((-z80 * 2.0, z80 * 2.0), level=0.8) == pytest.approx(2.0)
