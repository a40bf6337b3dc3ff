"""report.html: one self-contained page that summarises a study.

The findings lead as a table (verdict, the number that decides it with its interval, and what it
is compared against), their details below it, then the eval sample, the measurements, the token
routing section, the figures with captions and the provenance (version, commit, seeds, commands,
every run's config). Figures are embedded (PNG as base64, SVG inline) and the token routing is
part of the page, so the file can be moved, mailed or archived alone. The HTML is the Jinja2
templates in moectl/viz/templates (autoescaped); this module shapes the numbers into rows. The
layout reads on a phone: below BREAKPOINT_PX the findings and the wide tables become one card
per row (each value under its column's name) and multi-panel figures show their stacked version.
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from moectl.analysis.bootstrap import format_interval
from moectl.analysis.eval_blocks import SAMPLE_NOTE
from moectl.analysis.gate_null import family_verdicts
from moectl.analysis.metrics import NMI_NORMALIZATION
from moectl.analysis.results import EvaluationResult, Finding, GateNull
from moectl.analysis.runs import RunLogs
from moectl.config import dump_yaml
from moectl.fs import write_text
from moectl.model.balance import balance_setting
from moectl.version import __version__
from moectl.viz.interactive import plotly_js
from moectl.viz.palette import domain_color
from moectl.viz.tokens_html import TOKEN_STYLE, VIEWPORT, token_section

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
    "preferred expert. Hover a cell for its share and count.",
    "routing-steps": "Share of each domain's tokens that goes to each expert, per MoE layer, "
    "over training, from the routing log; the slider moves through every router-log step (the "
    "image shows the last). Hover a cell for its share and count.",
    "seed-bands": "Eval loss and NMI(domain; expert) (mean over MoE layers) over training for "
    "each arm trained with several seeds: the line is the mean over the seeds, the band runs "
    "from the lowest to the highest seed, over the steps every seed logged. Hover for the values.",
    "token-types": "For code and math tokens, the share of each token type's assignments that "
    "goes to each expert, per MoE layer: token-level specialization.",
}
"""What each figure shows, by the figure's file stem (routing-heatmap-<model> and
token-types-<model> by their prefix)."""
NARROW_DIR = "narrow"
"""Beside the figures: the same figures with their panels stacked, one per row, for a phone."""
BREAKPOINT_PX = 600
"""Below this width the report stacks: tables become cards, figures their stacked version."""


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


def _best_rows(values: list[list[float | None]], lower_is_better: list[bool]) -> dict[int, int]:
    best = {}
    for c, lower in enumerate(lower_is_better):
        column = [(v[c], r) for r, v in enumerate(values) if v[c] is not None]
        if len(column) > 1:
            best[c] = (min(column) if lower else max(column))[1]
    return best


def _runs_rows(runs: list[RunLogs]) -> list[list[str]]:
    rows = []
    for run in runs:
        moe = run.config.moe
        kind = f"MoE {moe.routing_label}, {balance_setting(moe)}" if run.is_moe else "dense"
        last_train = run.train[-1] if run.train else {}
        last_eval = run.eval[-1] if run.eval else {}
        rows.append(
            [
                run.name,
                kind,
                str(last_train.get("step", "-")),
                f"{last_eval['loss']:.3f}" if last_eval.get("loss") is not None else "-",
                str(len(run.collapse_events()))
                if run.routing is not None
                else ("no routing log" if run.is_moe else "- (dense)"),
            ]
        )
    return rows


def _loss_table(results: list[EvaluationResult]) -> dict[str, Any] | None:
    if not results:
        return None
    domains: list[str] = []
    for result in results:
        domains += [d for d in result.domain_loss if d not in domains]
    header: list[Any] = ["model", "loss", "ppl"] + [
        {"text": d, "color": domain_color(d, domains), "tail": "loss"} for d in domains
    ]
    values = [[None, r.loss, r.ppl] + [r.domain_loss.get(d) for d in domains] for r in results]
    best = _best_rows(values, [True] * len(header))
    rows = []
    for r, (result, numbers) in enumerate(zip(results, values, strict=True)):
        name = result.name + (f" ({result.routing_label})" if result.routing_label else "")
        rows.append(
            [name]
            + [
                {"text": f"{v:.3f}" if v is not None else "-", "best": best.get(c) == r}
                for c, v in enumerate(numbers)
                if c > 0
            ]
        )
    first = results[0]
    return {"header": header, "rows": rows, "corpus": first.corpus_name, "split": first.split,
            "blocks": first.blocks}  # fmt: skip


def _score(value: float | None, ci: tuple[float, float] | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:{'+' if signed else ''}.3f} {format_interval(ci, signed=signed)}"


def _gate_null_cell(null: GateNull | None, verdict: str | None) -> dict[str, Any] | str:
    if null is None:
        return "-"
    balanced = null.balanced
    text = (
        f"p {null.plain.p_value:.3f} plain / "
        + (f"{balanced.p_value:.3f} balanced" if balanced else "- balanced")
        + f"; percentile {null.plain.percentile:.0f} (n={null.n}; "
        f"{null.plain.q05:.3f}-{null.plain.q95:.3f}); excess {null.plain.excess:+.3f} "
        f"± {null.plain.excess_se:.3f}"
    )
    return {"text": text, "bold": verdict}


def _specialization_rows(results: list[EvaluationResult]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for result in results:
        specs = [layer.specialization for layer in result.routing]
        verdicts = family_verdicts(
            [s.gate_null.p_value if s.gate_null else None for s in specs],
            [s.emergent.verdict for s in specs],
            [s.router_made.verdict for s in specs],
        )
        for layer, verdict in zip(result.routing, verdicts, strict=True):
            spec = layer.specialization
            tops = ", ".join(
                f"{d} e{t.expert} {t.ratio_to_uniform:.2f}x "
                f"{format_interval(t.ratio_ci, 2, signed=False)}"
                for d, t in layer.top_expert.items()
            )
            probe = spec.probe
            corrected = spec.corrected
            rows.append(
                [
                    result.name,
                    str(layer.layer),
                    _score(spec.nmi, spec.nmi_ci),
                    _score(spec.frozen_gate_nmi, spec.frozen_gate_nmi_ci)
                    if spec.init_nmi is not None
                    else f"no control ({result.init_control or 'no init record'})",
                    {
                        "text": _score(spec.router_made.difference, spec.router_made.ci, True),
                        "bold": spec.router_made.verdict,
                    },
                    _score(spec.init_nmi, spec.init_nmi_ci),
                    {
                        "text": _score(spec.emergent.difference, spec.emergent.ci, True),
                        "bold": spec.emergent.verdict,
                    },
                    _gate_null_cell(spec.gate_null, verdict),
                    _score(
                        corrected.interaction if corrected else None,
                        corrected.interaction_ci if corrected else None,
                        signed=True,
                    ),
                    f"{probe.accuracy:.2f} / {probe.nmi:.3f} (chance {probe.chance:.2f})"
                    if probe
                    else "-",
                    spec.token_id.describe() if spec.token_id else "-",
                    _score(spec.first_choice_nmi, spec.first_choice_nmi_ci),
                    f"{spec.baseline_nmi:.4f}",
                    tops,
                ]
            )
    return rows


def _collapse_rows(runs: list[RunLogs]) -> list[list[str]]:
    rows = []
    for run in runs:
        if run.routing is None:
            continue
        events = run.collapse_events()
        if not events:
            rows.append([run.name, "none", "-", "-"])
            continue
        first_by_layer: dict[int, int] = {}
        for event in events:
            for layer in event["layers"]:
                first_by_layer.setdefault(int(layer), event["step"])
        stop = next((e["step"] for e in events if e["stop"]), None)
        rows.append(
            [
                run.name,
                ", ".join(f"layer {layer} at step {s}" for layer, s in first_by_layer.items()),
                str(len(events)),
                f"step {stop}" if stop is not None else "no",
            ]
        )
    return rows


def caption(stem: str) -> str:
    """What the figure with this file stem shows."""
    for prefix, text in CAPTIONS.items():
        if stem == prefix or stem.startswith(prefix + "-"):
            model = stem[len(prefix) + 1 :]
            return (f"{model}: " if model else "") + text
    return stem.replace("-", " ")


def _figure(figure: Path, interactive: str | None = None) -> dict[str, Any]:
    """A figure as the template embeds it: inline SVG markup, or PNG bytes as base64 with its
    stacked version (NARROW_DIR beside it) for a phone when there is one."""
    svg = png = narrow = None
    stacked = figure.parent / NARROW_DIR / figure.name
    if figure.suffix == ".svg":
        text = figure.read_text(encoding="utf-8")
        svg = Markup(text[text.find("<svg") :])
    else:
        png = base64.b64encode(figure.read_bytes()).decode("ascii")
        if stacked.is_file():
            narrow = base64.b64encode(stacked.read_bytes()).decode("ascii")
    return {"title": figure.stem.replace("-", " "), "caption": caption(figure.stem),
            "svg": svg, "png": png, "narrow": narrow,
            "interactive": Markup(interactive) if interactive else None}  # fmt: skip


def _seed_counts(finding: Finding) -> str:
    """How many seeds the finding rests on (the seeds themselves are in the provenance), with
    the verdict count per seed when there are several."""
    if len(finding.seeds) < 2:
        return str(len(finding.seeds)) if finding.seeds else "-"
    return ", ".join(f"{v} {n}/{len(finding.seeds)}" for v, n in finding.seed_verdicts.items())


def _findings_rows(findings: list[Finding]) -> list[list[Any]]:
    rows = []
    for f in findings:
        if f.value is not None and f.ci is not None:
            number = {"bold": f"{f.value:+.3f}", "tail": format_interval(f.ci)}
        elif f.value is not None:
            number = {"bold": f"{f.value:g}"}
        else:
            number = {"text": "-"}
        if f.measure:
            number["text"] = f.measure + ":" + ("" if "bold" in number else " -")
        rows.append(
            [
                {"text": f.title, "href": f"#finding-{f.key}"},
                {"text": f.verdict, "cls": "yes" if f.reproduced else "no"},
                number,
                f.control or "-",
                _seed_counts(f),
            ]
        )
    return rows


def _sample(results: list[EvaluationResult]) -> dict[str, Any] | None:
    """The eval blocks every model was scored on: per domain, blocks and their documents."""
    if not results:
        return None
    first = next((r for r in results if r.sample), None)
    notes = list(dict.fromkeys(note for r in results for note in r.notes))
    return {
        "rows": None
        if first is None
        else [[d, str(s.blocks), str(s.documents)] for d, s in first.sample.items()],
        "blocks": first.blocks if first else None,
        "split": first.split if first else None,
        "seed": first.sample_seed if first else None,
        "notes": [(n, n.startswith(SAMPLE_NOTE)) for n in notes],
    }


def _provenance(provenance: Provenance, runs: list[RunLogs]) -> Provenance:
    """The provenance with every run's config and, when none were given, the runs' seeds."""
    configs = dict(provenance.configs)
    for run in runs:
        configs.setdefault(run.name, dump_yaml(run.config))
    seeds = provenance.seeds or sorted({run.config.train.seed for run in runs})
    return replace(provenance, seeds=seeds, configs=configs)


_TEMPLATES = Environment(
    loader=PackageLoader("moectl.viz", "templates"),
    autoescape=True,
)
_TEMPLATES.filters["interval"] = format_interval


def render_report(
    runs: list[RunLogs],
    results: list[EvaluationResult],
    figures: list[Path],
    title: str = "moectl study report",
    findings: list[Finding] | None = None,
    provenance: Provenance | None = None,
    interactive: dict[str, str] | None = None,
) -> str:
    """The report's HTML text: one file with everything in it (figures, token routing, and
    plotly.js once when a figure has an interactive version)."""
    drawn = [_figure(f, (interactive or {}).get(f.stem)) for f in figures]
    return _TEMPLATES.get_template("report.html.j2").render(
        title=title,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        viewport=Markup(VIEWPORT),
        token_style=Markup(TOKEN_STYLE),
        breakpoint=BREAKPOINT_PX,
        findings=_findings_rows(findings or []),
        details=findings or [],
        sample=_sample(results),
        runs=_runs_rows(runs),
        loss=_loss_table(results),
        specialization=_specialization_rows(results),
        nmi_normalization=NMI_NORMALIZATION,
        collapse=_collapse_rows(runs),
        tokens=Markup(token_section(results, heading="h2"))
        if any(r.samples for r in results)
        else None,
        figures=drawn,
        plotly_js=Markup(plotly_js()) if any(f["interactive"] for f in drawn) else None,
        provenance=_provenance(provenance or Provenance.of([]), runs),
    )


def write_report(
    path: Path,
    runs: list[RunLogs],
    results: list[EvaluationResult],
    figures: list[Path],
    findings: list[Finding] | None = None,
    provenance: Provenance | None = None,
    interactive: dict[str, str] | None = None,
) -> Path:
    """Write report.html to `path` (atomically) and return it; `findings` lead the page, and
    `interactive` (HTML fragments by figure stem) are shown on screen beside their static
    figure, which is what prints."""
    text = render_report(
        runs, results, figures, findings=findings, provenance=provenance, interactive=interactive
    )
    return write_text(path, text)
