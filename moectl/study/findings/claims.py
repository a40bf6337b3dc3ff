"""The study's findings, one per claim of the reference study (loss, collapse, top-2,
specialization), and the figures check."""

from __future__ import annotations

from pathlib import Path

from moectl.analysis.results import EvaluationResult, Finding
from moectl.analysis.runs import load_run
from moectl.study.findings.collapse import collapse_finding
from moectl.study.findings.loss import loss_finding, top2_finding
from moectl.study.findings.specialization import specialization_finding


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
