"""`evaluate_models`: per-domain loss and routing analysis of models on a prepared corpus.

One forward pass per batch under torch.no_grad; routing comes from the RouterStats each MoE layer
records during that pass (`last_router_stats`), so adding layers adds no passes. The router
controls (moectl.analysis.controls) read each MoE layer's input from that same pass; only the
optional functional test (moectl.analysis.functional) runs further, masked passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moectl.analysis import bootstrap
from moectl.analysis.bootstrap import N_BOOTSTRAP
from moectl.analysis.gate_null import N_GATES
from moectl.analysis.nmi_bias import corrected_difference, corrected_scores
from moectl.analysis.results import (
    EvaluationResult,
    FunctionalScore,
    SampleSize,
    SpecializationScore,
    TokenRouting,
    UnitCounts,
)
from moectl.analysis.routing import LayerRouting
from moectl.analysis.tokentypes import GROUP_TYPES, classify_block
from moectl.errors import DataError, ModelError
from moectl.fs import write_json
from moectl.model.compat import check_model_fits_corpus
from moectl.progress import ProgressCallback, report
from moectl.rundir.locate import evaluation_folder, resolve_model
from moectl.rundir.reading import corpus_dir
from moectl.rundir.records import perplexity

if TYPE_CHECKING:
    from moectl.analysis.controls import LayerControls
    from moectl.data.store import Corpus
    from moectl.model.artifact import LoadedModel


@dataclass
class EvaluationOptions:
    """Knobs of one evaluation; the defaults suit a CPU study."""

    split: str = "eval"
    max_blocks: int | None = None
    batch_size: int = 8
    device: str = "auto"
    n_permutations: int = 20
    n_bootstrap: int = N_BOOTSTRAP
    seed: int = 0
    samples_per_domain: int = 1
    sample_tokens: int = 48
    code_domains: tuple[str, ...] = ("code",)
    math_domains: tuple[str, ...] = ("math",)
    random_gates: int = N_GATES  # gates drawn as the init draws them, per MoE layer (>= 64)
    functional: bool = False  # the functional test: (1 + draws) more passes per layer and m
    functional_draws: int = 16  # random expert sets per (domain, layer, m) (>= 16)


MIN_DOCUMENTS = 20
"""Fewer eval documents than this in a domain make its intervals rest on too few units."""
SAMPLE_NOTE = "eval sample:"
"""The prefix of `EvaluationResult.notes` about the sample; the report shows these notes."""


@dataclass
class _Block:
    """One eval block: its row in the split, domain, document (unique across the split: the
    bootstrap's unit) and token ids."""

    index: int
    domain: int
    document: int
    ids: list[int]
    types: dict[str, list[int]] = field(default_factory=dict)


def block_unit(block: _Block) -> int:
    """The independent unit a block belongs to (its document), for the functional test's split
    and interval."""
    return block.document


def evaluate_models(
    models: Sequence[Path | str],
    corpus: Corpus,
    max_blocks: int | None = None,
    *,
    options: EvaluationOptions | None = None,
    callback: ProgressCallback | None = None,
) -> list[EvaluationResult]:
    """Evaluate each model (run dir or artifact) on `corpus`; results in the given order."""
    from moectl.model.io import load_model, read_meta

    options = options or EvaluationOptions()
    if max_blocks is not None:
        options.max_blocks = max_blocks
    resolved = [resolve_model(Path(m)) for m in models]
    tokenizer = corpus.tokenizer()
    blocks = select_blocks(corpus, options)
    annotate_token_types(blocks, corpus, tokenizer, options)
    results = []
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
        results.append(result)
    return results


def initial_control(
    loaded: LoadedModel, model_path: Path, run_dir: Path | None
) -> tuple[LoadedModel | None, str | None]:
    """The model's step-0 version (the init-router control), or None and the reason it has none.

    Only a run directory can give it: a bare artifact does not say what it was built from.
    """
    from moectl.model.initial import load_initial_model
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


def select_blocks(corpus: Corpus, options: EvaluationOptions) -> list[_Block]:
    """The blocks to evaluate (in row order): all of the split, or `max_blocks` drawn at random
    with `options.seed`, split evenly across domains and spread over as many documents as each
    domain has (see `sample_rows`)."""
    if options.split not in ("train", "eval"):
        raise DataError(f"unknown split '{options.split}'", hint="use --split eval or train")
    dataset = corpus.eval if options.split == "eval" else corpus.train
    if len(dataset) == 0:
        raise DataError(f"the {options.split} split of {corpus.path} is empty")
    domain_column = np.asarray(dataset["domain"], dtype=np.int64)
    documents = split_documents(dataset, domain_column)
    chosen = sample_rows(domain_column, documents, options.max_blocks, options.seed)
    rows = dataset.select(chosen.tolist())
    return [
        _Block(index=int(i), domain=int(d), document=int(documents[i]), ids=[int(t) for t in ids])
        for i, d, ids in zip(chosen, rows["domain"], rows["input_ids"], strict=True)
    ]


def split_documents(dataset: Any, domain_column: np.ndarray) -> np.ndarray:
    """Each row's document, unique across the split (a domain's document indices offset past
    the previous domains'); in a corpus without a document column, each row is its own."""
    if "document" not in dataset.column_names:
        return np.arange(len(domain_column))
    documents = np.asarray(dataset["document"], dtype=np.int64)
    offsets = np.zeros(int(domain_column.max()) + 2, dtype=np.int64)
    np.maximum.at(offsets, domain_column + 1, documents + 1)
    return documents + np.cumsum(offsets)[domain_column]


def sample_rows(
    domains: np.ndarray, documents: np.ndarray, max_blocks: int | None, seed: int
) -> np.ndarray:
    """Rows (ascending) of a random sample, stratified by domain and spread across documents.

    `max_blocks` is split evenly across domains (a domain with fewer blocks gives its unused
    share to the others). Within a domain, documents come in a random order and each gives one
    random block before any gives a second, so the sample spans as many documents as it can.
    """
    present = np.unique(domains)
    limit = len(domains) if max_blocks is None else min(max_blocks, len(domains))
    sizes = {int(d): int((domains == d).sum()) for d in present}
    quota = {d: 0 for d in sizes}
    while sum(quota.values()) < limit:
        open_domains = [d for d in sizes if quota[d] < sizes[d]]
        share = max(1, (limit - sum(quota.values())) // len(open_domains))
        for d in open_domains:
            quota[d] = min(sizes[d], quota[d] + share, quota[d] + limit - sum(quota.values()))
    chosen = []
    for d, n in quota.items():
        rng = np.random.default_rng([seed, d])
        rows = rng.permutation(np.flatnonzero(domains == d))
        unique, local = np.unique(documents[rows], return_inverse=True)
        document_rank = rng.permutation(len(unique))[local]
        # Rows were shuffled, so a row's place among its document's rows is a random round.
        order = np.argsort(local, kind="stable")
        round_of = np.empty(len(rows), dtype=np.int64)
        starts = np.r_[0, np.flatnonzero(np.diff(local[order])) + 1]
        counts = np.diff(np.r_[starts, len(rows)])
        round_of[order] = np.arange(len(rows)) - np.repeat(starts, counts)
        chosen.append(rows[np.lexsort((document_rank, round_of))[:n]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def sample_sizes(blocks: list[_Block], domains: list[str]) -> dict[str, SampleSize]:
    """Per domain with blocks: how many were evaluated and from how many documents."""
    sizes = {}
    for index, name in enumerate(domains):
        documents = [b.document for b in blocks if b.domain == index]
        if documents:
            sizes[name] = SampleSize(blocks=len(documents), documents=len(set(documents)))
    return sizes


def sample_notes(sample: dict[str, SampleSize], has_documents: bool, corpus: Path) -> list[str]:
    """Warnings about the units the intervals rest on, one line each."""
    if not has_documents:
        return [
            f"{SAMPLE_NOTE} corpus {corpus} does not record each block's document, so "
            "the intervals resample blocks, which understates their width when blocks of one "
            "document are alike; re-run `moectl prepare-data` to record documents"
        ]
    return [
        f"{SAMPLE_NOTE} {domain} has {size.documents} eval documents (fewer than "
        f"{MIN_DOCUMENTS}), so its intervals rest on few independent units; evaluate more blocks "
        "(--max-blocks) or give the eval split more texts (data.eval_min_texts)"
        for domain, size in sample.items()
        if size.documents < MIN_DOCUMENTS
    ]


def annotate_token_types(
    blocks: list[_Block], corpus: Corpus, tokenizer: Any, options: EvaluationOptions
) -> None:
    """Token-type ids per token for blocks of code and math domains (-1 elsewhere)."""
    eos_id = corpus.manifest.tokenizer.eos_id
    groups = {"code": options.code_domains, "math": options.math_domains}
    piece_cache: dict[int, str] = {}
    for block in blocks:
        domain = corpus.domains[block.domain]
        for group, domains in groups.items():
            if not any(d in corpus.domains for d in domains):
                continue
            if domain not in domains:
                block.types[group] = [-1] * len(block.ids)
                continue
            pieces = [decode_piece(tokenizer, t, piece_cache) for t in block.ids]
            names = GROUP_TYPES[group]
            labels = classify_block(pieces, block.ids, eos_id, group)
            block.types[group] = [-1 if lab is None else names.index(lab) for lab in labels]


def decode_piece(tokenizer: Any, token_id: int, cache: dict[int, str]) -> str:
    """The text of one token id, exactly as it contributes to the decoded block."""
    if token_id not in cache:
        cache[token_id] = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
    return cache[token_id]


def _sample_window(ids: list[int], eos_id: int, length: int) -> tuple[int, int]:
    """A window of `length` tokens starting at a document start when the block has one."""
    start = 0
    if eos_id in ids[: len(ids) // 2]:
        start = ids.index(eos_id) + 1
    start = min(start, max(len(ids) - length, 0))
    return start, min(start + length, len(ids))


def evaluate_loaded(
    loaded: LoadedModel,
    name: str,
    model_path: Path,
    run_dir: Path | None,
    corpus: Corpus,
    blocks: list[_Block],
    tokenizer: Any,
    options: EvaluationOptions,
    callback: ProgressCallback | None = None,
    init: LoadedModel | None = None,
) -> EvaluationResult:
    """Losses and routing of one loaded model over the selected blocks; with `init` (the same
    model at step 0) its router is fed the same batches for the init-router control."""
    import torch

    from moectl.analysis.controls import capture_layer_inputs, gate_experts
    from moectl.analysis.functional import token_loss
    from moectl.model.arch import family_of
    from moectl.model.routing import last_router_stats, moe_layers

    model = loaded.model
    model.eval()
    device = next(model.parameters()).device
    domains = corpus.domains
    layers = moe_layers(model)
    recorders = {
        index: LayerRouting(index, layer.n_experts, layer.top_k) for index, layer in layers.items()
    }
    init_recorders = {
        index: LayerRouting(index, layer.n_experts, layer.top_k) for index, layer in layers.items()
    }
    # The 2x2 of body x gate: the step-0 body's layer input through the trained gate.
    cell_recorders = {
        index: LayerRouting(index, layer.n_experts, layer.top_k) for index, layer in layers.items()
    }
    init_layers = moe_layers(init.model) if init is not None else {}
    controls = _layer_controls(model, layers, init, len(domains), options)
    block_loss = np.zeros(len(blocks))
    # The bootstrap's unit of each block: its document, numbered 0..n_units-1.
    _, unit_index = np.unique([b.document for b in blocks], return_inverse=True)
    loss_sum = np.zeros(len(domains))
    loss_count = np.zeros(len(domains), dtype=np.int64)
    eos_id = corpus.manifest.tokenizer.eos_id
    sample_blocks: dict[int, int] = {}
    for block in blocks:
        taken = sum(1 for d in sample_blocks.values() if d == block.domain)
        if taken < options.samples_per_domain:
            sample_blocks[block.index] = block.domain
    samples: list[TokenRouting] = []
    piece_cache: dict[int, str] = {}
    stage = f"evaluate:{name}"
    report(callback, stage, 0, len(blocks))
    with (
        torch.no_grad(),
        capture_layer_inputs(layers) as layer_inputs,
        capture_layer_inputs(init_layers) as init_inputs,
    ):
        for start in range(0, len(blocks), options.batch_size):
            batch = blocks[start : start + options.batch_size]
            ids = torch.tensor([b.ids for b in batch], dtype=torch.long, device=device)
            losses = token_loss(model, ids)
            per_block = losses.sum(dim=1).cpu().numpy()
            for block, total in zip(batch, per_block, strict=True):
                loss_sum[block.domain] += float(total)
                loss_count[block.domain] += losses.shape[1]
            block_loss[start : start + len(batch)] = per_block / losses.shape[1]
            seq = ids.shape[1]
            domain_ids = np.repeat([b.domain for b in batch], seq)
            block_ids = np.repeat(unit_index[start : start + len(batch)], seq)
            types = {
                group: np.concatenate([b.types[group] for b in batch])
                for group in (batch[0].types if batch else {})
            }
            stats = last_router_stats(model) if recorders else {}
            _record(recorders, stats, domain_ids, block_ids, types, ids.reshape(-1).cpu().numpy())
            for index, control in controls.items():  # block_ids are document units
                control.add(layer_inputs[index], domain_ids, block_ids)
            if init is not None:  # the routers are all the control needs: no LM head
                family_of(init.model).body(init.model)(input_ids=ids)
                _record(init_recorders, last_router_stats(init.model), domain_ids, block_ids, types)
                for index, control in controls.items():
                    experts, entropy = gate_experts(
                        init_inputs[index],
                        layers[index].gate.weight.float(),
                        control.top_k,
                        control.score,
                        control.selection_bias,
                    )
                    cell_recorders[index].add(
                        domain_ids, block_ids, experts.cpu().numpy(), entropy.cpu().numpy()
                    )
            for row, block in enumerate(batch):
                if block.index in sample_blocks and stats:
                    lo, hi = _sample_window(block.ids, eos_id, options.sample_tokens)
                    samples.append(
                        _token_routing(
                            stats,
                            row * seq + lo,
                            row * seq + hi,
                            block.ids[lo:hi],
                            domains[block.domain],
                            tokenizer,
                            piece_cache,
                        )
                    )
            report(callback, stage, min(start + len(batch), len(blocks)), len(blocks))
    present = [i for i in range(len(domains)) if loss_count[i] > 0]
    domain_loss = {domains[i]: float(loss_sum[i] / loss_count[i]) for i in present}
    total_loss = float(loss_sum.sum() / max(loss_count.sum(), 1))
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
            init=init_recorders[index] if init is not None else None,
            frozen=controls[index].frozen,
            n_bootstrap=options.n_bootstrap,
        )
        for index, recorder in sorted(recorders.items())
    ]
    strata = bootstrap.unit_strata([b.domain for b in blocks], [b.document for b in blocks])
    for analysis in routing:
        index = analysis.layer
        tables = _unit_tables(
            recorders[index],
            controls[index].frozen,
            init_recorders[index] if init is not None else None,
            cell_recorders[index] if init is not None else None,
            len(strata),
            len(domains),
        )
        analysis.specialization = _router_scores(
            analysis.specialization, tables, strata, controls[index], options
        )
    first = next(iter(layers.values()), None)
    notes = [] if layers else ["dense model: no MoE layers, so no routing to analyse (losses only)"]
    sample = sample_sizes(blocks, domains)
    notes += sample_notes(sample, corpus.has_documents, corpus.path)
    functional = []
    if options.functional and layers:
        functional, skipped = _functional(
            model, init, blocks, domains, recorders, init_recorders, domain_loss, options
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
        domain_tokens={domains[i]: int(loss_count[i]) for i in present},
        moe_layers=sorted(layers),
        n_experts=first.n_experts if first is not None else None,
        top_k=first.top_k if first is not None else None,
        routing_label=loaded.meta.moe.routing_label if loaded.meta.moe and layers else None,
        routing=routing,
        functional=functional,
        samples=samples,
        notes=notes,
        block_index=[b.index for b in blocks],
        block_domain=[b.domain for b in blocks],
        block_loss=[float(v) for v in block_loss],
        block_document=[b.document for b in blocks],
        sample=sample,
        sample_seed=options.seed,
    )


def _record(
    recorders: dict[int, LayerRouting],
    stats: dict[int, Any],
    domain_ids: np.ndarray,
    block_ids: np.ndarray,
    types: dict[str, np.ndarray],
    token_ids: np.ndarray | None = None,
) -> None:
    for index, recorder in recorders.items():
        s = stats[index]
        recorder.add(
            domain_ids,
            block_ids,
            s.expert_index.cpu().numpy(),
            s.entropy.float().cpu().numpy(),
            types,
            token_ids,
        )


def _unit_tables(
    trained: LayerRouting,
    frozen: LayerRouting | None,
    init: LayerRouting | None,
    cell: LayerRouting | None,
    n_units: int,
    n_labels: int,
) -> UnitCounts:
    """The layer's per-document (U, E) count tables of every router recorded on its units."""

    def table(recorder: LayerRouting | None, first_choice: bool = False) -> list | None:
        if recorder is None:
            return None
        return recorder.block_table(n_units, n_labels, first_choice).sum(axis=1).tolist()

    return UnitCounts(
        trained=table(trained),
        first_choice=table(trained, first_choice=True),
        frozen_gate=table(frozen),
        init=table(init),
        trained_gate_on_init=table(cell),
    )


def _router_scores(
    spec: SpecializationScore,
    tables: UnitCounts,
    strata: np.ndarray,
    control: LayerControls,
    options: EvaluationOptions,
) -> SpecializationScore:
    """The domain score with its router fields: the gate null, the bias-corrected NMIs and
    differences (trained - step-0, trained - frozen gate), the 2x2 cell, the probe and the
    per-document tables."""
    n_labels = control.n_labels
    corrected, baselines = corrected_scores(
        tables, strata, n_labels, options.n_bootstrap, options.seed
    )
    trained = np.asarray(tables.trained)
    frozen = np.asarray(tables.frozen_gate) if tables.frozen_gate is not None else None
    update: dict[str, Any] = {
        "gate_null": control.gate_null(trained, strata, frozen),
        "corrected": corrected,
        "probe": control.probe_score(),
        "unit_counts": tables,
    }
    if "init" in baselines:
        bias = baselines["trained"] - baselines["init"]
        update["emergent"] = corrected_difference(spec.emergent, bias)
    if "frozen_gate" in baselines:
        bias = baselines["trained"] - baselines["frozen_gate"]
        update["router_made"] = corrected_difference(spec.router_made, bias)
    if corrected.trained_gate_on_init is not None:  # its plug-in NMI, like the other cells'
        raw = corrected.trained_gate_on_init + baselines["trained_gate_on_init"]
        update["trained_gate_on_init_nmi"] = raw
    return spec.model_copy(update=update)


def _layer_controls(
    model: Any,
    layers: dict[int, Any],
    init: LoadedModel | None,
    n_labels: int,
    options: EvaluationOptions,
) -> dict[int, LayerControls]:
    """Per MoE layer: random gates drawn as the init draws them (seeded per layer), the trained
    gate and learned selection bias (under a bias scheme) the gates choose with, and, with an
    init model, the layer's init gate."""
    from moectl.analysis.controls import LayerControls, draw_gates
    from moectl.model.routing import moe_layers

    init_layers = moe_layers(init.model) if init is not None else {}
    std = model.config.initializer_range
    return {
        index: LayerControls(
            layer=index,
            n_labels=n_labels,
            top_k=layer.top_k,
            random_gates=draw_gates(
                options.random_gates,
                layer.n_experts,
                layer.gate.weight.shape[1],
                std,
                options.seed + index,
                layer.granularity,
            ),
            frozen_gate=init_layers[index].gate.weight.detach().float()
            if index in init_layers
            else None,
            seed=options.seed,
            score=layer.gate.score,
            trained_gate=layer.gate.weight.detach().float(),
            selection_bias=layer.balance.selection_bias().detach().float()
            if layer.balance.selects_with_bias
            else None,
        )
        for index, layer in layers.items()
    }


def _functional(
    model: Any,
    init: LoadedModel | None,
    blocks: list[_Block],
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


def _token_routing(
    stats: dict[int, Any],
    lo: int,
    hi: int,
    ids: list[int],
    domain: str,
    tokenizer: Any,
    cache: dict[int, str],
) -> TokenRouting:
    layers, probs, entropy, experts, weights = {}, {}, {}, {}, {}
    for index, s in sorted(stats.items()):
        key = str(index)
        layers[key] = s.expert_index[lo:hi, 0].cpu().tolist()
        chosen = s.probs[lo:hi].gather(1, s.expert_index[lo:hi, :1])[:, 0]
        probs[key] = [round(float(p), 4) for p in chosen.float().cpu()]
        entropy[key] = [round(float(h), 4) for h in s.entropy[lo:hi].float().cpu()]
        experts[key] = s.expert_index[lo:hi].cpu().tolist()
        weights[key] = [
            [round(w, 4) for w in row] for row in s.expert_weight[lo:hi].float().cpu().tolist()
        ]
    return TokenRouting(
        domain=domain,
        tokens=[decode_piece(tokenizer, t, cache) for t in ids],
        layers=layers,
        probs=probs,
        entropy=entropy,
        experts=experts,
        weights=weights,
    )


def result_path(result: EvaluationResult) -> Path:
    """Where a result is saved by default: <run dir or model dir>/eval/<corpus name>.json."""
    run_dir = Path(result.run_dir) if result.run_dir else None
    return evaluation_folder(Path(result.model_path), run_dir) / f"{result.corpus_name}.json"


def save_results(results: list[EvaluationResult], out: Path | None = None) -> list[Path]:
    """Each result to its default path, or all of them as one EvaluationSet at `out`."""
    from moectl.analysis.results import EvaluationSet

    if out is not None:
        return [write_json(out, EvaluationSet(results=results))]
    return [write_json(result_path(r), r) for r in results]


def corpus_for(models: Sequence[Path | str]) -> Path | None:
    """The corpus recorded in run.json of the first run dir among `models`, if any."""
    for model in models:
        _, run_dir = resolve_model(Path(model))
        found = corpus_dir(run_dir) if run_dir is not None else None
        if found is not None:
            return found
    return None
