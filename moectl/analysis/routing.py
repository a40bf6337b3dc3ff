"""Accumulating per-token routing over evaluation batches and turning it into RoutingAnalysis.

Per-token arrays (label, chosen experts, entropy) are kept rather than only counts, because the
uniform-router baseline permutes labels across tokens, which needs the tokens themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moectl.analysis import metrics
from moectl.analysis.results import (
    RoutingAnalysis,
    SpecializationScore,
    TokenTypeRouting,
    TopExpert,
)


def specialization(
    labels: np.ndarray,
    experts: np.ndarray,
    n_labels: int,
    n_experts: int,
    n_permutations: int,
    seed: int,
) -> SpecializationScore:
    """NMI of label vs chosen expert, beside its permutation baseline."""
    counts = metrics.count_matrix(labels, experts, n_labels, n_experts)
    base_mean, base_std = metrics.permutation_baseline(
        labels, experts, n_labels, n_experts, n_permutations, seed
    )
    return SpecializationScore(
        mutual_information=metrics.mutual_information(counts),
        label_entropy=metrics.entropy(counts.sum(axis=1)),
        nmi=metrics.normalized_mi(counts),
        baseline_nmi=base_mean,
        baseline_nmi_std=base_std,
        n_permutations=n_permutations,
    )


@dataclass
class LayerRouting:
    """Per-token routing of one layer, appended batch by batch."""

    layer: int
    n_experts: int
    top_k: int
    domains: list[int] = field(default_factory=list)
    experts: list[np.ndarray] = field(default_factory=list)
    entropy: list[np.ndarray] = field(default_factory=list)
    token_types: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add(
        self,
        domain_ids: np.ndarray,
        expert_index: np.ndarray,
        entropy: np.ndarray,
        token_types: dict[str, np.ndarray] | None = None,
    ) -> None:
        """One batch: per-token domain id (T,), chosen experts (T, k), entropy (T,), and per
        group a type id per token (-1 where the token is not of that group)."""
        self.domains.append(np.asarray(domain_ids, dtype=np.int64))
        self.experts.append(np.asarray(expert_index, dtype=np.int64).reshape(len(domain_ids), -1))
        self.entropy.append(np.asarray(entropy, dtype=np.float64))
        for group, ids in (token_types or {}).items():
            self.token_types.setdefault(group, []).append(np.asarray(ids, dtype=np.int64))

    def analyse(
        self,
        domain_names: list[str],
        type_names: dict[str, tuple[str, ...]],
        group_domains: dict[str, str],
        n_permutations: int = 20,
        seed: int = 0,
    ) -> RoutingAnalysis:
        """The layer's RoutingAnalysis over everything added so far."""
        domains = np.concatenate(self.domains) if self.domains else np.zeros(0, np.int64)
        experts = (
            np.concatenate(self.experts) if self.experts else np.zeros((0, self.top_k), np.int64)
        )
        entropy = np.concatenate(self.entropy) if self.entropy else np.zeros(0)
        n_domains = len(domain_names)
        counts = metrics.count_matrix(domains, experts, n_domains, self.n_experts)
        fractions = metrics.row_fractions(counts)
        usage = metrics.utilization(counts)
        max_over_mean, cv = metrics.imbalance(usage)
        present = [i for i in range(n_domains) if counts[i].sum() > 0]
        domain_entropy = {domain_names[i]: float(entropy[domains == i].mean()) for i in present}
        tops = metrics.top_expert_shares(counts)
        return RoutingAnalysis(
            layer=self.layer,
            n_experts=self.n_experts,
            top_k=self.top_k,
            tokens=len(domains),
            domains=domain_names,
            counts=counts.tolist(),
            domain_fractions={domain_names[i]: fractions[i].tolist() for i in present},
            utilization=usage.tolist(),
            max_over_mean=max_over_mean,
            cv=cv,
            entropy=float(entropy.mean()) if len(entropy) else 0.0,
            domain_entropy=domain_entropy,
            specialization=specialization(
                domains, experts, n_domains, self.n_experts, n_permutations, seed
            ),
            top_expert={
                domain_names[i]: TopExpert(
                    expert=tops[i][0], share=tops[i][1], ratio_to_uniform=tops[i][2]
                )
                for i in present
            },
            token_types=[
                self._type_routing(
                    group, experts, type_names[group], group_domains[group], n_permutations, seed
                )
                for group in self.token_types
            ],
        )

    def _type_routing(
        self,
        group: str,
        experts: np.ndarray,
        names: tuple[str, ...],
        domain: str,
        n_permutations: int,
        seed: int,
    ) -> TokenTypeRouting:
        types = np.concatenate(self.token_types[group])
        keep = types >= 0
        types, chosen = types[keep], experts[keep]
        counts = metrics.count_matrix(types, chosen, len(names), self.n_experts)
        fractions = metrics.row_fractions(counts)
        return TokenTypeRouting(
            group=group,
            domain=domain,
            types=list(names),
            counts=counts.tolist(),
            fractions={name: fractions[i].tolist() for i, name in enumerate(names)},
            tokens={
                name: int(n)
                for name, n in zip(names, np.bincount(types, minlength=len(names)), strict=True)
            },
            specialization=specialization(
                types, chosen, len(names), self.n_experts, n_permutations, seed
            ),
        )
