"""A paired difference combined over seeds: one seed's paired bootstrap difference, the shared
document resamples that let seeds' replicates be recomputed together, the seed-level interval
(`combine_seeds`), and the sentence saying what the seeds agree on."""

from __future__ import annotations

from collections import Counter

import numpy as np

from moectl.analysis.bootstrap import (
    PairedDifference,
    paired_block_difference,
    resampled_mean,
    unit_losses,
    unit_strata,
)
from moectl.analysis.results import EvaluationResult
from moectl.analysis.seeds import (
    interval_standard_error,
    paired_replicates,
    seed_interval,
    shared_resamples,
)


def paired_difference(a: EvaluationResult, b: EvaluationResult) -> PairedDifference:
    """a - b in mean eval loss over the blocks both were evaluated on (the same blocks),
    resampling their documents (blocks, in results that predate documents)."""
    if a.block_index != b.block_index or not a.block_loss:
        raise ValueError(f"{a.name} and {b.name} were not evaluated on the same blocks")
    units = a.block_document or a.block_index
    return paired_block_difference(
        np.array(a.block_loss), np.array(b.block_loss), np.array(a.block_domain), np.array(units)
    )


def block_units(result: EvaluationResult) -> np.ndarray:
    """Each evaluated block's bootstrap unit: its document (its block, in older results)."""
    return np.array(result.block_document or result.block_index)


def share_blocks(results: list[EvaluationResult]) -> bool:
    """Whether every result was evaluated on the same blocks of the same documents (then their
    seeds can be recomputed on one set of document resamples)."""
    first = results[0]
    return all(
        r.block_index == first.block_index and r.block_document == first.block_document
        for r in results
    )


def loss_replicates(a: list[EvaluationResult], b: list[EvaluationResult]) -> np.ndarray | None:
    """(S, B): per seed, a - b in mean eval loss recomputed on the same document resamples
    (`seeds.shared_resamples`), or None when the seeds were not all evaluated on the same
    blocks (then the seeds share no resample)."""
    first = a[0]
    if not share_blocks([*a, *b]):
        return None
    units = block_units(first)
    weights = shared_resamples(unit_strata(np.array(first.block_domain), units))
    rows = []
    for x, y in zip(a, b, strict=True):
        loss_x, blocks = unit_losses(np.array(x.block_loss), units)
        loss_y, _ = unit_losses(np.array(y.block_loss), units)
        rows.append(paired_replicates(resampled_mean, loss_x, loss_y, weights * blocks))
    return np.stack(rows)


def combine_seeds(
    points: list[float],
    cis: list[tuple[float, float]],
    replicates: np.ndarray | None = None,
) -> tuple[float, tuple[float, float]]:
    """One seed: its own estimate and document interval (which cannot speak for another seed);
    several: their mean and the seed-level t interval, the document variance the seeds share
    taken from `replicates` (S, B) on shared resamples, else bounded from each seed's interval."""
    if len(points) == 1:
        return points[0], cis[0]
    doc_se = None if replicates is not None else [interval_standard_error(ci) for ci in cis]
    combined = seed_interval(points, replicates, doc_se)
    return combined.mean, combined.ci


def seed_note(counts: Counter[str], n: int, interval: bool = True) -> str:
    """What the seeds say, and what the interval is over."""
    if n < 2:
        if not interval:
            return " One seed: whether another training seed would agree is not known."
        return (
            " One seed: the interval is over eval documents only; it cannot say whether "
            "another training seed would agree."
        )
    parts = ", ".join(f"{verdict} in {k} of {n}" for verdict, k in counts.most_common())
    if not interval:
        return f" Over {n} seeds: {parts}."
    return (
        f" Over {n} seeds: {parts}; the interval is a t interval on {n - 1} degrees of freedom "
        "over the seeds' values, widened by the document variance they share."
    )
