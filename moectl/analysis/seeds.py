"""Intervals over training seeds: is an effect a property of the training procedure?

A study trains each arm with S seeds and scores every seed on the same eval documents. Seed s's
estimate is X_s = mu + a_s + d_s: the procedure's value mu, the seed's own deviation a_s
(variance sigma^2, the training noise the question is about) and the document sampling error
d_s. The seeds share the documents, so the d_s are correlated: Cov(d_s, d_t) = c_st. For the mean
over seeds,

    Var(mean X) = sigma^2/S + mean_s(v_s)/S + (S-1)/S * cbar
    E[s^2]      = sigma^2   + mean_s(v_s)   - cbar

(v_s = Var(d_s), cbar the mean of c_st over pairs s != t, s^2 the sample variance of the X_s),
hence Var(mean X) = E[s^2]/S + cbar. The sample variance sees only what differs between the
seeds; the document error they share (cbar) must be added. `seed_interval` is the t interval on
S - 1 degrees of freedom with that variance, s^2/S + cbar. cbar is estimated from bootstrap
replicates computed with the same resample weights for every seed (`shared_resamples`): the
mean over seed pairs of the covariance over resamples, floored at 0 (a negative shared error is
not expected of seeds scored on the same documents, and flooring it only widens). Without
replicates it is bounded by Cauchy-Schwarz, c_st <= se_s se_t. The t quantile on S - 1 degrees
of freedom also covers cbar, which is better estimated than that: conservative where the
documents dominate (scripts/calibrate_seed_intervals.py, docs/testing.md).

One seed has no seed-level interval: its document interval says how sure one training run is
on these documents, and nothing about another seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from moectl.analysis.bootstrap import CI_LEVEL, N_BOOTSTRAP, resample_counts, t_quantile

SHARED_RESAMPLE_SEED = 0
"""The seed of the document resamples every seed of a study is recomputed on."""


@dataclass(frozen=True)
class SeedInterval:
    """A per-seed estimate averaged over seeds, with its seed-level t interval (seed variation
    plus the document error the seeds share)."""

    mean: float
    ci: tuple[float, float]
    n_seeds: int


def shared_resamples(strata: np.ndarray, n_bootstrap: int = N_BOOTSTRAP) -> np.ndarray:
    """(B, n_units) document resample multiplicities that every seed is recomputed on: the
    units all seeds were scored on, resampled by domain (`bootstrap.resample_counts`)."""
    return resample_counts(strata, n_bootstrap, seed=SHARED_RESAMPLE_SEED)


def paired_replicates(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    a: np.ndarray,
    b: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """(B,) one seed's paired difference statistic(a) - statistic(b) on each shared resample.

    `statistic(per_unit, weights) -> (B,)` is e.g. `bootstrap.resampled_nmi` (per-unit count
    tables) or `bootstrap.resampled_mean` (per-unit losses, weights times unit sizes)."""
    return statistic(a, weights) - statistic(b, weights)


def shared_document_variance(replicates: np.ndarray) -> float:
    """The mean over seed pairs of the covariance (over resamples) of the seeds' replicates,
    floored at 0: the document variance the seeds share. replicates (S, B), S >= 2."""
    centred = replicates - replicates.mean(axis=1, keepdims=True)
    covariance = centred @ centred.T / (replicates.shape[1] - 1)
    n = len(replicates)
    pairs = (covariance.sum() - np.trace(covariance)) / (n * (n - 1))
    return max(float(pairs), 0.0)


def interval_standard_error(ci: tuple[float, float], level: float = CI_LEVEL) -> float:
    """The standard error a central `level` interval implies if normal: width / (2 z). Of an
    expanded percentile interval it is a little larger than the bootstrap's (conservative)."""
    return (ci[1] - ci[0]) / (2 * NormalDist().inv_cdf((1 + level) / 2))


def shared_variance_bound(doc_se: np.ndarray) -> float:
    """Upper bound of the shared document variance from per-seed standard errors alone: the
    mean over seed pairs of se_s se_t (Cauchy-Schwarz; equality when the errors are one)."""
    se = np.asarray(doc_se, np.float64)
    n = len(se)
    return float((se.sum() ** 2 - (se**2).sum()) / (n * (n - 1)))


def seed_interval(
    values: np.ndarray | list[float],
    replicates: np.ndarray | None = None,
    doc_se: np.ndarray | list[float] | None = None,
    level: float = CI_LEVEL,
) -> SeedInterval:
    """Mean over seeds of a per-seed estimate and its t interval: half-width
    t_{S-1, (1+level)/2} sqrt(s^2/S + shared), `shared` from `replicates` (S, B) computed on
    the same resamples for every seed, else bounded from `doc_se` (S,). Needs at least two
    seeds and one of the two (ignoring the shared documents is what made the seed intervals of
    issue 24 cover 75-80%)."""
    values = np.asarray(values, np.float64)
    n = len(values)
    if n < 2:
        raise ValueError(
            f"a seed-level interval needs at least 2 seeds, got {n}: one seed has only its "
            "document interval"
        )
    if replicates is not None:
        replicates = np.asarray(replicates, np.float64)
        if replicates.ndim != 2 or len(replicates) != n:
            raise ValueError(f"replicates must be (S={n}, B), got {replicates.shape}")
        shared = shared_document_variance(replicates)
    elif doc_se is not None:
        if len(doc_se) != n:
            raise ValueError(f"doc_se must hold one standard error per seed ({n})")
        shared = shared_variance_bound(np.asarray(doc_se))
    else:
        raise ValueError("seed_interval needs the seeds' replicates or their document errors")
    mean = float(values.mean())
    half = t_quantile((1 + level) / 2, n - 1) * np.sqrt(values.var(ddof=1) / n + shared)
    return SeedInterval(mean=mean, ci=(mean - float(half), mean + float(half)), n_seeds=n)
