"""Holm's procedure and bootstrap p-values: the family-wise control findings rely on."""

import numpy as np
import pytest

from moectl.analysis.multiplicity import bootstrap_p_value, holm_adjusted, holm_rejections


def test_holm_steps_down_and_stops_at_the_first_kept_hypothesis():
    # bounds for m=4: 0.0125, 0.0167, 0.025, 0.05
    assert holm_rejections([0.01, 0.04, 0.012, 0.03]) == [True, False, True, False]
    assert holm_rejections([0.013, 0.001, 0.5, 0.002]) == [True, True, False, True]
    assert holm_rejections([0.02, 0.001]) == [True, True]
    assert holm_rejections([0.03, 0.03]) == [False, False]
    assert holm_rejections([]) == []


def test_holm_adjusted_p_values_agree_with_the_rejections():
    p = [0.01, 0.04, 0.012, 0.03, 0.2]
    adjusted = holm_adjusted(p)
    assert adjusted == pytest.approx([0.05, 0.09, 0.05, 0.09, 0.2])
    for alpha in (0.01, 0.05, 0.1):
        assert [a <= alpha for a in adjusted] == holm_rejections(p, alpha)


def test_holm_keeps_the_family_wise_error_under_a_global_null():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(4000, 6))
    any_false = np.mean([any(holm_rejections(row)) for row in p])
    assert 0.03 < any_false <= 0.06
    # separate 95% tests are wrong far more often
    assert np.mean((p <= 0.05).any(axis=1)) > 0.2


def test_bootstrap_p_value_is_small_only_when_the_samples_exclude_zero():
    rng = np.random.default_rng(1)
    far = rng.normal(1.0, 0.2, size=999)
    near = rng.normal(0.1, 0.2, size=999)
    assert bootstrap_p_value(far, 1.0) == pytest.approx(2 / 1000)
    assert 0.3 < bootstrap_p_value(near, 0.1) < 0.9
    # a p-value below 0.05 is the same decision as a 95% percentile interval excluding 0
    lo, hi = np.percentile(near - near.mean() + 0.4, [2.5, 97.5])
    assert (bootstrap_p_value(near, 0.4) <= 0.05) == (lo > 0 or hi < 0)
