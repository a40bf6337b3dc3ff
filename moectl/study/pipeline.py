"""The reference study scaled to a CPU, as one resumable pipeline (`moectl quickstart`).

Stages: prepare a built-in corpus; with the `upcycle` plan, pretrain a small dense GPT-2 and
continue four variants from it for the same number of steps (dense: the matched baseline; moe:
8 experts, top-1, LB on; no-lb: no load balancing and no router noise, stopped on collapse;
top2); with the `scratch` plan, train the same four from random weights. Then evaluate all
(each MoE router against the distribution of random gates) and draw the figures and the report.

The study is a fixed experiment (study/plan.py: `quickstart_experiment`), planned, trained,
resumed and evaluated by the same code as `moectl experiment` (study/experiment): only its run
names, its state file and its report are its own. Finished
stages are recorded in OUT/study.json, so a re-run skips them; a finished run (its result.json)
is never trained again, and an interrupted one resumes from its latest checkpoint.

With several seeds (`seeds`, each a `train.seed`) every training stage runs once per seed: the
run of the configured seed keeps the plain name (`runs/moe`), the others are `runs/moe-seedN`
(and `runs/pretrain-seedN`, from which that seed's variants continue). One evaluation covers
every run on the same eval blocks; eval/<run>.json holds each.
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
from moectl.fs import check_writable_folder, write_text
from moectl.progress import ProgressCallback, report
from moectl.rundir.layout import STUDY_EVAL, STUDY_RUNS, STUDY_STATE
from moectl.rundir.summary import RunSummary
from moectl.study.experiment.configs import ExperimentPlan, PlannedRun
from moectl.study.experiment.training import train_runs
from moectl.study.plan import (
    DEFAULT_PLAN,
    PLANS,
    VARIANTS,
    StudyPlanName,
    StudySize,
    configured_seed,
    configured_seed_of,
    plan_quickstart,
    quickstart_experiment,
)

STATE_FILE = STUDY_STATE
TENSORBOARD_OVERRIDE = "train.sinks=[tensorboard]"


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
    seeds: list[int]
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
    seeds: list[int] | None = None,
    command: str | None = None,
    functional: bool = False,
) -> StudyResult:
    """Run (or finish) the study in `out`; finished stages are skipped, interrupted ones resume.

    `overrides` (`key=value`, as `train --set`) apply to every training stage, so any arm of the
    specialization experiment (docs/study.md) runs as a study, e.g. `moe.router_lr_scale=10`.
    `tensorboard` gives every run TensorBoard event files (RUN_DIR/tensorboard); it goes first
    among the overrides, so a `train.sinks=...` of the caller's replaces it.
    `seeds` (default: `plan.default_seeds`, three from the configured `train.seed`; tiny: one)
    repeats every stage per seed; `command`
    is the command line that asked for this study, recorded in the report's provenance.
    `functional` adds the functional test to the evaluation (many more forward passes, so off by
    default: docs/benchmarks.md).
    """
    from moectl.data.prepare import prepare_corpus
    from moectl.study.experiment.evaluation import evaluate_runs, evaluation_options
    from moectl.study.findings.claims import figures_finding

    started = time.perf_counter()
    out = Path(out)
    overrides = [TENSORBOARD_OVERRIDE, *(overrides or [])] if tensorboard else overrides
    seeds = list(dict.fromkeys(seeds)) if seeds else None
    spec = quickstart_experiment(size, plan_name, overrides, seeds, functional)
    planned = plan_quickstart(spec)
    seeds = planned.seeds
    wanted = {
        "size": size,
        "plan_name": plan_name,
        "overrides": overrides or [],
        "seeds": seeds,
        "functional": functional,
    }
    layout = _Layout.of(out, planned)
    check_writable_folder(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    state = _read_state(out, wanted, configured_seed_of(spec))
    stages: list[StageOutcome] = []
    n_stages = len(planned.runs) + 3  # prepare-data, every run, evaluate, visualize
    corpus_dir = out / "data"
    run_dirs = layout.run_dirs
    eval_dir = out / STUDY_EVAL
    figures_dir = out / "figures"
    report_path = out / "report.html"

    def record(name: str, path: Path, status: str, seconds: float) -> None:
        outcome = StageOutcome(name=name, status=status, seconds=seconds, path=str(path))
        if status != "skipped":
            state["done"][name] = seconds
            _write_state(out, state)
        stages.append(outcome)
        report(callback, "study", len(stages), n_stages, message=f"{name} {status}")
        if on_stage is not None:
            on_stage(outcome)

    def stage(name: str, path: Path, work: Callable[[], Any]) -> None:
        if name in state["done"]:
            record(name, path, "skipped", 0.0)
            return
        begun = time.perf_counter()
        resumed = path.exists()
        report(callback, "study", len(stages), n_stages, message=f"stage {name}")
        work()
        record(name, path, "resumed" if resumed else "done", time.perf_counter() - begun)

    def train(runs: list[PlannedRun], workers: int) -> None:
        """Train the planned runs the experiment's way (study/experiment/training.py)."""
        if not runs:
            return
        label = ", ".join(run.name for run in runs)
        report(callback, "study", len(stages), n_stages, message=f"stage {label}")
        train_runs(
            runs,
            layout.run_dir,
            corpus_dir,
            workers,
            callback,
            on_run=lambda name, status, seconds: record(name, run_dirs[name], status, seconds),
            resume_hint="run the same quickstart command again to resume",
        )

    stage(
        "prepare-data",
        corpus_dir,
        lambda: prepare_corpus(planned.corpus_config, corpus_dir, force=True, callback=callback),
    )
    workers = PLANS[size].workers
    train(planned.pretrains, min(workers, len(seeds)))
    evaluated = layout.evaluated
    train(sorted(planned.arms, key=lambda run: seeds.index(run.seed)), workers)  # seed by seed

    def evaluate() -> None:
        evaluate_runs(
            eval_dir,
            {name: run_dirs[name] for name in evaluated},
            corpus_dir,
            evaluation_options(planned),
            callback,
        )

    stage("evaluate", eval_dir, evaluate)
    findings = layout.findings()
    stage(
        "visualize",
        figures_dir,
        lambda: layout.visualize(findings, [command] if command else [], callback),
    )
    figures = sorted(str(p) for p in figures_dir.glob("*") if p.suffix in (".png", ".svg"))
    token_page = figures_dir / "tokens.html"
    findings = [*findings, figures_finding(figures, token_page)]
    return StudyResult(
        out=str(out),
        size=size,
        plan=plan_name,
        seeds=seeds,
        corpus=str(corpus_dir),
        runs={name: str(path) for name, path in run_dirs.items()},
        eval_files=[str(eval_dir / f"{name}.json") for name in evaluated],
        figures=figures,
        report=str(report_path) if report_path.exists() else None,
        token_page=str(token_page) if token_page.exists() else None,
        stages=stages,
        findings=findings,
        seconds=time.perf_counter() - started,
    )


class _Layout:
    """Which runs a study trains and evaluates (per variant and seed), where each is and what
    it starts from: what `run_study` trains and what `study_report` rebuilds the report from."""

    def __init__(
        self,
        out: Path,
        variant_runs: dict[str, list[str]],
        init_from: dict[str, Path | None],
        seeds: list[int],
    ) -> None:
        self.out, self.seeds = out, seeds
        self.variant_runs, self.init_from = variant_runs, init_from
        self.run_dirs = {name: out / STUDY_RUNS / name for name in init_from}
        self.evaluated = [names[i] for i in range(len(seeds)) for names in variant_runs.values()]

    @classmethod
    def of(cls, out: Path, planned: ExperimentPlan) -> _Layout:
        runs_dir = out / STUDY_RUNS
        init_from = {
            run.name: runs_dir / run.init_from / "best" if run.init_from else None
            for run in planned.runs
        }
        variant_runs = {v: [run.name for run in planned.arm_runs(v)] for v in VARIANTS}
        return cls(out, variant_runs, init_from, planned.seeds)

    def run_dir(self, name: str) -> Path:
        return self.run_dirs[name]

    def results(self) -> dict[str, Any]:
        """Each evaluated run's result, from the study's eval/NAME.json."""
        from moectl.analysis.results import load_results

        return {n: load_results(self.out / STUDY_EVAL / f"{n}.json")[0] for n in self.evaluated}

    def findings(self) -> list[Finding]:
        from moectl.study.findings.claims import study_findings

        loaded = self.results()
        return study_findings(
            {v: [loaded[name] for name in names] for v, names in self.variant_runs.items()},
            {v: [self.run_dirs[name] for name in names] for v, names in self.variant_runs.items()},
            self.seeds,
        )

    def visualize(
        self,
        findings: list[Finding],
        commands: list[str],
        callback: ProgressCallback | None = None,
        warnings: list[str] | None = None,
    ) -> list[Path]:
        """The study's figures and report.html (findings and provenance included)."""
        from moectl.viz.report import Provenance
        from moectl.viz.study import visualize_study

        corpus = self.out / "data"
        more = train_commands(self.out, corpus, self.run_dirs, self.init_from)
        return visualize_study(
            [self.run_dirs[name] for name in self.evaluated],
            list(self.results().values()),
            self.out / "figures",
            report_path=self.out / "report.html",
            findings=findings,
            provenance=Provenance.of(commands, self.seeds, more),
            callback=callback,
            warnings=warnings,
        )


class StudySummary(BaseModel):
    """What `moectl inspect STUDY` shows: the study's settings, its stages, and every run with
    the evaluation files that cover it."""

    kind: Literal["study"] = "study"
    path: str
    size: str
    plan: str
    overrides: list[str]
    seeds: list[int]
    stages_done: list[str]
    runs: list[RunSummary]
    evaluations: dict[str, list[str]]
    report: str | None


def study_summary(out: Path) -> StudySummary:
    """Everything `inspect` says about a study folder, read from its state file and runs."""
    from moectl.rundir.locate import evaluation_files, study_runs
    from moectl.rundir.summary import run_summary

    out = Path(out)
    state = _saved_state(out)
    runs = study_runs(out)
    return StudySummary(
        path=str(out),
        size=state["size"],
        plan=state["plan_name"],
        overrides=state["overrides"],
        seeds=state["seeds"],
        stages_done=list(state["done"]),
        runs=[run_summary(run) for run in runs],
        evaluations={run.name: [str(p) for p in evaluation_files(run)] for run in runs},
        report=str(out / "report.html") if (out / "report.html").is_file() else None,
    )


def study_report(
    out: Path, command: str | None = None, warnings: list[str] | None = None
) -> list[Path]:
    """Rebuild a finished study's figures and report.html, findings included, from what is in
    its folder (`moectl visualize STUDY`): after a re-evaluation, or with a newer moectl."""
    state = _saved_state(out)
    if "evaluate" not in state["done"]:
        raise MoectlError(
            f"the study in {out} has not been evaluated yet, so it has no findings to report",
            hint=f"finish it first: moectl quickstart --out {out} (same options as before)",
        )
    spec = quickstart_experiment(
        state["size"], state["plan_name"], state["overrides"], state["seeds"], state["functional"]
    )
    layout = _Layout.of(Path(out), plan_quickstart(spec))
    return layout.visualize(layout.findings(), [command] if command else [], warnings=warnings)


def train_commands(
    out: Path, corpus: Path, run_dirs: dict[str, Path], init_from: dict[str, Path | None]
) -> list[str]:
    """The `moectl train` line that reproduces each run by hand from its own config.yaml
    (paths relative to the study folder)."""
    lines = []
    for name, run_dir in run_dirs.items():
        rel = run_dir.relative_to(out)
        line = f"moectl train --config {rel}/config.yaml --data {corpus.relative_to(out)} "
        line += f"--run-dir {rel}"
        start = init_from[name]
        lines.append(line + (f" --init-from {start.relative_to(out)}" if start else ""))
    return lines


def _read_state(out: Path, wanted: dict[str, Any], base_seed: int) -> dict[str, Any]:
    """The study's state file (size, plan, overrides, seeds, functional test, finished stages);
    refuses a user's non-empty folder (every study writes its state file first) and to mix
    studies in one folder, since the stages of the other one would be skipped as
    done. A state file from before seeds were recorded is a study of the configured seed,
    without the functional test."""
    state_file = out / STATE_FILE
    if not state_file.exists():
        if any(out.iterdir()):
            raise MoectlError(
                f"{out} is not empty and holds no moectl study ({STATE_FILE})",
                hint="use a new or empty --out folder; a study writes only into its own",
            )
        state = {**wanted, "plan": PLANS[wanted["size"]].model_dump(), "done": {}}
        _write_state(out, state)
        return state
    state = _saved_state(out, base_seed)
    previous = {key: state[key] for key in wanted}
    done = state["done"]
    if previous != wanted or not isinstance(done, dict):
        seeds_differ = previous["seeds"] != wanted["seeds"]
        raise MoectlError(
            f"{out} holds a {_describe(previous, seeds_differ)} study, not a "
            f"{_describe(wanted, seeds_differ)} one",
            hint="use another --out, or delete the folder to start over",
        )
    return state


def _saved_state(out: Path, base_seed: int | None = None) -> dict[str, Any]:
    """A study's state file; one that predates seeds is of the configured seed (`base_seed`,
    else that of the study's plan), without the functional test."""
    state_file = Path(out) / STATE_FILE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if not {"size", "plan_name", "overrides", "done"} <= set(state):
            raise KeyError("a study state file names its size, plan, overrides and stages")
        if "seeds" not in state:
            if base_seed is None:
                base_seed = configured_seed(state["size"], state["plan_name"], state["overrides"])
            state["seeds"] = [base_seed]
        state.setdefault("functional", False)
    except (OSError, ValueError, KeyError, TypeError):
        raise MoectlError(
            f"{state_file} is not a moectl study state file of this version",
            hint="use another --out, or delete the folder to start over",
        ) from None
    return state


def _describe(study: dict[str, Any], with_seeds: bool) -> str:
    text = f"'{study['size']}' '{study['plan_name']}'"
    text += f" ({' '.join(study['overrides'])})" if study["overrides"] else ""
    text += " with the functional test" if study["functional"] else ""
    seeds = study["seeds"]
    listed = ",".join(map(str, seeds if len(seeds) <= 6 else [*seeds[:3], "...", seeds[-1]]))
    count = f" ({len(seeds)})" if len(seeds) > 6 else ""
    return text + (f" seeds {listed}{count}" if with_seeds else "")


def _write_state(out: Path, state: dict[str, Any]) -> None:
    write_text(out / STATE_FILE, json.dumps(state, indent=2))
