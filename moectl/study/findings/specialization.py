"""The specialization finding in words: the strongest source any layer shows, the number that
decides it with its interval and control, and one line per (arm, layer) with the numbers behind
its source, the top-1 vs top-2 comparison and the functional test."""

from __future__ import annotations

from collections import Counter
from statistics import NormalDist

from moectl.analysis.bootstrap import TOO_FEW, format_interval
from moectl.analysis.multiplicity import FAMILY_ALPHA
from moectl.analysis.results import EvaluationResult, Finding, GateNull, GateRank, RoutingAnalysis
from moectl.study.findings.documents import document_shortage
from moectl.study.findings.layer_sources import (
    ROUTER_CLAIMS,
    Replicates,
    layer_source_over_seeds,
    nmi_replicates,
    router_tests,
    seed_difference,
    strongest_source,
)
from moectl.study.findings.seed_combination import combine_seeds, seed_note

GATE_NULL = "random gates drawn as the init draws them, on the same trained hidden states"
STEP_ZERO = "the step-0 model (init body and gate)"
MEASURES = {
    GATE_NULL: "corrected NMI over the gates' mean (trained router - gate null)",
    STEP_ZERO: "corrected NMI, trained - step-0 model",
}
"""The specialization finding's two controls and the difference each decides by."""


def _controls_phrase(layers: list[RoutingAnalysis]) -> str:
    """Random-gate percentile, probe ceiling and token-id share, per seed where present."""
    specs = [layer.specialization for layer in layers]
    parts = []
    nulls = [s.gate_null for s in specs if s.gate_null is not None]
    if nulls:
        parts.append(
            f"among {nulls[0].n} random gates on the trained body (bias-corrected NMI) the "
            "router is at percentile "
            + ", ".join(_percentiles(null) for null in nulls)
            + " (their 5-95%: "
            + ", ".join(f"{n.plain.q05:.3f}-{n.plain.q95:.3f}" for n in nulls)
            + "), excess "
            + ", ".join(f"{n.plain.excess:+.3f} ± {n.plain.excess_se:.3f}" for n in nulls)
        )
    probes = [s.probe for s in specs if s.probe is not None]
    if probes:
        parts.append(
            "probe ceiling (linear domain probe on the layer input, held-out documents): "
            "accuracy "
            + ", ".join(f"{p.accuracy:.2f} (chance {p.chance:.2f})" for p in probes)
            + ", NMI "
            + ", ".join(f"{p.nmi:.3f}" for p in probes)
        )
    token_ids = [s.token_id for s in specs if s.token_id is not None]
    if token_ids:
        parts.append(
            "domain NMI given the token id, over its within-token-id null: "
            + ", ".join(t.describe() for t in token_ids)
        )
    return "; ".join(parts)


def _percentiles(null: GateNull) -> str:
    balanced = null.balanced
    return f"{null.plain.percentile:.0f}" + (
        f" (balanced {balanced.percentile:.0f})" if balanced is not None else ""
    )


def _p_values(null: GateNull, adjusted: float | None) -> str:
    balanced = f"{null.balanced.p_value:.3f}" if null.balanced is not None else "-"
    holm = f", Holm-adjusted {adjusted:.3f}" if adjusted is not None else ""
    return f"{null.plain.p_value:.3f} plain / {balanced} balanced{holm}"


def _layer_detail(
    label: str,
    layers: list[RoutingAnalysis],
    source: str,
    adjusted: list[float | None],
    reps: Replicates,
) -> str:
    """One line per (arm, layer): the numbers behind its source, per seed."""
    specs = [layer.specialization for layer in layers]
    nmi = ", ".join(f"{s.nmi:.3f} {format_interval(s.nmi_ci, signed=False)}" for s in specs)
    text = f"{label} layer {layers[0].layer}: {source}. Trained NMI {nmi}"
    nulls = [s.gate_null for s in specs if s.gate_null is not None]
    if len(nulls) == len(specs):
        text += "; gate null p " + ", ".join(
            _p_values(null, p) for null, p in zip(nulls, adjusted, strict=True)
        )
    if all(s.frozen_gate_nmi is not None for s in specs):
        frozen = ", ".join(f"{s.frozen_gate_nmi:.3f}" for s in specs)
        made = seed_difference([s.router_made for s in specs], reps["router_made"])
        text += f"; init gate on the trained body {frozen} (one draw of the null)"
        if made is not None:
            text += f"; trained - init gate {made[0]:+.3f} {format_interval(made[1])}"
    cells = [s.corrected for s in specs if s.corrected and s.corrected.interaction is not None]
    if len(cells) == len(specs):
        text += "; co-adaptation (2x2 body x gate interaction, corrected) " + ", ".join(
            f"{c.interaction:+.3f} {format_interval(c.interaction_ci)}" for c in cells
        )
    if all(s.init_nmi is not None for s in specs):
        model = seed_difference([s.emergent for s in specs], reps["emergent"])
        text += f"; step-0 model {', '.join(f'{s.init_nmi:.3f}' for s in specs)}"
        if model is not None:
            text += f", trained - step-0 {model[0]:+.3f} {format_interval(model[1])}"
    controls = _controls_phrase(layers)
    return text + (f"; {controls}" if controls else "") + "."


def _first_choice_line(results: dict[str, list[EvaluationResult]]) -> str | None:
    """Top-1 and top-2 compared like for like (each token's first choice only), or a note that
    their NMIs are not comparable (a top-2 NMI counts every token twice)."""
    by_k = {rs[0].top_k: (label, rs[0]) for label, rs in results.items() if rs[0].routing}
    if 1 not in by_k or not any(k and k > 1 for k in by_k):
        return None
    wider = next(k for k in sorted(by_k, key=lambda k: k or 0) if k and k > 1)
    (one_label, one), (many_label, many) = by_k[1], by_k[wider]
    pairs = list(zip(one.routing, many.routing, strict=False))
    if any(b.specialization.first_choice_nmi is None for _, b in pairs):
        return (
            f"{many_label} NMI counts each token {wider} times (every choice): it is not "
            f"comparable with {one_label}'s, and no first-choice NMI was recorded."
        )
    return f"{one_label} vs {many_label} on each token's first choice only: " + "; ".join(
        f"layer {a.layer} {a.specialization.nmi:.3f} vs {b.specialization.first_choice_nmi:.3f} "
        f"{format_interval(b.specialization.first_choice_nmi_ci, signed=False)}"
        for a, b in pairs
    )


def _functional_line(results: dict[str, list[EvaluationResult]]) -> str | None:
    scores = [(label, s) for label, rs in results.items() for s in rs[0].functional]
    if not scores:
        return None
    specialized = [
        f"{label} {s.domain} L{s.layer} m={s.m}"
        for label, s in scores
        if (s.trained.verdict == "specialized")
    ]
    return (
        f"Functional test (a domain keeps only its m most-used experts vs m random ones): "
        f"specialized in {len(specialized)} of {len(scores)} cases"
        + (f" ({', '.join(specialized)})" if specialized else "")
        + "."
    )


def specialization_finding(results: dict[str, list[EvaluationResult]]) -> Finding:
    """Per layer, where the domain routing comes from (SOURCE_ORDER); the finding's verdict is
    the strongest source any layer shows. A router claim rests on the layer's gate-null test,
    Holm-adjusted over every (arm, layer) test of the same seed; the finding says how many."""
    moe = {label: rs for label, rs in results.items() if rs[0].routing}
    n_seeds = len(next(iter(results.values())))
    adjusted = [router_tests(moe, seed) for seed in range(n_seeds)]
    n_tests = max((len(a) for a in adjusted), default=0)
    rows: list[tuple[str, list[RoutingAnalysis], str, list[float | None], Replicates]] = []
    for label, rs in moe.items():
        for i in range(len(rs[0].routing)):
            layers = [r.routing[i] for r in rs]
            ps = [a.get((label, i)) for a in adjusted]
            reps = nmi_replicates(rs, i)
            rows.append((label, layers, layer_source_over_seeds(layers, ps, reps), ps, reps))
    details = [_layer_detail(*row) for row in rows]
    details += [line for line in (_first_choice_line(moe), _functional_line(moe)) if line]
    missing = sorted({r.init_control for rs in moe.values() for r in rs if r.init_control})
    verdict = strongest_source([row[2] for row in rows] or ["no control"])
    if verdict == "no control":
        return Finding(
            key="specialization",
            title="Domain specialization: its source",
            reproduced=False,
            verdict=verdict,
            text="Specialization cannot be judged without the init record: "
            + ("; ".join(missing) or "no MoE layers")
            + ".",
            control="none: no init record",
            seed_verdicts={verdict: n_seeds},
            details=details,
        )
    shortage = document_shortage([r for rs in moe.values() for r in rs])
    if shortage is not None:
        return Finding(
            key="specialization",
            title="Domain specialization: its source",
            reproduced=False,
            verdict=TOO_FEW,
            text=shortage,
            control="none decides: too few eval documents",
            seed_verdicts={TOO_FEW: n_seeds},
            details=details,
        )
    label, layers, _, ps, reps = max(
        (row for row in rows if row[2] == verdict),
        key=lambda row: _decider(row[1], verdict, row[4])[0],
    )
    # Each seed's source of the deciding layer itself: a seed whose router made domain routing
    # in some other layer does not count for this one (a different layer per seed is no
    # finding about any layer).
    seed_sources = Counter(
        layer_source_over_seeds([layer], [p]) for layer, p in zip(layers, ps, strict=True)
    )
    value, ci, control = _decider(layers, verdict, reps)
    where = [f"{row[0]} layer {row[1][0].layer}" for row in rows if row[2] == verdict]
    summary = {
        "made by the router": "The trained router routes by domain more than gates drawn as "
        "the init draws them and more than its own init gate on the same trained hidden states, "
        "and the model's routing rose over step 0: the router made it",
        "kept by the router": "The trained router routes by domain more than gates drawn as the "
        "init draws them do on the same trained hidden states, but the model's routing did not "
        "rise over step 0: the router keeps domain routing it did not add",
        "from the representation": "The model routes by domain more than at step 0, but the "
        "trained router sits inside the distribution of random gates on the trained hidden "
        "states: the representation, not the router, separates the domains",
        "rose, router not separated": "The model routes by domain more than at step 0; no gate "
        "null was recorded, so the router's own share is not known",
        "reduced by training": "Training reduced domain routing below the step-0 model's",
        "inherited": "No layer's domain routing differs detectably from the step-0 model's: "
        "it is inherited, not made by training",
    }[verdict]
    family = (
        f" Router claims: {n_tests} comparisons (arms x layers"
        + (", per seed" if n_seeds > 1 else "")
        + f"), Holm at family level {FAMILY_ALPHA:.0%}."
        if n_tests
        else ""
    )
    return Finding(
        key="specialization",
        title="Domain specialization: its source",
        reproduced=verdict == "made by the router",
        verdict=verdict,
        text=f"{summary} ({', '.join(where)}).{family}{seed_note(seed_sources, n_seeds)}",
        measure=f"{label} layer {layers[0].layer}: {MEASURES[control]}",
        value=value,
        ci=ci,
        control=control + (f" (Holm over {n_tests} comparisons)" if control == GATE_NULL else ""),
        seed_verdicts=dict(seed_sources),
        details=details,
    )


def _deciding_rank(layers: list[RoutingAnalysis]) -> list[GateRank] | None:
    """Per seed, the gate-null rank whose p-value decided (the stricter of plain and
    balanced); None when a seed has no gate null."""
    nulls = [layer.specialization.gate_null for layer in layers]
    if any(null is None for null in nulls):
        return None
    return [
        null.balanced
        if null.balanced is not None and null.balanced.p_value >= null.plain.p_value
        else null.plain
        for null in nulls  # type: ignore[union-attr]
    ]


def _decider(
    layers: list[RoutingAnalysis], verdict: str, reps: Replicates
) -> tuple[float, tuple[float, float], str]:
    """The number that decides a layer's source: for a router claim, the corrected NMI's
    excess over the gate null's mean (its interval from the document standard error), else the
    model's trained - step-0 difference; (-inf, ...) when the layer lacks it."""
    ranks = _deciding_rank(layers)
    if ranks is not None and verdict in ROUTER_CLAIMS:
        z = NormalDist().inv_cdf(0.975)
        cis = [(r.excess - z * r.excess_se, r.excess + z * r.excess_se) for r in ranks]
        value, ci = combine_seeds([r.excess for r in ranks], cis)
        return value, ci, GATE_NULL
    model = seed_difference([layer.specialization.emergent for layer in layers], reps["emergent"])
    if model is None:
        return float("-inf"), (float("nan"), float("nan")), STEP_ZERO
    return model[0], model[1], STEP_ZERO
