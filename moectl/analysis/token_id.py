"""Domain routing beyond vocabulary: NMI of domain and expert *given the token id*.

I(domain; expert | token) / H(domain | token), over top-k assignments like every NMI here.
OLMoE found routing largely follows the token id; when the expert is a function of the token
id this is exactly 0, and it is positive only when the same token goes to different experts in
different domains. Token ids are compacted to those present, and only the (token, domain,
expert) cells that occur are kept, so memory is linear in the evaluated tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moectl.analysis import bootstrap
from moectl.analysis.results import TokenIdScore


@dataclass(frozen=True)
class _Cells:
    """Each assignment's (token, label, expert) cell and each cell's marginal indices."""

    cell: np.ndarray  # per assignment
    token_label: np.ndarray  # per cell
    token_expert: np.ndarray
    token: np.ndarray

    @classmethod
    def of(cls, tokens: np.ndarray, labels: np.ndarray, experts: np.ndarray) -> _Cells:
        top_k = experts.shape[1]
        _, token = np.unique(np.repeat(tokens, top_k), return_inverse=True)
        label = np.repeat(labels, top_k)
        expert = experts.ravel()
        n_labels, n_experts = int(label.max()) + 1, int(expert.max()) + 1
        keys = (token * n_labels + label) * n_experts + expert
        unique, cell = np.unique(keys, return_inverse=True)
        cell_token = unique // (n_labels * n_experts)
        cell_label = unique // n_experts % n_labels
        cell_expert = unique % n_experts
        _, token_label = np.unique(cell_token * n_labels + cell_label, return_inverse=True)
        _, token_expert = np.unique(cell_token * n_experts + cell_expert, return_inverse=True)
        return cls(cell.ravel(), token_label.ravel(), token_expert.ravel(), cell_token)

    def nmi(self, weights: np.ndarray | None = None) -> float:
        """The conditional NMI with each assignment weighted (a resample's multiplicities)."""
        n = np.bincount(self.cell, weights=weights, minlength=len(self.token)).astype(np.float64)
        n_tl = np.bincount(self.token_label, weights=n)
        n_te = np.bincount(self.token_expert, weights=n)
        n_t = np.bincount(self.token, weights=n)
        total = n.sum()
        if total <= 0:
            return 0.0
        seen = n > 0
        ratio = n[seen] * n_t[self.token[seen]]
        ratio /= n_tl[self.token_label[seen]] * n_te[self.token_expert[seen]]
        mi = max(float((n[seen] * np.log(ratio)).sum() / total), 0.0)
        tl_token = np.zeros(len(n_tl), dtype=np.int64)
        tl_token[self.token_label] = self.token
        rows = n_tl > 0
        h = float(-(n_tl[rows] * np.log(n_tl[rows] / n_t[tl_token[rows]])).sum() / total)
        return mi / h if h > 1e-12 else 0.0


def token_id_score(
    tokens: np.ndarray,
    labels: np.ndarray,
    experts: np.ndarray,
    units: np.ndarray,
    strata: np.ndarray,
    n_bootstrap: int = bootstrap.N_BOOTSTRAP,
    seed: int = 0,
) -> TokenIdScore:
    """The conditional NMI of per-token `labels` (T,) and chosen `experts` (T, k) given `tokens`
    (T,), with a bootstrap interval that resamples whole units (T,) within their strata
    (one stratum per unit, as for every interval of the routing analysis)."""
    tokens, labels = np.asarray(tokens, np.int64), np.asarray(labels, np.int64)
    experts = np.asarray(experts, np.int64).reshape(len(labels), -1)
    if not len(labels):
        return TokenIdScore(nmi=0.0)
    cells = _Cells.of(tokens, labels, experts)
    point = cells.nmi()
    unit_of = np.repeat(np.asarray(units, np.int64), experts.shape[1])
    resamples = bootstrap.resample_counts(strata, n_bootstrap, seed)
    samples = np.array([cells.nmi(row[unit_of]) for row in resamples])
    return TokenIdScore(nmi=point, ci=bootstrap.percentile_ci(samples, point, floor=0.0))
