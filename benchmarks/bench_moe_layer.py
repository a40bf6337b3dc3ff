"""MoE layer forward+backward time relative to the dense GPT-2 MLP it replaces.

Runs, in one process and interleaved so machine load hits all variants alike: the dense
`GPT2MLP` (as transformers runs it, and with torch's fused GELU as moectl's models run it),
moectl's `MoEMLP` at top-1 and top-2 with its grouped_mm kernel (where torch's grouped_mm runs:
the default) and with its fallback per-expert loop forced (`experts.grouped = False`), and
optionally a naive MoE that scans all tokens with a mask once per expert (the usual
research-script loop). Each round times every variant once at every thread count; a variant's
ratio to the fused-GELU dense MLP is taken within each round (paired), and the table shows the
median over rounds of the milliseconds and of those ratios, and the fastest repeat.

    python benchmarks/bench_moe_layer.py --tokens 2048 --width 128 --threads 1 2   # quickstart
    python benchmarks/bench_moe_layer.py --tokens 4096 --width 768 --threads 1 2   # GPT-2 small
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor
from transformers import GPT2Config
from transformers.activations import GELUTanh
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

from moectl.config import MoEConfig
from moectl.model.arch import GPT2
from moectl.model.dispatch import grouped_mm_supported
from moectl.model.experts import StackedExperts
from moectl.model.moe import MoEMLP
from moectl.model.router import load_balancing_loss, route, z_loss


def naive_dispatch(x: Tensor, expert_index: Tensor, weights: Tensor, experts: StackedExperts):
    """The research-script loop: every expert scans all tokens with a mask, per top-k slot."""
    out = torch.zeros_like(x)
    for e in range(experts.n_experts):
        for slot in range(expert_index.shape[1]):
            mask = expert_index[:, slot] == e
            if mask.any():
                hidden = experts.act(x[mask] @ experts.fc_weight[e] + experts.fc_bias[e])
                y = hidden @ experts.proj_weight[e] + experts.proj_bias[e]
                contribution = weights[mask, slot].unsqueeze(1) * y
                out = out.index_put((mask.nonzero().squeeze(1),), contribution, accumulate=True)
    return experts.dropout(out)


def naive_forward(layer: MoEMLP, hidden: Tensor) -> Tensor:
    """`layer`'s router and losses, then naive_dispatch instead of the grouped one."""
    x = hidden.reshape(-1, hidden.shape[-1])
    logits = torch.nn.functional.linear(x.float(), layer.gate.weight)
    routing = route(logits, layer.top_k, layer.current_noise_std if layer.training else 0.0)
    layer.naive_losses = (
        load_balancing_loss(routing.probs, routing.expert_index, layer.n_experts),
        z_loss(logits),
    )
    out = naive_dispatch(x, routing.expert_index, routing.expert_weight, layer.experts)
    return out.reshape(hidden.shape)


def step_time(fn: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor, params) -> float:
    for p in params:
        p.grad = None
    start = time.perf_counter()
    out = fn(x)
    out.backward(grad)
    return time.perf_counter() - start


def upcycled(dense: GPT2MLP, args: argparse.Namespace, top_k: int) -> MoEMLP:
    moe = MoEConfig(enabled=True, last_n=1, n_experts=args.experts, top_k=top_k, noise_std=0.1)
    return MoEMLP.upcycle(
        GPT2.dense_mlp(dense),
        moe,
        hidden_size=args.width,
        layer_index=0,
        perturbation_std=1e-3,
        generator=torch.Generator().manual_seed(top_k),
    ).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--width", type=int, default=768, help="hidden size; inner is 4x")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--naive", action="store_true", help="also time the slow naive loop")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = GPT2Config(n_embd=args.width, resid_pdrop=0.0)
    dense = GPT2MLP(4 * args.width, config).train()
    x = torch.randn(args.tokens // args.seq, args.seq, args.width)
    grad = torch.randn_like(x)
    fused = copy.deepcopy(dense)
    fused.act = GELUTanh()  # as moectl's own models run it (moectl.model.factory.fuse_gelu)
    variants: dict[str, tuple[Callable[[Tensor], Tensor], list]] = {
        "dense, fused GELU": (fused, list(fused.parameters())),
        "dense GPT2MLP": (dense, list(dense.parameters())),
    }
    for k in (1, 2):
        layer = upcycled(dense, args, k)
        variants[f"moe top-{k} (grouped_mm)"] = (layer, list(layer.parameters()))
        loop = upcycled(dense, args, k)
        loop.experts.grouped = False
        variants[f"moe top-{k} (expert loop)"] = (loop, list(loop.parameters()))
        if args.naive:
            variants[f"moe top-{k} (naive mask loop)"] = (
                lambda h, layer=layer: naive_forward(layer, h),
                list(layer.parameters()),
            )

    times = {(n, name): [] for n in args.threads for name in variants}
    for i in range(args.warmup + args.repeats):
        for n in args.threads:
            torch.set_num_threads(n)
            for name, (fn, params) in variants.items():
                elapsed = step_time(fn, x.clone().requires_grad_(), grad, params)
                if i >= args.warmup:
                    times[n, name].append(elapsed)

    print(
        f"MoE layer fwd+bwd: {args.tokens} tokens, width {args.width}, inner {4 * args.width}, "
        f"{args.experts} experts, {args.repeats} rounds (torch {torch.__version__}, "
        f"grouped_mm kernel: {grouped_mm_supported(x[0], layer.experts.fc_weight)})"
    )
    print(f"{'threads':>7} {'variant':30} {'median ms':>10} {'x dense':>8} {'min ms':>8}")
    for (n, name), samples in times.items():
        base = times[n, "dense, fused GELU"]
        ratio = statistics.median(t / b for t, b in zip(samples, base, strict=True))
        print(
            f"{n:7} {name:30} {statistics.median(samples) * 1e3:10.1f} {ratio:8.2f} "
            f"{min(samples) * 1e3:8.1f}"
        )


if __name__ == "__main__":
    main()
