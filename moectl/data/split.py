"""Train/eval split at the text level, before packing, so no document lands in both splits."""

from __future__ import annotations

import math

import numpy as np

from moectl.config import DataConfig
from moectl.errors import DataError


def eval_count(n_texts: int, config: DataConfig) -> int:
    """min(max(eval_min_texts, eval_fraction * n), eval_max_fraction * n), and at least one.

    With the defaults: 10 texts, or 5% once that is more, but never above 10% of the texts.
    """
    wanted = max(config.eval_min_texts, math.ceil(config.eval_fraction * n_texts))
    return max(1, min(wanted, math.floor(config.eval_max_fraction * n_texts)))


def split_texts(
    domain: str, texts: list[str], config: DataConfig, domain_index: int
) -> tuple[list[str], list[str]]:
    """(train, eval) texts of one domain, drawn by a seeded shuffle of whole documents."""
    if len(texts) < 2:
        raise DataError(
            f"domain '{domain}' has {len(texts)} text, too few to split into train and eval",
            hint="add input texts (each file is one text), or raise --size-mb",
        )
    n_eval = eval_count(len(texts), config)
    order = np.random.default_rng([config.seed, domain_index]).permutation(len(texts))
    eval_texts = [texts[i] for i in order[:n_eval]]
    train_texts = [texts[i] for i in order[n_eval:]]
    return train_texts, eval_texts
