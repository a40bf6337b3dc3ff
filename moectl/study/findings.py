"""The reference study's claims checked against a study's own measurements, in plain words.

Each finding says whether it reproduced; when it did not, the text says so rather than hiding it.
"""

from __future__ import annotations

from pathlib import Path

from moectl.analysis.results import EvaluationResult, Finding
from moectl.analysis.runs import RunLogs, load_run
from moectl.study.plan import VARIANTS


def study_findings(results: list[EvaluationResult], run_dirs: dict[str, Path]) -> list[Finding]:
    """The reference study's claims (loss, collapse, specialization) checked on these results."""
    by_name = {name: r for name, r in zip(VARIANTS, results, strict=True)}
    findings = [_loss_finding(by_name["moe"], by_name["dense"])]
    no_lb = load_run(run_dirs["no-lb"])
    moe = load_run(run_dirs["moe"])
    findings.append(_collapse_finding(no_lb, moe))
    findings.append(_top2_finding(by_name["top2"], by_name["moe"], by_name["dense"]))
    findings.append(_specialization_finding(by_name["moe"], by_name["top2"]))
    return findings


LOSS_TOLERANCE = 0.005
"""Relative eval-loss differences below this are reported as no clear difference, not a win."""


def _loss_finding(moe: EvaluationResult, dense: EvaluationResult) -> Finding:
    delta = (moe.loss - dense.loss) / dense.loss
    per_domain = ", ".join(
        f"{d} {moe.domain_loss[d]:.3f} vs {dense.domain_loss[d]:.3f}" for d in dense.domain_loss
    )
    if delta <= -LOSS_TOLERANCE:
        verdict = "As in the reference study (MoE 3.6% better), the MoE beats the dense baseline."
    elif delta < LOSS_TOLERANCE:
        verdict = (
            f"The difference is within {LOSS_TOLERANCE:.1%}: no clear gain at this scale, unlike "
            "the reference study's 3.6% (which also trained the MoE for twice the steps)."
        )
    else:
        verdict = (
            "Unlike the reference study (MoE 3.6% better), the MoE is worse than the matched "
            "dense baseline at this scale."
        )
    text = (
        f"MoE (8 experts, top-1) eval loss {moe.loss:.3f} vs matched dense {dense.loss:.3f} "
        f"({delta:+.1%}); per domain (MoE vs dense): {per_domain}. {verdict}"
    )
    return Finding(
        key="loss", title="MoE vs matched dense", reproduced=delta <= -LOSS_TOLERANCE, text=text
    )


def _top2_finding(
    top2: EvaluationResult, moe: EvaluationResult, dense: EvaluationResult
) -> Finding:
    delta = (top2.loss - dense.loss) / dense.loss
    better = delta <= -LOSS_TOLERANCE
    text = (
        f"Top-2 eval loss {top2.loss:.3f} vs top-1 {moe.loss:.3f} and dense {dense.loss:.3f} "
        f"({delta:+.1%} vs dense). "
        + (
            "As in the reference study, top-2 routing gives the lowest loss."
            if better and top2.loss < moe.loss
            else "Top-2 routing does not clearly beat the dense baseline at this scale."
        )
    )
    reproduced = better and top2.loss < moe.loss
    return Finding(key="top2", title="Top-2 routing", reproduced=reproduced, text=text)


def _collapse_finding(no_lb: RunLogs, moe: RunLogs) -> Finding:
    events = no_lb.collapse_events()
    threshold = no_lb.collapse_threshold
    moe_peak = _peak_max_fraction(moe)
    no_lb_peak = _peak_max_fraction(no_lb)
    if events:
        first = events[0]
        stop = next((e for e in events if e.get("stop")), None)
        text = (
            f"Without the load-balancing loss the busiest expert passed {threshold:.0%} of a "
            f"layer's tokens at step {first['step']} (layers {first['layers']}); "
            + (
                f"collapse was confirmed and the run stopped at step {stop['step']}. "
                if stop
                else "the run was not stopped (fewer consecutive warnings than the patience). "
            )
            + f"Peak busiest-expert share: no-lb {no_lb_peak:.0%}, moe (LB on) {moe_peak:.0%}."
        )
        return Finding(key="collapse", title="Collapse without LB", reproduced=True, text=text)
    text = (
        f"The no-lb run did not collapse at this scale: its busiest expert peaked at "
        f"{no_lb_peak:.0%} of a layer's tokens (threshold {threshold:.0%}); with LB on, "
        f"{moe_peak:.0%}."
    )
    return Finding(key="collapse", title="Collapse without LB", reproduced=False, text=text)


def _peak_max_fraction(run: RunLogs) -> float:
    rows = run.routing or []
    return max(
        (layer["max_fraction"] for row in rows for layer in row["layers"].values()), default=0.0
    )


def _specialization_finding(moe: EvaluationResult, top2: EvaluationResult) -> Finding:
    parts = []
    clear = False
    for label, result in (("top-1", moe), ("top-2", top2)):
        for layer in result.routing:
            score = layer.specialization
            margin = score.nmi - score.baseline_nmi
            is_clear = margin > max(5 * score.baseline_nmi_std, 0.01) and score.nmi > 2 * (
                score.baseline_nmi
            )
            clear = clear or is_clear
            parts.append(
                f"{label} layer {layer.layer}: NMI {score.nmi:.3f} vs uniform-router "
                f"{score.baseline_nmi:.4f}" + (" (clearly above)" if is_clear else "")
            )
    verdict = (
        "Experts specialize by domain: at least one layer's score is clearly above the baseline."
        if clear
        else "No layer's specialization is clearly above the uniform-router baseline here."
    )
    return Finding(
        key="specialization",
        title="Domain specialization (normalized MI)",
        reproduced=clear,
        text="; ".join(parts) + ". " + verdict,
    )


def figures_finding(figures: list[str], token_page: Path) -> Finding:
    heatmaps = [f for f in figures if "heatmap" in Path(f).name]
    ok = bool(heatmaps) and token_page.exists()
    text = (
        f"{len(figures)} figures ({len(heatmaps)} routing heatmaps) and the token-routing page."
        if ok
        else "The heatmaps or the token-routing page are missing."
    )
    return Finding(key="figures", title="Figures", reproduced=ok, text=text)
