"""Which settings make the *router* specialize by domain at CPU scale? (issues 8, 14 and 24)

Trains every arm on the quickstart's corpus and model, once per seed, evaluates every run on the
same eval documents and prints one markdown table row per arm and layer, every column over the
seeds. Each row is judged by the quickstart's own code (study/findings.py): the layer's source
("made by the router" needs the router to beat the distribution of random gates on the trained
hidden states, Holm-adjusted over every arm and layer of the experiment per seed, in every seed,
AND to beat its own init gate on the same body, with the model's routing risen over step 0),
the router's percentile among the gates (plain and load-balanced), the paired differences
trained - init gate and trained - step 0 with seed-level intervals (t on S-1 df plus the
document variance the seeds share), the 2x2 co-adaptation cell, the probe ceiling, the token-id
excess over its null, the first-choice NMI, and the eval loss against the matched dense run of
the same seed (paired document bootstrap, combined over seeds the same way).

Two families share one corpus and one model size:
- upcycled: a dense GPT-2 is pretrained (the quickstart's pretrain stage), then every arm
  continues from it for the same steps and schedule as the matched dense continuation;
- scratch: the MoE is trained from random weights (moe.init=scratch, independent experts, the
  OLMoE setting) next to a dense model trained from scratch with the same steps and schedule.

Finished runs are kept (result.json) and skipped on a re-run, so an interrupted experiment
resumes; evaluations are kept in OUT/eval and reused. Usage:

    python scripts/specialization_experiment.py --out DIR [--workers 2] [--arms a,b] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

from moectl.analysis.bootstrap import format_interval
from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.evaluate import evaluate_models
from moectl.analysis.gate_null import N_GATES
from moectl.analysis.multiplicity import FAMILY_ALPHA
from moectl.analysis.results import (
    Emergence,
    EvaluationResult,
    SpecializationScore,
    TokenIdScore,
)
from moectl.config import RunConfig, deep_merge, parse_override, validate
from moectl.data.prepare import prepare_corpus
from moectl.data.store import load_corpus
from moectl.study.findings.layer_sources import (
    layer_source_over_seeds,
    nmi_replicates,
    router_tests,
    seed_difference,
)
from moectl.study.findings.loss import loss_comparison
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


def gates_for_family(n_tests: int) -> int:
    """Random gates per MoE layer for a family of `n_tests` router claims, fixed before any
    result is seen: the rank p-value's floor 1 / (n + 1) at a quarter of Holm's smallest
    threshold FAMILY_ALPHA / n_tests, so the correction, not the gate count, limits a claim;
    never fewer than the product's N_GATES."""
    return max(N_GATES, math.ceil(4 * n_tests / FAMILY_ALPHA) - 1)


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f}" if values else "-"


def _counts(verdicts: list[str | None]) -> str:
    counts = Counter(v for v in verdicts if v is not None)
    return ", ".join(f"{v} {n}/{len(verdicts)}" for v, n in counts.most_common()) or "-"


def _token_id_cell(scores: list[TokenIdScore]) -> str:
    """Mean token-id excess over its within-token-id null (raw NMI in brackets), with how many
    seeds' intervals lie above 0."""
    if not scores or any(t.excess is None for t in scores):
        return "-"
    above = sum(bool(t.beyond_vocabulary) for t in scores)
    excess = sum(t.excess for t in scores) / len(scores)  # type: ignore[misc]
    return f"{excess:+.3f} (raw {_mean([t.nmi for t in scores])}), above 0 in {above}/{len(scores)}"


def _paired(emergences: list[Emergence], replicates: np.ndarray | None) -> str:
    """A paired NMI difference over seeds (t on S-1 df plus the shared document variance) with
    the per-seed verdicts."""
    found = seed_difference(emergences, replicates)
    if found is None:
        return "-"
    mean, ci = found
    return f"{mean:+.3f} {format_interval(ci)} ({_counts([e.verdict for e in emergences])})"


def _gate_cells(specs: list[SpecializationScore], adjusted: list[float | None]) -> list[str]:
    """Per seed: the router's percentile among the gates (plain / balanced) and the deciding
    p-value Holm-adjusted over the experiment's family."""
    nulls = [s.gate_null for s in specs]
    if any(null is None for null in nulls):
        return ["-", "-"]
    percentiles = ", ".join(
        f"{n.plain.percentile:.0f}/{n.balanced.percentile:.0f}"  # type: ignore[union-attr]
        if n.balanced is not None  # type: ignore[union-attr]
        else f"{n.plain.percentile:.0f}/-"  # type: ignore[union-attr]
        for n in nulls
    )
    return [percentiles, ", ".join(f"{p:.3f}" for p in adjusted if p is not None)]


def _interaction(specs: list[SpecializationScore]) -> str:
    cells = [s.corrected.interaction for s in specs if s.corrected is not None]
    if not cells or any(c is None for c in cells):
        return "-"
    return ", ".join(f"{c:+.3f}" for c in cells)  # type: ignore[str-format]


HEADER = (
    "| arm | layer | seeds | source over seeds | source per seed | trained NMI | router "
    "percentile among gates, plain/balanced, per seed | gate-null p, Holm-adjusted, per seed | "
    "trained - init gate [95% CI] (per seed) | trained - step 0 [95% CI] (per seed) | "
    "co-adaptation (2x2 interaction) per seed | probe acc / NMI | token-id NMI excess over null "
    "(raw) | first-choice NMI | loss vs matched dense [95% CI] | busiest / mean expert | "
    "wall (s) |"
)


def table(results: dict[str, EvaluationResult], seeds: list[int], out: Path) -> str:
    """One row per MoE arm and layer (one per dense arm), every column over `seeds`. The router
    claims of every MoE arm and layer form one family per seed (Holm), as in the quickstart's
    specialization finding, judged by the same functions."""
    arms = [
        name
        for name, (family, _) in ARMS.items()
        if all(run_name(a, s) in results for a in (name, MATCHED_DENSE[family]) for s in seeds)
    ]
    by_arm = {name: [results[run_name(name, s)] for s in seeds] for name in arms}
    moe = {name: rs for name, rs in by_arm.items() if rs[0].routing}
    adjusted = [router_tests(moe, i) for i in range(len(seeds))]
    n_tests = max((len(a) for a in adjusted), default=0)
    lines = [HEADER, "|" + "---|" * HEADER.count(" |")]
    for name in arms:
        family = ARMS[name][0]
        runs, dense = by_arm[name], by_arm[MATCHED_DENSE[family]]
        loss = "(matched dense)" if name == MATCHED_DENSE[family] else _loss(runs, dense)
        walls = [wall_seconds(out / "runs" / run_name(name, s)) for s in seeds]
        head = f"| {name} | {{layer}} | {len(seeds)} |"
        wall = f"{sum(walls) / len(walls):.0f}"
        if name not in moe:
            lines.append(head.format(layer="-") + " - |" * 11 + f" {loss} | - | {wall} |")
            continue
        for i, layer in enumerate(runs[0].routing):
            layers = [r.routing[i] for r in runs]
            specs = [x.specialization for x in layers]
            ps = [a.get((name, i)) for a in adjusted]
            reps = nmi_replicates(runs, i)
            per_seed = [layer_source_over_seeds([x], [p]) for x, p in zip(layers, ps, strict=True)]
            probes = [s.probe for s in specs if s.probe]
            cells = [
                layer_source_over_seeds(layers, ps, reps),
                _counts(per_seed),
                _mean([s.nmi for s in specs]),
                *_gate_cells(specs, ps),
                _paired([s.router_made for s in specs], reps["router_made"]),
                _paired([s.emergent for s in specs], reps["emergent"]),
                _interaction(specs),
                f"{_mean([p.accuracy for p in probes])} / {_mean([p.nmi for p in probes])}"
                if probes
                else "-",
                _token_id_cell([s.token_id for s in specs if s.token_id]),
                _mean([s.first_choice_nmi for s in specs if s.first_choice_nmi is not None]),
                loss,
                _mean([r.routing[i].max_over_mean for r in runs]),
                wall,
            ]
            lines.append(head.format(layer=layer.layer) + " " + " | ".join(cells) + " |")
    first = next(iter(moe.values()), [None])[0]
    null = first.routing[0].specialization.gate_null if first is not None else None
    note = (
        f"Router claims: {n_tests} comparisons per seed (MoE arms x layers), Holm at family "
        f"level {FAMILY_ALPHA:.0%}; {null.n if null else 0} random gates per layer."
    )
    return "\n".join(lines) + "\n\n" + note


def _loss(runs: list[EvaluationResult], dense: list[EvaluationResult]) -> str:
    mean, ci, verdict, *_ = loss_comparison(runs, dense)
    return f"{mean:+.3f} {format_interval(ci)}" if ci is not None else f"{mean:+.3f} ({verdict})"


def evaluate_runs(
    out: Path, names: list[str], corpus_dir: Path, options: EvaluationOptions
) -> dict[str, EvaluationResult]:
    """Each run's evaluation, kept in out/eval/NAME.json and reused while it was made with the
    same number of gates, so a re-run evaluates only what is new."""
    cached: dict[str, EvaluationResult] = {}
    for name in names:
        path = out / "eval" / f"{name}.json"
        if path.is_file():
            result = EvaluationResult.model_validate_json(path.read_text(encoding="utf-8"))
            nulls = [r.specialization.gate_null for r in result.routing]
            if all(n is not None and n.n == options.random_gates for n in nulls):
                cached[name] = result
    todo = [n for n in names if n not in cached]
    if todo:
        evaluated = evaluate_models(
            [out / "runs" / n for n in todo], load_corpus(corpus_dir), options=options
        )
        (out / "eval").mkdir(exist_ok=True)
        for name, result in zip(todo, evaluated, strict=True):
            path = out / "eval" / f"{name}.json"
            path.with_suffix(".tmp").write_text(result.model_dump_json(), encoding="utf-8")
            path.with_suffix(".tmp").replace(path)
            cached[name] = result
    return {name: cached[name] for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arm names")
    parser.add_argument("--size", default="default", choices=["default", "tiny"])
    parser.add_argument(
        "--gates",
        type=int,
        default=None,
        help="random gates per MoE layer (default: enough for Holm over the arms x layers "
        "family, gates_for_family)",
    )
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
    moe_layers = len(runs["moe"].moe.resolve_layers(runs["moe"].model.n_layer))
    n_moe_arms = sum(1 for name in chosen if "moe.enabled=false" not in ARMS[name][1])
    gates = args.gates or gates_for_family(n_moe_arms * moe_layers)
    options = EvaluationOptions(max_blocks=PLANS[args.size].eval_max_blocks, random_gates=gates)
    names = [
        run_name(name, seed)
        for name in chosen
        for seed in seeds
        if (out / "runs" / run_name(name, seed) / RESULT_FILE).is_file()
    ]
    results = evaluate_runs(out, names, corpus_dir, options)
    (out / "experiment.json").write_text(
        json.dumps({n: r.model_dump(mode="json") for n, r in results.items()}), encoding="utf-8"
    )
    text = table(results, seeds, out)
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"done in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
