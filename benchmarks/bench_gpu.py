"""GPU training throughput: dense vs MoE top-1 / top-2 GPT-2 small, and host syncs per step.

The configuration of issue 9's table: GPT-2 small from scratch (12 layers, 768 wide, 50,257
vocabulary), block 512, batch 8, grad_accum 1, 8 experts in layers 8-11, bf16 autocast. Each
variant trains with the trainer's own step code (benchmarks/bench_train.py's Runner) on
synthetic tokens: warm-up steps, then timed steps with the GPU queue drained at both ends, then
a few steps under `torch.cuda.set_sync_debug_mode("warn")` to count host-device syncs per step.
Finishes in well under 8 minutes on an H100 (compiled variants take ~1 minute each to compile).

    python benchmarks/bench_gpu.py                 # eager
    python benchmarks/bench_gpu.py --compile       # also train.compile=true variants

Targets (issue 9): MoE top-1 <= 1.25x the dense step, top-2 <= 1.5x; top-1 >= 90k tokens/s;
dense with compile >= 200k tokens/s; 0 syncs per step.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
from bench_train import Runner

from moectl.config import resolve_run_config
from moectl.model.dispatch import grouped_mm_supported

GPT2_SMALL = [
    "model.n_layer=12",
    "model.n_embd=768",
    "model.n_head=12",
    "model.dropout=0.1",
    "data.block_size=512",
    "train.batch_size=8",
    "train.grad_accum=1",
    "train.precision=auto",
    "train.device=cuda",
]
MOE = ["moe.enabled=true", "moe.last_n=null", "moe.layers=[8,9,10,11]", "moe.n_experts=8"]


def count_syncs(runner: Runner, steps: int) -> float:
    """Host-device synchronizations per training step, as torch's sync debug mode sees them."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                runner.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    return len(syncs) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sync-steps", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time compiled models")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    device = torch.device("cuda")
    variants = {
        "dense": [*GPT2_SMALL, "moe.enabled=false"],
        "moe top-1": [*GPT2_SMALL, *MOE, "moe.top_k=1"],
        "moe top-2": [*GPT2_SMALL, *MOE, "moe.top_k=2"],
    }
    total = args.warmup + args.steps + args.sync_steps
    rows = []
    for compiled in [False, True] if args.compile else [False]:
        for name, overrides in variants.items():
            config = resolve_run_config("cpu", overrides=overrides)
            started = time.perf_counter()
            runner = Runner(config, 50257, device, total, compile=compiled)
            runner.timed_steps(args.warmup)
            warm = time.perf_counter() - started
            seconds = runner.timed_steps(args.steps)
            syncs = count_syncs(runner, args.sync_steps)
            rows.append(
                {
                    "variant": name,
                    "compiled": compiled,
                    "ms_per_step": round(seconds * 1e3, 2),
                    "tokens_per_s": round(runner.tokens_per_step / seconds),
                    "syncs_per_step": syncs,
                    "setup_and_warmup_s": round(warm, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            del runner
            torch.cuda.empty_cache()
    probe = torch.empty(8, 768, device=device, dtype=torch.bfloat16)
    weight = torch.empty(8, 768, 3072, device=device, dtype=torch.bfloat16)
    print(
        f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, grouped_mm path: "
        f"{grouped_mm_supported(probe, weight)}; GPT-2 small, block 512, batch 8, bf16 autocast"
    )
    print(f"{'variant':22} {'ms/step':>9} {'tokens/s':>10} {'x dense':>8} {'syncs/step':>11}")
    for row in rows:
        dense = next(
            r for r in rows if r["variant"] == "dense" and r["compiled"] == row["compiled"]
        )
        name = row["variant"] + (" compiled" if row["compiled"] else "")
        print(
            f"{name:22} {row['ms_per_step']:9.1f} {row['tokens_per_s']:10,} "
            f"{row['ms_per_step'] / dense['ms_per_step']:8.2f} {row['syncs_per_step']:11.1f}"
        )


if __name__ == "__main__":
    main()
