"""CPU training throughput of `moectl train` against the reference study's own training loop.

Runs the seed's train.py through ../shared/seed-bench/seed_bench.py (see its README) and
`moectl train` on the same texts, tokenizer, model (4 layers, 192 wide, 4 heads, dropout 0.1),
block 128, batch 16 and MoE layout (8 experts, top-k, layers 2-3), alternating seed and moectl
runs so both see the same machine load. Each side's figure is the median of its own per-step
tokens/s with the first 3 steps dropped; the ratio is moectl / seed per round, then its median.

    python benchmarks/bench_vs_seed.py --seed-dir ../shared/seed-bench --texts TEXTS \\
        --corpus CORPUS --rounds 3 [--set train.compile=true ...] [--baseline OLD_CHECKOUT]

TEXTS holds code/, math/, prose/ (text or .jsonl files); CORPUS is `moectl prepare-data` of
those texts (--source files, --tokenizer bpe:8000, --block-size 128). --baseline runs a second
moectl (another checkout's folder, put first on PYTHONPATH) in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = ["model.n_layer=4", "model.n_embd=192", "model.n_head=4", "model.dropout=0.1"]


def seed_run(args: argparse.Namespace) -> float:
    command = [
        sys.executable,
        str(Path(args.seed_dir) / "seed_bench.py"),
        "--seed-dir",
        args.seed_dir,
        "--texts",
        args.texts,
        "--tokenizer",
        str(Path(args.corpus) / "tokenizer"),
        "--n-layer=4",
        "--n-embd=192",
        "--n-head=4",
        "--block-size=128",
        "--batch-size=16",
        f"--steps={args.steps}",
        f"--topk={args.top_k}",
        "--moe-layers",
        "2",
        "3",
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["seed_tokens_per_s"]


def moectl_run(args: argparse.Namespace, checkout: str | None = None) -> float:
    with tempfile.TemporaryDirectory(prefix="moectl-bench-") as tmp:
        overrides = [
            *MODEL,
            f"moe.top_k={args.top_k}",
            f"train.max_steps={args.steps}",
            "train.log_every=1",
            *args.set,
        ]
        command = [sys.executable, "-m", "moectl", "train", "--preset", "cpu-moe"]
        command += ["--data", args.corpus, "--run-dir", f"{tmp}/run"]
        for item in overrides:
            command += ["--set", item]
        env = dict(os.environ)
        if checkout is not None:
            env["PYTHONPATH"] = os.pathsep.join([checkout, env.get("PYTHONPATH", "")])
        subprocess.run(command, check=True, capture_output=True, text=True, env=env)
        lines = Path(tmp, "run", "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        speeds = [r["tokens_per_s"] for r in rows if r["kind"] == "train"][3:]
        return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-dir", required=True)
    parser.add_argument("--texts", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--top-k", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="extra moectl override")
    parser.add_argument("--baseline", help="another moectl checkout to time in the same rounds")
    args = parser.parse_args()
    ratios, baseline_ratios = [], []
    for round_ in range(args.rounds):
        seed = seed_run(args)
        moectl = moectl_run(args)
        ratios.append(moectl / seed)
        line = f"round {round_ + 1}: seed {seed:,.0f} tokens/s, moectl {moectl:,.0f} tokens/s"
        if args.baseline:
            baseline = moectl_run(args, args.baseline)
            baseline_ratios.append(baseline / seed)
            line += f", baseline {baseline:,.0f} tokens/s ({baseline / seed:.2f}x)"
        print(f"{line}, ratio {moectl / seed:.2f}x", flush=True)
    print(f"median ratio moectl / seed: {statistics.median(ratios):.2f}x ({' '.join(args.set)})")
    if baseline_ratios:
        print(f"median ratio baseline / seed: {statistics.median(baseline_ratios):.2f}x")


if __name__ == "__main__":
    main()
