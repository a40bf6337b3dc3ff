"""Bootstrap confidence intervals over evaluation units, the documents (numpy only).

Tokens inside a block are not independent (a code block routes its tokens alike), and neither
are the blocks of one document (consecutive pieces of one file), so every interval here
resamples whole *units*, never tokens: the documents the eval blocks come from (a cluster
bootstrap), or the blocks themselves for a corpus that does not record documents. The functions
below take per-unit tables; `unit_counts` and `unit_losses` turn per-block ones into them.
Resampling is stratified by domain: the evaluation draws blocks per domain by design, and a
resample keeps each domain's number of units. Comparisons of two models on the same blocks
(trained vs init router, MoE vs dense) are *paired*: one resample of units is applied to both,
so the interval is that of the difference.

Intervals are Hesterberg's expanded percentile intervals (`percentile_ci`), which stay near their
level down to about 20 documents per domain, where the plain percentile interval is too narrow.
Below `MIN_DOCUMENTS` documents in any domain there is no verdict at all ("too few documents").
Intervals over training seeds, which add the seeds' own variation, are in `moectl.analysis.seeds`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

CI_LEVEL = 0.95
N_BOOTSTRAP = 1000
MIN_DOCUMENTS = 10
"""Fewest units (documents) a domain may have for an interval to decide a verdict. With fewer,
the expanded percentile interval is no longer calibrated (issue 24 measured it at 20 per domain),
and one document gives a stratum that never varies, a zero-width share of the interval."""
TOO_FEW = "too few documents"

Verdict = Literal["emerged", "inherited", "reduced", "too few documents"]


def enough_documents(strata: np.ndarray) -> bool:
    """Whether every stratum (domain) among the units has at least MIN_DOCUMENTS of them."""
    _, sizes = np.unique(np.asarray(strata), return_counts=True)
    return bool(len(sizes)) and int(sizes.min()) >= MIN_DOCUMENTS


def smallest_stratum(strata: np.ndarray) -> int:
    """The number of units in the smallest stratum (0 when there are none)."""
    _, sizes = np.unique(np.asarray(strata), return_counts=True)
    return int(sizes.min()) if len(sizes) else 0


def _t_central_probability(t: float, df: int) -> float:
    """P(|T| < t) for Student's t on `df` (a positive integer) degrees of freedom, t >= 0, by
    the closed forms for integer df (Abramowitz and Stegun 26.7.3-4); numpy has no t."""
    theta = math.atan(t / math.sqrt(df))
    cos2, sin = math.cos(theta) ** 2, math.sin(theta)
    term = total = 1.0
    if df % 2:
        for k in range(1, (df - 3) // 2 + 1):
            term *= 2 * k / (2 * k + 1) * cos2
            total += term
        series = sin * math.cos(theta) * total if df > 1 else 0.0
        return 2 / math.pi * (theta + series)
    for k in range(1, (df - 2) // 2 + 1):
        term *= (2 * k - 1) / (2 * k) * cos2
        total += term
    return sin * total


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t on `df` degrees of freedom (bisection on its CDF)."""
    if df < 1 or not 0 < p < 1:
        raise ValueError(f"t_quantile needs df >= 1 and 0 < p < 1, got df={df}, p={p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    target = 2 * p - 1
    low, high = 0.0, 1.0
    while _t_central_probability(high, df) < target:
        low, high = high, 2 * high
    while high - low > 1e-12 * high:
        middle = (low + high) / 2
        if _t_central_probability(middle, df) < target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def expanded_level(level: float, n_units: int) -> float:
    """Hesterberg's expanded percentile level for `n_units` units: the central level whose
    normal quantile is sqrt(n / (n - 1)) t_{n-1, (1 + level)/2}. The bootstrap's variance
    is the plug-in one, (n - 1)/n of the unbiased one, and its percentiles are normal ones where
    a t's belong; this undoes both (Hesterberg 2015, "What teachers should know about the
    bootstrap"). `level` unchanged for fewer than 2 units."""
    if n_units < 2:
        return level
    width = math.sqrt(n_units / (n_units - 1)) * t_quantile((1 + level) / 2, n_units - 1)
    return 2 * NormalDist().cdf(width) - 1


def resample_counts(strata: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """(n_bootstrap, n_units) multiplicities: per resample, how often each unit was drawn.

    Within each stratum, units are drawn with replacement as many times as the stratum has
    units. Row 0 is not special: every row is a resample.
    """
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_bootstrap, len(strata)), dtype=np.float64)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        drawn = members[rng.integers(0, len(members), size=(n_bootstrap, len(members)))]
        np.add.at(weights, (np.arange(n_bootstrap)[:, None], drawn), 1.0)
    return weights


def unit_counts(per_block: np.ndarray, block_unit: np.ndarray) -> np.ndarray:
    """(n_units, ...) tables: per-block tables (n_blocks, ...) summed over each unit's blocks.

    Units are the distinct values of `block_unit` (n_blocks,), in ascending order.
    """
    per_block = np.asarray(per_block)
    _, local = np.unique(np.asarray(block_unit), return_inverse=True)
    units = np.zeros((int(local.max(initial=-1)) + 1, *per_block.shape[1:]), per_block.dtype)
    np.add.at(units, local, per_block)
    return units


def unit_strata(block_strata: np.ndarray, block_unit: np.ndarray) -> np.ndarray:
    """The stratum (domain) of each unit, units as in `unit_counts`; a unit's blocks share it."""
    _, first = np.unique(np.asarray(block_unit), return_index=True)
    return np.asarray(block_strata)[first]


def unit_losses(block_loss: np.ndarray, block_unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean per-token loss of each unit, its blocks), units as in `unit_counts`. Blocks hold
    equally many tokens, so a unit's block count is its weight in a per-token mean."""
    blocks = unit_counts(np.ones(len(block_loss)), block_unit)
    return unit_counts(np.asarray(block_loss, np.float64), block_unit) / blocks, blocks


def block_counts(
    labels: np.ndarray,
    experts: np.ndarray,
    blocks: np.ndarray,
    n_blocks: int,
    n_labels: int,
    n_experts: int,
) -> np.ndarray:
    """(n_blocks, n_labels, n_experts) top-k assignment counts per block, from per-token
    labels (T,), chosen experts (T, k) and block positions (T,) in 0..n_blocks-1."""
    labels = np.asarray(labels, dtype=np.int64)
    experts = np.asarray(experts, dtype=np.int64).reshape(len(labels), -1)
    top_k = experts.shape[1]
    flat = (np.repeat(blocks, top_k) * n_labels + np.repeat(labels, top_k)) * n_experts
    flat = flat + experts.ravel()
    size = n_blocks * n_labels * n_experts
    return np.bincount(flat, minlength=size).reshape(n_blocks, n_labels, n_experts)


def nmi_of_joints(joint: np.ndarray) -> np.ndarray:
    """NMI = MI(label; expert) / H(label) of each (label x expert) count table in a stack
    (..., L, E); the same quantity as metrics.normalized_mi, vectorized over resamples."""
    joint = np.asarray(joint, dtype=np.float64)
    total = joint.sum(axis=(-2, -1), keepdims=True)
    p = np.divide(joint, total, out=np.zeros_like(joint), where=total > 0)
    rows = p.sum(axis=-1, keepdims=True)
    cols = p.sum(axis=-2, keepdims=True)
    expected = rows * cols
    ratio = np.divide(p, expected, out=np.ones_like(p), where=(p > 0) & (expected > 0))
    mi = np.maximum((p * np.log(ratio)).sum(axis=(-2, -1)), 0.0)
    r = rows[..., 0]
    h = -(np.where(r > 0, r * np.log(np.where(r > 0, r, 1.0)), 0.0)).sum(axis=-1)
    return np.divide(mi, h, out=np.zeros_like(mi), where=h > 0)


def percentile_ci(
    samples: np.ndarray,
    point: float | None = None,
    level: float = CI_LEVEL,
    floor: float | None = None,
    strata: np.ndarray | None = None,
) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap samples; with the resampled units'
    `strata`, Hesterberg's expanded percentile interval (`expanded_level`).

    The expansion takes n from the smallest stratum. A stratified resample keeps each stratum's
    size, so each stratum's share of the variance is its plug-in one, (n_h - 1)/n_h of the
    unbiased one, whatever the number of strata: the total number of units would under-expand
    (20 documents in each of 3 domains are 19/20, not 59/60), and the smallest stratum is the
    least well estimated. Measured in tests/analysis/test_calibration.py (docs/testing.md): 95%
    intervals of an NMI difference miss 5-6% at 20 documents per domain, where the plain
    percentile interval missed 7-9%.

    With `point` (the estimate on the actual blocks) the samples are first shifted by the
    bootstrap's own bias, mean(samples) - point. Plug-in MI is biased upwards, and more so in a
    resample, whose duplicated blocks look like extra dependence between label and expert; an
    uncorrected interval can then lie wholly above the estimate it is meant to bracket.
    `floor` clips the interval at the quantity's natural bound (0 for an NMI, 1 for a top
    share over uniform), which the shift can cross.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if point is not None:
        samples = samples - (samples.mean() - point)
    if strata is not None:
        level = expanded_level(level, smallest_stratum(strata))
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    if floor is not None:
        lo, hi = max(lo, floor), max(hi, floor)
    return float(lo), float(hi)


def format_interval(ci: tuple[float, float] | None, digits: int = 3, signed: bool = True) -> str:
    """'[lo, hi]' (with signs unless `signed` is False), or '-' when there is no interval: one
    spelling everywhere."""
    if ci is None:
        return "-"
    sign = "+" if signed else ""
    return f"[{ci[0]:{sign}.{digits}f}, {ci[1]:{sign}.{digits}f}]"


# Relative size below which a difference or an interval's width is float rounding, not an effect:
# the same computation summed in another kernel order moves by ~1e-8 relative (docs/testing.md).
NUMERICAL_NOISE = 1e-6


def resolved(ci: tuple[float, float], scale: float = 1.0) -> bool:
    """Whether an interval can carry a verdict: wider than numerical noise and reaching beyond it.

    A zero-width interval (one document, identical models) or one whose bounds are float noise
    around 0 (identical experts scored twice) says nothing about an effect, whichever side of 0
    it lies on. `scale` is the size of the compared quantities (1 for an NMI, the loss for a loss
    difference), so the noise floor is relative.
    """
    floor = NUMERICAL_NOISE * max(1.0, abs(scale))
    lo, hi = ci
    return hi - lo > floor and max(abs(lo), abs(hi)) > floor


def verdict_of(
    ci: tuple[float, float], strata: np.ndarray | None = None, scale: float = 1.0
) -> Verdict:
    """'emerged' when the whole interval of (trained - init) is above 0, 'reduced' when below,
    else 'inherited': training neither added nor removed specialization detectably. With the
    units' `strata`: 'too few documents' when a domain has fewer than MIN_DOCUMENTS. An interval
    that is not `resolved` is never a verdict: 'inherited'."""
    if strata is not None and not enough_documents(strata):
        return TOO_FEW
    if not resolved(ci, scale):
        return "inherited"
    if ci[0] > 0:
        return "emerged"
    if ci[1] < 0:
        return "reduced"
    return "inherited"


@dataclass(frozen=True)
class NMIIntervals:
    """Bootstrap intervals of one label's NMI, for the trained router and its init control."""

    nmi_ci: tuple[float, float]
    init_nmi: float | None
    init_nmi_ci: tuple[float, float] | None
    difference: float | None
    difference_ci: tuple[float, float] | None
    difference_verdict: Verdict | None = None


def resampled_nmi(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) NMI of the pooled table in each resample: per-unit count tables (n_units, L, E)
    weighted by resample multiplicities (B, n_units)."""
    return nmi_of_joints(np.einsum("bn,nle->ble", weights, counts))


def resampled_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) weighted mean of per-unit `values` in each resample; `weights` (B, n_units) are
    the multiplicities times each unit's size (its tokens or blocks)."""
    return weights @ np.asarray(values, np.float64) / weights.sum(axis=1)


def nmi_intervals(
    trained: np.ndarray,
    init: np.ndarray | None,
    strata: np.ndarray,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> NMIIntervals:
    """Intervals from per-unit count tables (n_units, L, E) of the trained model and (if
    given) its init control on the same units; the difference is paired by unit, and its
    verdict is 'too few documents' when a stratum has fewer than MIN_DOCUMENTS units."""
    weights = resample_counts(strata, n_bootstrap, seed)
    trained_samples = resampled_nmi(trained, weights)
    point_trained = float(nmi_of_joints(trained.sum(axis=0)))
    nmi_ci = percentile_ci(trained_samples, point_trained, floor=0.0, strata=strata)
    if init is None:
        return NMIIntervals(nmi_ci, None, None, None, None)
    init_samples = resampled_nmi(init, weights)
    point_init = float(nmi_of_joints(init.sum(axis=0)))
    difference = point_trained - point_init
    difference_ci = percentile_ci(trained_samples - init_samples, difference, strata=strata)
    return NMIIntervals(
        nmi_ci=nmi_ci,
        init_nmi=point_init,
        init_nmi_ci=percentile_ci(init_samples, point_init, floor=0.0, strata=strata),
        difference=difference,
        difference_ci=difference_ci,
        difference_verdict=verdict_of(difference_ci, strata),
    )


def top_share_intervals(
    counts: np.ndarray, strata: np.ndarray, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0
) -> list[tuple[float, float]]:
    """Per label: interval of (busiest expert's share of the label) x E, from per-unit
    count tables (n_units, L, E). The busiest expert is re-chosen in every resample."""
    weights = resample_counts(strata, n_bootstrap, seed)
    joints = np.einsum("bn,nle->ble", weights, counts)
    totals = joints.sum(axis=-1)
    shares = np.divide(joints.max(axis=-1), totals, out=np.zeros_like(totals), where=totals > 0)
    n_experts = counts.shape[-1]
    joint = counts.sum(axis=0)
    row_totals = np.maximum(joint.sum(axis=-1), 1)
    points = joint.max(axis=-1) / row_totals * n_experts
    return [
        percentile_ci(shares[:, label] * n_experts, float(points[label]), floor=1.0, strata=strata)
        for label in range(counts.shape[1])
    ]


@dataclass(frozen=True)
class PairedDifference:
    """Mean per-token loss difference (a - b) over the same units, with its paired interval;
    `enough_documents` is False when a domain has fewer than MIN_DOCUMENTS units (then the
    interval decides nothing)."""

    difference: float
    ci: tuple[float, float]
    relative: float
    relative_ci: tuple[float, float]
    enough_documents: bool = True


def paired_loss_difference(
    loss_a: np.ndarray,
    loss_b: np.ndarray,
    strata: np.ndarray,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    size: np.ndarray | None = None,
) -> PairedDifference:
    """Interval of the per-token mean of loss_a minus that of loss_b, resampling units jointly.

    `loss_*` are per-unit mean per-token losses; `size` weighs each unit by its tokens (or
    blocks), since documents differ in length: a mean is then the token-weighted sum over the
    resampled units. Without `size` the units weigh alike (blocks of equal length).
    `relative` divides by mean(loss_b) (the baseline) in each resample.
    """
    loss_a, loss_b = np.asarray(loss_a, np.float64), np.asarray(loss_b, np.float64)
    size = np.ones(len(loss_a)) if size is None else np.asarray(size, np.float64)
    weights = resample_counts(strata, n_bootstrap, seed) * size
    mean_a, mean_b = resampled_mean(loss_a, weights), resampled_mean(loss_b, weights)
    point_a, point_b = (np.average(loss, weights=size) for loss in (loss_a, loss_b))
    difference = float(point_a - point_b)
    relative = difference / float(point_b)
    return PairedDifference(
        difference=difference,
        ci=percentile_ci(mean_a - mean_b, difference, strata=strata),
        relative=relative,
        relative_ci=percentile_ci((mean_a - mean_b) / mean_b, relative, strata=strata),
        enough_documents=enough_documents(strata),
    )


def paired_block_difference(
    block_loss_a: np.ndarray,
    block_loss_b: np.ndarray,
    block_domain: np.ndarray,
    block_unit: np.ndarray,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> PairedDifference:
    """`paired_loss_difference` of two models' per-block losses on the same blocks, the
    blocks gathered into their units (documents) and resampled by unit within each domain."""
    loss_a, blocks = unit_losses(block_loss_a, block_unit)
    loss_b, _ = unit_losses(block_loss_b, block_unit)
    strata = unit_strata(block_domain, block_unit)
    return paired_loss_difference(loss_a, loss_b, strata, n_bootstrap, seed, size=blocks)
