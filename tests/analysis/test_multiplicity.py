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


def test_bootstrap_p_value_against_a_hand_count():
    """p = min(1, 2 min(below, above)), below = (1 + #centred <= 0) / (n + 1), above = (1 +
    #centred >= 0) / (n + 1): a sample exactly at 0 counts on both sides; at least 1 / (n + 1)
    on a side; a symmetric distribution is capped at exactly 1."""
    # n = 9 samples whose mean is the point: centred = samples. One at 0, one below:
    # below = (1 + 2) / 10, above = (1 + 8) / 10.
    one_side = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert bootstrap_p_value(one_side, one_side.mean()) == pytest.approx(0.6, abs=1e-12)
    # Centred one lower (point = mean - 1): [-2, ..., 6], three at or below 0, seven at or above.
    assert bootstrap_p_value(one_side, one_side.mean() - 1.0) == pytest.approx(0.8, abs=1e-12)
    # Mirrored, the upper side is the smaller: above = (1 + 2) / 10.
    assert bootstrap_p_value(-one_side, -one_side.mean()) == pytest.approx(0.6, abs=1e-12)
    # All 9 above 0: below = 1 / 10, the floor.
    assert bootstrap_p_value(one_side, one_side.mean() + 2.0) == pytest.approx(0.2, abs=1e-12)
    symmetric = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert bootstrap_p_value(symmetric, 0.0) == 1.0


def test_holm_adjusted_p_values_are_capped_at_one():
    assert holm_adjusted([0.4, 0.6, 0.02]) == pytest.approx([0.8, 0.8, 0.06])
    assert holm_adjusted([0.6, 0.7]) == [1.0, 1.0]
