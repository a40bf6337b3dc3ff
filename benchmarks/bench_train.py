"""Training step time of a top-k MoE vs the same dense GPT-2, in one process, steps interleaved.

Uses the trainer's own pieces (forward and losses, device-side metric window and routing
counts, clipping, AdamW, the noise schedule) on synthetic tokens, so the ratio measures the MoE
layer (routing, grouped dispatch, aux losses, routing bookkeeping), not data loading.
Target: MoE step time <= 1.25x dense. `Runner` is shared with bench_gpu.py.

    python benchmarks/bench_train.py --steps 10 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from moectl.config import RunConfig, resolve_run_config
from moectl.model.factory import build_model
from moectl.model.routing import last_router_stats, set_router_progress
from moectl.model.surgery import apply_moe
from moectl.training.compiling import compile_model, synchronize
from moectl.training.routing_log import RoutingAccumulator
from moectl.training.schedule import build_optimizer
from moectl.training.step import MetricWindow, autocast_context, forward_losses, token_domains

DOMAINS = ["a", "b", "c"]


class Runner:
    """One model with its optimiser on `device`, stepping on fresh synthetic batches."""

    def __init__(
        self,
        config: RunConfig,
        vocab: int,
        device: torch.device,
        total_steps: int,
        compile: bool = False,
    ) -> None:
        self.config = config
        torch.manual_seed(0)
        self.block = config.data.block_size
        self.device = device
        self.core = build_model(config.model, vocab, self.block, 0)
        self.layers = apply_moe(self.core, config.moe, seed=0)
        self.core.to(device).train()
        self.model = compile_model(self.core) if compile else self.core
        self.optimizer, self.scheduler = build_optimizer(self.core, config.train)
        n_experts = config.moe.n_experts
        self.accumulator = RoutingAccumulator(self.layers, n_experts, DOMAINS, device)
        self.window = MetricWindow(len(DOMAINS), device)
        self.autocast = autocast_context(device, config.train.precision)
        self.generator = torch.Generator().manual_seed(1)
        self.vocab = vocab
        self.total = total_steps
        self.step = 0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.config.train.batch_size
        ids = torch.randint(0, self.vocab, (batch, self.block), generator=self.generator)
        domain = torch.arange(batch) % len(DOMAINS)
        return ids.to(self.device), domain.to(self.device)

    def train_step(self) -> None:
        """One optimizer update, as the trainer's, without reading anything on the host."""
        ids, domain = self.batch()
        set_router_progress(self.core, self.step, self.total)
        losses = forward_losses(
            self.model, self.core, ids, domain, len(DOMAINS), self.config.moe, self.autocast
        )
        losses.loss.backward()
        if self.layers:
            stats = last_router_stats(self.core)
            self.accumulator.update(stats, token_domains(domain, self.block))
        torch.nn.utils.clip_grad_norm_(self.core.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        parts = [losses.loss.detach(), losses.lm_loss, losses.lb_loss, losses.z_loss]
        self.window.add(torch.stack(parts).double(), losses.domain_sum, losses.domain_count)
        self.step += 1

    def timed_steps(self, n: int) -> float:
        """Seconds per step over `n` steps, the device's queue drained at both ends."""
        synchronize(self.device)
        started = time.perf_counter()
        for _ in range(n):
            self.train_step()
        synchronize(self.device)
        return (time.perf_counter() - started) / n

    @property
    def tokens_per_step(self) -> int:
        return self.config.train.batch_size * self.block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=8000, help="the cpu presets' bpe:8000")
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu, total = torch.device("cpu"), args.warmup + args.steps
    moe_cfg = resolve_run_config("cpu-moe", overrides=[f"moe.top_k={args.top_k}"])
    runners = {
        "dense": Runner(resolve_run_config("cpu-dense"), args.vocab, cpu, total, args.compile),
        "moe": Runner(moe_cfg, args.vocab, cpu, total, args.compile),
    }
    seconds = {"dense": 0.0, "moe": 0.0}
    for step in range(total):
        for name, runner in runners.items():  # interleaved: both see the same machine load
            elapsed = runner.timed_steps(1)
            if step >= args.warmup:
                seconds[name] += elapsed
    dense, moe = seconds["dense"] / args.steps, seconds["moe"] / args.steps
    tokens = runners["moe"].tokens_per_step
    print(
        f"cpu preset model (4 layers, width 192, block 128, batch 16, vocab {args.vocab}), "
        f"{args.threads} threads, {args.steps} timed steps, compile={args.compile}"
    )
    print(f"dense: {dense * 1000:.0f} ms/step, {tokens / dense:,.0f} tokens/s")
    print(
        f"moe top-{args.top_k} (8 experts, last 2 layers): {moe * 1000:.0f} ms/step, "
        f"{tokens / moe:,.0f} tokens/s"
    )
    print(f"moe/dense step time: {moe / dense:.2f}x (target <= 1.25x)")


if __name__ == "__main__":
    main()
