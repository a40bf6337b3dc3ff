"""Which settings make domain specialization emerge at CPU scale? (issue 8, section 5)

Trains every arm on the quickstart's corpus and model, evaluates each MoE arm against its own
init router (the same model at step 0) and each arm's loss against its matched dense run, both
with paired bootstrap intervals over eval blocks, and prints one markdown table.

Two families share one corpus and one model size:
- upcycled: a dense GPT-2 is pretrained (the quickstart's pretrain stage), then every arm
  continues from it for the same steps and schedule as the matched dense continuation;
- scratch: the MoE is trained from random weights (moe.init=scratch, independent experts, the
  OLMoE setting) next to a dense model trained from scratch with the same steps and schedule.

Finished runs are kept (result.json) and skipped on a re-run, so an interrupted experiment
resumes. Usage:

    python scripts/specialization_experiment.py --out /tmp/spec-exp [--workers 2] [--arms a,b]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from moectl.analysis.bootstrap import format_interval
from moectl.analysis.evaluate import EvaluationOptions, evaluate_models
from moectl.analysis.results import EvaluationResult
from moectl.config import RunConfig, deep_merge, parse_override, validate
from moectl.data.prepare import prepare_corpus
from moectl.data.store import load_corpus
from moectl.study.findings import paired_difference
from moectl.study.parallel import RESULT_FILE, TrainJob, run_parallel
from moectl.study.plan import PLANS, plan_configs

SCRATCH_STEPS, SCRATCH_LR = 650, 2e-3
"""One cosine over the pretrain + continue budget (300 + 350 steps), at the pretrain's lr."""

# name -> (family, overrides on the quickstart's `moe` variant config)
ARMS: dict[str, tuple[str, list[str]]] = {
    "dense": ("upcycled", ["moe.enabled=false"]),
    "moe": ("upcycled", []),
    "lb-0.001": ("upcycled", ["moe.lb_coef=0.001"]),
    "lb-0": ("upcycled", ["moe.lb_coef=0"]),
    "noise-0": ("upcycled", ["moe.noise_std=0"]),
    "router-lr-10": ("upcycled", ["moe.router_lr_scale=10"]),
    "perturb-0.05": ("upcycled", ["moe.perturbation_std=0.05"]),
    "top2": ("upcycled", ["moe.top_k=2"]),
    "scratch-dense": ("scratch", ["moe.enabled=false"]),
    "scratch-moe": ("scratch", ["moe.init=scratch"]),
    "scratch-lb-0": ("scratch", ["moe.init=scratch", "moe.lb_coef=0"]),
    "scratch-top2": ("scratch", ["moe.init=scratch", "moe.top_k=2"]),
}
MATCHED_DENSE = {"upcycled": "dense", "scratch": "scratch-dense"}


def arm_config(base: RunConfig, name: str, family: str, overrides: list[str]) -> RunConfig:
    raw = base.model_dump(mode="json")
    raw["name"] = name
    if family == "scratch":
        raw = deep_merge(raw, {"train": {"max_steps": SCRATCH_STEPS, "lr": SCRATCH_LR}})
    for text in overrides:
        raw = deep_merge(raw, parse_override(text))
    return validate(RunConfig, raw, f"arm {name}")


def wall_seconds(run_dir: Path) -> float:
    """From the run's config.yaml (written at its start) to its result.json (at its end)."""
    return (run_dir / RESULT_FILE).stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime


def table(results: dict[str, EvaluationResult], out: Path) -> str:
    lines = [
        "| arm | layer | trained NMI [95% CI] | init NMI [95% CI] | trained - init [95% CI] "
        "| verdict | eval loss vs matched dense [95% CI] | wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (family, _) in ARMS.items():
        if name not in results or MATCHED_DENSE[family] not in results:
            continue
        result = results[name]
        dense = results[MATCHED_DENSE[family]]
        wall = f"{wall_seconds(out / 'runs' / name):.0f}"
        if name == MATCHED_DENSE[family]:
            loss = f"{result.loss:.3f} (matched dense)"
        else:
            diff = paired_difference(result, dense)
            loss = (
                f"{result.loss:.3f} vs {dense.loss:.3f}: {diff.difference:+.3f} "
                f"{format_interval(diff.ci)}"
            )
        if not result.routing:
            lines.append(f"| {name} | - | - | - | - | - | {loss} | {wall} |")
            continue
        for layer in result.routing:
            s = layer.specialization
            lines.append(
                f"| {name} | {layer.layer} | {s.nmi:.3f} {format_interval(s.nmi_ci)} | "
                f"{s.init_nmi:.3f} {format_interval(s.init_nmi_ci)} | "
                f"{s.emergent.difference:+.3f} {format_interval(s.emergent.ci)} | "
                f"{s.emergent.verdict} | {loss} | {wall} |"
            )
    return "\n".join(lines)


def seed_table(results: dict[str, EvaluationResult]) -> str:
    """Per arm repeated over seeds: each seed's trained - init difference and verdict per layer."""
    lines = ["| arm | seed | layer | trained - init [95% CI] | verdict |", "|---|---|---|---|---|"]
    for name in ARMS:
        repeats = [key for key in results if key.startswith(f"{name}@")]
        runs = [(0, name), *sorted((int(key.split("@")[1]), key) for key in repeats)]
        if len(runs) < 2 or name not in results:
            continue
        for seed, key in runs:
            for layer in results[key].routing:
                e = layer.specialization.emergent
                lines.append(
                    f"| {name} | {seed} | {layer.layer} | {e.difference:+.3f} "
                    f"{format_interval(e.ci)} | {e.verdict} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arm names")
    parser.add_argument("--size", default="default", choices=["default", "tiny"])
    parser.add_argument(
        "--seeds",
        default="0",
        help="comma-separated train.seed values; arms run once per seed, as ARM@SEED beyond 0 "
        "(the upcycled arms all continue the one seed-0 pretrain)",
    )
    args = parser.parse_args()
    chosen = args.arms.split(",")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data_config, runs = plan_configs(args.size, "upcycle")
    corpus_dir = out / "data"
    if not (corpus_dir / "manifest.json").is_file():
        prepare_corpus(data_config, corpus_dir, force=True)
    pretrain_dir = out / "runs" / "pretrain"
    started = time.time()
    if not (pretrain_dir / RESULT_FILE).is_file():
        config = runs["pretrain"].model_copy(deep=True)
        config.train.num_threads = 1  # two threads are slower than one on a shared 2-core CPU
        job = TrainJob("pretrain", config, corpus_dir, pretrain_dir)
        run_parallel([job], workers=1)
    jobs = []
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for name in chosen:
        family, overrides = ARMS[name]
        for seed in seeds:
            run_name = name if seed == 0 else f"{name}@{seed}"
            run_dir = out / "runs" / run_name
            if (run_dir / RESULT_FILE).is_file():
                continue
            config = arm_config(runs["moe"], run_name, family, [*overrides, f"train.seed={seed}"])
            init_from = pretrain_dir / "best" if family == "upcycled" else None
            jobs.append(TrainJob(run_name, config, corpus_dir, run_dir, init_from))
    run_parallel(jobs, workers=args.workers)
    options = EvaluationOptions(max_blocks=PLANS[args.size].eval_max_blocks)
    names = [n for n in ARMS if (out / "runs" / n / RESULT_FILE).is_file()]
    repeats = sorted(p.name for p in (out / "runs").glob("*@*") if (p / RESULT_FILE).is_file())
    evaluated = evaluate_models(
        [out / "runs" / n for n in [*names, *repeats]], load_corpus(corpus_dir), options=options
    )
    results = dict(zip([*names, *repeats], evaluated, strict=True))
    (out / "experiment.json").write_text(
        json.dumps({n: r.model_dump(mode="json") for n, r in results.items()}), encoding="utf-8"
    )
    text = table(results, out) + "\n\n" + seed_table(results)
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"done in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
