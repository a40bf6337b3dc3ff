"""Accumulates router assignments between router-log steps and turns them into routing.jsonl rows.

After every forward the trainer hands over the MoE layers' `RouterStats`; this keeps only counts
(one bincount per layer) and entropy sums, so logging costs nothing next to the forward pass, and
the counts can be summed across DDP ranks before a row is written.
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

    def __init__(self, layers: list[int], n_experts: int, domains: list[str]) -> None:
        self.layers = list(layers)
        self.n_experts = n_experts
        self.domains = list(domains)
        self.reset()

    def reset(self) -> None:
        n_domains, n_experts = len(self.domains), self.n_experts
        self.counts = {
            layer: torch.zeros(n_domains, n_experts, dtype=torch.float64) for layer in self.layers
        }
        self.entropy_sum = {
            layer: torch.zeros(n_domains, dtype=torch.float64) for layer in self.layers
        }
        self.tokens = torch.zeros(n_domains, dtype=torch.float64)

    def update(self, stats: dict[int, _Stats], token_domain: torch.Tensor) -> None:
        """Add one forward's assignments; `token_domain` (T,) is each routed token's domain id."""
        token_domain = token_domain.reshape(-1).long()
        n_domains, n_experts = len(self.domains), self.n_experts
        domain_cpu = token_domain.cpu()
        self.tokens += torch.bincount(domain_cpu, minlength=n_domains).double()
        for layer in self.layers:
            layer_stats = stats[layer]
            index = layer_stats.expert_index
            top_k = index.shape[-1]
            flat = token_domain.to(index.device).repeat_interleave(top_k) * n_experts
            flat = flat + index.reshape(-1)
            counts = torch.bincount(flat, minlength=n_domains * n_experts)
            self.counts[layer] += counts.cpu().double().view(n_domains, n_experts)
            entropy = layer_stats.entropy.detach().reshape(-1).float().cpu().double()
            self.entropy_sum[layer] += torch.bincount(
                domain_cpu, weights=entropy, minlength=n_domains
            )

    def tensors(self) -> list[torch.Tensor]:
        """Every accumulated tensor, in a fixed order (for an all_reduce across ranks)."""
        return (
            [self.tokens]
            + [self.counts[k] for k in self.layers]
            + [self.entropy_sum[k] for k in self.layers]
        )

    def row(self, step: int) -> dict[str, Any]:
        """The routing.jsonl row for the tokens seen since the last reset (without `collapse`).

        Each layer keeps its domain x expert assignment counts and the NMI(domain; expert) they
        give, so specialization over training is exact from the log, with no pass over the data.
        """
        layers: dict[str, Any] = {}
        for layer in self.layers:
            counts = self.counts[layer]
            total = counts.sum()
            fractions = counts.sum(0) / total if total > 0 else torch.zeros(self.n_experts)
            tokens = self.tokens.sum()
            domain_fractions, domain_entropy = {}, {}
            for d, domain in enumerate(self.domains):
                domain_total = counts[d].sum()
                if domain_total > 0:
                    domain_fractions[domain] = (counts[d] / domain_total).tolist()
                    domain_entropy[domain] = float(self.entropy_sum[layer][d] / self.tokens[d])
            joint = counts.round().long()
            layers[str(layer)] = {
                "counts": joint.tolist(),
                "nmi": normalized_mi(joint.numpy()),
                "fractions": fractions.tolist(),
                "domain_fractions": domain_fractions,
                "entropy": float(self.entropy_sum[layer].sum() / tokens) if tokens > 0 else 0.0,
                "domain_entropy": domain_entropy,
                "max_fraction": float(fractions.max()) if total > 0 else 0.0,
            }
        return {"step": step, "layers": layers}

    def max_fractions(self) -> dict[int, float]:
        """Busiest expert's share per layer (0 for a layer that saw no tokens)."""
        shares = {}
        for layer in self.layers:
            counts = self.counts[layer].sum(0)
            total = counts.sum()
            shares[layer] = float(counts.max() / total) if total > 0 else 0.0
        return shares

    def state_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens.clone(),
            "counts": {k: v.clone() for k, v in self.counts.items()},
            "entropy_sum": {k: v.clone() for k, v in self.entropy_sum.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tokens = state["tokens"].clone()
        self.counts = {int(k): v.clone() for k, v in state["counts"].items()}
        self.entropy_sum = {int(k): v.clone() for k, v in state["entropy_sum"].items()}
