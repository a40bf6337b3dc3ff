"""How often does the study say "made by the router" when no router learned, and when one plainly
routes by domain? (issue 24, section 5: the verdict's error rates, end to end on trained models)

Every run is a tiny scratch MoE (the quickstart's `study-cpu-tiny` model: 2 layers, 32 wide,
8 experts in both layers, top-1) trained with `moe.router_lr_scale=0`, so its gates never leave
their initial draw while the body trains around them. One seed per run (`train.seed` draws the
body and the gates alike), so the runs are independent units. Each trained run is then judged in
three worlds, every one evaluated as the quickstart evaluates (`evaluate_models` on the run
directory, the init record as the step-0 control) and counted by the study's own rule:

- null: the run as trained. Its router is a gate drawn like any random gate (checked: the
  trained gates are bitwise the init record's). The frozen-gate control compares that gate with
  itself here, so the old rule cannot fire; the gate-null rule can, if the body co-adapted with
  its fixed gate.
- null-redrawn: every gate replaced by a fresh draw from the init distribution
  (N(0, initializer_range), seeded apart from the run's own), the init record unchanged: the
  issue's end-to-end null, where "trained" and "frozen" gate are two independent random draws.
- planted: every gate replaced by a domain probe's gate (`planted_gate`): a bias-free linear
  domain probe fit on the layer's input over train-split blocks of the trained body (layer by
  layer, each later layer seeing the earlier planted gates), whose direction for domain d is
  added to the rows of experts e with e mod D = d, at PLANT_STRENGTH times the gate's row norm,
  on top of the run's own init gate (which spreads a domain over its experts). The step-0 model
  stays the control, so the planted world asks: is a router that plainly routes by domain called
  "made by the router"?

A run counts as "made by the router" when any MoE layer gets that verdict, the way the study's
specialization finding reads a run. Three rules are counted (`RULES`): the frozen-gate rule
before issue 24 (trained router vs its init gate on the trained body); the study's verdict now
(the gate null, Holm over the run's layers, plus a rise of the model's routing over step 0); and
the router claim alone ("made" or "kept by the router"), since a planted gate may beat the gates
without the model rising over its step-0 routing. Rates come with exact Clopper-Pearson
intervals over runs. Finished runs and evaluations are kept under --out and
skipped on a re-run. Usage (niced, sequential, about 35 s a run on one loaded CPU core):

    nice python scripts/router_error_rates.py --out /tmp/router-error-rates [--runs 60]
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from moectl.analysis.bootstrap import N_BOOTSTRAP
from moectl.analysis.controls import capture_layer_inputs, draw_gates
from moectl.analysis.eval_blocks import select_blocks
from moectl.analysis.eval_files import save_results
from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.evaluate import evaluate_models
from moectl.analysis.gate_null import N_GATES, ROUTER_VERDICTS, family_verdicts
from moectl.analysis.results import EvaluationResult, load_results
from moectl.config import DataConfig, RunConfig
from moectl.data.prepare import prepare_corpus
from moectl.data.store import Corpus, load_corpus
from moectl.interop.loading import load_model
from moectl.model.arch import family_of
from moectl.model.initial import read_gates, read_init_record
from moectl.model.io import save_model
from moectl.model.routing import moe_layers
from moectl.rundir.locate import best_model
from moectl.study.plan import plan_configs
from moectl.training.trainer import train_run

WORLDS = ("null", "null-redrawn", "planted")
CORPUS = {"size_mb": 0.6, "eval_min_texts": 24, "eval_max_fraction": 0.4}
"""study-cpu-tiny's corpus, grown until its eval split holds >= 20 documents in every domain
(the built-in code domain is whole stdlib files: at the tiny size it is one document)."""
STEPS = 150  # the tiny study trains 48; 150 lets the body separate the domains (probe 0.5 -> 0.65)
EVAL_BLOCKS = 72  # 24 blocks per domain, each from a different document where it can
PROBE_BLOCKS = 96  # train-split blocks the planted gate's probe is fit on
PROBE_STEPS = 200
PLANT_STRENGTH = 4.0
REDRAW_SEED = 10_000  # offset of the redrawn gates' seed from the run's seed
N_NULL_GATES = N_GATES
"""Gates in each layer's null: the product's own count (199). At 64 the rank test could not see
the co-adapted frozen gate of the null world (docs/testing.md), so measure what ships."""
LEVEL = 0.95


def run_config(seed: int, steps: int = STEPS) -> RunConfig:
    """The quickstart's tiny scratch MoE variant, frozen router, one seed; one checkpoint."""
    overrides = [
        "moe.router_lr_scale=0",
        f"train.max_steps={steps}",
        f"train.eval_every={steps}",
        f"train.save_every={steps}",
        "train.keep_last=1",
        "train.sinks=[]",
    ]
    config = plan_configs("tiny", "scratch", overrides)[1]["moe"]
    config.name, config.train.seed = f"seed-{seed}", seed
    return config


def prepare(out: Path) -> None:
    """The one corpus every run trains and is evaluated on, in OUT/data (prepared once)."""
    data_dir = out / "data"
    if not (data_dir / "manifest.json").is_file():
        base = plan_configs("tiny", "scratch")[0]
        prepare_corpus(DataConfig(**{**base.model_dump(), **CORPUS}), data_dir, force=True)


def train_null_run(config: RunConfig, data_dir: Path, run_dir: Path) -> None:
    """Train one frozen-router run (skipped when its model is saved) and check that every gate
    is still bitwise its init-record draw."""
    if best_model(run_dir) is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        with torch.random.fork_rng(devices=[]):
            train_run(config, data_dir, run_dir)
    if not gates_unchanged(run_dir):
        raise RuntimeError(f"{run_dir}: a gate moved under router_lr_scale=0")


def gates_unchanged(run_dir: Path) -> bool:
    """Whether the run's saved model has exactly the gates its init record holds."""
    init = read_gates(run_dir, read_init_record(run_dir))
    model = load_model(best_model(run_dir)).model
    return all(
        torch.equal(layer.gate.weight.detach(), init[f"{index}.gate.weight"])
        for index, layer in moe_layers(model).items()
    )


def redrawn_gates(model: torch.nn.Module, seed: int) -> dict[int, torch.Tensor]:
    """Per MoE layer a fresh gate drawn as the init draws one, from a seed no run uses."""
    std = model.config.initializer_range
    return {
        index: draw_gates(1, layer.n_experts, layer.gate.weight.shape[1], std, seed + index)[0]
        for index, layer in moe_layers(model).items()
    }


def fit_domain_directions(hidden: torch.Tensor, labels: torch.Tensor, n_labels: int, seed: int):
    """(D, H) weights of a softmax domain classifier without bias on raw layer inputs (a gate
    has no bias), full-batch Adam, seeded."""
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn((n_labels, hidden.shape[1]), generator=generator) * 0.01).requires_grad_()
    optimizer = torch.optim.Adam([weight], lr=0.05, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(PROBE_STEPS):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(hidden @ weight.T, labels).backward()
            optimizer.step()
    return weight.detach()


def planted_gate(gate: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """The gate with domain d's probe weights added to the rows of experts e = d mod D, all
    scaled by one factor (so the probe's decisions are kept) to a mean row norm of
    PLANT_STRENGTH times the gate's: top-1 sends the tokens the probe calls domain d to d's
    experts, and the original gate spreads them among those."""
    rows = directions[torch.arange(gate.shape[0]) % directions.shape[0]]
    scale = PLANT_STRENGTH * gate.norm(dim=1).mean() / directions.norm(dim=1).mean()
    return gate + scale * rows


def planted_gates(model: torch.nn.Module, corpus: Corpus, seed: int) -> dict[int, torch.Tensor]:
    """Plant every MoE layer's gate in turn (so a later layer's probe sees the planted earlier
    layers), each fit on train-split blocks; the model's gates are set along the way."""
    options = EvaluationOptions(split="train", max_blocks=PROBE_BLOCKS, seed=seed)
    blocks = select_blocks(corpus, options)
    ids = torch.tensor([b.ids for b in blocks], dtype=torch.long)
    labels = torch.tensor([b.domain for b in blocks]).repeat_interleave(ids.shape[1])
    layers = moe_layers(model)
    planted = {}
    for index, layer in sorted(layers.items()):
        with torch.no_grad(), capture_layer_inputs({index: layer}) as inputs:
            family_of(model).body(model)(input_ids=ids)
        directions = fit_domain_directions(inputs[index], labels, len(corpus.domains), seed)
        planted[index] = planted_gate(layer.gate.weight.detach().float(), directions)
        layer.gate.weight.data.copy_(planted[index])
    return planted


def derive_run(run_dir: Path, target: Path, gates: dict[int, torch.Tensor]) -> Path:
    """A copy of the run (config, run record, init record) whose model has `gates` in place of
    its own: the evaluation reads it as it reads the run, the step-0 control included."""
    if best_model(target) is not None:
        return target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("checkpoints", "best"))
    loaded = load_model(best_model(run_dir))
    for index, layer in moe_layers(loaded.model).items():
        layer.gate.weight.data.copy_(gates[index])
    save_model(loaded.model, target / "best", loaded.meta, loaded.tokenizer)
    return target


def world_dirs(out: Path, seed: int, corpus: Corpus) -> dict[str, Path]:
    """The run of `seed` in each world (the null run must be trained)."""
    run_dir = out / "runs" / f"seed-{seed}"
    model = load_model(best_model(run_dir)).model
    dirs = {"null": run_dir}
    redrawn = redrawn_gates(model, REDRAW_SEED + 100 * seed)
    dirs["null-redrawn"] = derive_run(run_dir, out / "runs" / f"seed-{seed}-redrawn", redrawn)
    planted_dir = out / "runs" / f"seed-{seed}-planted"
    if best_model(planted_dir) is None:
        with torch.random.fork_rng(devices=[]):
            derive_run(run_dir, planted_dir, planted_gates(model, corpus, seed))
    dirs["planted"] = planted_dir
    return dirs


def evaluate_run(
    out: Path,
    seed: int,
    corpus: Corpus,
    eval_blocks: int,
    n_gates: int = N_NULL_GATES,
    n_bootstrap: int = N_BOOTSTRAP,
) -> dict[str, Path]:
    """Every world of one run evaluated on the same blocks (skipped when its file exists)."""
    files = {world: out / "eval" / f"seed-{seed}-{world}.json" for world in WORLDS}
    if all(f.is_file() for f in files.values()):
        return files
    dirs = world_dirs(out, seed, corpus)
    options = EvaluationOptions(
        max_blocks=eval_blocks,
        n_permutations=5,
        n_bootstrap=n_bootstrap,
        random_gates=n_gates,
        seed=seed,
    )
    results = evaluate_models([dirs[w] for w in WORLDS], corpus, options=options)
    for world, result in zip(WORLDS, results, strict=True):
        save_results([result], files[world])
    return files


def run_worlds(
    out: Path,
    data_dir: Path,
    seeds: list[int],
    steps: int = STEPS,
    eval_blocks: int = EVAL_BLOCKS,
    n_gates: int = N_NULL_GATES,
    n_bootstrap: int = N_BOOTSTRAP,
    on_run: Callable[[int, float], None] | None = None,
) -> dict[str, list[EvaluationResult]]:
    """Train (or reuse) one frozen-router run per seed, one after another, and evaluate each in
    every world: world -> results in seed order."""
    corpus = load_corpus(data_dir)
    files = []
    for seed in seeds:
        begun = time.perf_counter()
        train_null_run(run_config(seed, steps), data_dir, out / "runs" / f"seed-{seed}")
        files.append(evaluate_run(out, seed, corpus, eval_blocks, n_gates, n_bootstrap))
        if on_run is not None:
            on_run(seed, time.perf_counter() - begun)
    return {w: [load_results(f[w])[0] for f in files] for w in WORLDS}


# --- counting ---------------------------------------------------------------------------------


def frozen_gate_rule(result: EvaluationResult) -> list[bool]:
    """Per MoE layer, the rule before issue 24: "made by the router" when the trained router
    beats its own init gate on the trained hidden states (`router_made` emerged; in results of
    format 2 that difference is bias-corrected)."""
    return [layer.specialization.router_made.verdict == "emerged" for layer in result.routing]


def gate_null_verdicts(result: EvaluationResult) -> list[str | None]:
    """Per MoE layer, the study's router verdict (issue 24): the gate-null test, Holm over the
    run's layers, and the model verdict (trained vs step-0 model)."""
    scores = [layer.specialization for layer in result.routing]
    return family_verdicts(
        [s.gate_null.p_value if s.gate_null is not None else None for s in scores],
        [s.emergent.verdict for s in scores],
        [s.router_made.verdict for s in scores],
    )


def gate_null_rule(result: EvaluationResult) -> list[bool]:
    """Per MoE layer, whether the study says "made by the router" (beats the gate null, Holm
    over layers, and the model's routing rose over step 0)."""
    return [v == "made by the router" for v in gate_null_verdicts(result)]


def router_claim_rule(result: EvaluationResult) -> list[bool]:
    """Per MoE layer, whether the router beats the gate null at all ("made" or "kept by the
    router"), whatever the step-0 model did: the router claim alone."""
    return [v in ROUTER_VERDICTS[:2] for v in gate_null_verdicts(result)]


RULES: dict[str, Callable[[EvaluationResult], list[bool]]] = {
    "frozen gate (before issue 24)": frozen_gate_rule,
    "gate null: made by the router": gate_null_rule,
    "gate null: made or kept (router claim)": router_claim_rule,
}


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact binomial interval of k successes in n trials (tail bisection, no scipy)."""

    def tail(p: float, at_least: int) -> float:
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(at_least, n + 1))

    def solve(target: Callable[[float], float]) -> float:  # target is increasing in p
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if target(mid) < 0 else (lo, mid)
        return (lo + hi) / 2

    alpha = 1 - level
    lower = 0.0 if k == 0 else solve(lambda p: tail(p, k) - alpha / 2)
    upper = 1.0 if k == n else solve(lambda p: alpha / 2 - (1 - tail(p, k + 1)))
    return lower, upper


@dataclass
class Rate:
    """How many of `n` runs (or layers) a rule called "made by the router"."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n

    def text(self) -> str:
        lo, hi = clopper_pearson(self.k, self.n)
        return f"{self.k}/{self.n} = {self.value:.0%} [{lo:.0%}, {hi:.0%}]"


def rates(
    results: list[EvaluationResult], rule: Callable[[EvaluationResult], list[bool]]
) -> tuple[Rate, dict[int, Rate]]:
    """(runs with any layer made by the router, per layer rates) over one world's results."""
    calls = [rule(r) for r in results]
    layers = results[0].moe_layers
    per_layer = {
        layer: Rate(sum(c[i] for c in calls), len(calls)) for i, layer in enumerate(layers)
    }
    return Rate(sum(any(c) for c in calls), len(calls)), per_layer


def table(by_world: dict[str, list[EvaluationResult]]) -> list[str]:
    """One markdown row per (rule, world): the run-level rate and the per-layer rates."""
    lines = [
        "| rule | world | runs 'made by the router' [95% CP] | per layer |",
        "|---|---|---|---|",
    ]
    for name, rule in RULES.items():
        for world, results in by_world.items():
            run_rate, per_layer = rates(results, rule)
            layers = ", ".join(f"L{layer} {r.k}/{r.n}" for layer, r in per_layer.items())
            lines.append(f"| {name} | {world} | {run_rate.text()} | {layers} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=60, help="K, the number of seeds (>= 20)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--eval-blocks", type=int, default=EVAL_BLOCKS)
    parser.add_argument("--gates", type=int, default=N_NULL_GATES, help="gates in the null")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(1)
    prepare(args.out)
    by_world = run_worlds(
        args.out,
        args.out / "data",
        list(range(args.first_seed, args.first_seed + args.runs)),
        args.steps,
        args.eval_blocks,
        args.gates,
        on_run=lambda seed, seconds: print(f"seed {seed}: {seconds:.1f} s", flush=True),
    )
    sample = by_world["null"][0].sample
    print(
        f"\nK = {args.runs} runs ({args.steps} steps, router_lr_scale=0); eval sample per domain: "
        + ", ".join(f"{d} {s.blocks} blocks / {s.documents} documents" for d, s in sample.items())
    )
    print("\n".join(table(by_world)))
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
