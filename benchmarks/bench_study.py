"""The quickstart's per-seed training cost, old against new, and the levers issue 25 named, each
as a ratio measured in one run.

1. Whole runs (what a seed costs): `train_run` of the quickstart's own dense and top-1 MoE
   configs (`plan_configs("default")`: one thread each, its evaluation, logging and
   checkpoints) on the quickstart's corpus, each in a fresh process, for `--steps` steps. "old"
   is the trainer with glibc's default allocator thresholds (`retain_freed_memory` patched
   out), "new" the trainer as it is. Old and new alternate, `--repeats` times, so both see the
   same machine. Wall time, and the child's system time and minor page faults.
2. One step, three ways, in one process (interleaved, freed memory retained in all): the
   per-seed step; three seeds' batches as one batch, per seed (the most that training the
   seeds as one stacked model could give each op: the same weights' matmuls on three times the
   rows); and the step under torch.compile (its compile time printed apart).

    python benchmarks/bench_study.py --steps 100 --repeats 2
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_precision import STUDY_SHAPE
from bench_train import Runner

from moectl.allocator import retain_freed_memory
from moectl.config import resolve_run_config
from moectl.data.prepare import prepare_corpus
from moectl.study.plan import plan_configs

TRAIN = """
import sys
from moectl.config import RunConfig
from moectl.training import trainer
if sys.argv[1] == "old":
    trainer.retain_freed_memory = lambda: False
config = RunConfig.model_validate_json(open(sys.argv[2]).read())
trainer.train_run(config, sys.argv[3], sys.argv[4])
"""
STUDY_VOCAB = 4096
"""The study's bpe:4096."""


def timed_run(variant: str, config_file: Path, corpus: Path, run_dir: Path) -> dict[str, float]:
    """Wall seconds, and the child's user and system seconds and minor faults, of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [sys.executable, "-c", TRAIN, variant, str(config_file), str(corpus), str(run_dir)]
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall": wall,
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
        "faults": after.ru_minflt - before.ru_minflt,
    }


def whole_runs(steps: int, repeats: int, arms: list[str]) -> None:
    data_config, configs = plan_configs("default")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        prepare_corpus(data_config, root / "corpus")
        for arm in arms:
            config = configs[arm].model_copy(deep=True)
            config.train.max_steps = steps
            config_file = root / f"{arm}.json"
            config_file.write_text(config.model_dump_json())
            totals = {
                v: dict.fromkeys(("wall", "user", "sys", "faults"), 0.0) for v in ("old", "new")
            }
            for repeat in range(repeats):
                for variant in ("old", "new"):
                    run_dir = root / f"{arm}-{variant}-{repeat}"
                    for key, value in timed_run(
                        variant, config_file, root / "corpus", run_dir
                    ).items():
                        totals[variant][key] += value / repeats
            old, new = totals["old"], totals["new"]
            print(
                f"{arm}, {steps} steps, mean of {repeats}: "
                f"old {old['wall']:.1f} s (user {old['user']:.1f} s, sys {old['sys']:.1f} s, "
                f"{old['faults']:,.0f} faults), new {new['wall']:.1f} s (user {new['user']:.1f} s, "
                f"sys {new['sys']:.1f} s, {new['faults']:,.0f} faults), "
                f"old/new {old['wall'] / new['wall']:.2f}x"
            )


def study_runner(preset: str, batch: int, total: int, compile: bool = False) -> Runner:
    """`preset` at the quickstart's shape (bench_precision's), `batch` sequences a step."""
    config = resolve_run_config(preset, overrides=[*STUDY_SHAPE, f"train.batch_size={batch}"])
    return Runner(config, STUDY_VOCAB, torch.device("cpu"), total, compile)


def one_step(steps: int, warmup: int) -> None:
    total = warmup + steps
    for preset in ("cpu-dense", "cpu-moe"):
        compiled = study_runner(preset, 16, total + 1, compile=True)  # + the compiling step
        started = time.perf_counter()
        compiled.timed_steps(1)
        compile_s = time.perf_counter() - started
        runners = {  # label: (runner, seeds a step trains)
            "per seed": (study_runner(preset, 16, total), 1),
            "3 seeds as one batch": (study_runner(preset, 48, total), 3),
            "torch.compile": (compiled, 1),
        }
        seconds = dict.fromkeys(runners, 0.0)
        for step in range(total):
            for label, (runner, _) in runners.items():  # interleaved: the same machine load
                elapsed = runner.timed_steps(1)
                if step >= warmup:
                    seconds[label] += elapsed
        per_seed = {label: seconds[label] / steps / seeds for label, (_, seeds) in runners.items()}
        base = per_seed["per seed"]
        figures = ", ".join(
            f"{label} {value * 1000:.0f} ms ({base / value:.2f}x)"
            for label, value in per_seed.items()
        )
        print(f"{preset} step per seed: {figures}; compile took {compile_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps of each whole run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--arms", default="dense,moe", help="the quickstart's arms to run whole")
    parser.add_argument("--no-step", action="store_true", help="skip part 2")
    parser.add_argument("--step-steps", type=int, default=10, help="timed steps in part 2")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, "
        f"amx {torch.cpu._is_amx_tile_supported()}"
    )
    whole_runs(args.steps, args.repeats, args.arms.split(","))
    if not args.no_step:
        torch.set_num_threads(1)
        retain_freed_memory()
        one_step(args.step_steps, args.warmup)


if __name__ == "__main__":
    main()
