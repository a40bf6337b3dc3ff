"""Training step time of a top-k MoE vs the same dense GPT-2, in one process, steps interleaved.

Uses the trainer's own forward/loss code and optimiser on synthetic tokens, so the ratio measures
the MoE layer (routing, grouped dispatch, aux losses, routing bookkeeping), not data loading.
Target: MoE step time <= 1.25x dense.

    python benchmarks/bench_train.py --steps 10 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from moectl.config import resolve_run_config
from moectl.model.factory import apply_moe, build_model
from moectl.model.routing import last_router_stats, set_router_progress
from moectl.training.routing_log import RoutingAccumulator
from moectl.training.schedule import build_optimizer
from moectl.training.step import autocast_context, forward_losses, token_domains


class Runner:
    """One model with its optimiser, stepping on fresh synthetic batches."""

    def __init__(self, moe: bool, args: argparse.Namespace) -> None:
        overrides = [f"moe.top_k={args.top_k}"] if moe else ["moe.enabled=false"]
        self.config = resolve_run_config("cpu-moe" if moe else "cpu-dense", overrides=overrides)
        torch.manual_seed(0)
        self.block = self.config.data.block_size
        self.model = build_model(self.config.model, args.vocab, self.block, 0)
        self.layers = apply_moe(self.model, self.config.moe, seed=0)
        self.optimizer, self.scheduler = build_optimizer(self.model, self.config.train)
        n_experts = self.config.moe.n_experts
        self.accumulator = RoutingAccumulator(self.layers, n_experts, ["a", "b", "c"])
        self.autocast = autocast_context(torch.device("cpu"), "auto")
        self.generator = torch.Generator().manual_seed(1)
        self.vocab = args.vocab
        self.total = args.warmup + args.steps
        self.step = 0
        self.model.train()

    def timed_step(self) -> float:
        batch = self.config.train.batch_size
        ids = torch.randint(0, self.vocab, (batch, self.block), generator=self.generator)
        domain = torch.arange(batch) % 3
        started = time.perf_counter()
        set_router_progress(self.model, self.step, self.total)
        losses = forward_losses(
            self.model, self.model, ids, domain, 3, self.config.moe, self.autocast
        )
        losses.loss.backward()
        if self.layers:
            stats = last_router_stats(self.model)
            self.accumulator.update(stats, token_domains(domain, self.block))
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=8000, help="the cpu presets' bpe:8000")
    parser.add_argument("--top-k", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = resolve_run_config("cpu-moe")
    tokens = config.train.batch_size * config.data.block_size
    runners = {"dense": Runner(False, args), "moe": Runner(True, args)}
    seconds = {"dense": 0.0, "moe": 0.0}
    for step in range(args.warmup + args.steps):
        for name, runner in runners.items():  # interleaved: both see the same machine load
            elapsed = runner.timed_step()
            if step >= args.warmup:
                seconds[name] += elapsed
    dense, moe = seconds["dense"] / args.steps, seconds["moe"] / args.steps
    print(
        f"cpu preset model (4 layers, width 192, block 128, batch 16, vocab {args.vocab}), "
        f"{args.threads} threads, {args.steps} timed steps"
    )
    print(f"dense: {dense * 1000:.0f} ms/step, {tokens / dense:,.0f} tokens/s")
    print(
        f"moe top-{args.top_k} (8 experts, last 2 layers): {moe * 1000:.0f} ms/step, "
        f"{tokens / moe:,.0f} tokens/s"
    )
    print(f"moe/dense step time: {moe / dense:.2f}x (target <= 1.25x)")


if __name__ == "__main__":
    main()
