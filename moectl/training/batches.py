"""Which corpus blocks go into which batch: seeded epoch permutations and a fixed eval subset.

The order is a pure function of (seed, epoch, position), so the trainer checkpoints three
integers instead of an iterator, and a resumed run draws exactly the batches it would have drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from moectl.errors import TrainingError


class BlockSampler:
    """Global batches of block indices, one shuffled pass over the split per epoch.

    An epoch's tail shorter than a batch is skipped so no batch holds a block twice.
    """

    def __init__(self, n_blocks: int, batch_size: int, seed: int) -> None:
        if n_blocks < batch_size:
            raise TrainingError(
                f"the training split has {n_blocks} blocks, fewer than one batch of {batch_size}",
                hint="prepare a larger corpus (data.size_mb) or lower train.batch_size",
            )
        self.n_blocks = n_blocks
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)

    def next_batch(self) -> list[int]:
        if self.position + self.batch_size > self.n_blocks:
            self.epoch += 1
            self.position = 0
            self._order = self._permutation(self.epoch)
        batch = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return batch.tolist()

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._permutation(self.epoch)


def eval_subset(domain_ids: np.ndarray, max_blocks: int | None, seed: int) -> list[int]:
    """Indices of the eval blocks to score: all of them, or `max_blocks` spread over domains.

    Domains take turns (each in a seeded order), so a bounded eval still measures every domain
    on about the same number of blocks; the subset is the same at every eval of the run.
    """
    n = len(domain_ids)
    if max_blocks is None or max_blocks >= n:
        return list(range(n))
    rng = np.random.default_rng([seed, 1])
    queues = [
        rng.permutation(np.flatnonzero(domain_ids == d)).tolist() for d in np.unique(domain_ids)
    ]
    chosen: list[int] = []
    while len(chosen) < max_blocks:
        for queue in queues:
            if queue and len(chosen) < max_blocks:
                chosen.append(queue.pop(0))
    return sorted(chosen)


def fetch(
    dataset: Any, indices: list[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids long (B, S), domain long (B,)) for `indices` of a numpy-formatted split."""
    rows = dataset[indices]
    return _to_device(rows["input_ids"], device), _to_device(rows["domain"], device)


def _to_device(array: Any, device: torch.device) -> torch.Tensor:
    """Long tensor on `device`; to CUDA through pinned memory, so the copy does not block."""
    tensor = torch.as_tensor(array).long()
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
