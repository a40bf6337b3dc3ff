"""Accumulating per-token routing over evaluation batches and turning it into RoutingAnalysis.

Per-token arrays (label, unit, chosen experts, entropy) are kept rather than only counts: the
random-assignment baseline permutes domain labels across whole documents, and the bootstrap
intervals resample whole documents, so both need the tokens and their units.

The unit of a token is what the evaluation passes to `LayerRouting.add` as its block id: the
document of its block, numbered 0..n_units-1 (or the block itself for a corpus without
documents). So every per-"block" table built here from `_arrays()` (`bootstrap.block_counts`) is
a per-document table, and any table added later gets document units with no extra work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moectl.analysis import bootstrap, metrics
from moectl.analysis.results import (
    Emergence,
    RoutingAnalysis,
    SpecializationScore,
    TokenTypeRouting,
    TopExpert,
)
from moectl.analysis.token_id import token_id_score


def specialization(
    labels: np.ndarray,
    experts: np.ndarray,
    n_labels: int,
    n_experts: int,
    n_permutations: int,
    seed: int,
    intervals: bootstrap.NMIIntervals | None = None,
    n_bootstrap: int = 0,
    units: np.ndarray | None = None,
) -> SpecializationScore:
    """NMI of label vs chosen expert, beside its random-assignment baseline (labels swapped
    between whole `units` when given) and, when given, its bootstrap intervals and the
    init-router comparison."""
    counts = metrics.count_matrix(labels, experts, n_labels, n_experts)
    base_mean, base_std = metrics.permutation_baseline(
        labels, experts, n_labels, n_experts, n_permutations, seed, units
    )
    extra: dict = {}
    if intervals is not None:
        emergent = Emergence()
        if intervals.difference_ci is not None:
            emergent = Emergence(
                difference=intervals.difference,
                ci=intervals.difference_ci,
                verdict=intervals.difference_verdict,
            )
        extra = {
            "nmi_ci": intervals.nmi_ci,
            "init_nmi": intervals.init_nmi,
            "init_nmi_ci": intervals.init_nmi_ci,
            "emergent": emergent,
            "n_bootstrap": n_bootstrap,
        }
    return SpecializationScore(
        mutual_information=metrics.mutual_information(counts),
        label_entropy=metrics.entropy(counts.sum(axis=1)),
        nmi=metrics.normalized_mi(counts),
        baseline_nmi=base_mean,
        baseline_nmi_std=base_std,
        n_permutations=n_permutations,
        **extra,
    )


@dataclass
class LayerRouting:
    """Per-token routing of one layer, appended batch by batch, with each token's unit
    (`blocks`: its block's document, see the module docstring)."""

    layer: int
    n_experts: int
    top_k: int
    domains: list[int] = field(default_factory=list)
    blocks: list[np.ndarray] = field(default_factory=list)
    experts: list[np.ndarray] = field(default_factory=list)
    entropy: list[np.ndarray] = field(default_factory=list)
    token_types: dict[str, list[np.ndarray]] = field(default_factory=dict)
    token_ids: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        domain_ids: np.ndarray,
        block_ids: np.ndarray,
        expert_index: np.ndarray,
        entropy: np.ndarray,
        token_types: dict[str, np.ndarray] | None = None,
        token_ids: np.ndarray | None = None,
    ) -> None:
        """One batch: per-token domain id (T,), its bootstrap unit (T,; 0..n_units-1: the
        document of its block, or the block's position among the evaluated blocks), chosen
        experts (T, k), entropy (T,), per group a type id per token (-1 where the token is not
        of that group), and the token ids (T,) for the token-id control (give them in every
        batch or in none)."""
        self.domains.append(np.asarray(domain_ids, dtype=np.int64))
        self.blocks.append(np.asarray(block_ids, dtype=np.int64))
        self.experts.append(np.asarray(expert_index, dtype=np.int64).reshape(len(domain_ids), -1))
        self.entropy.append(np.asarray(entropy, dtype=np.float64))
        for group, ids in (token_types or {}).items():
            self.token_types.setdefault(group, []).append(np.asarray(ids, dtype=np.int64))
        if token_ids is not None:
            self.token_ids.append(np.asarray(token_ids, dtype=np.int64))

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(domains, units, experts, entropy) of every token added so far."""
        if not self.domains:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros((0, self.top_k), np.int64), np.zeros(0)
        return (
            np.concatenate(self.domains),
            np.concatenate(self.blocks),
            np.concatenate(self.experts),
            np.concatenate(self.entropy),
        )

    def analyse(
        self,
        domain_names: list[str],
        type_names: dict[str, tuple[str, ...]],
        group_domains: dict[str, str],
        n_permutations: int = 20,
        seed: int = 0,
        *,
        init: LayerRouting | None = None,
        frozen: LayerRouting | None = None,
        n_bootstrap: int = bootstrap.N_BOOTSTRAP,
    ) -> RoutingAnalysis:
        """The layer's RoutingAnalysis over everything added so far.

        `init` is the same layer of the model's step-0 router, fed the very same tokens; with
        it, every NMI gets the init value and the paired trained-minus-init interval.
        `frozen` is the init gate fed the trained model's layer input on the same tokens
        (moectl.analysis.controls); with it, the domain score gets `frozen_gate_nmi` and
        `router_made`, trained minus frozen gate, paired the same way.
        """
        domains, blocks, experts, entropy = self._arrays()
        n_domains = len(domain_names)
        counts = metrics.count_matrix(domains, experts, n_domains, self.n_experts)
        fractions = metrics.row_fractions(counts)
        usage = metrics.utilization(counts)
        max_over_mean, cv = metrics.imbalance(usage)
        present = [i for i in range(n_domains) if counts[i].sum() > 0]
        domain_entropy = {domain_names[i]: float(entropy[domains == i].mean()) for i in present}
        tops = metrics.top_expert_shares(counts)
        n_blocks = int(blocks.max()) + 1 if len(blocks) else 0
        strata = np.zeros(n_blocks, dtype=np.int64)
        strata[blocks] = domains
        per_block = bootstrap.block_counts(
            domains, experts, blocks, n_blocks, n_domains, self.n_experts
        )
        init_per_block = init.block_table(n_blocks, n_domains) if init is not None else None
        intervals = bootstrap.nmi_intervals(per_block, init_per_block, strata, n_bootstrap, seed)
        ratio_cis = bootstrap.top_share_intervals(per_block, strata, n_bootstrap, seed)
        controls = self._router_controls(
            per_block, frozen, strata, n_domains, seed, n_bootstrap, domains, experts, blocks
        )
        score = specialization(
            domains,
            experts,
            n_domains,
            self.n_experts,
            n_permutations,
            seed,
            intervals,
            n_bootstrap,
            units=blocks,
        )
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
            specialization=score.model_copy(update=controls),
            top_expert={
                domain_names[i]: TopExpert(
                    expert=tops[i][0],
                    share=tops[i][1],
                    ratio_to_uniform=tops[i][2],
                    ratio_ci=ratio_cis[i],
                )
                for i in present
            },
            token_types=[
                self._type_routing(
                    group,
                    type_names[group],
                    group_domains[group],
                    n_permutations,
                    seed,
                    init,
                    n_bootstrap,
                )
                for group in self.token_types
            ],
        )

    def block_table(self, n_blocks: int, n_labels: int, first_choice: bool = False) -> np.ndarray:
        """(n_blocks, domains, experts) count tables of everything added (first choices only
        with `first_choice`)."""
        domains, blocks, experts, _ = self._arrays()
        chosen = experts[:, :1] if first_choice else experts
        return bootstrap.block_counts(domains, chosen, blocks, n_blocks, n_labels, self.n_experts)

    def _router_controls(
        self,
        per_block: np.ndarray,
        frozen: LayerRouting | None,
        strata: np.ndarray,
        n_domains: int,
        seed: int,
        n_bootstrap: int,
        domains: np.ndarray,
        experts: np.ndarray,
        blocks: np.ndarray,
    ) -> dict:
        """The domain score's router fields: first choice, frozen gate and token id."""
        n_blocks = len(strata)
        first_choice = self.block_table(n_blocks, n_domains, first_choice=True)
        first = bootstrap.nmi_intervals(first_choice, None, strata, n_bootstrap, seed)
        fields: dict = {
            "first_choice_nmi": float(bootstrap.nmi_of_joints(first_choice.sum(axis=0))),
            "first_choice_nmi_ci": first.nmi_ci,
        }
        if frozen is not None:
            paired = bootstrap.nmi_intervals(
                per_block, frozen.block_table(n_blocks, n_domains), strata, n_bootstrap, seed
            )
            fields["frozen_gate_nmi"] = paired.init_nmi
            fields["frozen_gate_nmi_ci"] = paired.init_nmi_ci
            fields["router_made"] = Emergence(
                difference=paired.difference,
                ci=paired.difference_ci,
                verdict=paired.difference_verdict,
            )
        if self.token_ids:
            fields["token_id"] = token_id_score(
                np.concatenate(self.token_ids), domains, experts, blocks, strata, n_bootstrap, seed
            )
        return fields

    def _typed_tokens(self, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(type, unit, experts) of the tokens that have a type in `group`."""
        _, blocks, experts, _ = self._arrays()
        types = np.concatenate(self.token_types[group])
        keep = types >= 0
        return types[keep], blocks[keep], experts[keep]

    def _type_routing(
        self,
        group: str,
        names: tuple[str, ...],
        domain: str,
        n_permutations: int,
        seed: int,
        init: LayerRouting | None,
        n_bootstrap: int,
    ) -> TokenTypeRouting:
        types, blocks, chosen = self._typed_tokens(group)
        counts = metrics.count_matrix(types, chosen, len(names), self.n_experts)
        fractions = metrics.row_fractions(counts)
        intervals = None
        if len(types):
            # Units (documents) of the group's domain only, renumbered 0..n-1; one stratum.
            used, local = np.unique(blocks, return_inverse=True)
            per_block = bootstrap.block_counts(
                types, chosen, local, len(used), len(names), self.n_experts
            )
            init_per_block = None
            if init is not None:
                init_types, init_blocks, init_chosen = init._typed_tokens(group)
                init_local = np.searchsorted(used, init_blocks)
                init_per_block = bootstrap.block_counts(
                    init_types, init_chosen, init_local, len(used), len(names), self.n_experts
                )
            strata = np.zeros(len(used), dtype=np.int64)
            intervals = bootstrap.nmi_intervals(
                per_block, init_per_block, strata, n_bootstrap, seed
            )
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
                types,
                chosen,
                len(names),
                self.n_experts,
                n_permutations,
                seed,
                intervals,
                n_bootstrap,
            ),
        )
