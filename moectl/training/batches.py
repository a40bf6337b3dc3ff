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


class DomainBlockSampler:
    """Batches drawn from one domain at a time, the domains taking turns batch by batch.

    Each domain has its own seeded epoch permutations (a domain's short tail is skipped, as in
    BlockSampler), so the order is a pure function of (seed, turn, each domain's epoch and
    position) and resumes exactly. With grad_accum a multiple of the number of domains every
    optimizer step sees each domain equally.
    """

    def __init__(self, domain_ids: np.ndarray, batch_size: int, seed: int) -> None:
        self.domains = [np.flatnonzero(domain_ids == d) for d in np.unique(domain_ids)]
        short = [len(blocks) for blocks in self.domains if len(blocks) < batch_size]
        if short:
            raise TrainingError(
                f"a domain has {min(short)} training blocks, fewer than one batch of "
                f"{batch_size}, so train.batch_mixing=domain cannot draw a batch from it",
                hint="prepare a larger corpus (data.size_mb) or lower train.batch_size",
            )
        self.batch_size = batch_size
        self.seed = seed
        self.turn = 0
        self.epochs = [0] * len(self.domains)
        self.positions = [0] * len(self.domains)
        self._orders = [self._permutation(d, 0) for d in range(len(self.domains))]

    def _permutation(self, domain: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, domain])
        return self.domains[domain][rng.permutation(len(self.domains[domain]))]

    def next_batch(self) -> list[int]:
        d = self.turn % len(self.domains)
        self.turn += 1
        if self.positions[d] + self.batch_size > len(self.domains[d]):
            self.epochs[d] += 1
            self.positions[d] = 0
            self._orders[d] = self._permutation(d, self.epochs[d])
        batch = self._orders[d][self.positions[d] : self.positions[d] + self.batch_size]
        self.positions[d] += self.batch_size
        return batch.tolist()

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "turn": self.turn,
            "epochs": list(self.epochs),
            "positions": list(self.positions),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.turn = int(state["turn"])
        self.epochs = [int(e) for e in state["epochs"]]
        self.positions = [int(p) for p in state["positions"]]
        self._orders = [self._permutation(d, e) for d, e in enumerate(self.epochs)]


def train_sampler(
    mixing: str, domain_ids: np.ndarray, batch_size: int, seed: int
) -> BlockSampler | DomainBlockSampler:
    """The sampler train.batch_mixing names for a split whose blocks have `domain_ids`."""
    if mixing == "domain":
        return DomainBlockSampler(domain_ids, batch_size, seed)
    return BlockSampler(len(domain_ids), batch_size, seed)


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
