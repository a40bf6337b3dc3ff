"""Router controls that hold the trained body fixed and change only the gate (issue 14, s. 2).

The init-model control compares whole models (body and gate at step 0), so it cannot tell what
the *router* did: a trained body can separate the domains well enough that even a random gate
routes by domain. These controls read each MoE layer's input during the evaluation's one
forward pass (a forward pre-hook, float32: the tensor the gate sees) and route it through
- the layer's init gate (the frozen-gate control, recorded like the trained routing and
  compared by the paired bootstrap in `LayerRouting.analyse`),
- n gates drawn exactly as the init draws them (N(0, initializer_range), float32, rows shared
  by a fine-grained expert's slices), counted per batch and per document with the gates in one
  matmul per chunk (at most LOGIT_BUDGET logits at once), so no hidden state outlives its
  batch: the gate null (`gate_null`), the distribution a router claim is tested against,
- the same gates balanced: per-expert logit offsets fitted so each gate's expert load matches
  the trained router's, fitted and scored on at most BALANCE_TOKENS of the probe's tokens,
- and a linear domain probe, the ceiling of how much domain routing the representation allows.
Every gate uses the model's own routing rule (`moectl.model.router.route`, noise 0, same top-k,
and under a bias scheme the learned selection bias, as the trained router chooses).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from moectl.analysis import metrics
from moectl.analysis.gate_null import gate_rank, percentile_among
from moectl.analysis.nmi_bias import N_CORRECTION_PERMUTATIONS, corrected_nmi
from moectl.analysis.results import GateNull, Probe
from moectl.analysis.routing import LayerRouting
from moectl.model.moe import MoEMLP
from moectl.model.router import Score, route

# The probe keeps at most this many tokens of each document in each batch (positions drawn with
# the seed), so its memory is at most blocks x 32 x hidden floats (192 blocks of a 768-wide
# model: 19 MB). The balanced gate null draws its tokens from this subsample.
PROBE_TOKENS_PER_UNIT = 32
LOGIT_BUDGET = 1 << 24
"""Most gate logits (float32) held at once: 64 MB, whatever the model's width or experts."""
BALANCE_TOLERANCE = 0.01
"""A balanced gate's largest |expert share - the trained router's share| when the fit stops."""
BALANCE_TOKENS = 2048
"""Tokens the balanced null fits and routes, drawn (seeded) from the probe's subsample: the
offsets are E numbers per gate, and every router it compares routes the same tokens; the
fit's time grows with them (the quickstart's 192 blocks give the probe ~4,900)."""
BALANCE_SWEEPS = 20
"""Most sweeps of exact one-expert offset updates."""
UNREACHABLE_MARGIN = 1e4
"""The margin of a token an expert gets (or never gets) whatever its offset, under a selection
bias: past any offset a fit can need (gate logits are O(1))."""
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


def draw_gates(
    n: int, n_experts: int, hidden: int, std: float, seed: int, granularity: int = 1
) -> Tensor:
    """(n, E, H) float32 gates drawn as `MoEMLP.upcycle` draws a gate: N(0, 1) * std, where
    `apply_moe` passes std = the GPT-2 config's initializer_range (scratch and upcycled alike);
    with a fine-grained split, E / granularity rows each repeated for its slices."""
    generator = torch.Generator().manual_seed(seed)
    rows = n_experts // granularity
    gates = (torch.randn((n, rows, hidden), generator=generator) * std).float()
    return gates.repeat_interleave(granularity, dim=1) if granularity > 1 else gates


def gate_experts(
    hidden: Tensor,
    gate: Tensor,
    top_k: int,
    score: Score = "softmax",
    selection_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(expert index (T, k), entropy (T,)) of `hidden` (T, H) routed through a gate (E, H) by
    the model's routing rule (its `score`, its learned `selection_bias`) without noise."""
    routing = route(
        hidden @ gate.T.to(hidden.device), top_k, score=score, selection_bias=selection_bias
    )
    return routing.expert_index, routing.entropy


def choose(
    logits: Tensor, top_k: int, score: Score, selection_bias: Tensor | None = None
) -> Tensor:
    """(..., k) experts chosen from logits (..., E) by the model's rule, any leading shape.

    Without a selection bias the rule picks the top-k scores, and softmax and sigmoid scores
    both rank the experts as their logits do, so the top-k logits are the same choice without
    computing the scores (most of the gate null's time; they differ only where two scores
    round to the same float, measured 1 token in 200,000 at top-2); with one, `route` adds it.
    Top-1 is an argmax, which torch runs in a fraction of a top-k's time over the same logits."""
    if selection_bias is None:
        if top_k == 1:
            return logits.argmax(dim=-1, keepdim=True)
        return logits.topk(top_k, dim=-1).indices
    n_experts = logits.shape[-1]
    flat = route(logits.reshape(-1, n_experts), top_k, score=score, selection_bias=selection_bias)
    return flat.expert_index.reshape(*logits.shape[:-1], top_k)


def expert_load(chosen: Tensor, n_experts: int) -> Tensor:
    """(..., E) share of the top-k assignments in `chosen` (..., T, k) that each expert got."""
    flat = chosen.reshape(*chosen.shape[:-2], -1)
    counts = torch.zeros((*flat.shape[:-1], n_experts), device=chosen.device)
    counts.scatter_add_(-1, flat, torch.ones_like(flat, dtype=counts.dtype))
    return counts / flat.shape[-1]


def fit_offsets(
    logits: Tensor,
    target: Tensor,
    top_k: int,
    score: Score = "softmax",
    selection_bias: Tensor | None = None,
    tolerance: float = BALANCE_TOLERANCE,
) -> tuple[Tensor, Tensor]:
    """(offsets (G, E), error (G,)): per-expert logit offsets that give each gate's logits
    (G, T, E) the expert load `target` (E,) on these tokens under the model's rule, and each
    gate's largest |share - target| at the end (`tolerance` is where fitting stops).

    With the other experts' offsets fixed, whether expert e gets token t is monotone in e's
    offset, so the offset that gives e its target share is a quantile of per-token margins
    (`_margins`). Sweeps of these exact one-expert updates (Gauss-Seidel) meet the tolerance in
    2-3 sweeps on the quickstart's layers (top-1 and top-2, one layer 70% on one expert), and
    under a learned selection bias that outweighs the random gates' scores."""
    n_gates, n_tokens, n_experts = logits.shape
    rule = (score, selection_bias)
    wanted = torch.round(target * n_tokens * top_k).long().clamp(0, n_tokens).tolist()
    columns = logits.permute(2, 0, 1).contiguous()  # (E, G, T): one expert's logits contiguous
    offsets = torch.zeros(n_gates, n_experts, device=logits.device)
    error = _load_error(logits, offsets, target, top_k, *rule)
    for _ in range(BALANCE_SWEEPS):
        if bool((error <= tolerance).all()):
            break
        shifted = list(columns + offsets.T[:, :, None])
        for e in range(n_experts):
            margin = _margins(shifted, columns[e], e, top_k, *rule)
            offsets[:, e] = _quantile_offset(margin, wanted[e])
            shifted[e] = columns[e] + offsets[:, e, None]
        error = _load_error(logits, offsets, target, top_k, *rule)
    return offsets, error


def _load_error(logits: Tensor, offsets: Tensor, target: Tensor, top_k: int, *rule) -> Tensor:
    chosen = choose(logits + offsets[:, None], top_k, *rule)
    return (expert_load(chosen, len(target)) - target).abs().amax(dim=-1)


def _margins(
    shifted: list[Tensor],
    logit: Tensor,
    e: int,
    top_k: int,
    score: Score,
    selection_bias: Tensor | None,
) -> Tensor:
    """(G, T) margins m of expert e, whose unshifted logits are `logit`, given every expert's
    shifted logits `shifted` (E tensors (G, T)): e is among a token's top k exactly when
    m + e's offset > 0.

    - No selection bias: the choice is the top-k logits, so m = logit - the k-th largest of
      the others' shifted logits (from running top-k lists: the values a top-k over every
      token's E logits gives, at a fraction of its time).
    - Sigmoid scores s plus bias b: e beats j iff s_e > s_j + b_j - b_e = u_j, so
      m = logit - logit_fn(k-th largest u_j).
    - Softmax scores plus bias: with x = exp(e's shifted logit) and the others' a_j (scaled
      by the token's largest), e beats j iff x (1 + b_e - b_j) > a_j + (b_j - b_e) A, A the
      sum of the a_j: x > t_j, or never when 1 + b_e - b_j <= 0; so m = logit - log(k-th
      largest t_j) - the scale. Where no offset changes the choice, m is +-UNREACHABLE_MARGIN.
    """
    others = [value for j, value in enumerate(shifted) if j != e]
    if selection_bias is None:
        return logit - _kth_largest(others, top_k)
    bias = selection_bias.to(logit.device)
    other_bias = [bias[j] for j in range(len(shifted)) if j != e]
    if score == "sigmoid":
        bound = _kth_largest(
            [v.sigmoid() + b - bias[e] for v, b in zip(others, other_bias, strict=True)], top_k
        )
        threshold = torch.logit(bound.clamp(1e-12, 1 - 1e-7))
        always, never = bound <= 0, bound >= 1
    else:
        scale = torch.stack(others).amax(dim=0)
        shares = [torch.exp(v - scale) for v in others]
        total = torch.stack(shares).sum(dim=0)
        bounds = []
        for share, b in zip(shares, other_bias, strict=True):
            room = 1 + bias[e] - b
            bounds.append(
                (share + (b - bias[e]) * total) / room
                if room > 0
                else torch.full_like(share, torch.inf)
            )
        bound = _kth_largest(bounds, top_k)
        threshold = scale + torch.log(bound.clamp_min(torch.finfo(bound.dtype).tiny))
        always, never = bound <= 0, torch.isinf(bound)
    margin = logit - threshold
    margin = torch.where(always, UNREACHABLE_MARGIN, margin)
    return torch.where(never, -UNREACHABLE_MARGIN, margin)


def _kth_largest(values: list[Tensor], k: int) -> Tensor:
    """Elementwise k-th largest of `values` (tensors of one shape), by running top-k lists."""
    largest: list[Tensor] = []
    for value in values:
        largest = _insert_largest(largest, value, k)
    return largest[k - 1]


def _insert_largest(largest: list[Tensor], value: Tensor, k: int) -> list[Tensor]:
    """The k largest values so far, elementwise and in descending order, with `value` added:
    one insertion step of a sorting network (exact: only max and min, no arithmetic)."""
    out = []
    for kept in largest:
        out.append(torch.maximum(kept, value))
        value = torch.minimum(kept, value)
    if len(out) < k:
        out.append(value)
    return out


def _quantile_offset(margin: Tensor, n: int) -> Tensor:
    """(G,) offsets that put exactly n of each row's margins (G, T) above 0 (ties aside):
    halfway between the n-th and (n+1)-th largest; all or none when n is T or 0."""
    n_tokens = margin.shape[-1]
    if n == 0:
        top = margin.amax(dim=-1)
        return -top - top.abs() - 1.0
    if n >= n_tokens:
        low = margin.amin(dim=-1)
        return -low + low.abs() + 1.0
    if n <= n_tokens // 2:
        pair = margin.topk(n + 1, dim=-1).values[..., -2:]  # n-th and (n+1)-th largest
    else:
        pair = margin.topk(n_tokens - n + 1, dim=-1, largest=False).values[..., -2:]
    return -pair.mean(dim=-1)


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
    trained_gate: Tensor | None = None  # (E, H): the balanced null's target load on the subsample
    selection_bias: Tensor | None = None  # (E,) learned; every gate chooses with it when given
    frozen: LayerRouting | None = None
    gate_units: np.ndarray | None = None  # (n, units so far, E) per-document counts, in memory
    probe_hidden: list[np.ndarray] = field(default_factory=list)
    probe_labels: list[np.ndarray] = field(default_factory=list)
    probe_units: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        n, n_experts, _ = self.random_gates.shape
        self.gate_units = np.zeros((n, 0, n_experts), dtype=np.int32)
        if self.frozen_gate is not None:
            self.frozen = LayerRouting(self.layer, n_experts, self.top_k)
        self._rng = np.random.default_rng(self.seed + self.layer)
        self._flat_gates: Tensor | None = None

    def add(self, hidden: Tensor, domain_ids: np.ndarray, units: np.ndarray) -> None:
        """One batch: the layer input (T, H) and per token its domain and bootstrap unit (its
        document, numbered as given to LayerRouting.add): the frozen gate's routing is recorded
        by unit, the random gates count per unit, and the probe splits and subsamples by it."""
        n, n_experts, width = self.random_gates.shape
        if self.frozen is not None and self.frozen_gate is not None:
            experts, entropy = gate_experts(
                hidden, self.frozen_gate, self.top_k, self.score, self.selection_bias
            )
            self.frozen.add(domain_ids, units, experts.cpu().numpy(), entropy.cpu().numpy())
        if self._flat_gates is None:
            self._flat_gates = self.random_gates.reshape(n * n_experts, width).to(hidden.device)
        present, local = np.unique(np.asarray(units, dtype=np.int64), return_inverse=True)
        self._grow(int(present.max()) + 1)
        per_chunk = max(1, LOGIT_BUDGET // max(1, len(hidden) * n_experts))
        for g0 in range(0, n, per_chunk):
            g1 = min(n, g0 + per_chunk)
            logits = hidden @ self._flat_gates[g0 * n_experts : g1 * n_experts].T
            chosen = choose(
                logits.reshape(len(hidden), g1 - g0, n_experts),
                self.top_k,
                self.score,
                self.selection_bias,
            )
            self.gate_units[g0:g1, present] += unit_expert_counts(
                chosen.permute(1, 0, 2).cpu().numpy(), local, len(present), n_experts
            )
        self._keep_probe_tokens(hidden, domain_ids, units)

    def _grow(self, n_units: int) -> None:
        """Room for units 0..n_units-1 (capacity doubles, so growing costs O(units) copies)."""
        n, have, n_experts = self.gate_units.shape
        if n_units > have:
            extra = np.zeros((n, max(n_units, 2 * have) - have, n_experts), np.int32)
            self.gate_units = np.concatenate([self.gate_units, extra], axis=1)

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

    def gate_null(
        self,
        trained: np.ndarray,
        strata: np.ndarray,
        frozen: np.ndarray | None = None,
        n_permutations: int = N_CORRECTION_PERMUTATIONS,
    ) -> GateNull:
        """The trained router's per-document counts `trained` (U, E) against the gates' on the
        same units (`strata`: each unit's domain), plain and (with the trained gate) balanced;
        `frozen` (U, E), the init gate's counts, is placed among the gates (it is one draw),
        and so is the init gate balanced like them."""
        n_units = len(strata)
        self._grow(n_units)
        gates = self.gate_units[:, :n_units]
        kw = {"n_permutations": n_permutations, "seed": self.seed}
        plain = gate_rank(trained, gates, strata, self.n_labels, **kw)
        fields: dict = {}
        if frozen is not None:
            fields["frozen_gate_percentile"] = self._percentile(frozen, gates, strata, kw)
        balanced = self._balanced(n_units)
        if balanced is not None:
            own, counts, frozen_counts, tokens, error = balanced
            rank = gate_rank(own, counts, strata, self.n_labels, **kw)
            fields.update(balanced=rank, balanced_tokens=tokens, balance_error=error)
            if frozen_counts is not None:
                fields["frozen_gate_balanced_percentile"] = self._percentile(
                    frozen_counts, counts, strata, kw
                )
        return GateNull(
            n=len(gates),
            p_value=max(plain.p_value, fields["balanced"].p_value)
            if "balanced" in fields
            else plain.p_value,
            plain=plain,
            selection_bias=self.selection_bias is not None,
            n_permutations=n_permutations,
            **fields,
        )

    def _percentile(
        self, router: np.ndarray, gates: np.ndarray, strata: np.ndarray, kw: dict
    ) -> float:
        """A router's corrected NMI among the gates' (percent below, ties half)."""
        _, nulls = corrected_nmi(gates, strata, self.n_labels, kw["n_permutations"], kw["seed"])
        _, value = corrected_nmi(router, strata, self.n_labels, kw["n_permutations"], kw["seed"])
        return percentile_among(float(value), nulls)

    def _balanced(
        self, n_units: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int, float] | None:
        """Per-document counts on BALANCE_TOKENS of the probe's token subsample of the trained
        router (U, E),
        of every random gate offset to the trained router's expert load there (n, U, E) and of
        the init gate offset the same way (or None), the tokens, and the largest load error."""
        if not self.probe_hidden or self.trained_gate is None:
            return None
        hidden = np.concatenate(self.probe_hidden)
        rng = np.random.default_rng([self.seed, self.layer])
        rows = np.sort(rng.permutation(len(hidden))[:BALANCE_TOKENS])
        hidden = torch.as_tensor(hidden[rows])
        units = np.concatenate(self.probe_units)[rows]
        n, n_experts, _ = self.random_gates.shape
        bias = None if self.selection_bias is None else self.selection_bias.cpu()
        trained = choose(hidden @ self.trained_gate.cpu().T, self.top_k, self.score, bias)
        target = expert_load(trained, n_experts)
        gates = self.random_gates
        if self.frozen_gate is not None:
            gates = torch.cat([gates, self.frozen_gate.cpu()[None]])
        counts = np.zeros((len(gates), n_units, n_experts), dtype=np.int64)
        error = 0.0
        per_chunk = max(1, LOGIT_BUDGET // max(1, len(hidden) * n_experts))
        for g0 in range(0, len(gates), per_chunk):
            logits = torch.einsum("th,geh->gte", hidden, gates[g0 : g0 + per_chunk])
            offsets, gap = fit_offsets(logits, target, self.top_k, self.score, bias)
            chosen = choose(logits + offsets[:, None], self.top_k, self.score, bias)
            counts[g0 : g0 + per_chunk] = unit_expert_counts(
                chosen.numpy(), units, n_units, n_experts
            )
            error = max(error, float(gap.max()))
        own = unit_expert_counts(trained.numpy()[None], units, n_units, n_experts)[0]
        frozen = counts[n] if self.frozen_gate is not None else None
        return own, counts[:n], frozen, len(hidden), error

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


def unit_expert_counts(
    chosen: np.ndarray, units: np.ndarray, n_units: int, n_experts: int
) -> np.ndarray:
    """(G, n_units, E) top-k assignment counts per router and unit from chosen experts
    (G, T, k) and each token's unit (T,) in 0..n_units-1: one bincount for all routers."""
    n_routers, _, top_k = chosen.shape
    unit = np.repeat(np.asarray(units, dtype=np.int64), top_k)
    flat = (np.arange(n_routers)[:, None] * n_units + unit[None]) * n_experts
    flat = flat + chosen.reshape(n_routers, -1)
    size = n_routers * n_units * n_experts
    return np.bincount(flat.ravel(), minlength=size).reshape(n_routers, n_units, n_experts)


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
