"""`moectl evaluate`: per-domain loss and routing analysis, several models side by side."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from moectl.analysis.bootstrap import format_interval
from moectl.analysis.gate_null import N_GATES, family_verdicts
from moectl.cli.common import (
    DeviceOption,
    RichProgress,
    console,
    domain_style,
    render_warnings,
)
from moectl.errors import MoectlError

if TYPE_CHECKING:
    from moectl.analysis.results import (
        Emergence,
        EvaluationResult,
        GateNull,
        SpecializationScore,
        TokenIdScore,
    )


def evaluate(
    models: Annotated[
        list[Path],
        typer.Argument(help="Run directories (best/ model, else latest checkpoint) or model dirs."),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", "-d", help="Prepared corpus (default: the one in the run's run.json)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Corpus split to evaluate: eval or train.")] = "eval",
    max_blocks: Annotated[
        int | None,
        typer.Option("--max-blocks", min=1, help="Evaluate at most this many blocks."),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", min=1, help="Blocks per forward pass (memory, not results)."),
    ] = 8,
    device: DeviceOption = "auto",
    permutations: Annotated[
        int,
        typer.Option(min=1, help="Label permutations for the random-assignment baseline."),
    ] = 20,
    bootstrap: Annotated[
        int,
        typer.Option(
            min=100, help="Bootstrap resamples of eval documents for the 95% confidence intervals."
        ),
    ] = 1000,
    samples: Annotated[
        int, typer.Option(min=0, help="Sample texts per domain kept for the token page.")
    ] = 1,
    random_gates: Annotated[
        int,
        typer.Option(
            "--random-gates",
            min=64,
            help="Gates drawn as the init draws them, per MoE layer: the null the router is "
            "tested against (p can reach 1 / (n + 1)).",
        ),
    ] = N_GATES,
    functional: Annotated[
        bool,
        typer.Option(
            "--functional/--no-functional",
            help="Run the functional test: each domain's loss keeping only its most-used "
            "experts (chosen on half the eval documents) vs random ones, scored on the other half "
            "(17 more passes over half the eval blocks per layer and m, as many for the init "
            "model; off by default).",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write all results to this JSON file instead of <run>/eval/."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json/--no-json", help="Print the results as JSON.")
    ] = False,
) -> None:
    """Evaluate models on a prepared corpus: overall and per-domain loss and perplexity, and for
    MoE models per-layer routing: domain x expert fractions, utilization and imbalance, router
    entropy, specialization (normalized MI of domain and expert) and token-type routing for
    code and math. Specialization is judged against the init-router control: the same model at
    step 0 (recovered from the run's init/ record) routes the same blocks, and the trained-minus-
    init difference gets a 95% paired bootstrap interval over eval documents (whole documents
    resampled within each domain; verdict: emerged, inherited or reduced). A model artifact
    without its run has no control; its fields stay empty. The random-assignment baseline
    (domain labels permuted across whole documents) only measures estimator bias.

    The router table holds the body fixed and changes only the gate: each MoE layer's input in
    the trained model is routed through its init gate (router-made = trained minus that frozen
    gate, paired) and through 32+ random gates drawn as the init draws them (where the trained
    router ranks among them), beside a linear domain probe on that input (the ceiling) and the
    domain NMI given the token id as its excess over a null that permutes domain labels within
    each token id across documents (above 0: routing carries the domain beyond the token id).
    --functional adds the test of whether a domain's own experts, chosen on half the eval
    documents, matter for its loss on the other half (Holm-corrected over its cells).

    Results go to <run>/eval/<corpus>.json (or --out) and are printed as tables.

    Examples:

      moectl evaluate runs/moe --max-blocks 64

      moectl evaluate runs/dense runs/moe runs/no-lb runs/top2 --data data/mix

      moectl evaluate runs/moe/checkpoints/step-200 -d data/mix --split train --out moe.json

      moectl evaluate runs/moe --functional
    """
    from moectl.analysis.eval_blocks import SAMPLE_NOTE
    from moectl.analysis.eval_files import corpus_for, save_results
    from moectl.analysis.eval_options import EvaluationOptions
    from moectl.analysis.evaluate import evaluate_models
    from moectl.data.store import load_corpus
    from moectl.fs import check_writable
    from moectl.rundir.locate import evaluation_folder, expand_runs, resolve_model

    models = expand_runs(models)
    destinations = [out] if out else [evaluation_folder(*resolve_model(m)) for m in models]
    for destination in destinations:  # before the evaluation, not after it ran
        check_writable(destination, "--out")
    data = data or corpus_for(models)
    if data is None:
        raise MoectlError(
            "no corpus to evaluate on", hint="pass --data <prepared corpus directory>"
        )
    corpus = load_corpus(data)
    options = EvaluationOptions(
        split=split,
        max_blocks=max_blocks,
        batch_size=batch_size,
        device=device,
        n_permutations=permutations,
        n_bootstrap=bootstrap,
        samples_per_domain=samples,
        random_gates=random_gates,
        functional=functional,
    )
    with RichProgress(transient=True) as progress:
        results = evaluate_models(models, corpus, options=options, callback=progress)
    paths = save_results(results, out)
    if as_json:
        from moectl.analysis.results import EvaluationSet

        typer.echo(EvaluationSet(results=results).model_dump_json(indent=2))
        return
    # The sample is shared by every model: its warnings once, the rest per model.
    sample_notes = dict.fromkeys(n for r in results for n in r.notes if n.startswith(SAMPLE_NOTE))
    model_notes = [
        f"{r.name}: {note}" for r in results for note in r.notes if note not in sample_notes
    ]
    render_warnings([*sample_notes, *model_notes])
    console.print(comparison_table(results, corpus.domains))
    for result in results:
        if result.routing:
            console.print(specialization_table(result))
            for table in router_tables(result):
                console.print(table)
            console.print(routing_table(result))
        if result.functional:
            console.print(functional_table(result))
    for path in paths:
        console.print(f"[dim]saved {escape(str(path))}[/]", highlight=False)


def _mark_best(values: list[float | None], lower: bool) -> int | None:
    """Row of the best value, or None when fewer than two values or a tie at 3 decimals."""
    present = sorted((v, i) for i, v in enumerate(values) if v is not None)
    if not lower:
        present.reverse()
    if len(present) < 2 or round(present[0][0], 3) == round(present[1][0], 3):
        return None
    return present[0][1]


def _table(title: str, headers: list[tuple[str, str | None]], rows: list[list[str]]) -> Table:
    """A compact table whose columns are never narrower than their widest cell (so numbers are
    not cut to an ellipsis on an 80-column terminal); headers are (text, header style)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for c, (header, style) in enumerate(headers):
        width = max(
            [len(line) for row in rows for line in Text.from_markup(row[c]).plain.splitlines()]
            + [len(line) for line in header.splitlines()]
        )
        table.add_column(
            header,
            justify="left" if c == 0 else "right",
            header_style=style or "bold",
            min_width=width,
            no_wrap=True,
        )
    for row in rows:
        table.add_row(*row)
    return table


def comparison_table(results: list[EvaluationResult], domains: list[str]) -> Table:
    """One row per model; the best value of each numeric column is bold green with a star."""
    specs = [r.mean_specialization() for r in results]
    columns: list[tuple[str, bool | None, list[float | None]]] = [
        ("loss", True, [r.loss for r in results])
    ]
    for domain in domains:
        columns.append((domain, True, [r.domain_loss.get(domain) for r in results]))
    columns.append(("NMI", False, [s.nmi if s else None for s in specs]))
    columns.append(("init NMI", None, [s.init_nmi if s else None for s in specs]))
    best = {
        c: _mark_best(values, lower)
        for c, (_, lower, values) in enumerate(columns)
        if lower is not None
    }
    rows = []
    for row, result in enumerate(results):
        kind = "dense" if result.kind == "dense" else _routing_label(result)
        if result.step is not None:
            kind += f" @{result.step}"
        cells = [escape(result.name), kind]
        for c, (_, _, values) in enumerate(columns):
            value = values[row]
            text = "-" if value is None else f"{value:.1f}" if value >= 100 else f"{value:.3f}"
            cells.append(f"[bold green]{text}*[/]" if best.get(c) == row else text)
        cells[2] += f"\n[dim]ppl {result.ppl:.1f}[/]"
        rows.append(cells)
    headers = [("model", None), ("kind", None)]
    headers += [(h, domain_style(h, domains) if h in domains else None) for h, _, _ in columns]
    table = _table(
        escape(f"Evaluation on {results[0].corpus_name} ({results[0].split} split)"), headers, rows
    )
    table.caption = (
        "Loss in nats/token (domain columns: that domain's loss); * best per column. "
        "NMI = MI(domain; expert) / H(domain), mean over MoE layers; init NMI = the same model's "
        "router at step 0 on the same blocks (the control: see the per-layer tables)."
    )
    return table


def specialization_table(result: EvaluationResult) -> Table:
    """Per-layer domain specialization of one MoE model against its init router."""
    rows = []
    for layer in result.routing:
        spec = layer.specialization
        rows.append(
            [
                str(layer.layer),
                f"{spec.nmi:.3f}\n{format_interval(spec.nmi_ci)}",
                f"{spec.init_nmi:.3f}\n{format_interval(spec.init_nmi_ci)}"
                if spec.init_nmi is not None
                else "-",
                *_difference_cells(spec.emergent),
                f"{spec.baseline_nmi:.4f}",
            ]
        )
    headers = ["layer", "NMI(domain;\nexpert)", "init router\nNMI", "trained\n- init"]
    headers += ["verdict", "random\nassignment"]
    table = _table(
        escape(f"{result.name}: domain specialization ({result.tokens} tokens)"),
        [(h, None) for h in headers],
        rows,
    )
    caption = (
        "[lo, hi]: 95% bootstrap intervals over eval documents (paired for trained - init). "
        "Verdict: emerged (interval above 0), inherited (contains 0), reduced (below 0). "
        "Random assignment: NMI with domain labels permuted across whole documents "
        "(estimator bias, not a control)."
    )
    if result.init_control is not None:
        caption += f" No init-router control: {result.init_control}."
    table.caption = escape(caption)
    return table


def routing_table(result: EvaluationResult) -> Table:
    """Per-layer balance, busiest experts and token-type specialization of one MoE model."""
    rows = []
    for layer in result.routing:
        tops = "\n".join(
            f"{d} e{t.expert} {t.ratio_to_uniform:.1f}x {format_interval(t.ratio_ci, 1, False)}"
            for d, t in layer.top_expert.items()
        )
        types = "\n".join(
            f"{tt.domain} {tt.specialization.nmi:.3f} {_versus_init(tt.specialization)}"
            for tt in layer.token_types
        )
        rows.append(
            [
                str(layer.layer),
                f"{layer.max_over_mean:.2f}",
                f"{layer.entropy:.3f}",
                escape(tops),
                escape(types) or "-",
            ]
        )
    headers = ["layer", "max/\nmean", "entropy", "top expert\n/ uniform", "token-type NMI"]
    table = _table(
        escape(f"{result.name}: routing per MoE layer"), [(h, None) for h in headers], rows
    )
    table.caption = escape(
        "max/mean: busiest expert's share over the mean share; entropy in nats; top expert: "
        "each domain's busiest expert, its share over uniform and 95% interval; token-type NMI "
        "against the init router."
    )
    return table


def router_tables(result: EvaluationResult) -> list[Table]:
    """Per MoE layer, two tables that fit 80 columns: the router against the distribution of
    gates applied to the same trained hidden states (plain and balanced), which decides; then
    the descriptive controls: its frozen init gate (one draw), the 2x2 of body x gate, the
    probe's ceiling and the token-id excess."""
    specs = [layer.specialization for layer in result.routing]
    verdicts = family_verdicts(
        [s.gate_null.p_value if s.gate_null else None for s in specs],
        [s.emergent.verdict for s in specs],
        [s.router_made.verdict for s in specs],
    )
    decides, describes = [], []
    for layer, spec, verdict in zip(result.routing, specs, verdicts, strict=True):
        null = spec.gate_null
        decides.append(
            [
                str(layer.layer),
                f"{spec.nmi:.3f}\n{format_interval(spec.nmi_ci, signed=False)}",
                _gate_p(null),
                f"{null.plain.percentile:.0f}" if null else "-",
                f"{null.plain.excess:+.3f}\n± {null.plain.excess_se:.3f}" if null else "-",
                f"[bold]{verdict}[/]" if verdict else "-",
            ]
        )
        describes.append(
            [
                str(layer.layer),
                _number(spec.frozen_gate_nmi),
                _difference_cells(spec.router_made)[0],
                _interaction(spec),
                _number(spec.probe.accuracy if spec.probe else None),
                _token_id_cell(spec.token_id),
            ]
        )
    n_gates = next((s.gate_null.n for s in specs if s.gate_null), 0)
    headers = ["layer", "NMI", "gate null p\nplain/bal", "%ile", "excess", "verdict"]
    router = _table(
        escape(f"{result.name}: the router against random gates"),
        [(h, None) for h in headers],
        decides,
    )
    router.caption = escape(
        f"All on the trained model's layer input, NMIs bias-corrected. Gate null: {n_gates} "
        "gates drawn as the init draws them, routed by the model's rule; p = (1 + gates at or "
        "above the router) / (n + 1), plain and with each gate's expert load balanced to the "
        "router's; the verdict takes the larger, Holm over this model's layers, and says "
        "'made' only where the model's routing also rose over step 0. %ile and excess (router "
        "minus the gates' mean, ± document SE): plain null."
    )
    headers = ["layer", "frozen\ngate", "trained\n- frozen", "2x2\ninteract.", "probe\nacc"]
    controls = _table(
        escape(f"{result.name}: descriptive router controls"),
        [(h, None) for h in [*headers, "token id:\nexcess"]],
        describes,
    )
    controls.caption = escape(
        "Frozen gate: the init gate on the trained body, one draw of the null (describes, "
        "never decides). 2x2 interaction: trained - frozen gate - trained gate on the step-0 "
        "body + step-0 model (co-adaptation). Probe acc: held-out accuracy of a linear domain "
        "probe (the ceiling). Token id: NMI(domain; expert | token id) minus its null (labels "
        "permuted within each token id across documents), paired 95% interval; above 0 = "
        "domain routing beyond the token id."
    )
    return [router, controls]


def _gate_p(null: GateNull | None) -> str:
    if null is None:
        return "-"
    balanced = f"{null.balanced.p_value:.3f}" if null.balanced is not None else "-"
    return f"{null.plain.p_value:.3f}\n{balanced}"


def _interaction(spec: SpecializationScore) -> str:
    cells = spec.corrected
    if cells is None or cells.interaction is None:
        return "-"
    return f"{cells.interaction:+.3f}\n{format_interval(cells.interaction_ci)}"


def functional_table(result: EvaluationResult) -> Table:
    """Per (layer, m, domain): the loss cost of keeping the domain's own m experts instead of m
    random ones, for the trained model and its init model."""
    rows = []
    for score in result.functional:
        cells = [str(score.layer), str(score.m), escape(score.domain)]
        for arm in (score.trained, score.init):
            if arm is None:
                cells += ["-", "-"]
                continue
            cells.append(f"{arm.difference:+.3f}\n{format_interval(arm.ci)}")
            cells.append(arm.verdict or "-")
        rows.append(cells)
    headers = ["layer", "m", "domain", "own -\nrandom", "verdict", "init own\n- random"]
    headers.append("init\nverdict")
    table = _table(escape(f"{result.name}: functional test"), [(h, None) for h in headers], rows)
    n_cells = len(result.functional)
    table.caption = escape(
        "Loss (nats/token) of each domain's eval tokens routed only among the m experts it uses "
        "most on the other half of its documents, minus that with m random experts (mean of "
        "the draws); 95% interval over the domain's scored documents. Specialized: Holm "
        f"rejects 'no difference' at 5% over the {n_cells} cells, the loss is lower, and by "
        "more than numerical noise."
    )
    return table


def _routing_label(result: EvaluationResult) -> str:
    """The model's MoEConfig.routing_label; results written before it was recorded give top-k
    and the expert count alone."""
    return escape(result.routing_label or f"top-{result.top_k}x{result.n_experts}")


def _difference_cells(emergence: Emergence) -> list[str]:
    """[difference and its interval, verdict] of a paired comparison, or its absence."""
    if emergence.difference is None:
        return ["-", "no control"]
    return [
        f"{emergence.difference:+.3f}\n{format_interval(emergence.ci)}",
        f"[bold]{emergence.verdict}[/]",
    ]


def _token_id_cell(score: TokenIdScore | None) -> str:
    """The token-id excess over its null with its interval; a raw NMI from an older result is
    marked as having no null."""
    if score is None:
        return "-"
    if score.excess is None:
        return f"raw {score.nmi:.3f}\n(no null)"
    return f"{score.excess:+.3f}\n{format_interval(score.excess_ci)}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _versus_init(spec: SpecializationScore) -> str:
    if spec.init_nmi is None:
        return "(no control)"
    return f"(init {spec.init_nmi:.3f}, {spec.emergent.verdict})"
