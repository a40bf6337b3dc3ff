"""The forward pass of an evaluation: every selected block once under torch.no_grad, recording
per-block and per-domain losses, each MoE layer's routing (`LayerRouting`), the router controls'
inputs, the step-0 model's routing on the same batches, and the token-routing samples.

Routing comes from the RouterStats each MoE layer records during that pass
(`last_router_stats`), so adding layers adds no passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from moectl.analysis.eval_blocks import Block, decode_piece
from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.results import TokenRouting
from moectl.analysis.routing import LayerRouting

if TYPE_CHECKING:
    from moectl.analysis.controls import LayerControls
    from moectl.data.store import Corpus
    from moectl.model.artifact import LoadedModel


@dataclass
class PassRecord:
    """What one pass over the blocks recorded."""

    block_loss: np.ndarray  # mean token loss per block, in block order
    loss_sum: np.ndarray  # summed token loss per domain
    loss_count: np.ndarray  # tokens per domain
    recorders: dict[int, LayerRouting]  # the trained router, per MoE layer
    init_recorders: dict[int, LayerRouting]  # the step-0 model's router (with an init model)
    cell_recorders: dict[int, LayerRouting]  # the trained gate on the step-0 body's layer input
    samples: list[TokenRouting] = field(default_factory=list)


def _recorders(layers: dict[int, Any]) -> dict[int, LayerRouting]:
    return {
        index: LayerRouting(index, layer.n_experts, layer.top_k) for index, layer in layers.items()
    }


def _sample_blocks(blocks: list[Block], options: EvaluationOptions) -> dict[int, int]:
    """The blocks whose token routing is kept as samples: the first `samples_per_domain` of
    each domain, as {block index: domain}."""
    chosen: dict[int, int] = {}
    for block in blocks:
        taken = sum(1 for d in chosen.values() if d == block.domain)
        if taken < options.samples_per_domain:
            chosen[block.index] = block.domain
    return chosen


def forward_pass(
    model: Any,
    layers: dict[int, Any],
    init: LoadedModel | None,
    controls: dict[int, LayerControls],
    blocks: list[Block],
    corpus: Corpus,
    tokenizer: Any,
    options: EvaluationOptions,
    report_progress: Callable[[int], None],
) -> PassRecord:
    """One pass over `blocks` in batches; with `init` (the same model at step 0) its router is
    fed the same batches for the init-router control, and each layer's trained gate reads the
    step-0 body's layer input (the 2x2 of body x gate)."""
    import torch

    from moectl.analysis.controls import capture_layer_inputs
    from moectl.analysis.functional import token_loss
    from moectl.model.routing import last_router_stats, moe_layers

    device = next(model.parameters()).device
    n_domains = len(corpus.domains)
    record = PassRecord(
        block_loss=np.zeros(len(blocks)),
        loss_sum=np.zeros(n_domains),
        loss_count=np.zeros(n_domains, dtype=np.int64),
        recorders=_recorders(layers),
        init_recorders=_recorders(layers),
        cell_recorders=_recorders(layers),
    )
    init_layers = moe_layers(init.model) if init is not None else {}
    # The bootstrap's unit of each block: its document, numbered 0..n_units-1.
    _, unit_index = np.unique([b.document for b in blocks], return_inverse=True)
    sample_blocks = _sample_blocks(blocks, options)
    piece_cache: dict[int, str] = {}
    report_progress(0)
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
                record.loss_sum[block.domain] += float(total)
                record.loss_count[block.domain] += losses.shape[1]
            record.block_loss[start : start + len(batch)] = per_block / losses.shape[1]
            seq = ids.shape[1]
            domain_ids = np.repeat([b.domain for b in batch], seq)
            block_ids = np.repeat(unit_index[start : start + len(batch)], seq)
            types = {
                group: np.concatenate([b.types[group] for b in batch])
                for group in (batch[0].types if batch else {})
            }
            stats = last_router_stats(model) if record.recorders else {}
            token_ids = ids.reshape(-1).cpu().numpy()
            _record(record.recorders, stats, domain_ids, block_ids, types, token_ids)
            for index, control in controls.items():  # block_ids are document units
                control.add(layer_inputs[index], domain_ids, block_ids)
            if init is not None:
                _init_pass(
                    init, ids, layers, controls, init_inputs, record, domain_ids, block_ids, types
                )
            for row, block in enumerate(batch):
                if block.index in sample_blocks and stats:
                    record.samples.append(
                        _sample(stats, row * seq, block, corpus, tokenizer, options, piece_cache)
                    )
            report_progress(min(start + len(batch), len(blocks)))
    return record


def _init_pass(
    init: LoadedModel,
    ids: Any,
    layers: dict[int, Any],
    controls: dict[int, LayerControls],
    init_inputs: dict[int, Any],
    record: PassRecord,
    domain_ids: np.ndarray,
    block_ids: np.ndarray,
    types: dict[str, np.ndarray],
) -> None:
    """The step-0 model's routing of a batch, and each trained gate on its layer input. The
    routers are all the control needs: the body runs without the LM head."""
    from moectl.analysis.controls import gate_experts
    from moectl.model.arch import family_of
    from moectl.model.routing import last_router_stats

    family_of(init.model).body(init.model)(input_ids=ids)
    _record(record.init_recorders, last_router_stats(init.model), domain_ids, block_ids, types)
    for index, control in controls.items():
        experts, entropy = gate_experts(
            init_inputs[index],
            layers[index].gate.weight.float(),
            control.top_k,
            control.score,
            control.selection_bias,
        )
        record.cell_recorders[index].add(
            domain_ids, block_ids, experts.cpu().numpy(), entropy.cpu().numpy()
        )


def _sample(
    stats: dict[int, Any],
    offset: int,
    block: Block,
    corpus: Corpus,
    tokenizer: Any,
    options: EvaluationOptions,
    cache: dict[int, str],
) -> TokenRouting:
    """The token routing of a window of `block` (its batch rows start at `offset`)."""
    eos_id = corpus.manifest.tokenizer.eos_id
    lo, hi = _sample_window(block.ids, eos_id, options.sample_tokens)
    return _token_routing(
        stats,
        offset + lo,
        offset + hi,
        block.ids[lo:hi],
        corpus.domains[block.domain],
        tokenizer,
        cache,
    )


def _sample_window(ids: list[int], eos_id: int, length: int) -> tuple[int, int]:
    """A window of `length` tokens starting at a document start when the block has one."""
    start = 0
    if eos_id in ids[: len(ids) // 2]:
        start = ids.index(eos_id) + 1
    start = min(start, max(len(ids) - length, 0))
    return start, min(start + length, len(ids))


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
