"""Domain routing beyond vocabulary: NMI of domain and expert *given the token id*, against a null.

I(domain; expert | token) / H(domain | token), over top-k assignments like every NMI here. OLMoE
found routing largely follows the token id; when the expert is a function of the token id this
is exactly 0. It is not 0 when routing depends on the token id plus context noise and never on
the domain given the token: the plug-in estimate is biased upwards, and more so the more cells a
token spreads over (a simulated router of that kind scores 0.066 / 0.157 / 0.258 at context noise
0.1 / 0.3 / 0.6, every interval excluding 0). So the raw number says nothing by itself; the
reported quantity is its **excess** over a null with the same bias.

The null permutes domain labels *within each token id, across documents*. The unit that moves is a
(document, token id) group: all occurrences of one id in one document keep one label between
them, and swap it with another document's group of the same id *and the same size* (as many
occurrences). That keeps
- each token id's expert choices and their clustering inside a document (context that routes a
  document's tokens alike stays together: permuting single tokens would break it and give a
  null with too little bias);
- each domain's count of every token id, so H(domain | token) and the cells that set the bias
  are exactly the observed ones (without the same-size rule, a domain whose documents repeat a
  token more often loses that under the permutation, and the null came out below the observed
  NMI by +0.012 on average at context noise 0.6, 11 of 30 intervals excluding 0);
and breaks exactly one thing: any dependence of the expert on the domain given the token id.
Permuting whole documents instead would change which domains use which token. A group with no
same-size partner keeps its label (it adds the same to the observed and the null NMI), which
costs a little power and never a false positive. The null is exact when, given the token id and
its count in a document, documents are exchangeable apart from their domain.

Interval: the document bootstrap, paired with the null. Each resample draws documents within
their domains and `PERMUTATIONS_PER_RESAMPLE` fresh within-token permutations, and takes the
observed minus the mean permuted NMI on the same resampled documents (a document drawn twice
keeps one label, in the observed and the permuted tables alike, so the resample's own extra
bias cancels). The point excess is the observed NMI minus the mean over `NULL_PERMUTATIONS`
permutations of the actual documents. Fresh permutations put the permutation noise into the
interval: wider, never narrower, than the documents alone.

Counts are kept per (group, expert) entry and every table is a bincount over the (token, expert)
pairs that occur times the labels, so memory is linear in the evaluated tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moectl.analysis import bootstrap
from moectl.analysis.results import TokenIdScore

NULL_PERMUTATIONS = 100
"""Within-token permutations of the actual documents whose mean is the null's point value."""
PERMUTATIONS_PER_RESAMPLE = 2
"""Fresh permutations averaged in each bootstrap resample: their noise widens the interval (at
2, about 1.35x the width with many, measured on the test's simulation), at 3 NMI evaluations
per resample instead of 2 + many."""


@dataclass(frozen=True)
class _Groups:
    """The assignments gathered into (document, token id) groups and (group, expert) entries.

    Under any relabelling of the groups, an entry's (token, label, expert) cell is its (token,
    expert) pair times the label, so each conditional NMI is a few bincounts over the entries.
    Tokens that only one label uses add 0 to both I(label; expert | token) and H(label | token)
    under every relabelling and resample here, so they are left out.
    """

    n_labels: int
    n_tokens: int
    n_pairs: int
    group_label: np.ndarray  # (G,) the group's observed label
    entry_group: np.ndarray  # (Q,) entries: one per (group, expert) that occurs
    entry_token: np.ndarray  # (Q,) the entry's compacted token id
    entry_unit: np.ndarray  # (Q,) the entry's document
    entry_pair: np.ndarray  # (Q,) index of the entry's (token, expert) pair
    entry_count: np.ndarray  # (Q,) assignments in the entry
    pair_token: np.ndarray  # (n_pairs,) the token of each (token, expert) pair
    movable: np.ndarray  # groups that can swap labels, ordered by (token, size)
    movable_cell: np.ndarray  # rank of each movable group's (token, size) cell, ascending

    @classmethod
    def of(
        cls, tokens: np.ndarray, labels: np.ndarray, experts: np.ndarray, units: np.ndarray
    ) -> _Groups:
        top_k = experts.shape[1]
        n_labels, n_experts = int(labels.max()) + 1, int(experts.max()) + 1
        _, token = np.unique(tokens, return_inverse=True)
        token = token.ravel()
        used = np.unique(token * n_labels + labels) // n_labels
        shared = np.bincount(used, minlength=int(token.max()) + 1) > 1
        keep = shared[token]
        _, token = np.unique(token[keep], return_inverse=True)
        token, labels, units = token.ravel(), labels[keep], units[keep]
        experts = experts[keep]
        n_tokens = int(token.max(initial=-1)) + 1
        groups, group_of, first = _compact(units * n_tokens + token)
        group_token = groups % n_tokens
        entries, entry_of, _ = _compact(np.repeat(group_of, top_k) * n_experts + experts.ravel())
        entry_group = entries // n_experts
        entry_token = group_token[entry_group]
        pairs, entry_pair, _ = _compact(entry_token * n_experts + entries % n_experts)
        size = np.bincount(group_of, minlength=len(groups))
        _, cell, cell_size = np.unique(
            group_token * (int(size.max(initial=0)) + 1) + size,
            return_inverse=True,
            return_counts=True,
        )
        cell = cell.ravel()
        movable = np.flatnonzero(cell_size[cell] > 1)
        movable = movable[np.argsort(cell[movable], kind="stable")]
        return cls(
            n_labels=n_labels,
            n_tokens=n_tokens,
            n_pairs=len(pairs),
            group_label=labels[first],
            entry_group=entry_group,
            entry_token=entry_token,
            entry_unit=(groups // n_tokens)[entry_group],
            entry_pair=entry_pair,
            entry_count=np.bincount(entry_of, minlength=len(entries)).astype(np.float64),
            pair_token=pairs // n_experts,
            movable=movable,
            movable_cell=cell[movable].astype(np.float64),
        )

    def permuted_labels(self, rng: np.random.Generator) -> np.ndarray:
        """One draw of the null: the group labels shuffled among the groups of each token id
        that hold it equally often (so each label's count of every token id is kept)."""
        order = np.argsort(self.movable_cell + rng.random(len(self.movable)))
        labels = self.group_label.copy()
        labels[self.movable] = self.group_label[self.movable[order]]
        return labels

    def nmi(self, group_label: np.ndarray, unit_weights: np.ndarray | None = None) -> float:
        """I(label; expert | token) / H(label | token) with the groups labelled `group_label`,
        each document weighted by `unit_weights` (a resample's multiplicities)."""
        n = self.entry_count
        if unit_weights is not None:
            n = n * unit_weights[self.entry_unit]
        total = n.sum()
        if total <= 0:
            return 0.0
        n_labels = self.n_labels
        label = group_label[self.entry_group]
        n_cell = np.bincount(self.entry_pair * n_labels + label, n, self.n_pairs * n_labels)
        n_tl = np.bincount(self.entry_token * n_labels + label, n, self.n_tokens * n_labels)
        n_te = np.bincount(self.entry_pair, n, self.n_pairs)
        n_t = np.bincount(self.entry_token, n, self.n_tokens)
        cell = np.flatnonzero(n_cell)
        pair, lab = np.divmod(cell, n_labels)
        t = self.pair_token[pair]
        ratio = n_cell[cell] * n_t[t] / (n_tl[t * n_labels + lab] * n_te[pair])
        mi = max(float((n_cell[cell] * np.log(ratio)).sum() / total), 0.0)
        rows = np.flatnonzero(n_tl)
        h = float(-(n_tl[rows] * np.log(n_tl[rows] / n_t[rows // n_labels])).sum() / total)
        return mi / h if h > 1e-12 else 0.0


def _compact(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct keys ascending, each key's index among them, the first position of each)."""
    distinct, first, index = np.unique(keys, return_index=True, return_inverse=True)
    return distinct, index.ravel(), first


def token_id_score(
    tokens: np.ndarray,
    labels: np.ndarray,
    experts: np.ndarray,
    units: np.ndarray,
    strata: np.ndarray,
    n_bootstrap: int = bootstrap.N_BOOTSTRAP,
    seed: int = 0,
    n_permutations: int = NULL_PERMUTATIONS,
) -> TokenIdScore:
    """The conditional NMI of per-token `labels` (T,) and chosen `experts` (T, k) given `tokens`
    (T,), its within-token-id null and their difference (the excess), with bootstrap intervals
    that resample whole units (T,; numbered 0..n_units-1, each carrying one label) within their
    `strata` (one per unit), as every interval of the routing analysis does."""
    tokens, labels = np.asarray(tokens, np.int64), np.asarray(labels, np.int64)
    experts = np.asarray(experts, np.int64).reshape(len(labels), -1)
    if not len(labels):
        return TokenIdScore(nmi=0.0)
    groups = _Groups.of(tokens, labels, experts, np.asarray(units, np.int64))
    observed = groups.group_label
    point = groups.nmi(observed)
    rng = np.random.default_rng([seed, 1])
    null = np.array([groups.nmi(groups.permuted_labels(rng)) for _ in range(n_permutations)])
    null_mean = float(null.mean()) if len(null) else 0.0
    excess = point - null_mean
    resamples = bootstrap.resample_counts(strata, n_bootstrap, seed)
    raw = np.empty(len(resamples))
    paired = np.empty(len(resamples))
    for b, weights in enumerate(resamples):
        raw[b] = groups.nmi(observed, weights)
        permuted = [groups.permuted_labels(rng) for _ in range(PERMUTATIONS_PER_RESAMPLE)]
        paired[b] = raw[b] - np.mean([groups.nmi(labels, weights) for labels in permuted])
    return TokenIdScore(
        nmi=point,
        ci=bootstrap.percentile_ci(raw, point, floor=0.0),
        null_nmi=null_mean,
        null_nmi_std=float(null.std()) if len(null) else 0.0,
        n_permutations=len(null),
        excess=excess,
        excess_ci=bootstrap.percentile_ci(paired, excess),
    )
