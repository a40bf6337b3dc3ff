"""report.html: one self-contained page that summarises a study.

Figures are embedded (PNG as base64, SVG inline) so the page can be mailed or archived alone; the
token routing page is linked by a relative path because it is large and stands on its own.
"""

from __future__ import annotations

import base64
import html
import os
from datetime import datetime, timezone
from pathlib import Path

from moectl.analysis.bootstrap import format_interval
from moectl.analysis.evaluate import SAMPLE_NOTE
from moectl.analysis.metrics import NMI_NORMALIZATION
from moectl.analysis.results import EvaluationResult, Finding
from moectl.analysis.runs import RunLogs
from moectl.fs import write_text
from moectl.viz.palette import domain_color

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; color: #222; max-width: 1200px;
  padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
td.best { font-weight: bold; background: #e8f5e9; }
figure { margin: 1.5em 0; } figure img, figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
p.note { color: #666; font-size: 0.9em; }
ul.findings li { margin: 0.5em 0; } span.yes { color: #2e7d32; } span.no { color: #c62828; }
"""


def _table(header: list[str], rows: list[list[str]], best: dict[int, int] | None = None) -> str:
    """An HTML table from HTML cells; `best` maps a column to the row whose cell is best."""
    best = best or {}
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = "".join(
            f"<td class='best'>{cell}</td>" if best.get(c) == r else f"<td>{cell}</td>"
            for c, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _best_rows(values: list[list[float | None]], lower_is_better: list[bool]) -> dict[int, int]:
    best = {}
    for c, lower in enumerate(lower_is_better):
        column = [(v[c], r) for r, v in enumerate(values) if v[c] is not None]
        if len(column) > 1:
            best[c] = (min(column) if lower else max(column))[1]
    return best


def _runs_section(runs: list[RunLogs]) -> str:
    rows = []
    for run in runs:
        moe = run.config.moe
        kind = f"MoE top-{moe.top_k} x{moe.n_experts}, lb {moe.lb_coef}" if run.is_moe else "dense"
        last_train = run.train[-1] if run.train else {}
        last_eval = run.eval[-1] if run.eval else {}
        events = run.collapse_events()
        rows.append(
            [
                html.escape(run.name),
                html.escape(kind),
                str(last_train.get("step", "-")),
                f"{last_eval['loss']:.3f}" if last_eval.get("loss") is not None else "-",
                str(len(events))
                if run.routing is not None
                else ("no routing log" if run.is_moe else "- (dense)"),
            ]
        )
    return (
        "<h2>Runs compared</h2>"
        + _table(["run", "model", "steps", "training-time eval loss", "collapse warnings"], rows)
        + "<p class='note'>The training-time eval loss is the trainer's last periodic eval, on "
        "its own subset of eval blocks (train.eval_max_blocks); the losses below come from "
        "<code>moectl evaluate</code> on one common block set and are the ones the findings "
        "use.</p>"
    )


def _loss_section(results: list[EvaluationResult]) -> str:
    domains: list[str] = []
    for result in results:
        domains += [d for d in result.domain_loss if d not in domains]
    header = ["model", "loss", "ppl"] + [
        f"<span style='color:{domain_color(d, domains)}'>{html.escape(d)}</span> loss"
        for d in domains
    ]
    values: list[list[float | None]] = []
    rows = []
    for result in results:
        numbers = [None, result.loss, result.ppl] + [result.domain_loss.get(d) for d in domains]
        values.append(numbers)
        rows.append(
            [html.escape(result.name)] + [f"{v:.3f}" if v is not None else "-" for v in numbers[1:]]
        )
    table = _table(header, rows, _best_rows(values, [True] * len(header)))
    split = results[0].split if results else "eval"
    corpus = results[0].corpus_name if results else ""
    blocks = results[0].blocks if results else 0
    sample_notes = dict.fromkeys(n for r in results for n in r.notes if n.startswith(SAMPLE_NOTE))
    return (
        f"<h2>Per-domain loss ({html.escape(corpus)}, {html.escape(split)} split, {blocks} "
        "blocks, moectl evaluate)</h2>"
        + table
        + "<p class='note'>Mean next-token cross-entropy (nats); best per column in bold.</p>"
        + "".join(f"<p class='note'><b>Warning</b>: {html.escape(n)}</p>" for n in sample_notes)
    )


def _specialization_section(results: list[EvaluationResult]) -> str:
    rows = []
    for result in results:
        if not result.routing:
            rows.append([html.escape(result.name), "dense"] + ["-"] * 7)
            continue
        for layer in result.routing:
            spec = layer.specialization
            emergent = spec.emergent
            tops = ", ".join(
                f"{html.escape(d)} e{t.expert} {t.ratio_to_uniform:.2f}x "
                f"{format_interval(t.ratio_ci, 2, signed=False)}"
                for d, t in layer.top_expert.items()
            )
            types = ", ".join(
                f"{html.escape(tt.domain)} {tt.specialization.nmi:.3f} vs init "
                + (
                    f"{tt.specialization.init_nmi:.3f} ({tt.specialization.emergent.verdict})"
                    if tt.specialization.init_nmi is not None
                    else "-"
                )
                for tt in layer.token_types
            )
            rows.append(
                [
                    html.escape(result.name),
                    str(layer.layer),
                    f"{spec.nmi:.3f} {format_interval(spec.nmi_ci)}",
                    f"{spec.init_nmi:.3f} {format_interval(spec.init_nmi_ci)}"
                    if spec.init_nmi is not None
                    else html.escape(f"no control ({result.init_control})"),
                    f"{emergent.difference:+.3f} {format_interval(emergent.ci)}"
                    if emergent.difference is not None
                    else "-",
                    f"<b>{emergent.verdict}</b>" if emergent.verdict else "-",
                    f"{spec.baseline_nmi:.4f}",
                    tops,
                    types or "-",
                ]
            )
    return (
        "<h2>Specialization: trained router vs init router</h2>"
        + _table(
            [
                "model",
                "layer",
                "NMI(domain; expert) [95% CI]",
                "init router NMI [95% CI]",
                "trained - init [95% CI]",
                "verdict",
                "random-assignment baseline",
                "top expert share / uniform [95% CI]",
                "token-type NMI vs init",
            ],
            rows,
        )
        + f"<p class='note'>NMI = {html.escape(NMI_NORMALIZATION)}. The control is the init "
        "router: the same model at step 0 (experts as upcycled, gates as initialized) on the "
        "same blocks. Intervals: 95% bootstrap over eval documents (whole documents resampled "
        "within each domain; trained and init paired). Verdict: emerged (interval above 0), "
        "inherited (contains 0), reduced (below 0). The random-assignment baseline (domain labels "
        "shuffled across whole documents) only measures the estimator's bias.</p>"
    )


def _collapse_section(runs: list[RunLogs]) -> str:
    rows = []
    for run in runs:
        if run.routing is None:
            continue
        events = run.collapse_events()
        if not events:
            rows.append([html.escape(run.name), "none", "-", "-"])
            continue
        first_by_layer: dict[int, int] = {}
        for event in events:
            for layer in event["layers"]:
                first_by_layer.setdefault(int(layer), event["step"])
        stop = next((e["step"] for e in events if e["stop"]), None)
        rows.append(
            [
                html.escape(run.name),
                ", ".join(f"layer {layer} at step {s}" for layer, s in first_by_layer.items()),
                str(len(events)),
                f"step {stop}" if stop is not None else "no",
            ]
        )
    if not rows:
        return ""
    return (
        "<h2>Collapse events</h2>"
        + _table(["run", "first warning", "warnings", "stopped"], rows)
        + "<p class='note'>A warning is a router-log step where one expert took more than the "
        "threshold of a layer's assignments.</p>"
    )


def _embed(figure: Path) -> str:
    caption = html.escape(figure.stem.replace("-", " ").replace("_", " "))
    if figure.suffix == ".svg":
        svg = figure.read_text(encoding="utf-8")
        body = svg[svg.find("<svg") :]
    else:
        data = base64.b64encode(figure.read_bytes()).decode("ascii")
        body = f"<img alt='{caption}' src='data:image/png;base64,{data}'>"
    return f"<figure>{body}<figcaption>{caption}</figcaption></figure>"


def _findings_section(findings: list[Finding]) -> str:
    items = "".join(
        f"<li><b>{html.escape(f.title)}</b>: "
        f"<span class='{'yes' if f.reproduced else 'no'}'>{html.escape(f.verdict)}</span>. "
        f"{html.escape(f.text)}</li>"
        for f in findings
    )
    return f"<h2>Findings</h2><ul class='findings'>{items}</ul>"


def render_report(
    runs: list[RunLogs],
    results: list[EvaluationResult],
    figures: list[Path],
    token_page: Path | None,
    base: Path,
    title: str = "moectl study report",
    findings: list[Finding] | None = None,
) -> str:
    """The report's HTML text; `base` is the folder the page will live in (for links)."""
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class='note'>Written {created} by moectl.</p>",
    ]
    if findings:
        parts.append(_findings_section(findings))
    if runs:
        parts.append(_runs_section(runs))
    if results:
        parts.append(_loss_section(results))
        parts.append(_specialization_section(results))
    parts.append(_collapse_section(runs))
    if token_page is not None:
        link = os.path.relpath(token_page, base)
        parts.append(
            "<h2>Token routing</h2><p>Sample texts with each token coloured by its expert: "
            f"<a href='{html.escape(link)}'>{html.escape(link)}</a></p>"
        )
    if figures:
        parts.append("<h2>Figures</h2>")
        parts.extend(_embed(f) for f in figures)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    path: Path,
    runs: list[RunLogs],
    results: list[EvaluationResult],
    figures: list[Path],
    token_page: Path | None = None,
    findings: list[Finding] | None = None,
) -> Path:
    """Write report.html to `path` (atomically) and return it; `findings` lead the page."""
    text = render_report(runs, results, figures, token_page, path.parent, findings=findings)
    return write_text(path, text)
