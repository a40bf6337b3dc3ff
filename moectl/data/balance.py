"""Token balancing across domains and the imbalance warning (DESIGN.md section 2, Data)."""

from __future__ import annotations

import numpy as np


def balanced_rows(sizes: dict[str, int], seed: int, salt: int = 0) -> dict[str, np.ndarray]:
    """Per domain, the rows (ascending) that balancing keeps: every domain cut to the smallest
    domain's block count.

    Blocks are shuffled before truncating, so the kept blocks sample the whole domain rather
    than its first documents (which for some sources are all from one dataset or file). The
    rows index the blocks and their document column alike, which keeps the two aligned.
    """
    smallest = min(sizes.values())
    kept = {}
    for index, (domain, size) in enumerate(sizes.items()):
        order = np.random.default_rng([seed, salt, index]).permutation(size)
        kept[domain] = np.sort(order[:smallest])
    return kept


def imbalance_warning(tokens: dict[str, int], ratio: float, balanced: bool) -> str | None:
    """A warning when the largest domain has more than `ratio` times the smallest's tokens."""
    largest = max(tokens, key=tokens.__getitem__)
    smallest = min(tokens, key=tokens.__getitem__)
    if tokens[smallest] == 0 or tokens[largest] / tokens[smallest] <= ratio:
        return None
    factor = tokens[largest] / tokens[smallest]
    counts = ", ".join(f"{d} {n:,}" for d, n in tokens.items())
    message = f"train domains differ by {factor:.1f}x in tokens ({counts})"
    if balanced:
        return f"{message}; balancing cut every domain to {smallest}'s {tokens[smallest]:,}"
    return f"{message}; pass --balance-tokens to cut every domain to the smallest"
