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

import dataclasses
import functools
import math

import numpy as np
import pytest

from moectl.analysis import bootstrap, metrics, seeds

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
    return routed_counts(rng, lengths, domains, means[domains])


def routed_counts(
    rng: np.random.Generator, lengths: np.ndarray, domains: np.ndarray, centres: np.ndarray
) -> np.ndarray:
    """`document_counts` around a centre of each document's own (n_docs, E)."""
    shape = rng.standard_gamma(20.0 * centres)
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


@pytest.mark.parametrize("per_domain", [20, 30])
def test_nmi_difference_with_few_documents_is_calibrated_by_the_expanded_percentile(per_domain):
    """The plain percentile interval missed 7-9.5% at 30 documents per domain (issue 24: 6.7%
    at 20); the expanded one stays in the band, and at 20 documents, the quickstart's minimum
    sample, within 6% (seeds 1, 5, 7: 39, 58, 53 of 1000; docs/testing.md). Resampling tokens
    or blocks instead of documents misses far more often."""
    low, high = binomial_band(REPLICATIONS, NOMINAL_MISS)
    misses = nmi_misses(SPECIALIZED, SPECIALIZED, seed=1, per_domain=per_domain)
    assert low <= misses <= high, f"{misses}/{REPLICATIONS} missed with {per_domain} documents"
    if per_domain == 20:
        assert misses <= 0.06 * REPLICATIONS


# Seed-level intervals (moectl.analysis.seeds; issue 24 section 5). Each replication is a study:
# S seeds of one training procedure, each scored on eval documents, its estimate a paired
# difference (an NMI difference trained - init router, or a loss difference MoE - dense). The
# seeds differ by their own deviation (`spread` document standard errors of one seed's
# estimate) and are scored on the same documents (`shared`) or on independent ones. The truth is
# the procedure's expected value over seeds and documents.

CONTENT_MIX = 10.0 * (0.05 + 0.85 * np.eye(N_DOMAINS))
"""A document's mix of the three kinds of content (Dirichlet parameters by domain): on average
90% its domain's, 5% each other's. The mix is the document's own, so seeds scored on the same
documents share it; each seed's router then routes it with its own per-document noise."""
INIT_ROUTER = 0.3 * SPECIALIZED + 0.7 * DOMAIN_BLIND
SEED_DOCUMENTS = 30
"""Documents per domain of each simulated study."""


@dataclasses.dataclass(frozen=True)
class SeedSetting:
    quantity: str  # "nmi" or "loss"
    n_seeds: int
    spread: float  # between-seed sd, in document standard errors of one seed's estimate
    shared: bool  # every seed scored on the same documents

    @property
    def name(self) -> str:
        documents = "shared" if self.shared else "independent"
        return f"{self.quantity}-S{self.n_seeds}-spread{self.spread:g}-{documents}"


SEED_SETTINGS = [
    SeedSetting(quantity, n, spread, shared)
    for quantity in ("nmi", "loss")
    for n in (3, 5)
    for spread in (0.0, 1.0, 5.0)
    for shared in (True, False)
]


VERY_SPECIALIZED = np.array(
    [[0.94, 0.02, 0.02, 0.02], [0.02, 0.94, 0.02, 0.02], [0.02, 0.02, 0.48, 0.48]]
)
ROUTER_WEIGHTS = np.linspace(0.0, 1.0, 4001)


def _population_nmi(router: np.ndarray) -> np.ndarray:
    """True NMI of routers (..., content, E) over documents with the average content mix."""
    mix = CONTENT_MIX / CONTENT_MIX.sum(axis=1, keepdims=True)
    return bootstrap.nmi_of_joints(mix @ router / N_DOMAINS)


def _routers(weights: np.ndarray) -> np.ndarray:
    """Content x expert routing from VERY_SPECIALIZED (weight 0) to DOMAIN_BLIND (weight 1)."""
    weights = np.asarray(weights, np.float64)[..., None, None]
    return (1 - weights) * VERY_SPECIALIZED + weights * DOMAIN_BLIND


ROUTER_NMI = _population_nmi(_routers(ROUTER_WEIGHTS))
"""True NMI along the routers, decreasing from VERY_SPECIALIZED's (0.53) to 0."""
TRAINED_NMI = float(ROUTER_NMI[0] / 2)
"""The procedure's mean true NMI of the trained router. A seed's own is TRAINED_NMI plus its
normal deviation, held to the routers' range: symmetrically, so the mean stays TRAINED_NMI
(at spread 5 about 1% of seeds reach an end)."""


def _router_with_nmi(nmi: float) -> np.ndarray:
    """The router of that family with true NMI `nmi` (inside its range)."""
    return _routers(np.interp(nmi, ROUTER_NMI[::-1], ROUTER_WEIGHTS[::-1]))


def _seed_documents(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lengths, domains and content mixes of one study's eval documents."""
    lengths, domains = documents(rng, SEED_DOCUMENTS)
    shape = rng.standard_gamma(CONTENT_MIX[domains])
    return lengths, domains, shape / shape.sum(axis=1, keepdims=True)


def _nmi_seed(rng, docs, nmi: float, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """One seed's trained - init NMI (its trained router's true NMI `nmi`) and its replicates
    on the shared resamples."""
    lengths, domains, mix = docs
    trained = routed_counts(rng, lengths, domains, mix @ _router_with_nmi(nmi))
    init = routed_counts(rng, lengths, domains, mix @ INIT_ROUTER)
    point = bootstrap.nmi_of_joints(trained.sum(axis=0)) - bootstrap.nmi_of_joints(init.sum(0))
    return float(point), seeds.paired_replicates(bootstrap.resampled_nmi, trained, init, weights)


def _loss_documents(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lengths, domains and each document's own effect of the MoE on its loss (sd 0.1)."""
    lengths, domains = documents(rng, SEED_DOCUMENTS)
    return lengths, domains, rng.normal(0, 0.1, len(lengths))


def _loss_seed(rng, docs, effect: float, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """One seed's MoE - dense loss (`loss_misses`' documents, plus the document's own effect
    and the seed's `effect`) and its replicates on the shared resamples."""
    lengths, domains, own = docs
    shared = 3.0 + 0.3 * domains + 8.0 / np.sqrt(lengths) + rng.normal(0, 0.5, len(lengths))
    loss_a = shared + effect + own + rng.normal(0, 0.2, len(lengths)) / np.sqrt(lengths / 32)
    loss_b = shared + rng.normal(0, 0.2, len(lengths)) / np.sqrt(lengths / 32)
    point = float(np.mean(loss_a - loss_b))
    return point, seeds.paired_replicates(bootstrap.resampled_mean, loss_a, loss_b, weights)


WORLDS = {
    "nmi": (_seed_documents, _nmi_seed, TRAINED_NMI),
    "loss": (_loss_documents, _loss_seed, 0.0),
}
"""quantity -> (document generator, one seed's estimate, the procedure's centre: the trained
router's true NMI, or the MoE's effect on the loss)."""


@functools.cache
def document_se(quantity: str, seed: int, pilots: int = 300) -> float:
    """The standard deviation of one seed's estimate over document samples, at the centre."""
    make_documents, estimate, centre = WORLDS[quantity]
    rng = np.random.default_rng(seed)
    no_resamples = np.ones((1, N_DOMAINS * SEED_DOCUMENTS))
    return float(
        np.std([estimate(rng, make_documents(rng), centre, no_resamples)[0] for _ in range(pilots)])
    )


def seed_truth(quantity: str) -> float:
    """The procedure's expected value over seeds and documents."""
    if quantity == "loss":
        return 0.0
    return TRAINED_NMI - float(_population_nmi(INIT_ROUTER))


def seed_misses(
    setting: SeedSetting, replications: int, resamples: int, seed: int
) -> dict[str, int]:
    """Replications whose 95% seed-level interval misses the truth: with the seeds'
    replicates on shared resamples (`replicates`), with the bound from each seed's document
    standard error (`bound`), and over the seed values alone (`values only`)."""
    make_documents, estimate, centre = WORLDS[setting.quantity]
    scale = setting.spread * document_se(setting.quantity, seed)
    truth = seed_truth(setting.quantity)
    rng = np.random.default_rng(seed)
    misses = {"replicates": 0, "bound": 0, "values only": 0}
    for replication in range(replications):
        docs = make_documents(rng)
        weights = bootstrap.resample_counts(docs[1], resamples, seed=replication)
        values, replicates = [], []
        for _ in range(setting.n_seeds):
            seed_docs = docs if setting.shared else make_documents(rng)
            value, row = estimate(rng, seed_docs, centre + scale * rng.standard_normal(), weights)
            values.append(value)
            replicates.append(row)
        replicates = np.stack(replicates)
        intervals = {
            "replicates": seeds.seed_interval(values, replicates),
            "bound": seeds.seed_interval(values, doc_se=replicates.std(axis=1, ddof=1)),
            "values only": seeds.seed_interval(values, doc_se=np.zeros(setting.n_seeds)),
        }
        for name, interval in intervals.items():
            misses[name] += not interval.ci[0] <= truth <= interval.ci[1]
    return misses


SEED_REPLICATIONS, SEED_RESAMPLES = 80, 50
"""The reduced seed check: 80 studies per setting, 50 shared resamples (the covariance of two
seeds' replicates needs few), about 15 s for all 24 settings; the script runs 1000."""


def test_seed_intervals_cover_in_every_setting():
    """Each setting's 95% seed-level interval (replicates on shared resamples) misses the truth
    no more often than the binomial band of 5% allows. The interval is conservative where the
    documents dominate (the t quantile on S - 1 df also multiplies their variance), so only the
    upper side is asserted; docs/testing.md records the full table and the seed-values-only
    interval, which misses ~10% with shared documents and no seed spread."""
    _, high = binomial_band(SEED_REPLICATIONS, NOMINAL_MISS)
    found = {
        setting.name: seed_misses(setting, SEED_REPLICATIONS, SEED_RESAMPLES, seed=11)
        for setting in SEED_SETTINGS
    }
    over = {name: m["replicates"] for name, m in found.items() if m["replicates"] > high}
    assert not over, f"over {high}/{SEED_REPLICATIONS}: {over}"
