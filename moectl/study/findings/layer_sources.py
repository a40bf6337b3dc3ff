"""Where a layer's domain routing comes from (`SOURCE_ORDER`), judged over seeds: the router
verdict against the gate null (Holm over every (arm, layer) test of a seed) and its own init
gate, and the model verdict against the step-0 model; each paired NMI difference combined over
seeds with the document variance they share."""

from __future__ import annotations

import numpy as np

from moectl.analysis.bootstrap import TOO_FEW, unit_strata, verdict_of
from moectl.analysis.gate_null import router_verdict
from moectl.analysis.multiplicity import FAMILY_ALPHA, holm_adjusted
from moectl.analysis.nmi_bias import resampled_nmis
from moectl.analysis.results import Emergence, EvaluationResult, RoutingAnalysis
from moectl.analysis.seeds import paired_replicates, shared_resamples
from moectl.study.findings.seed_combination import block_units, combine_seeds, share_blocks

SOURCE_ORDER = (
    "made by the router",
    "kept by the router",
    "from the representation",
    "rose, router not separated",
    "reduced by training",
    "inherited",
    TOO_FEW,
    "no control",
)
"""Per-layer sources of domain routing, strongest claim first (the finding takes the first that
any layer gives)."""

ROUTER_CLAIMS = SOURCE_ORDER[:2]
Key = tuple[str, int]
"""(arm label, position of the layer in the arm's routing): one router test of a finding."""

# Per-layer replicates of the paired NMI differences over seeds, by Emergence field.
Replicates = dict[str, np.ndarray | None]
PAIRS = {"emergent": ("trained", "init"), "router_made": ("trained", "frozen_gate")}


def nmi_replicates(results: list[EvaluationResult], layer: int) -> Replicates:
    """Per Emergence field (PAIRS), (S, B): each seed's plug-in NMI difference of one MoE layer
    (its index in `routing`) recomputed from the stored per-document tables on the shared
    document resamples, so the seed interval adds the document variance the seeds share; None
    where a seed lacks the tables or the seeds were not scored on the same blocks (then the
    shared variance is bounded from each seed's interval)."""
    first = results[0]
    none: Replicates = dict.fromkeys(PAIRS)
    tables = [r.routing[layer].specialization.unit_counts for r in results]
    if len(results) < 2 or not share_blocks(results) or not first.block_domain or None in tables:
        return none
    strata = unit_strata(np.array(first.block_domain), block_units(first))
    n_labels = max(len(first.domain_loss), int(strata.max()) + 1)
    weights = shared_resamples(strata)

    def nmi(units: np.ndarray, w: np.ndarray) -> np.ndarray:
        return resampled_nmis(units, strata, n_labels, w)

    found: Replicates = {}
    for field, (a, b) in PAIRS.items():
        pairs = [(getattr(t, a), getattr(t, b)) for t in tables]
        if any(x is None or y is None or len(x) != len(strata) for x, y in pairs):
            found[field] = None
            continue
        found[field] = np.stack(
            [paired_replicates(nmi, np.asarray(x), np.asarray(y), weights) for x, y in pairs]
        )
    return found


def seed_verdict(emergences: list[Emergence], replicates: np.ndarray | None = None) -> str | None:
    """The verdict of a paired difference over seeds (None when any seed lacks it; 'too few
    documents' when any seed had too few)."""
    if not emergences or any(e.verdict is None or e.ci is None for e in emergences):
        return None
    if any(e.verdict == TOO_FEW for e in emergences):
        return TOO_FEW
    if len(emergences) == 1:
        return emergences[0].verdict
    _, ci = combine_seeds(
        [e.difference for e in emergences],  # type: ignore[misc]
        [e.ci for e in emergences],  # type: ignore[misc]
        replicates,
    )
    return verdict_of(ci)


def layer_source(router: str | None, emergent: str | None) -> str:
    """Where a layer's domain routing comes from, given its router verdict against the gate
    null (`gate_null.router_verdict`, None without a gate null) and the model verdict (trained
    vs step-0 model, None without an init record). A router inside the null is never credited,
    and without an init record nothing is judged."""
    if TOO_FEW in (router, emergent):
        return TOO_FEW
    if emergent is None:
        return "no control"
    if router in ROUTER_CLAIMS:
        return router
    if emergent == "emerged":
        return "from the representation" if router else "rose, router not separated"
    if emergent == "reduced":
        return "reduced by training"
    return "inherited"


def router_tests(moe: dict[str, list[EvaluationResult]], seed: int) -> dict[Key, float]:
    """One seed's Holm-adjusted gate-null p-values, over every (arm, layer) that has a gate
    null: the family the finding scans."""
    keys, p_values = [], []
    for label, rs in moe.items():
        for i, layer in enumerate(rs[seed].routing):
            if layer.specialization.gate_null is not None:
                keys.append((label, i))
                p_values.append(layer.specialization.gate_null.p_value)
    return dict(zip(keys, holm_adjusted(p_values), strict=True))


def seed_difference(
    emergences: list[Emergence], replicates: np.ndarray | None = None
) -> tuple[float, tuple[float, float]] | None:
    """A paired difference over seeds with its seed-level interval (`combine_seeds`: t on S-1
    df plus the shared document variance); None when any seed lacks it."""
    if seed_verdict(emergences) is None:
        return None
    return combine_seeds(
        [e.difference for e in emergences],  # type: ignore[misc]
        [e.ci for e in emergences],  # type: ignore[misc]
        replicates,
    )


def layer_source_over_seeds(
    layers: list[RoutingAnalysis], adjusted: list[float | None], reps: Replicates | None = None
) -> str:
    """A layer's source over seeds, given each seed's Holm-adjusted gate-null p-value (None
    where the result has no gate null). Per seed for now: the router claim needs the null
    rejected in every seed."""
    specs = [layer.specialization for layer in layers]
    emergent = seed_verdict([s.emergent for s in specs], (reps or {}).get("emergent"))
    router = None
    if adjusted and all(p is not None for p in adjusted):
        rejected = all(p <= FAMILY_ALPHA for p in adjusted)  # type: ignore[operator]
        own_gate = seed_verdict([s.router_made for s in specs], (reps or {}).get("router_made"))
        router = router_verdict(rejected, emergent, own_gate)
    return layer_source(router, emergent)


def strongest_source(sources: list[str]) -> str:
    return min(sources, key=SOURCE_ORDER.index)
