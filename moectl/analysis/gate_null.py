"""The trained router against the distribution of gates that never learned (issue 24, s. 1).

A single frozen init gate is one draw from the distribution the init draws gates from, and on
a trained body those draws spread widely, so "the router beats its frozen gate" is no test.
Here the null is the distribution itself: n gates drawn as the init draws them route the same
trained hidden states by the model's own rule, and the trained router's bias-corrected domain
NMI (`nmi_bias`) is ranked among theirs. If the router never learned, it is one more
exchangeable draw, so

    p = (1 + #{gates whose corrected NMI >= the router's}) / (n + 1)

is exact (its smallest value is 1 / (n + 1): n = 199 lets Holm over ~8 comparisons reject).

Everything here is plain numpy over per-document count tables (units x experts, a unit's
domain given by `strata`), so an end-to-end script can run the same test over many runs.
"""

from __future__ import annotations

import numpy as np

from moectl.analysis import bootstrap
from moectl.analysis.bootstrap import TOO_FEW
from moectl.analysis.multiplicity import holm_rejections
from moectl.analysis.nmi_bias import N_CORRECTION_PERMUTATIONS, corrected_nmi, resampled_nmis
from moectl.analysis.results import GateRank

N_GATES = 199
"""Gates per MoE layer: p can reach 1/200 = 0.005, below Holm's 0.05/8 for 8 comparisons."""
N_EXCESS_RESAMPLES = 200
"""Document resamples for the standard error of the excess over the gates' mean."""
ROUTER_VERDICTS = ("made by the router", "kept by the router", "not the router")


def rank_p_value(trained: float, gates: np.ndarray) -> float:
    """(1 + #{gates >= trained}) / (n + 1): exact when the trained router is exchangeable with
    the gates (it never learned)."""
    gates = np.asarray(gates, dtype=np.float64)
    return float((1 + np.count_nonzero(gates >= trained)) / (len(gates) + 1))


def percentile_among(value: float, others: np.ndarray) -> float:
    """Share of `others` below `value` (ties counting half), in percent."""
    others = np.asarray(others, dtype=np.float64)
    below = np.count_nonzero(others < value) + 0.5 * np.count_nonzero(others == value)
    return float(100.0 * below / len(others))


def gate_rank(
    trained: np.ndarray,
    gates: np.ndarray,
    strata: np.ndarray,
    n_labels: int,
    *,
    n_permutations: int = N_CORRECTION_PERMUTATIONS,
    n_resamples: int = N_EXCESS_RESAMPLES,
    seed: int = 0,
) -> GateRank:
    """The rank test of per-unit counts `trained` (U, E) among `gates` (G, U, E) on the same
    units: corrected NMIs, p-value, percentile, the gates' spread and the excess over their
    mean with its document-bootstrap standard error (documents resampled within their domain,
    the same resample for the router and every gate; the baselines held at their full-sample
    values, since they move little between resamples)."""
    _, router = corrected_nmi(trained, strata, n_labels, n_permutations, seed)
    raw, nulls = corrected_nmi(gates, strata, n_labels, n_permutations, seed)
    router = float(router)
    se = 0.0
    if n_resamples > 1:
        weights = bootstrap.resample_counts(strata, n_resamples, seed)
        router_b = resampled_nmis(trained, strata, n_labels, weights)
        gates_b = resampled_nmis(gates, strata, n_labels, weights).mean(axis=0)
        se = float(np.std(router_b - gates_b, ddof=1))
    return GateRank(
        p_value=rank_p_value(router, nulls),
        percentile=percentile_among(router, nulls),
        trained_nmi=router,
        mean=float(nulls.mean()),
        q05=float(np.quantile(nulls, 0.05)),
        q95=float(np.quantile(nulls, 0.95)),
        raw_mean=float(raw.mean()),
        excess=router - float(nulls.mean()),
        excess_se=se,
    )


def router_verdict(rejected: bool, emergent: str | None, own_gate: str | None) -> str:
    """A layer's router verdict. A router claim needs both controls where only the gate
    differs: the router beats the gate null (`rejected`, after the family's correction: more
    than gate-draw noise) AND beats its own init gate on the same trained body (`own_gate`, the
    paired frozen-gate verdict, == "emerged"). The second is what a body that co-adapted with
    its gate cannot fake: trained with a frozen gate (`moe.router_lr_scale=0`), the body made
    that very gate route by domain more than other random gates do, and the gate null alone
    said "made by the router" in 5 of 24 such runs (docs/testing.md). Then "made by the
    router" when the model's routing also rose over step 0 (`emergent` == "emerged"), "kept by
    the router" without that rise; "not the router" otherwise; "too few documents" (no
    verdict) when either paired verdict had too few eval documents."""
    if TOO_FEW in (emergent, own_gate):
        return TOO_FEW
    if not rejected or own_gate != "emerged":
        return "not the router"
    return "made by the router" if emergent == "emerged" else "kept by the router"


def family_verdicts(
    p_values: list[float | None], emergent: list[str | None], own_gate: list[str | None]
) -> list[str | None]:
    """Router verdicts of several layers judged as one family (Holm over the gate-null p-values
    present; None where a layer has none), each with its own model verdict (`emergent`) and
    its own-gate verdict (trained vs frozen init gate on the trained body)."""
    tested = [i for i, p in enumerate(p_values) if p is not None]
    rejected = holm_rejections([p_values[i] for i in tested])  # type: ignore[misc]
    verdicts: list[str | None] = [None] * len(p_values)
    for i, r in zip(tested, rejected, strict=True):
        verdicts[i] = router_verdict(r, emergent[i], own_gate[i])
    return verdicts
