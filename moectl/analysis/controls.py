"""Router controls that hold the trained body fixed and change only the gate (issue 14, s. 2).

The init-model control compares whole models (body and gate at step 0), so it cannot tell what
the *router* did: a trained body can separate the domains well enough that even a random gate
routes by domain. These controls read each MoE layer's input during the evaluation's one
forward pass (a forward pre-hook, float32: the tensor the gate sees) and route it through
- the layer's init gate (the frozen-gate control, recorded like the trained routing and
  compared by the paired bootstrap in `LayerRouting.analyse`),
- n gates drawn exactly as the init draws them (N(0, initializer_range), float32), counted per
  batch with all gates in one matmul, so no hidden state outlives its batch,
- and a linear domain probe, the ceiling of how much domain routing the representation allows.
Every gate uses the model's own routing rule (`moectl.model.router.route`, noise 0, same top-k).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from moectl.analysis import bootstrap, metrics
from moectl.analysis.results import Probe, RandomGates
from moectl.analysis.routing import LayerRouting
from moectl.model.moe import MoEMLP
from moectl.model.router import Score, route

# The probe keeps at most this many tokens of each document in each batch (positions drawn with
# the seed), so its memory is at most blocks x 32 x hidden floats (192 blocks of a 768-wide
# model: 19 MB).
PROBE_TOKENS_PER_UNIT = 32
PROBE_STEPS = 300
PROBE_LR = 0.1
PROBE_WEIGHT_DECAY = 1e-3


@contextmanager
def capture_layer_inputs(layers: dict[int, MoEMLP]) -> Iterator[dict[int, Tensor]]:
    """While open, the returned dict holds each MoE layer's input of the latest forward as a
    (tokens, hidden) float32 tensor, flattened row-major like RouterStats."""
    captured: dict[int, Tensor] = {}

    def hook(index: int):
        def keep(_module: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
            hidden = args[0].detach()
            captured[index] = hidden.reshape(-1, hidden.shape[-1]).float()

        return keep

    handles = [layer.register_forward_pre_hook(hook(i)) for i, layer in layers.items()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def draw_gates(n: int, n_experts: int, hidden: int, std: float, seed: int) -> Tensor:
    """(n, E, H) float32 gates drawn as `MoEMLP.upcycle` draws a gate: N(0, 1) * std, where
    `apply_moe` passes std = the GPT-2 config's initializer_range (scratch and upcycled alike)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn((n, n_experts, hidden), generator=generator) * std).float()


def gate_experts(
    hidden: Tensor, gate: Tensor, top_k: int, score: Score = "softmax"
) -> tuple[Tensor, Tensor]:
    """(expert index (T, k), entropy (T,)) of `hidden` (T, H) routed through a gate (E, H) by
    the model's routing rule (its `score`) without noise."""
    routing = route(hidden @ gate.T.to(hidden.device), top_k, score=score)
    return routing.expert_index, routing.entropy


@dataclass
class LayerControls:
    """The gate controls of one MoE layer, fed the layer input batch by batch."""

    layer: int
    n_labels: int
    top_k: int
    random_gates: Tensor  # (n, E, H)
    frozen_gate: Tensor | None = None  # (E, H), the init gate
    seed: int = 0
    score: Score = "softmax"  # the layer's routing score, so every gate routes as the model does
    frozen: LayerRouting | None = None
    random_counts: np.ndarray | None = None  # (n, L, E)
    probe_hidden: list[np.ndarray] = field(default_factory=list)
    probe_labels: list[np.ndarray] = field(default_factory=list)
    probe_units: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        n, n_experts, _ = self.random_gates.shape
        self.random_counts = np.zeros((n, self.n_labels, n_experts), dtype=np.int64)
        if self.frozen_gate is not None:
            self.frozen = LayerRouting(self.layer, n_experts, self.top_k)
        self._rng = np.random.default_rng(self.seed + self.layer)
        self._flat_gates: Tensor | None = None

    def add(self, hidden: Tensor, domain_ids: np.ndarray, units: np.ndarray) -> None:
        """One batch: the layer input (T, H) and per token its domain and bootstrap unit (its
        document, numbered as given to LayerRouting.add): the frozen gate's routing is recorded
        by unit, and the probe splits and subsamples by it."""
        n, n_experts, width = self.random_gates.shape
        if self.frozen is not None and self.frozen_gate is not None:
            experts, entropy = gate_experts(hidden, self.frozen_gate, self.top_k, self.score)
            self.frozen.add(domain_ids, units, experts.cpu().numpy(), entropy.cpu().numpy())
        if self._flat_gates is None:
            self._flat_gates = self.random_gates.reshape(n * n_experts, width).to(hidden.device)
        logits = (hidden @ self._flat_gates.T).reshape(-1, n_experts)  # (T * n, E)
        chosen = route(logits, self.top_k, score=self.score).expert_index.reshape(
            len(hidden), n, self.top_k
        )
        chosen = chosen.cpu().numpy()
        labels = np.repeat(np.asarray(domain_ids, dtype=np.int64), self.top_k)
        for g in range(n):
            flat = labels * n_experts + chosen[:, g, :].ravel()
            counts = np.bincount(flat, minlength=self.n_labels * n_experts)
            self.random_counts[g] += counts.reshape(self.n_labels, n_experts)
        self._keep_probe_tokens(hidden, domain_ids, units)

    def _keep_probe_tokens(self, hidden: Tensor, domain_ids: np.ndarray, units: np.ndarray) -> None:
        keep = []
        for unit in np.unique(units):
            rows = np.flatnonzero(units == unit)
            take = min(PROBE_TOKENS_PER_UNIT, len(rows))
            keep.append(self._rng.choice(rows, size=take, replace=False))
        rows = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
        self.probe_hidden.append(hidden[torch.as_tensor(rows, device=hidden.device)].cpu().numpy())
        self.probe_labels.append(np.asarray(domain_ids, dtype=np.int64)[rows])
        self.probe_units.append(np.asarray(units, dtype=np.int64)[rows])

    def random_gate_score(self, trained_nmi: float) -> RandomGates:
        """The trained router's NMI among the random gates' (percentile: share below it, ties
        counting half, in percent)."""
        nmis = bootstrap.nmi_of_joints(self.random_counts)
        below = float((nmis < trained_nmi).sum() + 0.5 * (nmis == trained_nmi).sum())
        return RandomGates(
            n=len(nmis),
            mean=float(nmis.mean()),
            q05=float(np.quantile(nmis, 0.05)),
            q95=float(np.quantile(nmis, 0.95)),
            percentile=100.0 * below / len(nmis),
        )

    def probe_score(self) -> Probe | None:
        """A softmax-regression domain probe fit on the tokens of half of each domain's units
        and scored on the rest; None when some domain has fewer than two units."""
        hidden = np.concatenate(self.probe_hidden)
        labels = np.concatenate(self.probe_labels)
        units = np.concatenate(self.probe_units)
        train_units, test_units = split_units(labels, units, self.seed)
        if not len(train_units) or not len(test_units):
            return None
        train = np.isin(units, train_units)
        test = np.isin(units, test_units)
        predicted = fit_probe(hidden[train], labels[train], hidden[test], self.n_labels, self.seed)
        truth = labels[test]
        counts = metrics.count_matrix(truth, predicted[:, None], self.n_labels, self.n_labels)
        return Probe(
            accuracy=float((predicted == truth).mean()),
            nmi=metrics.normalized_mi(counts),
            chance=float(np.bincount(truth, minlength=self.n_labels).max() / len(truth)),
            train_documents=len(train_units),
            test_documents=len(test_units),
        )


def split_units(labels: np.ndarray, units: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train units, test units): each domain's units shuffled with `seed` and halved (the
    test half gets the odd one); empty arrays when a domain has fewer than two units."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        own = np.unique(units[labels == label])
        if len(own) < 2:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        own = rng.permutation(own)
        half = len(own) // 2
        train.extend(own[:half])
        test.extend(own[half:])
    return np.asarray(train, np.int64), np.asarray(test, np.int64)


def fit_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_labels: int, seed: int
) -> np.ndarray:
    """Predicted labels of `test_x` from a linear softmax classifier trained on (train_x,
    train_y): features standardized by the training tokens, PROBE_STEPS full-batch Adam steps
    with a little weight decay, seeded (so the same inputs give the same probe)."""
    x = torch.as_tensor(train_x, dtype=torch.float32)
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    x = (x - mean) / std
    y = torch.as_tensor(train_y, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn((x.shape[1], n_labels), generator=generator) * 0.01).requires_grad_()
    bias = torch.zeros(n_labels, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=PROBE_LR, weight_decay=PROBE_WEIGHT_DECAY)
    with torch.enable_grad():
        for _ in range(PROBE_STEPS):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ weight + bias, y)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        test = (torch.as_tensor(test_x, dtype=torch.float32) - mean) / std
        return (test @ weight + bias).argmax(dim=-1).numpy()
