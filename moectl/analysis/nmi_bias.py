"""Bias-corrected domain NMIs: each router's NMI minus its own document-permutation baseline.

Plug-in NMI is biased upward, and by more for a more concentrated router (a finite sample
always shows some dependence between label and expert). Two routers of different
concentration then differ even when neither routes by domain (the audit of issue 24 measured
+0.004 to +0.008 with a true difference of 0, doubling false "emerged"). Subtracting from
each NMI the mean NMI it scores with the domain labels permuted across whole documents (each
document keeps its count vector) removes that bias; the same seeded permutations serve every
router, so the baselines' own noise largely cancels in a difference. All numpy, over
per-document count vectors (units x experts) and each unit's domain (`strata`).
"""

from __future__ import annotations

import numpy as np

from moectl.analysis import bootstrap
from moectl.analysis.results import CorrectedNMI, Emergence, UnitCounts

N_CORRECTION_PERMUTATIONS = 32
"""Document permutations per baseline."""


def left_multiply(matrix: np.ndarray, units: np.ndarray) -> np.ndarray:
    """(..., M, E) = matrix (M, U) times every (U, E) slice of `units` (..., U, E), as one
    matrix product: np.matmul broadcasts a 2-D matrix over the stack by calling BLAS once per
    slice, far slower for hundreds of gates' small tables (benchmarks/bench_gate_tables.py).
    The entries are integer counts times integer weights, exact in float64, so the order of
    the sums cannot change a bit; the result is made contiguous so that later reductions sum
    in the same order as before."""
    units = np.asarray(units, dtype=np.float64)
    return np.ascontiguousarray(np.moveaxis(np.tensordot(matrix, units, axes=(1, -2)), 0, -2))


def domain_tables(units: np.ndarray, strata: np.ndarray, n_labels: int) -> np.ndarray:
    """(..., L, E) label x expert tables of per-unit count vectors (..., U, E), unit u counted
    under label strata[u]."""
    onehot = np.eye(n_labels)[np.asarray(strata, dtype=np.int64)]  # (U, L)
    return left_multiply(onehot.T, units)


def nmi_baseline(
    units: np.ndarray,
    strata: np.ndarray,
    n_labels: int,
    n_permutations: int = N_CORRECTION_PERMUTATIONS,
    seed: int = 0,
) -> np.ndarray:
    """(...) mean NMI of per-unit count vectors (..., U, E) with the unit labels permuted
    across units, over `n_permutations` seeded permutations: what these very per-document
    counts score when the documents' domains carry no information. One matmul per chunk of
    routers."""
    units = np.asarray(units, dtype=np.float64)
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.permutation(np.asarray(strata)) for _ in range(n_permutations)])
    onehot = np.eye(n_labels)[labels]  # (P, U, L)
    stacked = onehot.transpose(0, 2, 1).reshape(n_permutations * n_labels, -1)  # (P*L, U)
    flat = units.reshape(-1, *units.shape[-2:])  # (R, U, E)
    out = np.empty(len(flat))
    chunk = max(1, 4_000_000 // max(1, stacked.shape[0] * units.shape[-1]))
    for start in range(0, len(flat), chunk):
        tables = left_multiply(stacked, flat[start : start + chunk])  # (r, P*L, E)
        tables = tables.reshape(len(tables), n_permutations, n_labels, -1)
        out[start : start + chunk] = bootstrap.nmi_of_joints(tables).mean(axis=1)
    return out.reshape(units.shape[:-2])


def corrected_nmi(
    units: np.ndarray,
    strata: np.ndarray,
    n_labels: int,
    n_permutations: int = N_CORRECTION_PERMUTATIONS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(plug-in NMI, NMI minus its document-permutation baseline) of per-unit count vectors
    (..., U, E)."""
    raw = bootstrap.nmi_of_joints(domain_tables(units, strata, n_labels))
    return raw, raw - nmi_baseline(units, strata, n_labels, n_permutations, seed)


def resampled_nmis(
    units: np.ndarray, strata: np.ndarray, n_labels: int, weights: np.ndarray
) -> np.ndarray:
    """(..., B) plug-in NMIs of per-unit count vectors (..., U, E) under document resamples
    `weights` (B, U) (`bootstrap.resample_counts`), one matmul per router."""
    onehot = np.eye(n_labels)[np.asarray(strata, dtype=np.int64)]  # (U, L)
    stacked = (weights[:, None, :] * onehot.T[None]).reshape(-1, len(strata))  # (B*L, U)
    tables = left_multiply(stacked, units)  # (..., B*L, E)
    return bootstrap.nmi_of_joints(tables.reshape(*tables.shape[:-2], len(weights), n_labels, -1))


def corrected_difference(emergence: Emergence, bias: float) -> Emergence:
    """A paired plug-in difference with `bias` (the routers' difference in baseline)
    subtracted from the estimate and its interval; the verdict follows the shifted interval
    (and stays 'too few documents' where the paired verdict was).
    The interval is centred on the estimate (percentile_ci), so the shift moves it whole."""
    if emergence.difference is None or emergence.ci is None:
        return emergence
    ci = (emergence.ci[0] - bias, emergence.ci[1] - bias)
    too_few = emergence.verdict == bootstrap.TOO_FEW  # no shift makes few documents enough
    return Emergence(
        difference=emergence.difference - bias,
        ci=ci,
        verdict=bootstrap.TOO_FEW if too_few else bootstrap.verdict_of(ci),
        bias=bias,
    )


def corrected_scores(
    tables: UnitCounts,
    strata: np.ndarray,
    n_labels: int,
    n_bootstrap: int = bootstrap.N_BOOTSTRAP,
    seed: int = 0,
    n_permutations: int = N_CORRECTION_PERMUTATIONS,
) -> tuple[CorrectedNMI, dict[str, float]]:
    """Every router's corrected NMI from the per-document tables, and each one's baseline
    (name -> baseline, for correcting the differences). With all four cells of body x gate,
    the interaction (co-adaptation) and its document-bootstrap interval: the four tables are
    resampled together and the baselines held at their full-sample values."""
    named = {
        name: np.asarray(value, dtype=np.float64)
        for name, value in tables.model_dump().items()
        if value is not None
    }
    corrected, baselines = {}, {}
    for name, units in named.items():
        raw, value = corrected_nmi(units, strata, n_labels, n_permutations, seed)
        corrected[name] = float(value)
        baselines[name] = float(raw - value)
    cells = ("trained", "frozen_gate", "trained_gate_on_init", "init")
    interaction = interaction_ci = None
    if all(name in named for name in cells):
        signs = np.array([1.0, -1.0, -1.0, 1.0])
        interaction = float(sum(s * corrected[c] for s, c in zip(signs, cells, strict=True)))
        bias = float(sum(s * baselines[c] for s, c in zip(signs, cells, strict=True)))
        weights = bootstrap.resample_counts(strata, n_bootstrap, seed)
        samples = sum(
            s * resampled_nmis(named[c], strata, n_labels, weights)
            for s, c in zip(signs, cells, strict=True)
        )
        interaction_ci = bootstrap.percentile_ci(samples - bias, interaction)
    return (
        CorrectedNMI(
            n_permutations=n_permutations,
            **corrected,
            interaction=interaction,
            interaction_ci=interaction_ci,
        ),
        baselines,
    )
