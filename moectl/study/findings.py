"""The reference study's claims checked against a study's own measurements, in plain words.

Every finding is judged against a control that could have failed, with its uncertainty:
- loss: MoE (and top-2) minus the matched dense run, paired bootstrap interval over eval
  documents;
- collapse: the no-LB run over the threshold for `patience` consecutive router-log steps while
  the LB run never was; the finding names every MoE setting the two arms differ in;
- specialization, per layer, by its source: "made by the router" when the trained router beats
  the distribution of gates drawn as the init draws them on the same trained body (the gate
  null, `GateNull`: the stricter of the plain and balanced rank tests, Holm over every (arm,
  layer) test the finding scans), beats its own init gate on that body (`router_made`: a body
  co-adapts with a gate that never learns, which the gate null alone took for the router in
  5 of 24 frozen-router runs, docs/testing.md), and the model's routing rose over step 0;
  "kept by the router" when it beats both without the rise; "from the representation" when
  the model's routing rose but the router did not beat both; "reduced by training" when it
  fell below the step-0 model's. Neither gate control decides alone. Every NMI difference is
  bias-corrected (`nmi_bias`).
Each variant maps to one result per seed (the same order as `seeds`). With two or more seeds a
finding's number is the mean over seeds with a t interval over the seeds that adds the document
variance they share (`moectl.analysis.seeds`), and `seed_verdicts` counts the seeds giving each
verdict; one seed's interval is over documents only and says nothing about another seed. With
fewer than `MIN_DOCUMENTS` eval documents in a domain there is no verdict: "too few documents",
with the counts. When the honest answer is "no effect at this scale", the text says so, with the
numbers.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from statistics import NormalDist

import numpy as np

from moectl.analysis.bootstrap import (
    MIN_DOCUMENTS,
    TOO_FEW,
    PairedDifference,
    format_interval,
    paired_block_difference,
    resampled_mean,
    resolved,
    unit_losses,
    unit_strata,
    verdict_of,
)
from moectl.analysis.gate_null import router_verdict
from moectl.analysis.multiplicity import FAMILY_ALPHA, holm_adjusted
from moectl.analysis.nmi_bias import resampled_nmis
from moectl.analysis.results import (
    Emergence,
    EvaluationResult,
    Finding,
    GateNull,
    GateRank,
    RoutingAnalysis,
)
from moectl.analysis.runs import RunLogs, load_run
from moectl.analysis.seeds import (
    interval_standard_error,
    paired_replicates,
    seed_interval,
    shared_resamples,
)

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
GATE_NULL = "random gates drawn as the init draws them, on the same trained hidden states"
STEP_ZERO = "the step-0 model (init body and gate)"
MEASURES = {
    GATE_NULL: "corrected NMI over the gates' mean (trained router - gate null)",
    STEP_ZERO: "corrected NMI, trained - step-0 model",
}
ROUTER_CLAIMS = SOURCE_ORDER[:2]
Key = tuple[str, int]
"""(arm label, position of the layer in the arm's routing): one router test of a finding."""
"""The specialization finding's two controls and the difference each decides by."""


def study_findings(
    results: dict[str, list[EvaluationResult]],
    run_dirs: dict[str, list[Path]],
    seeds: list[int] | None = None,
) -> list[Finding]:
    """The study's findings from the evaluations of its variants (dense, moe, no-lb, top2), each
    a list over seeds."""
    seeds = seeds if seeds is not None else list(range(len(results["moe"])))
    moe, dense, top2 = results["moe"], results["dense"], results["top2"]
    no_lb = [load_run(path) for path in run_dirs["no-lb"]]
    lb = [load_run(path) for path in run_dirs["moe"]]
    findings = [
        loss_finding(moe, dense),
        collapse_finding(no_lb, lb),
        top2_finding(top2, moe, dense),
        specialization_finding({"top-1": moe, "top-2": top2}),
    ]
    for finding in findings:
        finding.seeds = list(seeds)
    return findings


def paired_difference(a: EvaluationResult, b: EvaluationResult) -> PairedDifference:
    """a - b in mean eval loss over the blocks both were evaluated on (the same blocks),
    resampling their documents (blocks, in results that predate documents)."""
    if a.block_index != b.block_index or not a.block_loss:
        raise ValueError(f"{a.name} and {b.name} were not evaluated on the same blocks")
    units = a.block_document or a.block_index
    return paired_block_difference(
        np.array(a.block_loss), np.array(b.block_loss), np.array(a.block_domain), np.array(units)
    )


def _units(result: EvaluationResult) -> np.ndarray:
    """Each evaluated block's bootstrap unit: its document (its block, in older results)."""
    return np.array(result.block_document or result.block_index)


def _share_blocks(results: list[EvaluationResult]) -> bool:
    """Whether every result was evaluated on the same blocks of the same documents (then their
    seeds can be recomputed on one set of document resamples)."""
    first = results[0]
    return all(
        r.block_index == first.block_index and r.block_document == first.block_document
        for r in results
    )


def loss_replicates(a: list[EvaluationResult], b: list[EvaluationResult]) -> np.ndarray | None:
    """(S, B): per seed, a - b in mean eval loss recomputed on the same document resamples
    (`seeds.shared_resamples`), or None when the seeds were not all evaluated on the same
    blocks (then the seeds share no resample)."""
    first = a[0]
    if not _share_blocks([*a, *b]):
        return None
    units = _units(first)
    weights = shared_resamples(unit_strata(np.array(first.block_domain), units))
    rows = []
    for x, y in zip(a, b, strict=True):
        loss_x, blocks = unit_losses(np.array(x.block_loss), units)
        loss_y, _ = unit_losses(np.array(y.block_loss), units)
        rows.append(paired_replicates(resampled_mean, loss_x, loss_y, weights * blocks))
    return np.stack(rows)


def combine_seeds(
    points: list[float],
    cis: list[tuple[float, float]],
    replicates: np.ndarray | None = None,
) -> tuple[float, tuple[float, float]]:
    """One seed: its own estimate and document interval (which cannot speak for another seed);
    several: their mean and the seed-level t interval, the document variance the seeds share
    taken from `replicates` (S, B) on shared resamples, else bounded from each seed's interval."""
    if len(points) == 1:
        return points[0], cis[0]
    doc_se = None if replicates is not None else [interval_standard_error(ci) for ci in cis]
    combined = seed_interval(points, replicates, doc_se)
    return combined.mean, combined.ci


def _seed_note(counts: Counter[str], n: int, interval: bool = True) -> str:
    """What the seeds say, and what the interval is over."""
    if n < 2:
        if not interval:
            return " One seed: whether another training seed would agree is not known."
        return (
            " One seed: the interval is over eval documents only; it cannot say whether "
            "another training seed would agree."
        )
    parts = ", ".join(f"{verdict} in {k} of {n}" for verdict, k in counts.most_common())
    if not interval:
        return f" Over {n} seeds: {parts}."
    return (
        f" Over {n} seeds: {parts}; the interval is a t interval on {n - 1} degrees of freedom "
        "over the seeds' values, widened by the document variance they share."
    )


def documents_per_domain(result: EvaluationResult) -> dict[str, int]:
    """Eval documents (units) per domain with blocks, named as in `domain_loss`."""
    if not result.block_domain:
        return {}
    ids, sizes = np.unique(
        unit_strata(np.array(result.block_domain), _units(result)), return_counts=True
    )
    names = list(result.domain_loss)
    if len(names) != len(ids):
        names = [f"domain {i}" for i in ids]
    return dict(zip(names, (int(n) for n in sizes), strict=True))


def document_shortage(results: list[EvaluationResult]) -> str | None:
    """The 'too few documents' sentence with the counts, when any result has a domain with
    fewer than MIN_DOCUMENTS eval documents; None when every domain has enough."""
    for result in results:
        counts = documents_per_domain(result)
        if counts and min(counts.values()) < MIN_DOCUMENTS:
            listed = ", ".join(f"{domain} {n}" for domain, n in counts.items())
            return (
                f"Too few eval documents for a verdict ({listed}; at least {MIN_DOCUMENTS} per "
                "domain): an interval over so few documents is not calibrated."
            )
    return None


def _loss_verdict(difference: PairedDifference | tuple[float, float], scale: float) -> str:
    """'better' / 'worse' when the whole interval of a loss difference is below / above 0 and
    `resolved` at the losses' `scale`, else 'no detectable difference'; 'too few documents'
    for a per-seed difference over too few."""
    if isinstance(difference, PairedDifference):
        if not difference.enough_documents:
            return TOO_FEW
        difference = difference.ci
    if not resolved(difference, scale):
        return "no detectable difference"
    if difference[1] < 0:
        return "better"
    if difference[0] > 0:
        return "worse"
    return "no detectable difference"


def loss_comparison(
    a: list[EvaluationResult], b: list[EvaluationResult]
) -> tuple[float, tuple[float, float] | None, str, Counter[str], list[PairedDifference]]:
    """a - b per seed, combined over seeds: (value, ci, verdict, seed verdicts, per seed);
    no interval and the verdict 'too few documents' when a domain has too few."""
    diffs = [paired_difference(x, y) for x, y in zip(a, b, strict=True)]
    scale = float(np.mean([r.loss for r in b]))
    counts = Counter(_loss_verdict(d, scale) for d in diffs)
    replicates = loss_replicates(a, b) if len(diffs) > 1 else None
    value, ci = combine_seeds([d.difference for d in diffs], [d.ci for d in diffs], replicates)
    if document_shortage([*a, *b]):
        return value, None, TOO_FEW, counts, diffs
    return value, ci, _loss_verdict(ci, scale), counts, diffs


def _per_seed_losses(
    label: str,
    a: list[EvaluationResult],
    b: list[EvaluationResult],
    b_label: str,
    diffs: list[PairedDifference],
) -> list[str]:
    return [
        f"{label}, run {x.name}: eval loss {x.loss:.3f} vs {b_label} {y.loss:.3f}, difference "
        f"{d.difference:+.3f} {format_interval(d.ci)} ({d.relative:+.2%}; paired bootstrap over "
        + (
            f"{len(set(x.block_document))} eval documents)"
            if x.block_document
            else f"{len(x.block_loss)} eval blocks)"
        )
        for x, y, d in zip(a, b, diffs, strict=True)
    ]


def _against_dense(
    key: str,
    title: str,
    label: str,
    arm: list[EvaluationResult],
    dense: list[EvaluationResult],
    explanation: dict[str, str],
    details: list[str],
) -> Finding:
    """A loss finding: `arm` minus the matched dense run, 'better' when the whole interval is
    below 0; `explanation` says what each verdict means against the reference study."""
    value, ci, verdict, counts, diffs = loss_comparison(arm, dense)
    judged = document_shortage([*arm, *dense]) if verdict == TOO_FEW else explanation[verdict]
    return Finding(
        key=key,
        title=title,
        reproduced=verdict == "better",
        verdict=verdict,
        text=f"{label} minus matched dense eval loss: {value:+.3f} nats {format_interval(ci)}. "
        f"{judged}{_seed_note(counts, len(diffs))}",
        measure=f"eval loss, {label} - dense (nats)",
        value=value,
        ci=ci,
        control="the matched dense run (same steps and schedule), paired on the same blocks",
        seed_verdicts=dict(counts),
        details=[*_per_seed_losses(label, arm, dense, "dense", diffs), *details],
    )


def loss_finding(moe: list[EvaluationResult], dense: list[EvaluationResult]) -> Finding:
    per_domain = ", ".join(
        f"{d} {np.mean([r.domain_loss[d] for r in moe]):.3f} vs "
        f"{np.mean([r.domain_loss[d] for r in dense]):.3f}"
        for d in dense[0].domain_loss
    )
    explanation = {
        "better": "As in the reference study (MoE 3.6% better), the MoE beats the matched dense "
        "run: the whole interval is below 0.",
        "worse": "Unlike the reference study (MoE 3.6% better), the MoE is worse than the "
        "matched dense run at this scale: the whole interval is above 0.",
        "no detectable difference": "The interval contains 0: no detectable difference at this "
        "scale, unlike the reference study's 3.6% (which also trained the MoE twice as long).",
    }
    details = [f"Per domain (MoE vs dense, mean over seeds): {per_domain}."]
    return _against_dense(
        "loss", "MoE vs matched dense", "MoE (top-1)", moe, dense, explanation, details
    )


def top2_finding(
    top2: list[EvaluationResult], moe: list[EvaluationResult], dense: list[EvaluationResult]
) -> Finding:
    top1_value, top1_ci, *_ = loss_comparison(top2, moe)
    explanation = {
        "better": "As in the reference study, top-2 routing beats the dense baseline.",
        "worse": "Top-2 vs dense: worse at this scale.",
        "no detectable difference": "Top-2 vs dense: no detectable difference at this scale.",
    }
    details = [f"Top-2 minus top-1: {top1_value:+.3f} {format_interval(top1_ci)}."]
    return _against_dense("top2", "Top-2 routing", "Top-2", top2, dense, explanation, details)


def _longest_streak(run: RunLogs) -> tuple[int, int | None]:
    """(longest run of consecutive over-threshold router-log steps, the step it reached
    `patience` at, or None), as the trainer's collapse detector counted them in the routing
    log. The step-0 row (the init router) has no collapse check."""
    counts = [
        (int(row["step"]), int(row["collapse"]["consecutive"]))
        for row in run.routing or []
        if row.get("collapse") is not None
    ]
    longest = max((consecutive for _, consecutive in counts), default=0)
    patience = run.collapse_patience
    confirmed = next((step for step, consecutive in counts if consecutive >= patience), None)
    return longest, confirmed


def _peak_max_fraction(run: RunLogs) -> float:
    rows = [row for row in run.routing or [] if row.get("collapse") is not None]
    return max(
        (layer["max_fraction"] for row in rows for layer in row["layers"].values()), default=0.0
    )


def arm_differences(arm: RunLogs, control: RunLogs) -> list[str]:
    """Every MoE setting in which `arm` differs from `control`, as 'key control -> arm'."""
    a, c = arm.config.moe.model_dump(), control.config.moe.model_dump()
    return [f"moe.{key} {c[key]} -> {a[key]}" for key in a if a[key] != c.get(key)]


def _collapse_verdict(no_lb: RunLogs, lb: RunLogs) -> tuple[str, str]:
    """(verdict, sentence) of one seed's no-LB run against its LB run."""
    threshold, patience = no_lb.collapse_threshold, no_lb.collapse_patience
    no_lb_streak, confirmed = _longest_streak(no_lb)
    lb_streak, lb_confirmed = _longest_streak(lb)
    peaks = (
        f"Peak busiest-expert share: {no_lb.name} {_peak_max_fraction(no_lb):.0%}, {lb.name} "
        f"{_peak_max_fraction(lb):.0%} (threshold {threshold:.0%}, patience {patience})."
    )
    if confirmed is not None and lb_confirmed is None:
        first = no_lb.collapse_events()[0]["step"]
        lb_text = "never over it" if lb_streak == 0 else f"never more than {lb_streak} in a row"
        return "reproduced", (
            f"{no_lb.name}: the busiest expert passed {threshold:.0%} of a layer's tokens at "
            f"step {first} and stayed over it for {patience} consecutive router-log steps by "
            f"step {confirmed}; {lb.name} {lb_text}. {peaks}"
        )
    if confirmed is not None:
        return "not attributable", (
            f"Both collapsed: {no_lb.name} confirmed at step {confirmed}, {lb.name} at step "
            f"{lb_confirmed}. {peaks}"
        )
    return "not reproduced", (
        f"{no_lb.name} did not collapse: at most {no_lb_streak} consecutive router-log steps "
        f"over the threshold (patience {patience}). {peaks}"
    )


def collapse_finding(no_lb: list[RunLogs], lb: list[RunLogs]) -> Finding:
    """Reproduced only when, in every seed, the no-LB run stayed over the threshold for
    `patience` consecutive router-log steps and its LB run (the control) never did. The no-LB
    arm may differ from the LB arm in more than the LB loss (the CPU presets also turn router
    noise off): the finding names every difference instead of crediting LB alone."""
    judged = [_collapse_verdict(n, c) for n, c in zip(no_lb, lb, strict=True)]
    counts = Counter(verdict for verdict, _ in judged)
    verdicts = {verdict for verdict, _ in judged}
    verdict = verdicts.pop() if len(verdicts) == 1 else "mixed over seeds"
    differences = arm_differences(no_lb[0], lb[0])
    cause = (
        "the load-balancing loss"
        if differences == [d for d in differences if d.startswith("moe.lb_coef")]
        else "the settings it differs in"
    )
    arm = f"The no-LB arm differs from the LB arm in {', '.join(differences) or 'nothing'}"
    summary = {
        "reproduced": f"Without {cause}, routing collapsed; with them, it did not.",
        "not attributable": f"Both arms collapsed, so the collapse cannot be credited to {cause}.",
        "not reproduced": "The no-LB arm did not collapse at this scale.",
        "mixed over seeds": "The seeds disagree.",
    }[verdict]
    if cause != "the load-balancing loss" and verdict == "reproduced":
        summary += " Which of those differences causes it is not separated by this study."
    streaks = [_longest_streak(run)[0] for run in no_lb]
    lb_streaks = [_longest_streak(run)[0] for run in lb]
    return Finding(
        key="collapse",
        title="Collapse without LB"
        + (" (and without router noise)" if any("noise_std" in d for d in differences) else ""),
        reproduced=verdict == "reproduced",
        verdict=verdict,
        text=f"{arm}. {summary}{_seed_note(counts, len(judged), interval=False)}",
        measure="longest streak of router-log steps over the collapse threshold, no-LB arm"
        + (" (max over seeds)" if len(streaks) > 1 else ""),
        value=float(max(streaks)),
        control=f"the LB arm: longest streak {max(lb_streaks)}; collapse = "
        f"{no_lb[0].collapse_patience} in a row",
        seed_verdicts=dict(counts),
        details=[sentence for _, sentence in judged],
    )


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
    if len(results) < 2 or not _share_blocks(results) or not first.block_domain or None in tables:
        return none
    strata = unit_strata(np.array(first.block_domain), _units(first))
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


def _strongest(sources: list[str]) -> str:
    return min(sources, key=SOURCE_ORDER.index)


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
    seed_sources = Counter(
        _strongest(
            [
                layer_source_over_seeds([layer], [adjusted[seed].get((label, i))])
                for label, rs in moe.items()
                for i, layer in enumerate(rs[seed].routing)
            ]
            or ["no control"]
        )
        for seed in range(n_seeds)
    )
    details = [_layer_detail(*row) for row in rows]
    details += [line for line in (_first_choice_line(moe), _functional_line(moe)) if line]
    missing = sorted({r.init_control for rs in moe.values() for r in rs if r.init_control})
    verdict = _strongest([row[2] for row in rows] or ["no control"])
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
            seed_verdicts=dict(seed_sources),
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
    label, layers, _, _, reps = max(
        (row for row in rows if row[2] == verdict),
        key=lambda row: _decider(row[1], verdict, row[4])[0],
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
        text=f"{summary} ({', '.join(where)}).{family}{_seed_note(seed_sources, n_seeds)}",
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


def figures_finding(figures: list[str], token_page: Path) -> Finding:
    heatmaps = [f for f in figures if "heatmap" in Path(f).name]
    ok = bool(heatmaps) and token_page.exists()
    text = (
        f"{len(figures)} figures ({len(heatmaps)} routing heatmaps) and the token-routing page."
        if ok
        else "The heatmaps or the token-routing page are missing."
    )
    return Finding(
        key="figures",
        title="Figures",
        reproduced=ok,
        verdict="written" if ok else "missing",
        text=text,
    )
