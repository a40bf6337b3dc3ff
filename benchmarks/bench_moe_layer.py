"""MoE layer forward+backward time relative to the dense GPT-2 MLP it replaces.

Runs, in one process and interleaved so machine load hits all variants alike: the dense
`GPT2MLP` (as transformers runs it, and with torch's fused GELU as moectl's models run it),
moectl's `MoEMLP` at top-1 and top-2 with its CPU path (a loop over the stacked
experts), optionally with torch's grouped_mm kernel forced (`--grouped-mm`), and a naive MoE that
scans all tokens with a mask once per expert (the usual research-script loop). Prints
milliseconds and ratios to dense, for the fastest repeat (least disturbed by other processes on a
shared machine) and the median.

    python benchmarks/bench_moe_layer.py --threads 1
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
    out = naive_dispatch(x, routing.expert_index, routing.weights, layer.experts)
    return out.reshape(hidden.shape)


def step_time(fn: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor, params) -> float:
    for p in params:
        p.grad = None
    start = time.perf_counter()
    out = fn(x)
    out.backward(grad)
    return time.perf_counter() - start


def upcycled(dense: GPT2MLP, args: argparse.Namespace, top_k: int) -> MoEMLP:
    return MoEMLP.upcycle(
        dense,
        hidden_size=args.width,
        layer_index=0,
        n_experts=args.experts,
        top_k=top_k,
        noise_std=0.1,
        perturbation_std=1e-3,
        generator=torch.Generator().manual_seed(top_k),
    ).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-naive", action="store_true", help="skip the slow naive loop")
    parser.add_argument("--grouped-mm", action="store_true", help="also time torch's grouped_mm")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPT2Config(n_embd=args.width, resid_pdrop=0.0)
    dense = GPT2MLP(4 * args.width, config).train()
    x = torch.randn(args.tokens // args.seq, args.seq, args.width)
    grad = torch.randn_like(x)
    fused = copy.deepcopy(dense)
    fused.act = GELUTanh()  # as moectl's own models run it (moectl.model.factory.fuse_gelu)
    variants: dict[str, tuple[Callable[[Tensor], Tensor], list]] = {
        "dense GPT2MLP": (dense, list(dense.parameters())),
        "dense, fused GELU": (fused, list(fused.parameters())),
    }
    for k in (1, 2):
        layer = upcycled(dense, args, k)
        params = list(layer.parameters())
        variants[f"moe top-{k} (expert loop)"] = (layer, params)
        if args.grouped_mm:
            forced = upcycled(dense, args, k)
            forced.experts.grouped = True
            variants[f"moe top-{k} (grouped_mm)"] = (forced, list(forced.parameters()))
        if not args.no_naive:
            variants[f"moe top-{k} (naive mask loop)"] = (
                lambda h, layer=layer: naive_forward(layer, h),
                params,
            )

    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.warmup + args.repeats):
        for name, (fn, params) in variants.items():
            elapsed = step_time(fn, x.clone().requires_grad_(), grad, params)
            if i >= args.warmup:
                times[name].append(elapsed)

    base_min = min(times["dense GPT2MLP"])
    base_median = statistics.median(times["dense GPT2MLP"])
    print(
        f"MoE layer fwd+bwd: {args.tokens} tokens, width {args.width}, {args.experts} experts, "
        f"{torch.get_num_threads()} threads, {args.repeats} repeats (torch {torch.__version__})"
    )
    print(f"{'variant':32} {'min ms':>9} {'x dense':>8} {'median ms':>10} {'x dense':>8}")
    for name, samples in times.items():
        low, median = min(samples), statistics.median(samples)
        print(
            f"{name:32} {low * 1e3:9.1f} {low / base_min:8.2f} "
            f"{median * 1e3:10.1f} {median / base_median:8.2f}"
        )


if __name__ == "__main__":
    main()
