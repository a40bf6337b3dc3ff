"""`moectl evaluate`: per-domain loss and routing analysis, several models side by side."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from moectl.cli.common import RichProgress, console, domain_style, render_warnings
from moectl.errors import MoectlError

if TYPE_CHECKING:
    from moectl.analysis.results import EvaluationResult


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
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto.")] = "cpu",
    permutations: Annotated[
        int,
        typer.Option(min=1, help="Label permutations for the uniform-router baseline."),
    ] = 20,
    samples: Annotated[
        int, typer.Option(min=0, help="Sample texts per domain kept for the token page.")
    ] = 1,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Write all results to this JSON file instead of <run>/eval/."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Evaluate models on a prepared corpus: overall and per-domain loss and perplexity, and for
    MoE models per-layer routing: domain x expert fractions, utilization and imbalance, router
    entropy, specialization (normalized MI of domain and expert) beside a uniform-router
    baseline, and token-type routing for code and math.

    Results go to <run>/eval/<corpus>.json (or --out) and are printed as tables.

    Examples:

      moectl evaluate runs/moe --max-blocks 64

      moectl evaluate runs/dense runs/moe runs/no-lb runs/top2 --data data/mix

      moectl evaluate runs/moe/checkpoints/step-200 -d data/mix --split train --out moe.json
    """
    from moectl.analysis.evaluate import (
        EvaluationOptions,
        corpus_for,
        evaluate_models,
        save_results,
    )
    from moectl.data.store import load_corpus

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
        device=_device(device),
        n_permutations=permutations,
        samples_per_domain=samples,
    )
    with RichProgress(transient=True) as progress:
        results = evaluate_models(models, corpus, options=options, callback=progress)
    paths = save_results(results, out)
    if as_json:
        from moectl.analysis.results import EvaluationSet

        typer.echo(EvaluationSet(results=results).model_dump_json(indent=2))
        return
    render_warnings([f"{r.name}: {note}" for r in results for note in r.notes])
    console.print(comparison_table(results, corpus.domains))
    for result in results:
        if result.routing:
            console.print(routing_table(result))
    for path in paths:
        console.print(f"[dim]saved {path}[/]", highlight=False)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def _mark_best(values: list[float | None], lower: bool) -> int | None:
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    if len(present) < 2:
        return None
    return (min(present) if lower else max(present))[1]


def comparison_table(results: list[EvaluationResult], domains: list[str]) -> Table:
    """One row per model; the best value of each numeric column is bold green with a star."""
    columns: list[tuple[str, bool, list[float | None]]] = [
        ("loss", True, [r.loss for r in results]),
        ("ppl", True, [r.ppl for r in results]),
    ]
    for domain in domains:
        columns.append((f"{domain} loss", True, [r.domain_loss.get(domain) for r in results]))
    specs = [r.mean_specialization() for r in results]
    columns.append(("NMI", False, [s.nmi if s else None for s in specs]))
    columns.append(("uniform NMI", False, [s.baseline_nmi if s else None for s in specs]))
    columns.append(
        (
            "max/mean",
            True,
            [max((x.max_over_mean for x in r.routing), default=None) for r in results],
        )
    )
    table = Table(title=f"Evaluation on {results[0].corpus_name} ({results[0].split} split)")
    table.add_column("model")
    table.add_column("kind")
    table.add_column("step", justify="right")
    for header, _, _ in columns:
        domain = header.removesuffix(" loss")
        style = domain_style(domain, domains) if domain in domains else None
        table.add_column(header, justify="right", header_style=style)
    best = {
        c: _mark_best(values, lower)
        for c, (header, lower, values) in enumerate(columns)
        if header != "uniform NMI"
    }
    for row, result in enumerate(results):
        kind = result.kind if result.kind == "dense" else f"moe top-{result.top_k}"
        cells = [result.name, kind, str(result.step if result.step is not None else "-")]
        for c, (_, _, values) in enumerate(columns):
            value = values[row]
            text = "-" if value is None else f"{value:.3f}"
            cells.append(f"[bold green]{text}*[/]" if best.get(c) == row else text)
        table.add_row(*cells)
    table.caption = (
        "* best per column. NMI = MI(domain; expert) / H(domain), mean over MoE layers; "
        "uniform NMI = the same score with domain labels permuted (a domain-blind router)."
    )
    return table


def routing_table(result: EvaluationResult) -> Table:
    """Per-layer routing of one MoE model: specialization next to its baseline, balance."""
    table = Table(title=f"{result.name}: routing per MoE layer ({result.tokens} tokens)")
    for header in ("layer", "NMI", "uniform NMI", "max/mean", "CV", "entropy"):
        table.add_column(header, justify="right")
    table.add_column("top expert / uniform share")
    table.add_column("token-type NMI (uniform)")
    for layer in result.routing:
        spec = layer.specialization
        tops = ", ".join(
            f"{d} e{t.expert} {t.ratio_to_uniform:.2f}x" for d, t in layer.top_expert.items()
        )
        types = ", ".join(
            f"{tt.domain} {tt.specialization.nmi:.3f} ({tt.specialization.baseline_nmi:.3f})"
            for tt in layer.token_types
        )
        table.add_row(
            str(layer.layer),
            f"{spec.nmi:.3f}",
            f"{spec.baseline_nmi:.3f}±{spec.baseline_nmi_std:.3f}",
            f"{layer.max_over_mean:.2f}",
            f"{layer.cv:.2f}",
            f"{layer.entropy:.3f}",
            tops,
            types or "-",
        )
    return table
