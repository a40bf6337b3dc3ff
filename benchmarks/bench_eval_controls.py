"""Extra evaluation time of the router controls and the functional test, at the quickstart size.

Builds the quickstart's corpus (study-cpu preset: bpe:4096, block 128) and a scratch MoE of its
size (4 layers, 128 wide, MoE in layers 2-3, 8 experts, a few training steps so the run has its
init/ record), then, in one process on 192 eval blocks:
- the whole evaluation without and with the functional test (the difference is its cost);
- the plain forward passes over the blocks (what the evaluation cannot avoid);
- each router control alone, on the layer inputs captured from those passes: init gate and
  random gates (`LayerControls.add`), the probe fit, the token-id bootstrap, and the first-choice
  and frozen-gate bootstraps.
Prints seconds (fastest of the repeats) and each figure as a share of the evaluation.

    python benchmarks/bench_eval_controls.py --repeats 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from moectl.analysis import bootstrap
from moectl.analysis.controls import LayerControls, capture_layer_inputs, draw_gates
from moectl.analysis.eval_blocks import select_blocks
from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.evaluate import evaluate_models
from moectl.analysis.functional import token_loss
from moectl.analysis.step_zero import load_initial_model
from moectl.analysis.token_id import token_id_score
from moectl.config import resolve_run_config
from moectl.data.prepare import prepare_corpus
from moectl.data.store import load_corpus
from moectl.interop.loading import load_model
from moectl.model.routing import last_router_stats, moe_layers
from moectl.training.trainer import train_run

BLOCKS = 192
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-controls-"))
    config = resolve_run_config(
        "study-cpu", overrides=[*MOE, f"moe.top_k={args.top_k}", "train.max_steps=4"]
    )
    prepare_corpus(config.data, root / "corpus")
    corpus = load_corpus(root / "corpus")
    train_run(config, root / "corpus", root / "run")

    options = EvaluationOptions(max_blocks=BLOCKS, device="cpu")
    evaluate = fastest(
        lambda: evaluate_models([root / "run"], corpus, options=options), args.repeats
    )
    functional_options = EvaluationOptions(max_blocks=BLOCKS, device="cpu", functional=True)
    with_functional = fastest(
        lambda: evaluate_models([root / "run"], corpus, options=functional_options), 1
    )

    model = load_model(root / "run" / "best").model.eval()
    init = load_initial_model(root / "run").model
    layers = moe_layers(model)
    blocks = select_blocks(corpus, options)
    batches = [torch.tensor([b.ids for b in blocks[i : i + 8]]) for i in range(0, len(blocks), 8)]
    captured: list[dict[int, torch.Tensor]] = []
    experts: dict[int, list[np.ndarray]] = {i: [] for i in layers}

    def forward() -> None:
        captured.clear()
        with torch.no_grad(), capture_layer_inputs(layers) as inputs:
            for ids in batches:
                token_loss(model, ids)
                captured.append(dict(inputs))
                for i, s in last_router_stats(model).items():
                    experts[i].append(s.expert_index.numpy())

    forward_s = fastest(forward, args.repeats)
    seq = batches[0].shape[1]
    domains = np.array([b.domain for b in blocks])
    n_labels = len(corpus.domains)

    def controls() -> list[LayerControls]:
        made = []
        for index, layer in layers.items():
            control = LayerControls(
                layer=index,
                n_labels=n_labels,
                top_k=layer.top_k,
                random_gates=draw_gates(32, 8, 128, 0.02, index),
                frozen_gate=moe_layers(init)[index].gate.weight.detach(),
            )
            for b, inputs in enumerate(captured):
                rows = np.arange(b * 8, min(b * 8 + 8, len(blocks)))
                block_ids = np.repeat(rows, seq)
                control.add(inputs[index], np.repeat(domains[rows], seq), block_ids, block_ids)
            made.append(control)
        return made

    gates_s = fastest(controls, args.repeats)
    made = controls()
    probe_s = fastest(lambda: [c.probe_score() for c in made], args.repeats)
    token_ids = np.concatenate([ids.reshape(-1).numpy() for ids in batches])
    token_domains = np.repeat(domains, seq)
    token_blocks = np.repeat(np.arange(len(blocks)), seq)
    n_layers = len(layers)

    def token_id() -> None:
        for index in layers:
            chosen = np.concatenate(experts[index][-len(batches) :])
            token_id_score(token_ids, token_domains, chosen, token_blocks, domains)

    token_id_s = fastest(token_id, args.repeats)

    def paired() -> None:
        for control in made:
            table = control.frozen.block_table(len(blocks), n_labels)
            bootstrap.nmi_intervals(table, table, domains)  # frozen gate
            bootstrap.nmi_intervals(table, None, domains)  # first choice

    paired_s = fastest(paired, args.repeats)
    print(f"quickstart size, {BLOCKS} blocks, top-{args.top_k}, {n_layers} MoE layers, "
          f"{args.threads} thread(s); fastest of {args.repeats}")  # fmt: skip
    rows = [
        ("evaluate (controls on, functional off)", evaluate),
        ("  forward passes alone", forward_s),
        ("  init gate + 32 random gates (add)", gates_s),
        ("  probe fit (all layers)", probe_s),
        ("  token-id NMI + bootstrap (all layers)", token_id_s),
        ("  frozen-gate + first-choice bootstraps", paired_s),
        ("functional test (evaluate with - without)", with_functional - evaluate),
    ]
    for name, seconds in rows:
        print(f"{name:44s} {seconds:7.2f} s  {seconds / evaluate:5.2f}x of evaluate")


if __name__ == "__main__":
    main()
