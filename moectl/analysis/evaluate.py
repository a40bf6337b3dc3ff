"""`evaluate_models`: per-domain loss and routing analysis of models on a prepared corpus.

This module runs an evaluation from end to end: it resolves and loads each model and its step-0
control, takes the blocks (`eval_blocks`), runs the pass (`eval_pass`), scores the routers
(`eval_router`) and assembles the `EvaluationResult`; `eval_files` saves it.

The router controls (moectl.analysis.controls) read each MoE layer's input from the one pass;
only the optional functional test (moectl.analysis.functional) runs further, masked passes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moectl.analysis import bootstrap
from moectl.analysis.eval_blocks import (
    Block,
    annotate_token_types,
    block_unit,
    sample_notes,
    sample_sizes,
    select_blocks,
)
from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.eval_pass import PassRecord, forward_pass
from moectl.analysis.eval_router import layer_controls, router_scores, unit_tables
from moectl.analysis.results import EvaluationResult, FunctionalScore, RoutingAnalysis
from moectl.analysis.routing import LayerRouting
from moectl.analysis.tokentypes import GROUP_TYPES
from moectl.errors import ModelError
from moectl.model.compat import check_model_fits_corpus
from moectl.progress import ProgressCallback, report
from moectl.rundir.locate import resolve_model
from moectl.rundir.records import perplexity

if TYPE_CHECKING:
    from moectl.analysis.controls import LayerControls
    from moectl.data.store import Corpus
    from moectl.model.artifact import LoadedModel


def evaluate_models(
    models: Sequence[Path | str],
    corpus: Corpus,
    max_blocks: int | None = None,
    *,
    options: EvaluationOptions | None = None,
    callback: ProgressCallback | None = None,
) -> list[EvaluationResult]:
    """Evaluate each model (run dir or artifact) on `corpus`; results in the given order."""
    return list(iter_evaluations(models, corpus, max_blocks, options=options, callback=callback))


def iter_evaluations(
    models: Sequence[Path | str],
    corpus: Corpus,
    max_blocks: int | None = None,
    *,
    options: EvaluationOptions | None = None,
    callback: ProgressCallback | None = None,
) -> Iterator[EvaluationResult]:
    """`evaluate_models`, one result at a time as each model is done, so a caller can keep
    each (an experiment's evaluation of a hundred models resumes where it was stopped). Every
    model is resolved before the first is evaluated, so a bad path fails before any work."""
    from moectl.interop.loading import load_model, read_meta

    options = options or EvaluationOptions()
    if max_blocks is not None:
        options.max_blocks = max_blocks
    resolved = [resolve_model(Path(m)) for m in models]
    tokenizer = corpus.tokenizer()
    blocks = select_blocks(corpus, options)
    annotate_token_types(blocks, corpus, tokenizer, options)
    for model_path, run_dir in resolved:
        check_model_fits_corpus(read_meta(model_path), corpus, str(model_path))
        loaded = load_model(model_path, device=options.device)
        name = run_dir.name if run_dir is not None else model_path.name
        init, reason = initial_control(loaded, model_path, run_dir)
        result = evaluate_loaded(
            loaded, name, model_path, run_dir, corpus, blocks, tokenizer, options, callback, init
        )
        if reason is not None:
            result.init_control = reason
            result.notes.append(f"no init-router control: {reason}")
        yield result


def initial_control(
    loaded: LoadedModel, model_path: Path, run_dir: Path | None
) -> tuple[LoadedModel | None, str | None]:
    """The model's step-0 version (the init-router control), or None and the reason it has none.

    Only a run directory can give it: a bare artifact does not say what it was built from.
    """
    from moectl.analysis.step_zero import load_initial_model
    from moectl.model.routing import moe_layers

    if not moe_layers(loaded.model):
        return None, None
    if run_dir is None:
        return None, f"{model_path} is a model artifact without its run directory"
    try:
        device = next(loaded.model.parameters()).device
        return load_initial_model(run_dir, device=device), None
    except ModelError as exc:
        return None, exc.message


def evaluate_loaded(
    loaded: LoadedModel,
    name: str,
    model_path: Path,
    run_dir: Path | None,
    corpus: Corpus,
    blocks: list[Block],
    tokenizer: Any,
    options: EvaluationOptions,
    callback: ProgressCallback | None = None,
    init: LoadedModel | None = None,
) -> EvaluationResult:
    """Losses and routing of one loaded model over the selected blocks; with `init` (the same
    model at step 0) its router is fed the same batches for the init-router control."""
    from moectl.model.routing import moe_layers

    model = loaded.model
    model.eval()
    domains = corpus.domains
    layers = moe_layers(model)
    controls = layer_controls(model, layers, init, len(domains), options)
    stage = f"evaluate:{name}"
    record = forward_pass(
        model,
        layers,
        init,
        controls,
        blocks,
        corpus,
        tokenizer,
        options,
        lambda done: report(callback, stage, done, len(blocks)),
    )
    present = [i for i in range(len(domains)) if record.loss_count[i] > 0]
    domain_loss = {domains[i]: float(record.loss_sum[i] / record.loss_count[i]) for i in present}
    total_loss = float(record.loss_sum.sum() / max(record.loss_count.sum(), 1))
    routing = _routing_analyses(record, controls, blocks, domains, options, init is not None)
    first = next(iter(layers.values()), None)
    notes = [] if layers else ["dense model: no MoE layers, so no routing to analyse (losses only)"]
    sample = sample_sizes(blocks, domains)
    notes += sample_notes(sample, corpus.has_documents, corpus.path)
    functional = []
    if options.functional and layers:
        functional, skipped = _functional(
            model,
            init,
            blocks,
            domains,
            record.recorders,
            record.init_recorders,
            domain_loss,
            options,
        )
        notes.extend(skipped)
    return EvaluationResult(
        name=name,
        model_path=str(model_path),
        run_dir=str(run_dir) if run_dir is not None else None,
        kind="moe" if layers else "dense",
        step=getattr(loaded.meta, "step", None),
        corpus=str(corpus.path),
        corpus_name=Path(corpus.path).resolve().name,
        split=options.split,
        blocks=len(blocks),
        tokens=int(sum(len(b.ids) for b in blocks)),
        loss=total_loss,
        ppl=perplexity(total_loss),
        domain_loss=domain_loss,
        domain_ppl={d: perplexity(v) for d, v in domain_loss.items()},
        domain_tokens={domains[i]: int(record.loss_count[i]) for i in present},
        moe_layers=sorted(layers),
        n_experts=first.n_experts if first is not None else None,
        top_k=first.top_k if first is not None else None,
        routing_label=loaded.meta.moe.routing_label if loaded.meta.moe and layers else None,
        routing=routing,
        functional=functional,
        samples=record.samples,
        notes=notes,
        block_index=[b.index for b in blocks],
        block_domain=[b.domain for b in blocks],
        block_loss=[float(v) for v in record.block_loss],
        block_document=[b.document for b in blocks],
        sample=sample,
        sample_seed=options.seed,
    )


def _routing_analyses(
    record: PassRecord,
    controls: dict[int, LayerControls],
    blocks: list[Block],
    domains: list[str],
    options: EvaluationOptions,
    has_init: bool,
) -> list[RoutingAnalysis]:
    """Each MoE layer's routing analysis, its specialization scored against the router
    controls on the per-document tables."""
    group_domains = {
        "code": next((d for d in options.code_domains if d in domains), ""),
        "math": next((d for d in options.math_domains if d in domains), ""),
    }
    routing = [
        recorder.analyse(
            domains,
            GROUP_TYPES,
            group_domains,
            options.n_permutations,
            options.seed,
            init=record.init_recorders[index] if has_init else None,
            frozen=controls[index].frozen,
            n_bootstrap=options.n_bootstrap,
        )
        for index, recorder in sorted(record.recorders.items())
    ]
    strata = bootstrap.unit_strata([b.domain for b in blocks], [b.document for b in blocks])
    for analysis in routing:
        index = analysis.layer
        tables = unit_tables(
            record.recorders[index],
            controls[index].frozen,
            record.init_recorders[index] if has_init else None,
            record.cell_recorders[index] if has_init else None,
            len(strata),
            len(domains),
        )
        analysis.specialization = router_scores(
            analysis.specialization, tables, strata, controls[index], options
        )
    return routing


def _functional(
    model: Any,
    init: LoadedModel | None,
    blocks: list[Block],
    domains: list[str],
    recorders: dict[int, LayerRouting],
    init_recorders: dict[int, LayerRouting],
    domain_loss: dict[str, float],
    options: EvaluationOptions,
) -> tuple[list[FunctionalScore], list[str]]:
    """The functional test on the evaluated blocks, for the model and (if any) its init model,
    each keeping the experts its own routing counted most on half of each domain's documents
    (per-document count tables from the recorders) and scored on the other half."""
    from moectl.analysis.functional import FunctionalBlocks, functional_scores

    # The bootstrap's unit of each block, numbered like the recorders' per-unit tables.
    _, unit = np.unique([block_unit(b) for b in blocks], return_inverse=True)
    n_units = int(unit.max()) + 1

    def tables(which: dict[int, LayerRouting]) -> dict[int, np.ndarray]:
        return {i: r.block_table(n_units, len(domains)) for i, r in which.items()}

    return functional_scores(
        model,
        FunctionalBlocks(
            ids=np.asarray([b.ids for b in blocks], dtype=np.int64),
            domain=np.asarray([b.domain for b in blocks]),
            unit=unit.ravel(),
        ),
        domains,
        tables(recorders),
        domain_loss,
        init=init.model if init is not None else None,
        init_counts=tables(init_recorders) if init is not None else None,
        batch_size=options.batch_size,
        n_draws=options.functional_draws,
        n_bootstrap=options.n_bootstrap,
        seed=options.seed,
    )
