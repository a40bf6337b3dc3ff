"""Training step time in bf16 autocast vs fp32 on this CPU, at the quickstart's shape, steps
interleaved in one process (both see the same machine load): whether `train.precision: bf16`
would speed up the CPU study here (issue 25), with the CPU's bf16 capability printed beside it.

The quickstart's model: the study-cpu preset (4 layers, width 128, block 128, batch 16, vocab
bpe:4096) with cpu-moe's 8 experts in the last two layers, top-1; and its dense twin. Runner is
bench_train.py's: the trainer's own forward, losses, routing bookkeeping, clipping and AdamW on
synthetic tokens.

    python benchmarks/bench_precision.py --steps 20 --threads 1
"""

from __future__ import annotations

import argparse

import torch
from bench_train import Runner

from moectl.config import resolve_run_config

STUDY_SHAPE = ["model.n_embd=128", "data.block_size=128", "train.batch_size=16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=4096, help="the study's bpe:4096")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu, total = torch.device("cpu"), args.warmup + args.steps
    runners = {}
    for preset in ("cpu-dense", "cpu-moe"):
        for precision in ("fp32", "bf16"):
            overrides = [*STUDY_SHAPE, f"train.precision={precision}"]
            config = resolve_run_config(preset, overrides=overrides)
            runners[(preset, precision)] = Runner(config, args.vocab, cpu, total)
    seconds = dict.fromkeys(runners, 0.0)
    for step in range(total):
        for key, runner in runners.items():  # interleaved: all see the same machine load
            elapsed = runner.timed_steps(1)
            if step >= args.warmup:
                seconds[key] += elapsed
    print(
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, "
        f"amx {torch.cpu._is_amx_tile_supported()}; {args.threads} threads, "
        f"{args.steps} timed steps"
    )
    for preset in ("cpu-dense", "cpu-moe"):
        fp32 = seconds[(preset, "fp32")] / args.steps
        bf16 = seconds[(preset, "bf16")] / args.steps
        print(
            f"{preset}: fp32 {fp32 * 1000:.1f} ms/step, bf16 {bf16 * 1000:.1f} ms/step, "
            f"fp32/bf16 {fp32 / bf16:.2f}x"
        )


if __name__ == "__main__":
    main()
