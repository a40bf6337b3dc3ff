"""The collapse finding: the no-LB run over the collapse threshold for `patience` consecutive
router-log steps while the LB run never was, naming every MoE setting the two arms differ in."""

from __future__ import annotations

from collections import Counter

from moectl.analysis.results import Finding
from moectl.analysis.runs import RunLogs
from moectl.study.findings.seed_combination import seed_note


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
        text=f"{arm}. {summary}{seed_note(counts, len(judged), interval=False)}",
        measure="longest streak of router-log steps over the collapse threshold, no-LB arm"
        + (" (max over seeds)" if len(streaks) > 1 else ""),
        value=float(max(streaks)),
        control=f"the LB arm: longest streak {max(lb_streaks)}; collapse = "
        f"{no_lb[0].collapse_patience} in a row",
        seed_verdicts=dict(counts),
        details=[sentence for _, sentence in judged],
    )
