"""Calibration of the bootstrap intervals: a 95% interval must behave like one.

Each check simulates several hundred seeded replications of a small evaluation: documents of
varied length in three domains, whose tokens route with a per-document preference (tokens of one
document are not independent, the reason the bootstrap resamples whole units). On null data the
interval of a difference must exclude 0 in 5% of the replications; on data with a known effect it
must miss the true value in 5% of them. "5%" is judged against the binomial band of the number
of replications, and the same checks run with 90% intervals must fall outside that band, so they
can fail. Replications use 200 bootstrap resamples instead of the product's 1000 to stay fast;
the interval's level, not its resolution, is what is tested.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from moectl.analysis import bootstrap, metrics

REPLICATIONS = 1000
RESAMPLES = 200
DOCS_PER_DOMAIN = 100
N_DOMAINS, N_EXPERTS = 3, 4
NOMINAL_MISS = 0.05


def binomial_band(n: int, p: float, tail: float = 0.0005) -> tuple[int, int]:
    """Counts (lo, hi) with at most `tail` probability below lo and above hi for Binomial(n, p)."""
    pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    cdf = np.cumsum(pmf)
    lo = int(np.searchsorted(cdf, tail))
    hi = int(np.searchsorted(cdf, 1 - tail))
    return lo, hi


def document_counts(
    rng: np.random.Generator, lengths: np.ndarray, domains: np.ndarray, means: np.ndarray
) -> np.ndarray:
    """(n_docs, L, E) assignment counts: each document draws its own expert preference around
    its domain's mean `means[d]` (Dirichlet, concentration 20) and routes its tokens by it."""
    shape = rng.standard_gamma(20.0 * means[domains])
    preference = shape / shape.sum(axis=1, keepdims=True)
    counts = np.zeros((len(lengths), N_DOMAINS, N_EXPERTS))
    counts[np.arange(len(lengths)), domains] = rng.multinomial(lengths, preference)
    return counts


def documents(rng: np.random.Generator, per_domain: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths (8..120 tokens) and domains of `per_domain` documents in each domain."""
    domains = np.repeat(np.arange(N_DOMAINS), per_domain)
    return rng.integers(8, 121, size=len(domains)), domains


DOMAIN_BLIND = np.tile([0.4, 0.3, 0.2, 0.1], (N_DOMAINS, 1))
SPECIALIZED = np.array(
    [[0.55, 0.15, 0.15, 0.15], [0.15, 0.55, 0.15, 0.15], [0.25, 0.25, 0.25, 0.25]]
)


def true_nmi(means: np.ndarray) -> float:
    """The population NMI of a router whose domain d routes by `means[d]` (domains equally
    likely: every document length has the same distribution in every domain)."""
    return metrics.normalized_mi(means / len(means))


def nmi_misses(
    trained_means: np.ndarray, init_means: np.ndarray, seed: int, per_domain: int = DOCS_PER_DOMAIN
) -> int:
    """Replications whose trained-minus-init NMI interval misses the true difference."""
    truth = true_nmi(trained_means) - true_nmi(init_means)
    rng = np.random.default_rng(seed)
    misses = 0
    for replication in range(REPLICATIONS):
        lengths, domains = documents(rng, per_domain)
        trained = document_counts(rng, lengths, domains, trained_means)
        init = document_counts(rng, lengths, domains, init_means)
        found = bootstrap.nmi_intervals(trained, init, domains, RESAMPLES, seed=replication)
        low, high = found.difference_ci
        misses += not low <= truth <= high
    return misses


def loss_misses(effect: float, seed: int) -> int:
    """Replications whose paired loss-difference interval misses the true `effect`, with 30
    documents per domain (a mean of losses is calibrated at that size, unlike an NMI).

    Per-document mean losses share a document effect (short documents are harder) between
    the two models, plus each model's own noise; model a is worse by `effect` on average."""
    rng = np.random.default_rng(seed)
    misses = 0
    for replication in range(REPLICATIONS):
        lengths, domains = documents(rng, 30)
        shared = 3.0 + 0.3 * domains + 8.0 / np.sqrt(lengths) + rng.normal(0, 0.5, len(lengths))
        loss_a = shared + effect + rng.normal(0, 0.2, len(lengths)) / np.sqrt(lengths / 32)
        loss_b = shared + rng.normal(0, 0.2, len(lengths)) / np.sqrt(lengths / 32)
        found = bootstrap.paired_loss_difference(loss_a, loss_b, domains, RESAMPLES, replication)
        low, high = found.ci
        misses += not low <= effect <= high
    return misses


def at_level(monkeypatch: pytest.MonkeyPatch, level: float) -> None:
    """Make every interval of moectl.analysis.bootstrap a `level` interval."""
    monkeypatch.setattr(bootstrap, "CI_LEVEL", level)
    monkeypatch.setattr(
        bootstrap, "percentile_ci", functools.partial(bootstrap.percentile_ci, level=level)
    )


CALIBRATED = {
    "nmi-null-equally-specialized": lambda: nmi_misses(SPECIALIZED, SPECIALIZED, seed=1),
    "nmi-known-effect": lambda: nmi_misses(SPECIALIZED, DOMAIN_BLIND, seed=2),
    "loss-null": lambda: loss_misses(0.0, seed=3),
    "loss-known-effect": lambda: loss_misses(0.05, seed=4),
}


def test_the_band_is_the_binomial_one():
    for n, p in ((1000, 0.5), (REPLICATIONS, NOMINAL_MISS)):
        mean, sd = n * p, math.sqrt(n * p * (1 - p))
        low, high = binomial_band(n, p)
        assert abs(low - (mean - 3.29 * sd)) <= 2 and abs(high - (mean + 3.29 * sd)) <= 2


@pytest.mark.parametrize("case", list(CALIBRATED))
def test_95_percent_intervals_miss_the_truth_in_5_percent_of_replications(case):
    low, high = binomial_band(REPLICATIONS, NOMINAL_MISS)
    misses = CALIBRATED[case]()
    assert low <= misses <= high, f"{case}: {misses}/{REPLICATIONS} missed, band [{low}, {high}]"


@pytest.mark.parametrize("case", ["nmi-known-effect", "loss-null"])
def test_90_percent_intervals_fall_outside_the_95_percent_band(case, monkeypatch):
    """The check above can fail: with every interval at 90%, the miss count leaves the band.
    Two of the four cases keep the suite fast; all four were measured (docs/testing.md)."""
    at_level(monkeypatch, 0.90)
    low, high = binomial_band(REPLICATIONS, NOMINAL_MISS)
    misses = CALIBRATED[case]()
    assert misses > high, f"{case}: {misses}/{REPLICATIONS} missed at 90%, band [{low}, {high}]"


def test_nmi_difference_of_domain_blind_routers_is_conservative_not_anticonservative():
    """Routing independent of domain puts both NMIs at their bound 0, where the percentile
    bootstrap is known to be conservative: measured 5 of 1000 intervals exclude 0 (10 at 90%),
    not 50. Checked one-sided, so an interval that became too narrow here (tokens resampled
    instead of documents, a lost bias shift) still fails; docs/testing.md records the rate."""
    _, high = binomial_band(REPLICATIONS, NOMINAL_MISS)
    misses = nmi_misses(DOMAIN_BLIND, DOMAIN_BLIND, seed=5)
    assert misses <= high, f"{misses}/{REPLICATIONS} domain-blind intervals excluded 0"


def test_nmi_difference_with_few_documents_is_too_narrow_but_bounded():
    """A known limit, recorded in docs/testing.md: with 30 documents per domain the NMI
    difference's interval misses in 7-9.5% of replications (seeds 1, 5, 7; 1000 resamples
    give 7-8.5%), not 5%; at 100 documents it is calibrated (above). Guarded here so that it
    cannot get worse unnoticed: resampling tokens or blocks instead of documents misses far more
    often."""
    misses = nmi_misses(SPECIALIZED, SPECIALIZED, seed=1, per_domain=30)
    assert misses <= 0.12 * REPLICATIONS, f"{misses}/{REPLICATIONS} missed with 30 documents"
