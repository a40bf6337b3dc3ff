"""report.html: one self-contained page that summarises a study.

The findings lead as a table (verdict, the number that decides it with its interval, and what it
is compared against), their details below it, then the eval sample, the measurements, the token
routing section, the figures with captions and the provenance (version, commit, seeds, commands,
every run's config). Figures are embedded (PNG as base64, SVG inline) and the token routing is
part of the page, so the file can be moved, mailed or archived alone. The layout reads on a
phone: a viewport tag, wide tables scroll inside their own box, figures shrink to fit.
"""

from __future__ import annotations

import base64
import html
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from moectl.analysis.bootstrap import format_interval
from moectl.analysis.evaluate import SAMPLE_NOTE
from moectl.analysis.gate_null import family_verdicts
from moectl.analysis.metrics import NMI_NORMALIZATION
from moectl.analysis.results import EvaluationResult, Finding, GateNull
from moectl.analysis.runs import RunLogs
from moectl.config import dump_yaml
from moectl.fs import write_text
from moectl.model.balance import balance_setting
from moectl.version import __version__
from moectl.viz.palette import domain_color
from moectl.viz.tokens_html import TOKEN_STYLE, VIEWPORT, token_section

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em auto; color: #222; max-width: 1200px;
  padding: 0 1em; font-size: 16px; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0.3em 0; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
div.wide { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
td.best { font-weight: bold; background: #e8f5e9; }
table.findings td, table.findings th { text-align: left; }
figure { margin: 1.5em 0; } figure img, figure svg { max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 0.9em; }
p.note { color: #555; font-size: 0.9em; }
p.warning { color: #8a4b00; background: #fff4e0; padding: 0.4em 0.6em; }
span.yes { color: #1b5e20; font-weight: bold; } span.no { color: #b71c1c; font-weight: bold; }
pre { overflow-x: auto; background: #f7f7f7; padding: 0.5em; font-size: 0.85em; }
ul.details li { margin: 0.3em 0; }
p, li, h3 { overflow-wrap: anywhere; }
"""

CAPTIONS = {
    "domain-loss": "Loss per domain over training, one line per run (bold: the trainer's "
    "periodic eval, thin: training batches). Shows which domain each run learns and how fast.",
    "router-entropy": "Mean router entropy per MoE layer over training; the dashed line is a "
    "uniform router (log E). Falling entropy means more confident routing, not specialization.",
    "nmi-over-training": "NMI(domain; expert) per MoE layer over training, from the routing log; "
    "the dotted line is the same layer at step 0. Rising above it is the model's routing "
    "changing, which the findings attribute to the router only against the frozen gate.",
    "collapse-trajectory": "The busiest expert's share of each layer's tokens over training; "
    "the dashed line is the collapse threshold, the dotted one the uniform share, x marks a "
    "collapse warning.",
    "lb-loss": "Load-balancing loss over training, one line per MoE run (1.0 = perfect "
    "balance; higher means some experts get more than their share).",
    "routing-heatmap": "Share of each domain's top-k assignments that goes to each expert, per "
    "MoE layer, on the common eval blocks. A bright cell off the uniform 1/E is a domain's "
    "preferred expert.",
    "token-types": "For code and math tokens, the share of each token type's assignments that "
    "goes to each expert, per MoE layer: token-level specialization.",
}
"""What each figure shows, by the figure's file stem (routing-heatmap-<model> and
token-types-<model> by their prefix)."""


@dataclass
class Provenance:
    """Where the report's numbers come from: the moectl version and commit, the seeds, the
    commands that made them, and every run's resolved config (YAML)."""

    version: str
    commit: str | None
    seeds: list[int]
    commands: list[str]
    configs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, commands: list[str], seeds: list[int] | None = None, more: list[str] | None = None
    ) -> Provenance:
        """This moectl's version and commit, with the given commands (configs are filled from
        the runs when the report is written)."""
        return cls(__version__, git_commit(), list(seeds or []), [*commands, *(more or [])])


def git_commit() -> str | None:
    """The commit of the moectl checkout in use (with '-dirty' for uncommitted changes), or
    None when moectl is not run from its own git checkout (e.g. an installed wheel)."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
            check=True,
        ).stdout.strip()  # fmt: skip

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return None
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


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
    return f"<div class='wide'><table><tr>{head}</tr>{''.join(body)}</table></div>"


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
        kind = f"MoE {moe.routing_label}, {balance_setting(moe)}" if run.is_moe else "dense"
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
        name = result.name + (f" ({result.routing_label})" if result.routing_label else "")
        rows.append(
            [html.escape(name)] + [f"{v:.3f}" if v is not None else "-" for v in numbers[1:]]
        )
    table = _table(header, rows, _best_rows(values, [True] * len(header)))
    split = results[0].split if results else "eval"
    corpus = results[0].corpus_name if results else ""
    blocks = results[0].blocks if results else 0
    return (
        f"<h2>Per-domain loss ({html.escape(corpus)}, {html.escape(split)} split, {blocks} "
        "blocks, moectl evaluate)</h2>"
        + table
        + "<p class='note'>Mean next-token cross-entropy (nats); best per column in bold.</p>"
    )


def _score(value: float | None, ci: tuple[float, float] | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:{'+' if signed else ''}.3f} {format_interval(ci, signed=signed)}"


def _gate_null_cell(null: GateNull | None, verdict: str | None) -> str:
    if null is None:
        return "-"
    balanced = null.balanced
    return (
        f"p {null.plain.p_value:.3f} plain / "
        + (f"{balanced.p_value:.3f} balanced" if balanced else "- balanced")
        + f"; percentile {null.plain.percentile:.0f} (n={null.n}; "
        f"{null.plain.q05:.3f}-{null.plain.q95:.3f}); excess {null.plain.excess:+.3f} "
        f"± {null.plain.excess_se:.3f}" + (f" <b>{html.escape(verdict)}</b>" if verdict else "")
    )


def _specialization_section(results: list[EvaluationResult]) -> str:
    rows = []
    for result in results:
        specs = [layer.specialization for layer in result.routing]
        verdicts = family_verdicts(
            [s.gate_null.p_value if s.gate_null else None for s in specs],
            [s.emergent.verdict for s in specs],
        )
        for layer, verdict in zip(result.routing, verdicts, strict=True):
            spec = layer.specialization
            tops = ", ".join(
                f"{html.escape(d)} e{t.expert} {t.ratio_to_uniform:.2f}x "
                f"{format_interval(t.ratio_ci, 2, signed=False)}"
                for d, t in layer.top_expert.items()
            )
            probe = spec.probe
            rows.append(
                [
                    html.escape(result.name),
                    str(layer.layer),
                    _score(spec.nmi, spec.nmi_ci),
                    _score(spec.frozen_gate_nmi, spec.frozen_gate_nmi_ci)
                    if spec.init_nmi is not None
                    else html.escape(f"no control ({result.init_control or 'no init record'})"),
                    _score(spec.router_made.difference, spec.router_made.ci, signed=True)
                    + (f" <b>{spec.router_made.verdict}</b>" if spec.router_made.verdict else ""),
                    _score(spec.init_nmi, spec.init_nmi_ci),
                    _score(spec.emergent.difference, spec.emergent.ci, signed=True)
                    + (f" <b>{spec.emergent.verdict}</b>" if spec.emergent.verdict else ""),
                    _gate_null_cell(spec.gate_null, verdict),
                    _score(
                        spec.corrected.interaction if spec.corrected else None,
                        spec.corrected.interaction_ci if spec.corrected else None,
                        signed=True,
                    ),
                    f"{probe.accuracy:.2f} / {probe.nmi:.3f} (chance {probe.chance:.2f})"
                    if probe
                    else "-",
                    html.escape(spec.token_id.describe()) if spec.token_id else "-",
                    _score(spec.first_choice_nmi, spec.first_choice_nmi_ci),
                    f"{spec.baseline_nmi:.4f}",
                    tops,
                ]
            )
    if not rows:
        return ""
    return (
        "<h2>Specialization: the router against its controls</h2>"
        + _table(
            [
                "model",
                "layer",
                "NMI(domain; expert) [95% CI]",
                "frozen gate NMI",
                "trained - frozen gate (one draw) [95% CI]",
                "step-0 model NMI",
                "trained - step 0 [95% CI]",
                "gate null (bias-corrected NMI)",
                "2x2 body x gate interaction [95% CI]",
                "probe accuracy / NMI",
                "NMI given token id: excess over its null [95% CI]",
                "first-choice NMI",
                "random-assignment baseline",
                "top expert share / uniform [95% CI]",
            ],
            rows,
        )
        + f"<p class='note'>NMI = {html.escape(NMI_NORMALIZATION)}. Differences are between "
        "bias-corrected NMIs (each minus its own baseline with domains permuted across whole "
        "documents). The gate null: gates drawn as the init draws them route the trained "
        "model's hidden states at the layer input by the model's own rule; p = (1 + gates at or "
        "above the router) / (n + 1), plain and with each gate's expert load balanced to the "
        "router's; the verdict takes the larger p, Holm over the model's layers: 'made by the "
        "router' (beats the null and the model's routing rose over step 0), 'kept by the "
        "router' (beats it without the rise), 'not the router' (inside it). The frozen gate is "
        "the init gate, one draw of that null: trained minus frozen is descriptive. The step-0 "
        "model holds body and gate at initialization: trained minus it says whether the model's "
        "routing changed. The 2x2 interaction (trained - frozen gate - trained gate on the "
        "step-0 body + step-0 model) measures how body and router co-adapted. The probe is a "
        "linear domain classifier on the layer input (held-out documents), the ceiling of "
        "domain routing. Intervals: 95% bootstrap over eval documents "
        "(whole documents resampled within each domain; models paired). Verdicts: emerged "
        "(interval above 0), inherited (contains 0), reduced (below 0). A top-2 NMI counts "
        "each token twice; the first-choice NMI compares like for like across top-k. The "
        "random-assignment baseline (labels shuffled across whole documents) only measures the "
        "estimator's bias. NMI given token id: NMI(domain; expert | token id) minus a null "
        "that permutes domain labels within each token id across documents, with a paired "
        "95% interval; the raw NMI is biased upwards (a router that follows the token id plus "
        "context noise scores well above 0), so only an excess above 0 says routing carries "
        "the domain beyond the token id.</p>"
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


def caption(stem: str) -> str:
    """What the figure with this file stem shows."""
    for prefix, text in CAPTIONS.items():
        if stem == prefix or stem.startswith(prefix + "-"):
            model = stem[len(prefix) + 1 :]
            return (f"{model}: " if model else "") + text
    return stem.replace("-", " ")


def _embed(figure: Path) -> str:
    title = html.escape(figure.stem.replace("-", " "))
    text = html.escape(caption(figure.stem))
    if figure.suffix == ".svg":
        svg = figure.read_text(encoding="utf-8")
        body = svg[svg.find("<svg") :]
    else:
        data = base64.b64encode(figure.read_bytes()).decode("ascii")
        body = f"<img alt='{title}' src='data:image/png;base64,{data}'>"
    return f"<figure>{body}<figcaption><b>{title}.</b> {text}</figcaption></figure>"


def _seed_counts(finding: Finding) -> str:
    """How many seeds the finding rests on (the seeds themselves are in the provenance), with
    the verdict count per seed when there are several."""
    if len(finding.seeds) < 2:
        return str(len(finding.seeds)) if finding.seeds else "-"
    counts = ", ".join(f"{v} {n}/{len(finding.seeds)}" for v, n in finding.seed_verdicts.items())
    return html.escape(counts)


def _findings_section(findings: list[Finding]) -> str:
    rows = [
        [
            f"<a href='#finding-{html.escape(f.key)}'>{html.escape(f.title)}</a>",
            f"<span class='{'yes' if f.reproduced else 'no'}'>{html.escape(f.verdict)}</span>",
            (html.escape(f.measure) + ": " if f.measure else "")
            + (
                f"<b>{f.value:+.3f}</b> {format_interval(f.ci)}"
                if f.value is not None and f.ci is not None
                else (f"<b>{f.value:g}</b>" if f.value is not None else "-")
            ),
            html.escape(f.control or "-"),
            _seed_counts(f),
        ]
        for f in findings
    ]
    table = _table(
        ["finding", "verdict", "deciding number [95% CI]", "compared against", "seeds"], rows
    ).replace("<table>", "<table class='findings'>", 1)
    return f"<h2>Findings</h2>{table}"


def _details_section(findings: list[Finding]) -> str:
    parts = ["<h2>Findings in detail</h2>"]
    for f in findings:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in f.details)
        parts.append(
            f"<h3 id='finding-{html.escape(f.key)}'>{html.escape(f.title)}: "
            f"{html.escape(f.verdict)}</h3><p>{html.escape(f.text)}</p>"
            + (f"<ul class='details'>{items}</ul>" if items else "")
        )
    return "".join(parts)


def _sample_section(results: list[EvaluationResult]) -> str:
    """The eval blocks every model was scored on: per domain, blocks and their documents."""
    first = next((r for r in results if r.sample), None)
    notes = list(dict.fromkeys(note for r in results for note in r.notes))
    parts = ["<h2>Eval sample</h2>"]
    if first is None:
        parts.append(
            "<p class='note'>These results do not record their documents per domain (written "
            "by an older moectl): intervals resample blocks.</p>"
        )
    else:
        rows = [[html.escape(d), str(s.blocks), str(s.documents)] for d, s in first.sample.items()]
        seed = f", drawn with seed {first.sample_seed}" if first.sample_seed is not None else ""
        parts.append(
            _table(["domain", "blocks", "documents"], rows)
            + f"<p class='note'>{first.blocks} blocks of the {html.escape(first.split)} split"
            f"{seed}, the same for every model; intervals resample whole documents within each "
            "domain.</p>"
        )
    parts += [
        f"<p class='{'warning' if n.startswith(SAMPLE_NOTE) else 'note'}'>{html.escape(n)}</p>"
        for n in notes
    ]
    return "".join(parts)


def _provenance_section(provenance: Provenance, runs: list[RunLogs]) -> str:
    configs = dict(provenance.configs)
    for run in runs:
        configs.setdefault(run.name, dump_yaml(run.config))
    seeds = provenance.seeds or sorted({run.config.train.seed for run in runs})
    items = [
        f"moectl {html.escape(provenance.version)}",
        "commit " + html.escape(provenance.commit or "unknown (not a git checkout)"),
        "seeds " + html.escape(", ".join(map(str, seeds)) or "-"),
    ]
    commands = "\n".join(provenance.commands)
    blocks = "".join(
        f"<details><summary>{html.escape(name)}: config.yaml</summary>"
        f"<pre>{html.escape(text)}</pre></details>"
        for name, text in configs.items()
    )
    return (
        "<h2>Provenance</h2><ul>"
        + "".join(f"<li>{item}</li>" for item in items)
        + "</ul>"
        + (f"<p>Commands:</p><pre>{html.escape(commands)}</pre>" if commands else "")
        + blocks
    )


def render_report(
    runs: list[RunLogs],
    results: list[EvaluationResult],
    figures: list[Path],
    title: str = "moectl study report",
    findings: list[Finding] | None = None,
    provenance: Provenance | None = None,
) -> str:
    """The report's HTML text: one file with everything in it (figures, token routing)."""
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{VIEWPORT}"
        f"<title>{html.escape(title)}</title><style>{STYLE}{TOKEN_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class='note'>Written {created} by moectl "
        f"{html.escape(__version__)}.</p>",
    ]
    if findings:
        parts.append(_findings_section(findings))
        parts.append(_details_section(findings))
    if results:
        parts.append(_sample_section(results))
    if runs:
        parts.append(_runs_section(runs))
    if results:
        parts.append(_loss_section(results))
        parts.append(_specialization_section(results))
    parts.append(_collapse_section(runs))
    if any(r.samples for r in results):
        parts.append(token_section(results, heading="h2"))
    if figures:
        parts.append("<h2>Figures</h2>")
        parts.extend(_embed(f) for f in figures)
    parts.append(_provenance_section(provenance or Provenance.of([]), runs))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    path: Path,
    runs: list[RunLogs],
    results: list[EvaluationResult],
    figures: list[Path],
    findings: list[Finding] | None = None,
    provenance: Provenance | None = None,
) -> Path:
    """Write report.html to `path` (atomically) and return it; `findings` lead the page."""
    text = render_report(runs, results, figures, findings=findings, provenance=provenance)
    return write_text(path, text)
