"""The reference study scaled to a CPU, as one resumable pipeline (`moectl quickstart`).

Stages: prepare a built-in corpus; with the `upcycle` plan, pretrain a small dense GPT-2 and
continue four variants from it for the same number of steps (dense: the matched baseline; moe:
8 experts, top-1, LB on; no-lb: no load balancing and no router noise, stopped on collapse;
top2); with the `scratch` plan, train the same four from random weights. Variants train two at
a time in worker processes; then evaluate all (each MoE against its own init router) and draw
the figures and the report. Finished stages are recorded in OUT/study.json, so a re-run skips
them, and an interrupted training stage resumes from its latest checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from moectl.analysis.results import Finding
from moectl.errors import MoectlError
from moectl.fs import write_text
from moectl.progress import ProgressCallback, report
from moectl.study.plan import (
    DEFAULT_PLAN,
    PLANS,
    VARIANTS,
    StudyPlanName,
    StudySize,
    plan_configs,
)

STATE_FILE = "study.json"
TENSORBOARD_OVERRIDE = "train.sinks=[tensorboard]"


class StudyInterrupted(MoectlError):
    """A training stage stopped on Ctrl-C / SIGTERM after saving a checkpoint."""

    exit_code = 130


class StageOutcome(BaseModel):
    """How one stage went in this invocation."""

    name: str
    status: Literal["done", "skipped", "resumed"]
    seconds: float
    path: str


class StudyResult(BaseModel):
    """What the quickstart built and found."""

    out: str
    size: StudySize
    plan: StudyPlanName
    corpus: str
    runs: dict[str, str]
    eval_files: list[str]
    figures: list[str]
    report: str | None
    token_page: str | None
    stages: list[StageOutcome]
    findings: list[Finding]
    seconds: float


def run_study(
    out: Path,
    size: StudySize = "default",
    callback: ProgressCallback | None = None,
    on_stage: Callable[[StageOutcome], None] | None = None,
    *,
    plan_name: StudyPlanName = DEFAULT_PLAN,
    overrides: list[str] | None = None,
    tensorboard: bool = True,
) -> StudyResult:
    """Run (or finish) the study in `out`; finished stages are skipped, interrupted ones resume.

    `overrides` (`key=value`, as `train --set`) apply to every training stage, so any arm of the
    specialization experiment (docs/study.md) runs as a study, e.g. `moe.router_lr_scale=10`.
    `tensorboard` gives every run TensorBoard event files (RUN_DIR/tensorboard); it goes first
    among the overrides, so a `train.sinks=...` of the caller's replaces it.
    """
    from moectl.analysis.evaluate import EvaluationOptions, evaluate_models, save_results
    from moectl.analysis.results import load_results
    from moectl.data.prepare import prepare_corpus
    from moectl.data.store import load_corpus
    from moectl.study.findings import figures_finding, study_findings
    from moectl.study.parallel import TrainJob, run_parallel
    from moectl.viz.study import visualize_study

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = [TENSORBOARD_OVERRIDE, *(overrides or [])] if tensorboard else overrides
    state = _read_state(out, size, plan_name, overrides or [])
    plan = PLANS[size]
    data_config, run_configs = plan_configs(size, plan_name, overrides)
    stages: list[StageOutcome] = []
    corpus_dir = out / "data"
    run_dirs = {name: out / "runs" / name for name in run_configs}
    eval_dir = out / "eval"
    figures_dir = out / "figures"
    report_path = out / "report.html"

    def record(name: str, path: Path, status: str, seconds: float) -> None:
        outcome = StageOutcome(name=name, status=status, seconds=seconds, path=str(path))
        if status != "skipped":
            state["done"][name] = seconds
            _write_state(out, state)
        stages.append(outcome)
        if on_stage is not None:
            on_stage(outcome)

    def stage(name: str, path: Path, work: Callable[[], Any]) -> None:
        if name in state["done"]:
            record(name, path, "skipped", 0.0)
            return
        begun = time.perf_counter()
        resumed = path.exists()
        report(callback, "study", len(stages), None, message=f"stage {name}")
        work()
        record(name, path, "resumed" if resumed else "done", time.perf_counter() - begun)

    def train(names: list[str], init_from: Path | None, workers: int) -> None:
        jobs = []
        for name in names:
            if name in state["done"]:
                record(name, run_dirs[name], "skipped", 0.0)
            else:
                config = run_configs[name]
                jobs.append(TrainJob(name, config, corpus_dir, run_dirs[name], init_from))
        if not jobs:
            return
        begun = time.perf_counter()
        resumed = {job.name for job in jobs if job.run_dir.exists()}
        label = ", ".join(job.name for job in jobs)
        report(callback, "study", len(stages), None, message=f"stage {label}")

        def done(name: str, result: Any) -> None:
            if result.stop_reason == "interrupted":
                return
            status = "resumed" if name in resumed else "done"
            record(name, run_dirs[name], status, time.perf_counter() - begun)

        results = run_parallel(jobs, workers, callback, on_done=done)
        stopped = [name for name, result in results.items() if result.stop_reason == "interrupted"]
        if stopped or len(results) < len(jobs):
            raise StudyInterrupted(
                f"stage {', '.join(stopped) or label} was interrupted",
                hint="run the same quickstart command again to resume",
            )

    stage(
        "prepare-data",
        corpus_dir,
        lambda: prepare_corpus(data_config, corpus_dir, force=True, callback=callback),
    )
    start = None
    if "pretrain" in run_configs:
        train(["pretrain"], None, workers=1)
        start = run_dirs["pretrain"] / "best"
    train(list(VARIANTS), start, workers=plan.workers)

    variant_dirs = [run_dirs[v] for v in VARIANTS]

    def evaluate() -> None:
        corpus = load_corpus(corpus_dir)
        options = EvaluationOptions(
            max_blocks=plan.eval_max_blocks, n_permutations=plan.n_permutations
        )
        results = evaluate_models(variant_dirs, corpus, options=options, callback=callback)
        for variant, result in zip(VARIANTS, results, strict=True):
            save_results([result], eval_dir / f"{variant}.json")

    stage("evaluate", eval_dir, evaluate)
    results = [r for v in VARIANTS for r in load_results(eval_dir / f"{v}.json")]
    findings = study_findings(dict(zip(VARIANTS, results, strict=True)), run_dirs)
    stage(
        "visualize",
        figures_dir,
        lambda: visualize_study(
            variant_dirs,
            results,
            figures_dir,
            report_path=report_path,
            findings=findings,
            callback=callback,
        ),
    )
    figures = sorted(str(p) for p in figures_dir.glob("*") if p.suffix in (".png", ".svg"))
    token_page = figures_dir / "tokens.html"
    findings = [*findings, figures_finding(figures, token_page)]
    return StudyResult(
        out=str(out),
        size=size,
        plan=plan_name,
        corpus=str(corpus_dir),
        runs={name: str(path) for name, path in run_dirs.items()},
        eval_files=[str(eval_dir / f"{v}.json") for v in VARIANTS],
        figures=figures,
        report=str(report_path) if report_path.exists() else None,
        token_page=str(token_page) if token_page.exists() else None,
        stages=stages,
        findings=findings,
        seconds=time.perf_counter() - started,
    )


def _read_state(
    out: Path, size: StudySize, plan_name: StudyPlanName, overrides: list[str]
) -> dict[str, Any]:
    """The study's state file (size, plan, overrides, finished stages); refuses to mix studies
    in one folder, since the stages of the other one would be skipped as done."""
    state_file = out / STATE_FILE
    wanted = {"size": size, "plan_name": plan_name, "overrides": overrides}
    if not state_file.exists():
        state = {**wanted, "plan": PLANS[size].model_dump(), "done": {}}
        _write_state(out, state)
        return state
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        previous = {key: state[key] for key in wanted}
        done = state["done"]
    except (ValueError, KeyError, TypeError):
        raise MoectlError(
            f"{state_file} is not a moectl study state file of this version",
            hint="use another --out, or delete the folder to start over",
        ) from None
    if previous != wanted or not isinstance(done, dict):
        raise MoectlError(
            f"{out} holds a {_describe(previous)} study, not a {_describe(wanted)} one",
            hint="use another --out, or delete the folder to start over",
        )
    return state


def _describe(study: dict[str, Any]) -> str:
    text = f"'{study['size']}' '{study['plan_name']}'"
    return text + (f" ({' '.join(study['overrides'])})" if study["overrides"] else "")


def _write_state(out: Path, state: dict[str, Any]) -> None:
    write_text(out / STATE_FILE, json.dumps(state, indent=2))
