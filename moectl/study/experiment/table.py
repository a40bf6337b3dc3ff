"""The experiment's report: one row per MoE arm and layer (one per dense arm), every column
over the seeds, judged by the quickstart's own findings code (study/findings): the layer's
source ("made by the router" needs the router to beat the distribution of random gates on the
trained hidden states, Holm-adjusted over every MoE arm and layer of the experiment per seed, in
every seed, AND to beat its own init gate on the same body, with the model's routing risen over
step 0), the router's percentile among the gates (plain and load-balanced), the paired
differences trained - init gate and trained - step 0 with seed-level intervals (t on S-1 df plus
the document variance the seeds share), the 2x2 co-adaptation cell, the probe ceiling, the
token-id excess over its null, the first-choice NMI, and the eval loss against the arm's matched
dense arm (paired document bootstrap, combined over seeds the same way). The file's
`comparisons` add the same loss difference between any two arms.

`experiment_table` builds the rows as data (report.json, `--json`); `markdown` renders them as
docs/study.md's table (`--markdown`).
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field

from moectl.analysis.bootstrap import format_interval
from moectl.analysis.multiplicity import FAMILY_ALPHA
from moectl.analysis.results import Emergence, EvaluationResult, SpecializationScore
from moectl.study.experiment.configs import ExperimentPlan
from moectl.study.findings.layer_sources import (
    layer_source_over_seeds,
    nmi_replicates,
    router_tests,
    seed_difference,
)
from moectl.study.findings.loss import loss_comparison

REPORT_FORMAT = 1
Interval = tuple[float, float]


class PairedCell(BaseModel):
    """A paired NMI difference over seeds with its seed-level interval and per-seed verdicts."""

    mean: float
    ci: Interval
    verdicts: list[str | None]


class GateCell(BaseModel):
    """One seed's router percentile among the random gates, plain and load-balanced."""

    plain: float
    balanced: float | None


class TokenIdCell(BaseModel):
    """One seed's token-id NMI, its excess over the within-token-id null, and whether that
    excess's interval lies above 0."""

    nmi: float
    excess: float
    above_zero: bool


class LossCell(BaseModel):
    """Eval loss minus the matched dense arm's, over seeds."""

    control: str
    mean: float
    ci: Interval | None
    verdict: str


class ComparisonRow(BaseModel):
    """One arm's eval loss minus another's, paired by seed and eval document, over seeds."""

    arm: str
    against: str
    mean: float
    ci: Interval | None
    verdict: str
    per_seed: list[float]


class TableRow(BaseModel):
    """One MoE arm and layer, or one dense arm (layer None); lists are per seed."""

    arm: str
    layer: int | None
    seeds: int
    controls: dict[str, str] = Field(description="dense / frozen_router -> the arm it names")
    is_dense_control: bool = Field(description="another arm's matched dense arm")
    source: str | None = None
    seed_sources: list[str] = Field(default_factory=list)
    trained_nmi: list[float] = Field(default_factory=list)
    gate_percentiles: list[GateCell] | None = None
    gate_p_holm: list[float | None] = Field(default_factory=list)
    router_made: PairedCell | None = None
    emergent: PairedCell | None = None
    interaction: list[float] | None = None
    probe_accuracy: list[float] = Field(default_factory=list)
    probe_nmi: list[float] = Field(default_factory=list)
    token_id: list[TokenIdCell] | None = None
    first_choice_nmi: list[float] = Field(default_factory=list)
    loss: LossCell | None = None
    busiest_over_mean: list[float] = Field(default_factory=list)
    wall_seconds: list[float] = Field(default_factory=list)


class ExperimentTable(BaseModel):
    """report.json: the experiment's table as data."""

    format_version: int = REPORT_FORMAT
    seeds: list[int]
    router_tests: int = Field(description="router claims per seed (MoE arms x layers)")
    family_alpha: float = FAMILY_ALPHA
    random_gates: int = Field(description="random gates per MoE layer")
    rows: list[TableRow]
    comparisons: list[ComparisonRow] = Field(
        default_factory=list, description="the file's comparisons whose runs all have results"
    )


def experiment_table(
    plan: ExperimentPlan, results: dict[str, EvaluationResult], walls: dict[str, float]
) -> ExperimentTable:
    """The table over every arm whose runs and matched dense runs all have results (run name
    -> evaluation; `walls`: run name -> training seconds). The router claims of every MoE arm
    and layer form one family per seed (Holm), as in the quickstart's specialization finding."""
    names = {arm.name: [run.name for run in plan.arm_runs(arm.name)] for arm in plan.spec.arms}
    arms = [
        arm
        for arm in plan.spec.arms
        if all(n in results for a in (arm.name, arm.dense) if a for n in names[a])
    ]
    by_arm = {arm.name: [results[n] for n in names[arm.name]] for arm in arms}
    moe = {name: rs for name, rs in by_arm.items() if rs[0].routing}
    adjusted = [router_tests(moe, i) for i in range(len(plan.seeds))]
    controls = {arm.dense for arm in plan.spec.arms}
    rows = []
    for arm in arms:
        runs = by_arm[arm.name]
        base = TableRow(
            arm=arm.name,
            layer=None,
            seeds=len(runs),
            controls={
                k: v for k, v in (("dense", arm.dense), ("frozen_router", arm.frozen_router)) if v
            },
            is_dense_control=arm.name in controls,
            loss=_loss(runs, by_arm[arm.dense], arm.dense) if arm.dense else None,
            wall_seconds=[walls[n] for n in names[arm.name]],
        )
        if arm.name not in moe:
            rows.append(base)
            continue
        for i, layer in enumerate(runs[0].routing):
            ps = [a.get((arm.name, i)) for a in adjusted]
            rows.append(_layer_row(base, runs, i, layer.layer, ps))
    first = next(iter(moe.values()), [None])[0]
    null = first.routing[0].specialization.gate_null if first is not None else None
    return ExperimentTable(
        seeds=plan.seeds,
        router_tests=max((len(a) for a in adjusted), default=0),
        random_gates=null.n if null else 0,
        rows=rows,
        comparisons=_comparisons(plan, results, names),
    )


def _comparisons(
    plan: ExperimentPlan, results: dict[str, EvaluationResult], names: dict[str, list[str]]
) -> list[ComparisonRow]:
    """The file's comparisons whose two arms have every run evaluated."""
    rows = []
    for comparison in plan.spec.comparisons:
        a, b = (names[comparison.arm], names[comparison.against])
        if not all(n in results for n in (*a, *b)):
            continue
        mean, ci, verdict, _, diffs = loss_comparison(
            [results[n] for n in a], [results[n] for n in b]
        )
        rows.append(
            ComparisonRow(
                arm=comparison.arm,
                against=comparison.against,
                mean=mean,
                ci=ci,
                verdict=verdict,
                per_seed=[d.difference for d in diffs],
            )
        )
    return rows


def _layer_row(
    base: TableRow, runs: list[EvaluationResult], i: int, layer: int, ps: list[float | None]
) -> TableRow:
    layers = [r.routing[i] for r in runs]
    specs = [x.specialization for x in layers]
    reps = nmi_replicates(runs, i)
    probes = [s.probe for s in specs if s.probe]
    token_ids = [s.token_id for s in specs if s.token_id]
    row = base.model_copy(deep=True)
    row.layer = layer
    row.source = layer_source_over_seeds(layers, ps, reps)
    row.seed_sources = [layer_source_over_seeds([x], [p]) for x, p in zip(layers, ps, strict=True)]
    row.trained_nmi = [s.nmi for s in specs]
    row.gate_percentiles = _gates(specs)
    row.gate_p_holm = ps
    row.router_made = _paired([s.router_made for s in specs], reps["router_made"])
    row.emergent = _paired([s.emergent for s in specs], reps["emergent"])
    interactions = [s.corrected.interaction for s in specs if s.corrected is not None]
    row.interaction = interactions if interactions and None not in interactions else None  # type: ignore[assignment]
    row.probe_accuracy = [p.accuracy for p in probes]
    row.probe_nmi = [p.nmi for p in probes]
    row.token_id = None
    if token_ids and all(t.excess is not None for t in token_ids):
        row.token_id = [
            TokenIdCell(nmi=t.nmi, excess=t.excess, above_zero=bool(t.beyond_vocabulary))  # type: ignore[arg-type]
            for t in token_ids
        ]
    row.first_choice_nmi = [s.first_choice_nmi for s in specs if s.first_choice_nmi is not None]
    row.busiest_over_mean = [x.max_over_mean for x in layers]
    return row


def _gates(specs: list[SpecializationScore]) -> list[GateCell] | None:
    nulls = [s.gate_null for s in specs]
    if any(null is None for null in nulls):
        return None
    return [
        GateCell(
            plain=n.plain.percentile,  # type: ignore[union-attr]
            balanced=n.balanced.percentile if n.balanced is not None else None,  # type: ignore[union-attr]
        )
        for n in nulls
    ]


def _paired(emergences: list[Emergence], replicates: object) -> PairedCell | None:
    found = seed_difference(emergences, replicates)  # type: ignore[arg-type]
    if found is None:
        return None
    mean, ci = found
    return PairedCell(mean=mean, ci=ci, verdicts=[e.verdict for e in emergences])


def _loss(runs: list[EvaluationResult], dense: list[EvaluationResult], control: str) -> LossCell:
    mean, ci, verdict, *_ = loss_comparison(runs, dense)
    return LossCell(control=control, mean=mean, ci=ci, verdict=verdict)


# --- markdown ----------------------------------------------------------------------------------

HEADER = (
    "| arm | layer | seeds | source over seeds | source per seed | trained NMI | router "
    "percentile among gates, plain/balanced, per seed | gate-null p, Holm-adjusted, per seed | "
    "trained - init gate [95% CI] (per seed) | trained - step 0 [95% CI] (per seed) | "
    "co-adaptation (2x2 interaction) per seed | probe acc / NMI | token-id NMI excess over null "
    "(raw) | first-choice NMI | loss vs matched dense [95% CI] | busiest / mean expert | "
    "wall (s) |"
)


def markdown(table: ExperimentTable) -> str:
    """The table as docs/study.md prints it, with a note on the router-claim family."""
    lines = [HEADER, "|" + "---|" * HEADER.count(" |")]
    for row in table.rows:
        head = f"| {row.arm} | {'-' if row.layer is None else row.layer} | {row.seeds} |"
        loss = loss_text(row)
        wall = f"{_average(row.wall_seconds):.0f}"
        if row.layer is None:
            lines.append(head + " - |" * 11 + f" {loss} | - | {wall} |")
            continue
        cells = [
            row.source or "-",
            _counts(row.seed_sources),
            _mean(row.trained_nmi),
            *_gate_texts(row),
            _paired_text(row.router_made),
            _paired_text(row.emergent),
            ", ".join(f"{c:+.3f}" for c in row.interaction) if row.interaction else "-",
            f"{_mean(row.probe_accuracy)} / {_mean(row.probe_nmi)}" if row.probe_nmi else "-",
            _token_id_text(row.token_id),
            _mean(row.first_choice_nmi),
            loss,
            _mean(row.busiest_over_mean),
            wall,
        ]
        lines.append(head + " " + " | ".join(cells) + " |")
    note = (
        f"Router claims: {table.router_tests} comparisons per seed (MoE arms x layers), Holm at "
        f"family level {table.family_alpha:.0%}; {table.random_gates} random gates per layer."
    )
    text = "\n".join(lines) + "\n\n" + note
    if table.comparisons:
        text += "\n\n" + _comparison_markdown(table.comparisons)
    return text


def _comparison_markdown(rows: list[ComparisonRow]) -> str:
    """The comparisons as a second table: each pair's loss difference over seeds."""
    lines = [
        "| comparison | eval loss difference [95% CI] | verdict | per seed |",
        "|---|---|---|---|",
    ]
    for row in rows:
        per_seed = ", ".join(f"{d:+.3f}" for d in row.per_seed)
        lines.append(
            f"| {row.arm} - {row.against} | {difference_text(row.mean, row.ci)} | {row.verdict} | "
            f"{per_seed} |"
        )
    return "\n".join(lines)


def _average(values: list[float]) -> float:
    return sum(values) / len(values)


def _mean(values: list[float]) -> str:
    return f"{_average(values):.3f}" if values else "-"


def _counts(verdicts: list[str | None]) -> str:
    counts = Counter(v for v in verdicts if v is not None)
    return ", ".join(f"{v} {n}/{len(verdicts)}" for v, n in counts.most_common()) or "-"


def loss_text(row: TableRow) -> str:
    if row.is_dense_control:
        return "(matched dense)"
    if row.loss is None:
        return "-"
    if row.loss.ci is None:
        return f"{row.loss.mean:+.3f} ({row.loss.verdict})"
    return difference_text(row.loss.mean, row.loss.ci)


def difference_text(mean: float, ci: Interval | None) -> str:
    """A difference with its interval, where it has one."""
    return f"{mean:+.3f}" + (f" {format_interval(ci)}" if ci is not None else "")


def _gate_texts(row: TableRow) -> list[str]:
    """Per seed: the router's percentile among the gates (plain / balanced) and the deciding
    p-value Holm-adjusted over the experiment's family."""
    if row.gate_percentiles is None:
        return ["-", "-"]
    percentiles = ", ".join(
        f"{g.plain:.0f}/{g.balanced:.0f}" if g.balanced is not None else f"{g.plain:.0f}/-"
        for g in row.gate_percentiles
    )
    return [percentiles, ", ".join(f"{p:.3f}" for p in row.gate_p_holm if p is not None)]


def _paired_text(cell: PairedCell | None) -> str:
    if cell is None:
        return "-"
    return f"{cell.mean:+.3f} {format_interval(cell.ci)} ({_counts(cell.verdicts)})"


def _token_id_text(cells: list[TokenIdCell] | None) -> str:
    """Mean token-id excess over its within-token-id null (raw NMI in brackets), with how many
    seeds' intervals lie above 0."""
    if not cells:
        return "-"
    above = sum(c.above_zero for c in cells)
    excess = _average([c.excess for c in cells])
    raw = _mean([c.nmi for c in cells])
    return f"{excess:+.3f} (raw {raw}), above 0 in {above}/{len(cells)}"
