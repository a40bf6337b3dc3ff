"""Token balancing across domains and the imbalance warning (DESIGN.md section 2, Data)."""

from __future__ import annotations

import numpy as np


def balance_blocks(
    blocks: dict[str, np.ndarray], seed: int, salt: int = 0
) -> dict[str, np.ndarray]:
    """Every domain cut to the smallest domain's block count.

    Blocks are shuffled before truncating, so the kept blocks sample the whole domain rather
    than its first documents (which for some sources are all from one dataset or file).
    """
    smallest = min(len(b) for b in blocks.values())
    balanced = {}
    for index, (domain, domain_blocks) in enumerate(blocks.items()):
        order = np.random.default_rng([seed, salt, index]).permutation(len(domain_blocks))
        balanced[domain] = domain_blocks[np.sort(order[:smallest])]
    return balanced


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
