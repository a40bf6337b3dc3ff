"""Routing metrics on count matrices and per-token assignments (numpy only, no model needed).

Everything here works on a label x expert table of top-k *assignments*: a token routed to k
experts contributes k entries, so fractions sum to 1 over experts for top-1 and top-k alike and
the uniform share of an expert is always 1/E.
"""

from __future__ import annotations

import numpy as np

NMI_NORMALIZATION = (
    "MI(label; expert) / H(label), over top-k assignments, in nats; 1 = the chosen expert "
    "determines the label, 0 = independent"
)


def row_fractions(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows with no assignments stay zero)."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def utilization(counts: np.ndarray) -> np.ndarray:
    """Share of all assignments that each expert received (sums to 1)."""
    column = np.asarray(counts, dtype=np.float64).sum(axis=0)
    total = column.sum()
    return column / total if total > 0 else column


def imbalance(fractions: np.ndarray) -> tuple[float, float]:
    """(max / mean, coefficient of variation) of expert shares; (1, 0) is perfect balance."""
    fractions = np.asarray(fractions, dtype=np.float64)
    mean = fractions.mean()
    if mean <= 0:
        return 0.0, 0.0
    return float(fractions.max() / mean), float(fractions.std() / mean)


def entropy(probs: np.ndarray) -> float:
    """Shannon entropy (nats) of a distribution given as non-negative weights."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    total = p.sum()
    if total <= 0:
        return 0.0
    p = p[p > 0] / total
    return float(-(p * np.log(p)).sum())


def mutual_information(counts: np.ndarray) -> float:
    """MI (nats) between the row label and the column (expert) of a joint count table."""
    joint = np.asarray(counts, dtype=np.float64)
    total = joint.sum()
    if total <= 0:
        return 0.0
    joint = joint / total
    rows = joint.sum(axis=1, keepdims=True)
    cols = joint.sum(axis=0, keepdims=True)
    mask = joint > 0
    ratio = joint[mask] / (rows @ cols)[mask]
    return float(max((joint[mask] * np.log(ratio)).sum(), 0.0))


def normalized_mi(counts: np.ndarray) -> float:
    """MI(label; expert) / H(label): the share of label uncertainty the expert choice removes."""
    label_entropy = entropy(np.asarray(counts).sum(axis=1))
    if label_entropy <= 0:
        return 0.0
    return mutual_information(counts) / label_entropy


def count_matrix(labels: np.ndarray, experts: np.ndarray, n_labels: int, n_experts: int):
    """Label x expert assignment counts from per-token labels (T,) and expert indices (T, k)."""
    labels = np.asarray(labels, dtype=np.int64)
    experts = np.asarray(experts, dtype=np.int64).reshape(len(labels), -1)
    flat = (labels[:, None] * n_experts + experts).ravel()
    return np.bincount(flat, minlength=n_labels * n_experts).reshape(n_labels, n_experts)


def permutation_baseline(
    labels: np.ndarray,
    experts: np.ndarray,
    n_labels: int,
    n_experts: int,
    n_permutations: int = 20,
    seed: int = 0,
    units: np.ndarray | None = None,
) -> tuple[float, float]:
    """Mean and std of the NMI a label-blind router would score on these very tokens.

    Shuffling the labels keeps each token's expert choices but breaks any dependence between
    label and expert, so the result is the finite-sample bias of the NMI estimate: what a router
    ignoring the label would score with the same expert marginals. With `units` (T,), each
    token's document, whole units swap labels (each unit must carry one label, as a document
    carries its domain): the null that matches a bootstrap over documents, since a document's
    tokens route alike whatever its label. Without it the labels are shuffled across tokens.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0 or n_permutations <= 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    if units is None:
        shuffled = (rng.permutation(labels) for _ in range(n_permutations))
    else:
        _, first, local = np.unique(units, return_index=True, return_inverse=True)
        unit_label = labels[first]
        shuffled = (rng.permutation(unit_label)[local] for _ in range(n_permutations))
    scores = [normalized_mi(count_matrix(s, experts, n_labels, n_experts)) for s in shuffled]
    return float(np.mean(scores)), float(np.std(scores))


def random_assignment_nmi(counts: np.ndarray, n_draws: int = 10, seed: int = 0) -> float:
    """Mean NMI of tables with the same label and expert totals as `counts` but no dependence.

    The count-table form of `permutation_baseline`, for logs that keep counts, not tokens: each
    expert's assignments are drawn without replacement from the pool of labels (a multivariate
    hypergeometric draw per expert), which is what shuffling labels across assignments gives.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() == 0 or n_draws <= 0:
        return 0.0
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(n_draws):
        pool = counts.sum(axis=1)
        table = np.zeros_like(counts)
        for expert, size in enumerate(counts.sum(axis=0)):
            table[:, expert] = rng.multivariate_hypergeometric(pool, int(size))
            pool = pool - table[:, expert]
        scores.append(normalized_mi(table))
    return float(np.mean(scores))


def top_expert_shares(counts: np.ndarray) -> list[tuple[int, float, float]]:
    """Per row: (busiest expert, its share of the row, share divided by the uniform 1/E)."""
    fractions = row_fractions(counts)
    n_experts = fractions.shape[1]
    result = []
    for row in fractions:
        expert = int(row.argmax())
        result.append((expert, float(row[expert]), float(row[expert] * n_experts)))
    return result
