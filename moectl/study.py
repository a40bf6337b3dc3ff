"""The reference study scaled to a CPU, as one resumable pipeline (`moectl quickstart`).

Stages: prepare a built-in corpus; pretrain a small dense GPT-2; from that model, continue four
variants for the same number of steps (dense: the matched baseline; moe: 8 experts, top-1, LB on;
no-lb: no load balancing and no router noise, stopped on collapse; top2); evaluate all; draw the
figures and report. Each stage leaves a marker when it finishes, so a re-run skips it, and an
interrupted training stage resumes from its latest checkpoint.

The findings are computed from the study's own measurements and phrased plainly, including
when a finding of the reference study does not reproduce at this scale.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from moectl.analysis.results import Finding
from moectl.config import DataConfig, RunConfig, deep_merge, load_preset, validate
from moectl.errors import MoectlError
from moectl.progress import ProgressCallback, report

StudySize = Literal["tiny", "default"]
VARIANTS: dict[str, str] = {
    "dense": "cpu-dense",
    "moe": "cpu-moe",
    "no-lb": "cpu-no-lb",
    "top2": "cpu-top2",
}
STATE_FILE = "study.json"


class StudyInterrupted(MoectlError):
    """A training stage stopped on Ctrl-C / SIGTERM after saving a checkpoint."""

    exit_code = 130


class StudyPlan(BaseModel):
    """Sizes of one study: corpus, model, step counts and learning rates."""

    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any] = Field(description="train settings shared by every stage")
    pretrain_steps: int
    pretrain_lr: float
    variant_steps: int
    variant_lr: float
    eval_max_blocks: int
    n_permutations: int = 20


PLANS: dict[str, StudyPlan] = {
    "default": StudyPlan(
        data={"size_mb": 1.0, "block_size": 128, "tokenizer": "bpe:4096"},
        model={"n_layer": 4, "n_embd": 128, "n_head": 4},
        train={
            "batch_size": 16,
            "eval_every": 50,
            "eval_max_blocks": 96,
            "save_every": 50,
            "router_log_every": 10,
            "log_every": 10,
        },
        pretrain_steps=300,
        pretrain_lr=2e-3,
        variant_steps=200,
        variant_lr=1e-3,
        eval_max_blocks=192,
    ),
    "tiny": StudyPlan(
        data={"size_mb": 0.03, "block_size": 32, "tokenizer": "bpe:384"},
        model={"n_layer": 2, "n_embd": 32, "n_head": 2},
        train={
            "batch_size": 8,
            "eval_every": 10,
            "eval_max_blocks": 12,
            "save_every": 10,
            "router_log_every": 2,
            "log_every": 2,
        },
        pretrain_steps=16,
        pretrain_lr=3e-3,
        variant_steps=16,
        variant_lr=3e-3,
        eval_max_blocks=24,
        n_permutations=5,
    ),
}


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
    corpus: str
    runs: dict[str, str]
    eval_files: list[str]
    figures: list[str]
    report: str | None
    token_page: str | None
    stages: list[StageOutcome]
    findings: list[Finding]
    seconds: float


def plan_configs(size: StudySize) -> tuple[DataConfig, dict[str, RunConfig]]:
    """The corpus config and the run config of every training stage ('pretrain' + variants)."""
    plan = PLANS[size]
    data = validate(DataConfig, deep_merge(load_preset("cpu")["data"], plan.data), "study data")
    shared = {"data": data.model_dump(mode="json"), "model": plan.model, "train": plan.train}
    runs = {
        "pretrain": _run_config(
            "cpu-dense",
            shared,
            name="pretrain",
            steps=plan.pretrain_steps,
            lr=plan.pretrain_lr,
        )
    }
    for variant, preset in VARIANTS.items():
        runs[variant] = _run_config(
            preset, shared, name=variant, steps=plan.variant_steps, lr=plan.variant_lr
        )
    return data, runs


def _run_config(preset: str, shared: dict[str, Any], *, name: str, steps: int, lr: float):
    raw = deep_merge(load_preset(preset), shared)
    raw = deep_merge(raw, {"name": name, "train": {"max_steps": steps, "lr": lr}})
    return validate(RunConfig, raw, f"study run '{name}'")


def run_study(
    out: Path,
    size: StudySize = "default",
    callback: ProgressCallback | None = None,
    on_stage: Callable[[StageOutcome], None] | None = None,
) -> StudyResult:
    """Run (or finish) the study in `out`; finished stages are skipped, interrupted ones resume."""
    from moectl.analysis.evaluate import EvaluationOptions, evaluate_models, save_results
    from moectl.analysis.results import load_results
    from moectl.data.prepare import prepare_corpus
    from moectl.data.store import load_corpus
    from moectl.training.trainer import train_run
    from moectl.viz.study import visualize_study

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = _read_state(out, size)
    data_config, run_configs = plan_configs(size)
    stages: list[StageOutcome] = []

    def stage(name: str, path: Path, work: Callable[[bool], Any]) -> None:
        if name in state["done"]:
            outcome = StageOutcome(name=name, status="skipped", seconds=0.0, path=str(path))
        else:
            begun = time.perf_counter()
            resumed = path.exists()
            report(callback, "study", len(stages), None, message=f"stage {name}")
            work(resumed)
            outcome = StageOutcome(
                name=name,
                status="resumed" if resumed else "done",
                seconds=time.perf_counter() - begun,
                path=str(path),
            )
            state["done"][name] = outcome.seconds
            _write_state(out, state)
        stages.append(outcome)
        if on_stage is not None:
            on_stage(outcome)

    corpus_dir = out / "data"
    stage(
        "prepare-data",
        corpus_dir,
        lambda resumed: prepare_corpus(data_config, corpus_dir, force=True, callback=callback),
    )
    run_dirs = {name: out / "runs" / name for name in run_configs}

    def train(name: str, init_from: Path | None) -> Callable[[bool], Any]:
        def work(resumed: bool) -> None:
            run_dir = run_dirs[name]
            has_checkpoint = (run_dir / "checkpoints").is_dir() and any(
                (run_dir / "checkpoints").iterdir()
            )
            result = train_run(
                run_configs[name],
                corpus_dir,
                run_dir,
                resume=True if has_checkpoint else None,
                init_from=None if has_checkpoint else init_from,
                callback=callback,
            )
            if result.stop_reason == "interrupted":
                raise StudyInterrupted(
                    f"stage {name} was interrupted at step {result.steps}",
                    hint="run the same quickstart command again to resume",
                )
            (run_dir / "result.json").write_text(result.model_dump_json(indent=2))

        return work

    stage("pretrain", run_dirs["pretrain"], train("pretrain", None))
    start_model = run_dirs["pretrain"] / "best"
    for variant in VARIANTS:
        stage(variant, run_dirs[variant], train(variant, start_model))

    plan = PLANS[size]
    eval_dir = out / "eval"
    variant_dirs = [run_dirs[v] for v in VARIANTS]

    def evaluate(resumed: bool) -> None:
        corpus = load_corpus(corpus_dir)
        options = EvaluationOptions(
            max_blocks=plan.eval_max_blocks, n_permutations=plan.n_permutations
        )
        results = evaluate_models(variant_dirs, corpus, options=options, callback=callback)
        eval_dir.mkdir(parents=True, exist_ok=True)
        for variant, result in zip(VARIANTS, results, strict=True):
            save_results([result], eval_dir / f"{variant}.json")

    stage("evaluate", eval_dir, evaluate)
    results = [r for v in VARIANTS for r in load_results(eval_dir / f"{v}.json")]
    findings = study_findings(results, run_dirs)

    figures_dir = out / "figures"
    report_path = out / "report.html"
    written: list[Path] = []

    def visualize(resumed: bool) -> None:
        written.extend(
            visualize_study(
                variant_dirs,
                results,
                figures_dir,
                report_path=report_path,
                findings=findings,
                callback=callback,
            )
        )

    stage("visualize", figures_dir, visualize)
    figures = sorted(str(p) for p in figures_dir.glob("*") if p.suffix in (".png", ".svg"))
    token_page = figures_dir / "tokens.html"
    findings = [*findings, _figures_finding(figures, token_page)]
    return StudyResult(
        out=str(out),
        size=size,
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


def _read_state(out: Path, size: StudySize) -> dict[str, Any]:
    """The study's state file (size, plan, finished stages); refuses to mix sizes in one folder,
    since the stages of the other plan would be skipped as done."""
    state_file = out / STATE_FILE
    if not state_file.exists():
        state = {"size": size, "plan": PLANS[size].model_dump(), "done": {}}
        _write_state(out, state)
        return state
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        previous, done = state["size"], state["done"]
    except (ValueError, KeyError, TypeError):
        raise MoectlError(
            f"{state_file} is not a moectl study state file",
            hint="use another --out, or delete the folder to start over",
        ) from None
    if previous != size or not isinstance(done, dict):
        raise MoectlError(
            f"{out} holds a '{previous}' study, not a '{size}' one",
            hint="use another --out, or delete the folder to start over",
        )
    return state


def _write_state(out: Path, state: dict[str, Any]) -> None:
    temporary = out / f".{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state, indent=2), encoding="utf-8")
    temporary.replace(out / STATE_FILE)


def study_findings(results: list[Any], run_dirs: dict[str, Path]) -> list[Finding]:
    """The reference study's claims (loss, collapse, specialization) checked on these results."""
    from moectl.analysis.runs import load_run

    by_name = {name: r for name, r in zip(VARIANTS, results, strict=True)}
    findings = [_loss_finding(by_name["moe"], by_name["dense"])]
    no_lb = load_run(run_dirs["no-lb"])
    moe = load_run(run_dirs["moe"])
    findings.append(_collapse_finding(no_lb, moe))
    findings.append(_specialization_finding(by_name["moe"], by_name["top2"]))
    return findings


def _loss_finding(moe: Any, dense: Any) -> Finding:
    delta = (moe.loss - dense.loss) / dense.loss
    per_domain = ", ".join(
        f"{d} {moe.domain_loss[d]:.3f} vs {dense.domain_loss[d]:.3f}" for d in dense.domain_loss
    )
    better = delta < 0
    text = (
        f"MoE (8 experts, top-1) eval loss {moe.loss:.3f} vs matched dense {dense.loss:.3f} "
        f"({delta:+.1%}); per domain (MoE vs dense): {per_domain}. "
        + (
            "As in the reference study, the MoE is better than the dense baseline."
            if better
            else "Unlike the reference study (MoE 3.6% better), the MoE is not better than the "
            "matched dense baseline at this scale."
        )
    )
    return Finding(key="loss", title="MoE vs matched dense", reproduced=better, text=text)


def _collapse_finding(no_lb: Any, moe: Any) -> Finding:
    events = no_lb.collapse_events()
    threshold = no_lb.collapse_threshold
    moe_peak = _peak_max_fraction(moe)
    no_lb_peak = _peak_max_fraction(no_lb)
    if events:
        first = events[0]
        stop = next((e for e in events if e.get("stop")), None)
        text = (
            f"Without the load-balancing loss the busiest expert passed {threshold:.0%} of a "
            f"layer's tokens at step {first['step']} (layers {first['layers']}); "
            + (
                f"collapse was confirmed and the run stopped at step {stop['step']}. "
                if stop
                else "the run was not stopped (fewer consecutive warnings than the patience). "
            )
            + f"Peak busiest-expert share: no-lb {no_lb_peak:.0%}, moe (LB on) {moe_peak:.0%}."
        )
        return Finding(key="collapse", title="Collapse without LB", reproduced=True, text=text)
    text = (
        f"The no-lb run did not collapse at this scale: its busiest expert peaked at "
        f"{no_lb_peak:.0%} of a layer's tokens (threshold {threshold:.0%}); with LB on, "
        f"{moe_peak:.0%}."
    )
    return Finding(key="collapse", title="Collapse without LB", reproduced=False, text=text)


def _peak_max_fraction(run: Any) -> float:
    rows = run.routing or []
    return max(
        (layer["max_fraction"] for row in rows for layer in row["layers"].values()), default=0.0
    )


def _specialization_finding(moe: Any, top2: Any) -> Finding:
    parts = []
    clear = False
    for label, result in (("top-1", moe), ("top-2", top2)):
        for layer in result.routing:
            score = layer.specialization
            margin = score.nmi - score.baseline_nmi
            is_clear = margin > max(5 * score.baseline_nmi_std, 0.01) and score.nmi > 2 * (
                score.baseline_nmi
            )
            clear = clear or is_clear
            parts.append(
                f"{label} layer {layer.layer}: NMI {score.nmi:.3f} vs uniform-router "
                f"{score.baseline_nmi:.3f}" + (" (clearly above)" if is_clear else "")
            )
    verdict = (
        "Experts specialize by domain: at least one layer's score is clearly above the baseline."
        if clear
        else "No layer's specialization is clearly above the uniform-router baseline here."
    )
    return Finding(
        key="specialization",
        title="Domain specialization (normalized MI)",
        reproduced=clear,
        text="; ".join(parts) + ". " + verdict,
    )


def _figures_finding(figures: list[str], token_page: Path) -> Finding:
    heatmaps = [f for f in figures if "heatmap" in Path(f).name]
    ok = bool(heatmaps) and token_page.exists()
    text = (
        f"{len(figures)} figures ({len(heatmaps)} routing heatmaps) and the token-routing page."
        if ok
        else "The heatmaps or the token-routing page are missing."
    )
    return Finding(key="figures", title="Figures", reproduced=ok, text=text)
