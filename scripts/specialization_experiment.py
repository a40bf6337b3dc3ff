"""Which settings make the *router* specialize by domain at CPU scale? (issues 8 and 14)

Trains every arm on the quickstart's corpus and model, once per seed, evaluates every run on the
same eval blocks and prints one markdown table per arm and layer, over seeds: the trained NMI,
the router-made difference (trained minus the init gate on the trained hidden states, the
frozen-gate control) with its seed-level interval and the verdict count per seed, the
random-gate percentile, the probe ceiling, the domain NMI given the token id, the first-choice
NMI, the functional test and the eval loss against the matched dense run of the same seed.

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
from collections import Counter
from pathlib import Path

from moectl.analysis.bootstrap import format_interval
from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.evaluate import evaluate_models
from moectl.analysis.results import Emergence, EvaluationResult, TokenIdScore
from moectl.config import RunConfig, deep_merge, parse_override, validate
from moectl.data.prepare import prepare_corpus
from moectl.data.store import load_corpus
from moectl.study.findings.loss import loss_comparison
from moectl.study.findings.seed_combination import combine_seeds
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
    "frozen-router": ("upcycled", ["moe.router_lr_scale=0"]),
    "perturb-0.05": ("upcycled", ["moe.perturbation_std=0.05"]),
    "top2": ("upcycled", ["moe.top_k=2"]),
    "scratch-dense": ("scratch", ["moe.enabled=false"]),
    "scratch-moe": ("scratch", ["moe.init=scratch"]),
    "scratch-lb-0": ("scratch", ["moe.init=scratch", "moe.lb_coef=0"]),
    "scratch-top2": ("scratch", ["moe.init=scratch", "moe.top_k=2"]),
    "scratch-frozen-router": ("scratch", ["moe.init=scratch", "moe.router_lr_scale=0"]),
}
# Balancing schemes (issue 15) on the same arms; `moe` / `top2` / `scratch-moe` / `scratch-top2`
# above are the `switch` rows. With one micro-batch per step on one process, `global` forms
# exactly the `switch` loss, so it is compared where the two differ: micro-batches of one domain
# each (train.batch_mixing=domain, 3 x 5 blocks per step), against `switch` in that same setting.
SCHEMES = ("sequence", "bias", "none")
DOMAIN_BATCHES = ["train.batch_mixing=domain", "train.batch_size=5", "train.grad_accum=3"]
for _scheme in SCHEMES:
    ARMS[_scheme] = ("upcycled", [f"moe.balance={_scheme}"])
    ARMS[f"top2-{_scheme}"] = ("upcycled", ["moe.top_k=2", f"moe.balance={_scheme}"])
    ARMS[f"scratch-{_scheme}"] = ("scratch", ["moe.init=scratch", f"moe.balance={_scheme}"])
    ARMS[f"scratch-top2-{_scheme}"] = (
        "scratch",
        ["moe.init=scratch", "moe.top_k=2", f"moe.balance={_scheme}"],
    )
for _scheme in ("switch", "global"):
    for _k, _top in ((1, ""), (2, "top2-")):
        _arm = [f"moe.top_k={_k}", f"moe.balance={_scheme}", *DOMAIN_BATCHES]
        ARMS[f"{_top}domain-{_scheme}"] = ("upcycled", _arm)
        ARMS[f"scratch-{_top}domain-{_scheme}"] = ("scratch", ["moe.init=scratch", *_arm])
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


def run_name(arm: str, seed: int) -> str:
    return arm if seed == 0 else f"{arm}@{seed}"


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f}" if values else "-"


def _token_id_cell(scores: list[TokenIdScore]) -> str:
    """Mean token-id excess over its within-token-id null (raw NMI in brackets), with how many
    seeds' intervals lie above 0; the raw mean alone for results without the null."""
    if not scores:
        return "-"
    raw = _mean([t.nmi for t in scores])
    if any(t.excess is None for t in scores):
        return f"no null (raw {raw})"
    above = sum(bool(t.beyond_vocabulary) for t in scores)
    excess = sum(t.excess for t in scores) / len(scores)  # type: ignore[misc]
    return f"{excess:+.3f} (raw {raw}), above 0 in {above}/{len(scores)}"


def _over_seeds(emergences: list[Emergence]) -> str:
    """Mean difference with its seed-level interval (one seed: its document interval), and the
    verdict per seed."""
    known = [e for e in emergences if e.difference is not None and e.ci is not None]
    if not known:
        return "- | -"
    mean, ci = combine_seeds([e.difference for e in known], [e.ci for e in known])  # type: ignore[misc]
    counts = Counter(e.verdict for e in known)
    verdicts = ", ".join(f"{v} {n}/{len(known)}" for v, n in counts.most_common())
    return f"{mean:+.3f} {format_interval(ci)} | {verdicts}"


def _loss(runs: list[EvaluationResult], dense: list[EvaluationResult]) -> str:
    mean, ci, *_ = loss_comparison(runs, dense)
    return f"{mean:+.3f} {format_interval(ci)}"


def table(results: dict[str, EvaluationResult], seeds: list[int], out: Path) -> str:
    """One row per MoE arm and layer (one per dense arm), every column over the seeds."""
    lines = [
        "| arm | layer | seeds | trained NMI | frozen gate NMI | router-made [95% CI] | "
        "router-made per seed | trained - step 0 [95% CI] | step-0 per seed | random-gate "
        "percentile | probe acc / NMI | token-id NMI excess over null (raw) | first-choice NMI | "
        "functional specialized | loss vs matched dense [95% CI] | busiest / mean expert | "
        "wall (s) |",
        "|" + "---|" * 17,
    ]
    for name, (family, _) in ARMS.items():
        present = [s for s in seeds if run_name(name, s) in results]
        dense_name = MATCHED_DENSE[family]
        present = [s for s in present if run_name(dense_name, s) in results]
        if not present:
            continue
        runs = [results[run_name(name, s)] for s in present]
        dense = [results[run_name(dense_name, s)] for s in present]
        loss = "(matched dense)" if name == dense_name else _loss(runs, dense)
        walls = [wall_seconds(out / "runs" / run_name(name, s)) for s in present]
        wall = f"{sum(walls) / len(walls):.0f}"
        head = f"| {name} | {{layer}} | {len(present)} |"
        if not runs[0].routing:
            lines.append(head.format(layer="-") + " - |" * 11 + f" {loss} | - | {wall} |")
            continue
        for i, layer in enumerate(runs[0].routing):
            specs = [r.routing[i].specialization for r in runs]
            gates = [s.gate_null.plain.percentile for s in specs if s.gate_null]
            probes = [s.probe for s in specs if s.probe]
            functional = [
                f.trained.verdict == "specialized"
                for r in runs
                for f in r.functional
                if f.layer == layer.layer
            ]
            cells = [
                _mean([s.nmi for s in specs]),
                _mean([s.frozen_gate_nmi for s in specs if s.frozen_gate_nmi is not None]),
                _over_seeds([s.router_made for s in specs]),
                _over_seeds([s.emergent for s in specs]),
                _mean(gates),
                f"{_mean([p.accuracy for p in probes])} / {_mean([p.nmi for p in probes])}"
                if probes
                else "-",
                _token_id_cell([s.token_id for s in specs if s.token_id]),
                _mean([s.first_choice_nmi for s in specs if s.first_choice_nmi is not None]),
                f"{sum(functional)}/{len(functional)}" if functional else "-",
                loss,
                _mean([r.routing[i].max_over_mean for r in runs]),
                wall,
            ]
            lines.append(head.format(layer=layer.layer) + " " + " | ".join(cells) + " |")
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
        "(the upcycled arms all continue the one seed-0 pretrain), and every column of the "
        "table is over the seeds",
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
            name_seed = run_name(name, seed)
            run_dir = out / "runs" / name_seed
            if (run_dir / RESULT_FILE).is_file():
                continue
            config = arm_config(runs["moe"], name_seed, family, [*overrides, f"train.seed={seed}"])
            init_from = pretrain_dir / "best" if family == "upcycled" else None
            jobs.append(TrainJob(name_seed, config, corpus_dir, run_dir, init_from))
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
    text = table(results, seeds, out)
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"done in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
