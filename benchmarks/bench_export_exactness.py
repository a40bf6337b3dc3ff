"""How far a native transformers MoE export's logits are from moectl's at a released model's
shape (random weights: the hub is unreachable here).

Builds a Qwen3-0.6B-shaped and a SmolLM2-135M-shaped model, upcycles part of their layers with
perturbed experts, and prints the export's self-check figure: the largest |logit| difference
between moectl's model and the native class (Qwen3-MoE, Qwen2-MoE) on the probe batch. The tests
check 1e-5 on tiny models; this measures what accumulates over 28-30 layers in float32.

    python benchmarks/bench_export_exactness.py
"""

from __future__ import annotations

import time

import torch
from transformers import AutoConfig

from moectl.config import MoEConfig
from moectl.interop.export import export_for
from moectl.model.arch import family
from moectl.model.surgery import apply_moe

SHAPES = {
    "Qwen3-0.6B": (
        "qwen3",
        {
            "vocab_size": 151936,
            "hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 40960,
            "rope_theta": 1000000,
            "tie_word_embeddings": True,
        },
    ),
    "SmolLM2-135M": (
        "llama",
        {
            "vocab_size": 49152,
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "max_position_embeddings": 8192,
            "rope_theta": 100000,
            "tie_word_embeddings": True,
        },
    ),
}


def main() -> None:
    for name, (model_type, shape) in SHAPES.items():
        torch.manual_seed(0)
        arch = family(model_type)
        model = arch.build(AutoConfig.for_model(model_type, **shape))
        layers = shape["num_hidden_layers"]
        moe = MoEConfig(
            enabled=True, last_n=layers // 4, n_experts=4, top_k=2, perturbation_std=0.5
        )
        apply_moe(model, moe, seed=0)
        start = time.perf_counter()
        _, plan = export_for(model.eval(), moe, moe.resolve_layers(layers))
        print(
            f"{name}: {layers} layers, MoE in the last {layers // 4} (4 experts, top-2) -> "
            f"{plan.architecture}: max |logit difference| {plan.logits_difference:.2e} "
            f"({time.perf_counter() - start:.0f} s)"
        )


if __name__ == "__main__":
    main()
