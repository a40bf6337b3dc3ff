"""Family-wise error control for findings that make several comparisons (numpy only).

A finding that scans layers x arms and reports the strongest makes several tests at once: four
separate 95% tests are wrong somewhere up to ~19% of the time. Holm's step-down procedure keeps
the chance of any false rejection in the family at `alpha` under any dependence between the
tests, and rejects at least what Bonferroni does. Tests enter as p-values; `bootstrap_p_value`
turns a bootstrap distribution of a difference into one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FAMILY_ALPHA = 0.05


def holm_rejections(p_values: Sequence[float], alpha: float = FAMILY_ALPHA) -> list[bool]:
    """Which hypotheses Holm's procedure rejects at family-wise level `alpha`, in input order.

    The k-th smallest p-value (k = 0, 1, ...) is compared with alpha / (m - k); testing stops
    at the first that is not below its bound, and everything from there on is kept.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    rejected = [False] * m
    for k, index in enumerate(np.argsort(p, kind="stable")):
        if not p[index] <= alpha / (m - k):
            break
        rejected[int(index)] = True
    return rejected


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (reject at family level alpha where adjusted <= alpha), in input
    order: the running maximum of (m - k) * p_(k) over the sorted p-values, capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return [float(x) for x in adjusted]


def bootstrap_p_value(samples: np.ndarray, point: float) -> float:
    """Two-sided p-value of "the difference is 0" from bootstrap samples of it, centred on the
    estimate like `bootstrap.percentile_ci`: twice the smaller share of centred samples on
    either side of 0 (the smallest level whose percentile interval would touch 0), at least
    1 / (n + 1)."""
    samples = np.asarray(samples, dtype=np.float64)
    centred = samples - (samples.mean() - point)
    n = len(centred)
    below = (1 + np.count_nonzero(centred <= 0.0)) / (n + 1)
    above = (1 + np.count_nonzero(centred >= 0.0)) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))
