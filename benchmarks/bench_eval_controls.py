"""What the router controls cost in `evaluate`, at the quickstart size.

Builds the quickstart's corpus (study-cpu preset: bpe:4096, block 128) and a scratch MoE of its
size (4 layers, 128 wide, MoE in layers 2-3, 8 experts, a few training steps so the run has its
init/ record), then, in one process on 192 eval blocks:
- the whole evaluation as the quickstart runs it (the gate null at the product's N_GATES random
  gates per layer, plain and load-balanced, the init and frozen-gate controls, the probe, the
  token-id null);
- the same with the gate null at its floor of 64 gates (the difference is what the extra gates
  cost);
- the plain forward passes over the blocks (what no evaluation can avoid);
- with --functional, the evaluation with the functional test too (many masked passes).
Prints seconds (fastest of the repeats) and each figure as a share of the evaluation.

    python benchmarks/bench_eval_controls.py --repeats 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from moectl.analysis.eval_blocks import select_blocks
from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.evaluate import evaluate_models
from moectl.analysis.functional import token_loss
from moectl.analysis.gate_null import N_GATES
from moectl.config import resolve_run_config
from moectl.data.prepare import prepare_corpus
from moectl.data.store import load_corpus
from moectl.interop.loading import load_model
from moectl.training.trainer import train_run

BLOCKS = 192
FEWEST_GATES = 64
MOE = ["moe.enabled=true", "moe.layers=[2,3]", "moe.n_experts=8", "moe.init=scratch"]


def fastest(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--functional", action="store_true", help="also time the functional test")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-controls-"))
    config = resolve_run_config(
        "study-cpu", overrides=[*MOE, f"moe.top_k={args.top_k}", "train.max_steps=4"]
    )
    prepare_corpus(config.data, root / "corpus")
    corpus = load_corpus(root / "corpus")
    train_run(config, root / "corpus", root / "run")

    def evaluate(**changes) -> float:
        options = EvaluationOptions(max_blocks=BLOCKS, device="cpu", **changes)
        return fastest(lambda: evaluate_models([root / "run"], corpus, options=options), 1)

    full = min(evaluate() for _ in range(args.repeats))
    fewest = min(evaluate(random_gates=FEWEST_GATES) for _ in range(args.repeats))
    model = load_model(root / "run" / "best").model.eval()
    blocks = select_blocks(corpus, EvaluationOptions(max_blocks=BLOCKS))
    batches = [torch.tensor([b.ids for b in blocks[i : i + 8]]) for i in range(0, len(blocks), 8)]

    def forward() -> None:
        with torch.no_grad():
            for ids in batches:
                token_loss(model, ids)

    forward_s = fastest(forward, args.repeats)
    rows = [
        (f"evaluate ({N_GATES} gates, every control)", full),
        (f"evaluate ({FEWEST_GATES} gates)", fewest),
        (f"  {N_GATES - FEWEST_GATES} more gates (difference)", full - fewest),
        ("  forward passes alone (trained model)", forward_s),
    ]
    if args.functional:
        rows.append(("functional test (evaluate with - without)", evaluate(functional=True) - full))
    print(f"quickstart size, {len(blocks)} blocks, top-{args.top_k}, MoE layers 2-3, "
          f"{args.threads} thread(s); fastest of {args.repeats}")  # fmt: skip
    for name, seconds in rows:
        print(f"{name:44s} {seconds:7.2f} s  {seconds / full:5.2f}x of evaluate")


if __name__ == "__main__":
    main()
