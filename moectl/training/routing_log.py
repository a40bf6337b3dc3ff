"""Accumulates router assignments between router-log steps and turns them into routing.jsonl rows.

After every forward the trainer hands over each MoE layer's `Assignment`; this keeps only counts
(one index_add per layer) and entropy sums, so logging costs nothing next to the forward pass, and
the counts can be summed across DDP ranks before a row is written. The sums live on the model's
device and are read on the host only when a row is written: a step never waits for the GPU.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from moectl.analysis.metrics import normalized_mi


class _Stats(Protocol):
    expert_index: torch.Tensor
    entropy: torch.Tensor


class RoutingAccumulator:
    """Expert assignment counts per layer, overall and per domain, since the last row."""

    def __init__(
        self,
        layers: list[int],
        n_experts: int,
        domains: list[str],
        device: torch.device | str = "cpu",
    ) -> None:
        self.layers = list(layers)
        self.n_experts = n_experts
        self.domains = list(domains)
        self.device = torch.device(device)
        # MPS has no float64; float32 counts stay exact up to 16.7M assignments per row.
        self.dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.reset()

    def reset(self) -> None:
        n_domains, n_experts = len(self.domains), self.n_experts
        zeros = {"dtype": self.dtype, "device": self.device}
        self.counts = {layer: torch.zeros(n_domains, n_experts, **zeros) for layer in self.layers}
        self.entropy_sum = {layer: torch.zeros(n_domains, **zeros) for layer in self.layers}
        self.tokens = torch.zeros(n_domains, **zeros)

    def update(self, stats: dict[int, _Stats], token_domain: torch.Tensor) -> None:
        """Add one forward's assignments; `token_domain` (T,) is each routed token's domain id.

        index_add rather than bincount: bincount reads its input's maximum on the host.
        """
        token_domain = token_domain.reshape(-1).to(self.device, torch.long)
        ones = {"dtype": self.dtype, "device": self.device}
        self.tokens.index_add_(0, token_domain, torch.ones(token_domain.shape[0], **ones))
        for layer in self.layers:
            layer_stats = stats[layer]
            index = layer_stats.expert_index.to(self.device)
            cells = (token_domain.unsqueeze(1) * self.n_experts + index).reshape(-1)
            self.counts[layer].view(-1).index_add_(0, cells, torch.ones(cells.shape[0], **ones))
            entropy = layer_stats.entropy.detach().reshape(-1).to(self.device, self.dtype)
            self.entropy_sum[layer].index_add_(0, token_domain, entropy)

    def tensors(self) -> list[torch.Tensor]:
        """Every accumulated tensor, in a fixed order (for an all_reduce across ranks)."""
        return (
            [self.tokens]
            + [self.counts[k] for k in self.layers]
            + [self.entropy_sum[k] for k in self.layers]
        )

    def row(self, step: int, balance: dict[int, dict[str, float]] | None = None) -> dict[str, Any]:
        """The routing.jsonl row for the tokens seen since the last reset (without `collapse`).

        Each layer keeps its domain x expert assignment counts and the NMI(domain; expert) they
        give, so specialization over training is exact from the log, with no pass over the data;
        `balance` adds each layer's balancing-scheme state (bias range, global f_i).
        """
        state = self.state_dict()  # one read from the device
        layers: dict[str, Any] = {}
        token_counts = state["tokens"]
        tokens = token_counts.sum()
        for layer in self.layers:
            counts, entropy_sum = state["counts"][layer], state["entropy_sum"][layer]
            total = counts.sum()
            fractions = counts.sum(0) / total if total > 0 else torch.zeros(self.n_experts)
            domain_fractions, domain_entropy = {}, {}
            for d, domain in enumerate(self.domains):
                domain_total = counts[d].sum()
                if domain_total > 0:
                    domain_fractions[domain] = (counts[d] / domain_total).tolist()
                    domain_entropy[domain] = float(entropy_sum[d] / token_counts[d])
            joint = counts.round().long()
            layers[str(layer)] = {
                "counts": joint.tolist(),
                "nmi": normalized_mi(joint.numpy()),
                "fractions": fractions.tolist(),
                "domain_fractions": domain_fractions,
                "entropy": float(entropy_sum.sum() / tokens) if tokens > 0 else 0.0,
                "domain_entropy": domain_entropy,
                "max_fraction": float(fractions.max()) if total > 0 else 0.0,
                "balance": (balance or {}).get(layer, {}),
            }
        return {"step": step, "layers": layers}

    def max_fractions(self) -> dict[int, float]:
        """Busiest expert's share per layer (0 for a layer that saw no tokens)."""
        shares = {}
        for layer in self.layers:
            counts = self.counts[layer].sum(0).cpu()
            total = counts.sum()
            shares[layer] = float(counts.max() / total) if total > 0 else 0.0
        return shares

    def state_dict(self) -> dict[str, Any]:
        """float64 CPU copies (checkpoints do not depend on the device that wrote them)."""

        def host(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to("cpu", torch.float64, copy=True)

        return {
            "tokens": host(self.tokens),
            "counts": {k: host(v) for k, v in self.counts.items()},
            "entropy_sum": {k: host(v) for k, v in self.entropy_sum.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def device(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(self.device, self.dtype, copy=True)

        self.tokens = device(state["tokens"])
        self.counts = {int(k): device(v) for k, v in state["counts"].items()}
        self.entropy_sum = {int(k): device(v) for k, v in state["entropy_sum"].items()}
