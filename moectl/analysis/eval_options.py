"""The knobs of one evaluation (`EvaluationOptions`): split, sample size, batch, device, and the
sizes of the router controls, the bootstrap and the functional test."""

from __future__ import annotations

from dataclasses import dataclass

from moectl.analysis.bootstrap import N_BOOTSTRAP
from moectl.analysis.gate_null import N_GATES


@dataclass
class EvaluationOptions:
    """Knobs of one evaluation; the defaults suit a CPU study."""

    split: str = "eval"
    max_blocks: int | None = None
    batch_size: int = 8
    device: str = "auto"
    n_permutations: int = 20
    n_bootstrap: int = N_BOOTSTRAP
    seed: int = 0
    samples_per_domain: int = 1
    sample_tokens: int = 48
    code_domains: tuple[str, ...] = ("code",)
    math_domains: tuple[str, ...] = ("math",)
    random_gates: int = N_GATES  # gates drawn as the init draws them, per MoE layer (>= 64)
    functional: bool = False  # the functional test: (1 + draws) more passes per layer and m
    functional_draws: int = 16  # random expert sets per (domain, layer, m) (>= 16)
