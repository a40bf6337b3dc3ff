"""Functional specialization (issue 14, s. 3): do the experts a domain is routed to matter for it?

Routing shares and NMI say where tokens go, not whether those experts help. For each domain,
MoE layer and m in {E/4, E/2}, the domain's eval tokens are routed only among the m experts it
uses most in that layer (the others' gate logits masked through the router's `selectable`), and
its loss is compared with keeping m experts drawn at random (the same draws for the trained and
the init model). The paired difference (own minus the mean over draws) gets a bootstrap interval
over the domain's documents.

The "own" experts are chosen on data independent of the data they are scored on: the eval
documents are split in half within each domain (`controls.split_units`, seeded), the experts are
the most used on one half and the loss is measured on the other. Chosen and scored on the same
blocks, a set of experts that only fits those blocks' noise would look specialized.

The cells (domain x layer x m) are one family per model (the trained model's, and the init
model's): each cell's bootstrap p-value enters Holm's procedure at family-wise level 5%, and a
cell is `specialized` only when Holm rejects "no difference", the difference is below 0, and it
its interval is `bootstrap.resolved` at the loss's scale (identical experts give differences of
~1e-8 whose whole interval can lie below 0 when float32 sums run in another order, as on CPUs
with AVX-512).

Cost: (1 + n_draws) forward passes over each domain's scored blocks per (layer, m), so about
(1 + n_draws) passes over half the eval set per MoE layer, m and model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moectl.analysis import bootstrap
from moectl.analysis.controls import split_units
from moectl.analysis.multiplicity import bootstrap_p_value, holm_rejections
from moectl.analysis.results import FunctionalArm, FunctionalScore, FunctionalVerdict
from moectl.model.moe import MoEMLP
from moectl.model.routing import moe_layers


def token_loss(model: nn.Module, ids: Tensor) -> Tensor:
    """(batch, seq - 1) next-token cross-entropy of a batch of blocks, float32."""
    logits = model(input_ids=ids).logits.float()
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
    ).view(len(ids), -1)


@contextmanager
def keep_experts(layer: MoEMLP, experts: Sequence[int]) -> Iterator[None]:
    """Route the layer's tokens only among `experts` while the context is open."""
    mask = torch.zeros(layer.n_experts, dtype=torch.bool, device=layer.gate.weight.device)
    mask[list(experts)] = True
    layer.gate.selectable = mask
    try:
        yield
    finally:
        layer.gate.selectable = None


@dataclass(frozen=True)
class FunctionalBlocks:
    """The eval blocks the test runs on: token ids (N, S), domain and unit (document) of each,
    units numbered 0..n_units-1 like the rows of the per-unit count tables."""

    ids: np.ndarray
    domain: np.ndarray
    unit: np.ndarray


def experts_sizes(n_experts: int) -> list[int]:
    """The m values tested: E/4 and E/2 (at least 1, once each)."""
    return sorted({max(1, n_experts // 4), max(1, n_experts // 2)})


def most_used(counts: np.ndarray, m: int) -> list[int]:
    """The m experts with the most assignments in a row of counts (ties: lower index first)."""
    return sorted(int(e) for e in np.argsort(-np.asarray(counts), kind="stable")[:m])


def functional_scores(
    model: nn.Module,
    blocks: FunctionalBlocks,
    domains: list[str],
    counts: dict[int, np.ndarray],
    full_loss: dict[str, float],
    *,
    init: nn.Module | None = None,
    init_counts: dict[int, np.ndarray] | None = None,
    batch_size: int = 8,
    n_draws: int = 16,
    n_bootstrap: int = bootstrap.N_BOOTSTRAP,
    seed: int = 0,
) -> tuple[list[FunctionalScore], list[str]]:
    """Scores per (domain, layer, m) and notes on what was skipped. `counts` maps each MoE layer
    to its per-unit (n_units, domains, experts) counts of the trained routing; `init_counts` the
    same for `init`. Own experts come from one half of each domain's units, losses from the
    other half."""
    chosen, scored = split_units(blocks.domain, blocks.unit, seed)
    if not len(chosen):
        return [], [
            "functional test: skipped, a domain has fewer than 2 eval documents, so its own "
            "experts cannot be chosen on documents other than those they are scored on"
        ]
    chosen_counts = {index: table[chosen].sum(axis=0) for index, table in counts.items()}
    init_chosen = {index: table[chosen].sum(axis=0) for index, table in (init_counts or {}).items()}
    unit_domain = bootstrap.unit_strata(blocks.domain, blocks.unit)
    n_chosen = np.bincount(unit_domain[chosen], minlength=len(domains))
    scores: list[FunctionalScore] = []
    notes: list[str] = []
    layers = moe_layers(model)
    init_layers = moe_layers(init) if init is not None else {}
    for index, layer in layers.items():
        for m in experts_sizes(layer.n_experts):
            if layer.top_k > m:
                notes.append(
                    f"functional test: layer {index} skips m={m} (fewer experts than top-k "
                    f"{layer.top_k})"
                )
                continue
            for d, domain in enumerate(domains):
                rows = np.flatnonzero((blocks.domain == d) & np.isin(blocks.unit, scored))
                if domain not in full_loss or not len(rows):
                    continue
                rng = np.random.default_rng([seed, index, m, d])
                draws = [
                    sorted(int(e) for e in rng.choice(layer.n_experts, m, replace=False))
                    for _ in range(n_draws)
                ]
                common = (blocks, rows, draws, batch_size, n_bootstrap, seed)
                trained = _arm(model, layer, most_used(chosen_counts[index][d], m), *common)
                arm_init = None
                if init is not None and index in init_chosen:
                    own = most_used(init_chosen[index][d], m)
                    arm_init = _arm(init, init_layers[index], own, *common)
                scores.append(
                    FunctionalScore(
                        domain=domain,
                        layer=index,
                        m=m,
                        full_loss=full_loss[domain],
                        chosen_documents=int(n_chosen[d]),
                        scored_documents=len(np.unique(blocks.unit[rows])),
                        trained=trained,
                        init=arm_init,
                    )
                )
    return with_family_verdicts(scores), notes


def with_family_verdicts(scores: list[FunctionalScore]) -> list[FunctionalScore]:
    """The scores with every arm's verdict decided over its model's family of cells: Holm at
    FAMILY_ALPHA over the trained arms, and separately over the init arms."""
    updates: list[dict[str, FunctionalArm]] = [{} for _ in scores]
    for name in ("trained", "init"):
        cells = [(i, getattr(s, name)) for i, s in enumerate(scores) if getattr(s, name)]
        rejected = holm_rejections([arm.p_value for _, arm in cells])
        for (i, arm), reject in zip(cells, rejected, strict=True):
            verdict = functional_verdict(arm.ci, arm.random_loss, reject)
            updates[i][name] = arm.model_copy(
                update={"verdict": verdict, "comparisons": len(cells)}
            )
    return [s.model_copy(update=u) for s, u in zip(scores, updates, strict=True)]


def functional_verdict(ci: tuple[float, float], loss: float, rejected: bool) -> FunctionalVerdict:
    """'specialized' when the family-wise test rejects "no difference", keeping the own experts
    lowers the loss (the interval is below 0), and the interval is `bootstrap.resolved` at the
    loss's scale (not numerical noise)."""
    if rejected and ci[1] < 0 and bootstrap.resolved(ci, loss):
        return "specialized"
    return "not specialized"


def _arm(
    model: nn.Module,
    layer: MoEMLP,
    own: list[int],
    blocks: FunctionalBlocks,
    rows: np.ndarray,
    draws: list[list[int]],
    batch_size: int,
    n_bootstrap: int,
    seed: int,
) -> FunctionalArm:
    """One model's cell, its verdict left to `with_family_verdicts`."""
    own_loss = _block_losses(model, layer, own, blocks.ids[rows], batch_size)
    random_loss = np.mean(
        [_block_losses(model, layer, draw, blocks.ids[rows], batch_size) for draw in draws], axis=0
    )
    difference = own_loss - random_loss
    ci, p_value = _unit_interval(difference, blocks.unit[rows], n_bootstrap, seed)
    return FunctionalArm(
        experts=own,
        own_loss=float(own_loss.mean()),
        random_loss=float(random_loss.mean()),
        n_draws=len(draws),
        difference=float(difference.mean()),
        ci=ci,
        p_value=p_value,
    )


def _block_losses(
    model: nn.Module, layer: MoEMLP, experts: list[int], ids: np.ndarray, batch_size: int
) -> np.ndarray:
    """Mean per-token loss of each block with `layer` routing only among `experts`."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad(), keep_experts(layer, experts):
        for start in range(0, len(ids), batch_size):
            batch = torch.as_tensor(ids[start : start + batch_size], device=device)
            out.append(token_loss(model, batch).mean(dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _unit_interval(
    per_block: np.ndarray, units: np.ndarray, n_bootstrap: int, seed: int
) -> tuple[tuple[float, float], float]:
    """(interval, two-sided p-value of 0) of the mean over blocks, resampling whole units
    (documents) with replacement. Blocks hold equally many tokens, so a unit weighs as many
    blocks as it has."""
    _, unit = np.unique(units, return_inverse=True)
    sums = np.bincount(unit, weights=per_block)
    sizes = np.bincount(unit).astype(np.float64)
    strata = np.zeros(len(sums), np.int64)
    weights = bootstrap.resample_counts(strata, n_bootstrap, seed)
    samples = (weights @ sums) / (weights @ sizes)
    point = float(per_block.mean())
    interval = bootstrap.percentile_ci(samples, point, strata=strata)
    return interval, bootstrap_p_value(samples, point)
