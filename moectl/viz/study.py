"""`visualize_study`: every figure, the token page and report.html for a set of runs and results.

A figure whose data is missing (a dense run has no routing log, a run without routing.jsonl, no
evaluation results yet) is skipped with a warning instead of failing the whole study.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from moectl.analysis.results import EvaluationResult, Finding
from moectl.analysis.runs import RunLogs, load_run
from moectl.errors import MoectlError
from moectl.progress import ProgressCallback, report
from moectl.viz import figures, interactive
from moectl.viz.report import NARROW_DIR, Provenance, write_report
from moectl.viz.tokens_html import write_token_page

FigureFormat = Literal["png", "svg"]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def visualize_study(
    run_dirs: list[Path],
    eval_results: list[EvaluationResult],
    out_dir: Path,
    fmt: FigureFormat = "png",
    *,
    report_path: Path | None = None,
    warnings: list[str] | None = None,
    findings: list[Finding] | None = None,
    provenance: Provenance | None = None,
    callback: ProgressCallback | None = None,
) -> list[Path]:
    """Write the study's figures to `out_dir` (PNGs with several panels also stacked one per
    row under out_dir/narrow, which the report shows on a phone), tokens.html beside them and
    report.html at `report_path` (default out_dir/report.html, which holds the token routing
    too, so it stands alone); returns every written path. Skipped figures are explained in
    `warnings` when a list is passed. `provenance` (default: this moectl and the runs' configs)
    closes the report."""
    if fmt not in ("png", "svg"):
        raise MoectlError(f"unknown figure format '{fmt}'", hint="use --format png or svg")
    if not run_dirs and not eval_results:
        raise MoectlError(
            "nothing to visualize", hint="pass run directories and/or evaluation result files"
        )
    notes = warnings if warnings is not None else []
    runs = [load_run(Path(p)) for p in run_dirs]
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    narrow: list[Path] = []
    tasks = _run_figures(runs, notes) + _result_figures(eval_results, notes)
    for done, (stem, draw, reason) in enumerate(tasks):
        report(callback, "visualize", done, len(tasks), message=stem)
        path = draw(out_dir / f"{stem}.{fmt}")
        if path is None:
            notes.append(reason)
            continue
        written.append(path)
        if fmt == "png" and stem != "lb-loss":  # every other figure has a panel per run/layer
            (out_dir / NARROW_DIR).mkdir(exist_ok=True)
            narrow.append(draw(out_dir / NARROW_DIR / path.name, stacked=True))
    report(callback, "visualize", len(tasks), len(tasks))
    figures_only = list(written)
    written += narrow
    if any(r.samples for r in eval_results):
        written.append(write_token_page(eval_results, out_dir / "tokens.html"))
    elif eval_results:
        notes.append("no evaluated MoE model has routed samples: token page skipped")
    report_file = report_path or out_dir / "report.html"
    written.append(
        write_report(
            report_file,
            runs,
            eval_results,
            figures_only,
            findings,
            provenance,
            _interactive(runs, eval_results),
        )
    )
    return written


def _run_figures(runs: list[RunLogs], notes: list[str]):
    if not runs:
        return []
    for run in runs:
        if run.routing is None and run.is_moe:
            notes.append(f"{run.name}: no routing.jsonl (or it is empty), so no routing figures")
        elif run.routing is None:
            notes.append(f"{run.name}: dense run, no routing over training to draw")
    steps = [
        (
            f"routing-steps-{_slug(run.name)}",
            lambda p, stacked=False, r=run: figures.routing_last_step(r, p, stacked),
            f"{run.name}: no routing log, no routing over training",
        )
        for run in runs
        if run.routing
    ]
    return [
        *steps,
        (
            "domain-loss",
            lambda p, stacked=False: figures.domain_losses(runs, p, stacked),
            "no per-domain losses logged",
        ),
        (
            "router-entropy",
            lambda p, stacked=False: figures.entropy_over_training(runs, p, stacked),
            "no run has a routing log: router entropy figure skipped",
        ),
        (
            "nmi-over-training",
            lambda p, stacked=False: figures.nmi_over_training(runs, p, stacked),
            "no run's routing log has per-step counts: NMI-over-training figure skipped",
        ),
        (
            "collapse-trajectory",
            lambda p, stacked=False: figures.collapse_trajectory(runs, p, stacked),
            "no run has a routing log: collapse trajectory skipped",
        ),
        (
            "lb-loss",
            lambda p, stacked=False: figures.lb_loss_over_training(runs, p),
            "no run logged a load-balancing loss: lb-loss figure skipped",
        ),
        (
            "seed-bands",
            lambda p, stacked=False: figures.seed_bands(runs, p, stacked),
            "no arm was trained with several seeds: seed-band figure skipped",
        ),
    ]


def _interactive(runs: list[RunLogs], results: list[EvaluationResult]) -> dict[str, str]:
    """The report's interactive figures (HTML fragments) by the stem of the static figure they
    sit beside: the routing over training (a step slider), each model's heatmaps and the
    curves with seed bands."""
    drawn = [(f"routing-steps-{_slug(run.name)}", interactive.routing_over_training(run))
             for run in runs]  # fmt: skip
    drawn.append(("seed-bands", interactive.seed_bands(runs)))
    drawn += [(f"routing-heatmap-{_slug(r.name)}", interactive.routing_heatmaps(r))
              for r in results]  # fmt: skip
    return interactive.fragments([(stem, fig) for stem, fig in drawn if fig is not None])


def _result_figures(results: list[EvaluationResult], notes: list[str]):
    tasks = []
    for result in results:
        if not result.routing:
            notes.append(f"{result.name}: dense model, no routing heatmap or token-type figure")
            continue
        slug = _slug(result.name)
        tasks.append(
            (
                f"routing-heatmap-{slug}",
                lambda p, stacked=False, r=result: figures.routing_heatmaps(r, p, stacked),
                f"{result.name}: no routing to draw",
            )
        )
        tasks.append(
            (
                f"token-types-{slug}",
                lambda p, stacked=False, r=result: figures.token_type_bars(r, p, stacked),
                f"{result.name}: no code or math domain, token-type figure skipped",
            )
        )
    return tasks
