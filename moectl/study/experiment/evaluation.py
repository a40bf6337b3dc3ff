"""Evaluating an experiment's runs: every run on the same eval blocks, each result kept in
eval/<run>.json and reused while the options it was made with (eval/options.json) are the
experiment's, so a re-run evaluates only what is new."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.gate_null import N_GATES
from moectl.analysis.multiplicity import FAMILY_ALPHA
from moectl.analysis.results import EvaluationResult, load_results
from moectl.fs import write_text
from moectl.progress import ProgressCallback
from moectl.study.experiment.configs import ExperimentPlan
from moectl.study.parallel import RESULT_FILE

OPTIONS_FILE = "options.json"


def gates_for_family(n_tests: int) -> int:
    """Random gates per MoE layer for a family of `n_tests` router claims, fixed before any
    result is seen: the rank p-value's floor 1 / (n + 1) at a quarter of Holm's smallest
    threshold FAMILY_ALPHA / n_tests, so the correction, not the gate count, limits a claim;
    never fewer than the product's N_GATES."""
    return max(N_GATES, math.ceil(4 * n_tests / FAMILY_ALPHA) - 1)


def evaluation_options(plan: ExperimentPlan) -> EvaluationOptions:
    """The experiment file's evaluation sizes; the gate count, unless the file fixes it, from
    the experiment's router claims (MoE arms x layers)."""
    spec = plan.spec.evaluation
    return EvaluationOptions(
        max_blocks=spec.max_blocks,
        n_permutations=spec.n_permutations,
        random_gates=spec.random_gates or gates_for_family(plan.router_tests()),
        functional=spec.functional,
    )


def evaluate_runs(
    eval_dir: Path,
    run_dirs: dict[str, Path],
    corpus_dir: Path,
    options: EvaluationOptions,
    callback: ProgressCallback | None = None,
) -> dict[str, EvaluationResult]:
    """Each run's evaluation (run name -> result), from eval_dir/NAME.json where it was made
    with `options` after the run finished (a run trained again is evaluated again), else
    evaluated now and kept there as soon as it is done, so a stopped evaluation resumes with
    the runs it had not reached. Results made with other options are removed before the first
    new one is kept: eval_dir/options.json names the options of every result beside it."""
    from moectl.analysis.eval_files import save_results
    from moectl.analysis.evaluate import iter_evaluations
    from moectl.data.store import load_corpus

    wanted = json.dumps(asdict(options), sort_keys=True)
    options_path = eval_dir / OPTIONS_FILE
    same = options_path.is_file() and options_path.read_text(encoding="utf-8") == wanted
    found: dict[str, EvaluationResult] = {}
    for name in run_dirs:
        path = eval_dir / f"{name}.json"
        if same and path.is_file() and _newer(path, run_dirs[name] / RESULT_FILE):
            found[name] = load_results(path)[0]
    todo = [name for name in run_dirs if name not in found]
    if not todo:
        return found
    if not same:
        for stale in eval_dir.glob("*.json"):
            stale.unlink()
        write_text(options_path, wanted)
    evaluated = iter_evaluations(
        [run_dirs[name] for name in todo],
        load_corpus(corpus_dir),
        options=options,
        callback=callback,
    )
    for name, result in zip(todo, evaluated, strict=True):
        save_results([result], eval_dir / f"{name}.json")
        found[name] = result
    return {name: found[name] for name in run_dirs}


def _newer(path: Path, than: Path) -> bool:
    return not than.is_file() or path.stat().st_mtime >= than.stat().st_mtime
