"""`moectl experiment FILE`: the file validated like a run config, the specialization script's
experiment as a file, and a tiny two-arm x two-seed experiment that runs, reports, skips what
is done, trains only what is new, refuses a changed arm and resumes a killed run.

Training runs in this process (`serial_runs` stands in for the worker pool, which
test_quickstart exercises): four tiny runs through spawned workers take minutes on a loaded
2-core machine, in-process they take seconds, and everything the experiment decides (what to
train, skip, resume or refuse) is the same.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from moectl.cli.schemas import ExperimentOutput
from moectl.errors import MoectlError
from moectl.fs import exclusive_lock
from moectl.study.experiment import load_experiment, markdown, plan_experiment
from moectl.study.experiment.table import ExperimentTable

REPO = Path(__file__).resolve().parents[2]
BALANCING = ("balancing-scratch.yaml", "balancing-upcycled.yaml")
SHARED = [
    "model.n_layer=2",
    "model.n_embd=32",
    "model.n_head=2",
    "train.batch_size=8",
    "train.eval_every=3",
    "train.eval_max_blocks=12",
    "train.save_every=3",
    "train.router_log_every=2",
    "train.log_every=2",
    "train.lr=3e-3",
    "train.num_threads=1",
]
TINY = {
    "corpus": {"prepare": {"preset": "study-cpu-tiny"}},
    "base": {"preset": "cpu-moe", "overrides": [*SHARED, "train.max_steps=6"]},
    "pretrain": {"preset": "cpu-dense", "overrides": [*SHARED, "train.max_steps=4"]},
    "arms": [
        {"name": "dense", "family": "upcycled", "overrides": ["moe.enabled=false"]},
        {"name": "moe", "family": "upcycled", "dense": "dense"},
    ],
    "seeds": [0, 1],
    "evaluation": {"max_blocks": 24, "random_gates": 64, "n_permutations": 5},
}


def _write(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def serial_runs(jobs, workers, callback=None, on_done=None, on_error=None):
    """run_parallel's contract, one job after another in this process."""
    from moectl.progress import ProgressEvent
    from moectl.study.parallel import train_stage

    results = {}
    for job in jobs:

        def named(event: ProgressEvent, name: str = job.name) -> None:
            """Renamed "<stage> <job>", as run_parallel forwards a worker's events."""
            stage = f"{event.stage} {name}"
            callback(ProgressEvent(stage, event.completed, event.total, event.message))

        try:
            results[job.name] = train_stage(job, named if callback is not None else None)
        except MoectlError as error:
            if on_error is not None:
                on_error(job.name, error.message)
            raise MoectlError(f"stage {job.name} failed: {error.message}", error.hint) from None
        if on_done is not None:
            on_done(job.name, results[job.name])
    return results


@pytest.fixture(autouse=True, scope="module")
def _in_process():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("moectl.study.parallel.run_parallel", serial_runs)
        yield


def _outcomes(result) -> dict[str, str]:
    """The run lines of a CLI run (stderr): run name -> done / already done / resumed."""
    found = {}
    for line in result.stderr.splitlines():
        if line.startswith("✓ "):
            name, _, verb = line[2:].partition(": ")
            found[name] = verb.split(" in ")[0]
    return found


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """The tiny experiment run for seed 0 (--seeds), then with the file's seeds 0 and 1."""
    from conftest import invoke_cli

    root = tmp_path_factory.mktemp("experiment")
    comparisons = [{"arm": "moe", "against": "dense"}, {"arm": "dense", "against": "moe"}]
    file = _write(root / "tiny.yaml", {**TINY, "comparisons": comparisons})
    out = root / "out"
    first = invoke_cli("experiment", file, "--out", out, "--seeds", "0", "--json")
    assert first.exit_code == 0, first.output
    evaluated = {p.name: p.stat().st_mtime_ns for p in (out / "eval").glob("*-seed0.json")}
    second = invoke_cli("experiment", file, "--out", out, "--json")
    assert second.exit_code == 0, second.output
    return file, out, _outcomes(first), _outcomes(second), evaluated, second


def test_the_examples_are_the_quickstarts_runs_with_one_change_per_arm():
    """examples/router.yaml, the two balancing files, router-knobs.yaml and specialization.yaml
    (docs/study.md's tables) resolve to the quickstart's own runs: the corpus, the upcycle
    plan's pretrain (for a file with upcycled arms), its moe variant as every upcycled arm's
    base, its scratch plan's schedule for the scratch family; each arm differs from that only
    in its own overrides, the seed and the name."""
    from moectl.config import RunConfig, deep_merge, parse_override, validate
    from moectl.study.plan import plan_configs

    data, upcycle = plan_configs("default", "upcycle")
    _, scratch = plan_configs("default", "scratch")
    examples = ["router.yaml", *BALANCING, "router-knobs.yaml", "specialization.yaml"]
    for example in examples:
        file = REPO / "examples" / example
        spec = load_experiment(file)
        plan = plan_experiment(spec, file, [0, 1, 2])
        assert plan.corpus_config == data
        upcycled = any(arm.family == "upcycled" for arm in spec.arms)
        assert len(plan.pretrains) == int(upcycled)
        exclude = {"name": True, "train": {"num_threads"}}
        theirs = upcycle["pretrain"].model_dump(exclude=exclude)
        for pretrain in plan.pretrains:
            assert pretrain.config.model_dump(exclude=exclude) == theirs
        assert len(plan.arms) == 3 * len(spec.arms)
        for run in plan.arms:
            arm = next(a for a in spec.arms if a.name == run.arm)
            raw = upcycle["moe"].model_dump(mode="json")
            if arm.family == "scratch":
                raw = deep_merge(raw, {"train": {"max_steps": 650, "lr": 2e-3}})
                assert scratch["moe"].train.max_steps == 650 and scratch["moe"].train.lr == 2e-3
            for text in [*arm.overrides, f"train.seed={run.seed}"]:
                raw = deep_merge(raw, parse_override(text))
            expected = validate(RunConfig, raw, arm.name)
            assert run.config.model_dump(exclude={"name"}) == expected.model_dump(exclude={"name"})
            assert run.name == run.config.name == f"{run.arm}-seed{run.seed}"
            assert run.init_from == ("pretrain-seed0" if arm.family == "upcycled" else None)
    # Each file's header states its family of router claims; a balancing or knob file's arms
    # that router.yaml has too are the same runs, so it can continue router.yaml's folder.
    continuing = {name: (26, 4) for name in BALANCING} | {"router-knobs.yaml": (20, 6)}
    plans = {
        name: plan_experiment(load_experiment(REPO / "examples" / name), REPO / "examples" / name)
        for name in ("router.yaml", *continuing)
    }
    assert plans["router.yaml"].router_tests() == 12
    router = {run.name: run.config for run in plans["router.yaml"].arms}
    for name, (claims, arms) in continuing.items():
        assert plans[name].router_tests() == claims
        shared = [run for run in plans[name].arms if run.name in router]
        assert len(shared) == arms * 3
        assert all(run.config == router[run.name] for run in shared)


def test_an_arms_own_preset_and_the_collapse_control(tmp_path: Path):
    """An arm's `preset` replaces the base's under the base's overrides; `collapse_control`
    drops every balancing whatever the overrides say (bias: the scheme itself)."""
    from moectl.config import RunConfig, load_preset, validate

    raw = {
        **TINY,
        "arms": [
            {"name": "dense", "family": "scratch", "preset": "cpu-dense"},
            {
                "name": "moe",
                "family": "scratch",
                "dense": "dense",
                "overrides": ["moe.balance=bias"],
            },
            {
                "name": "no-lb",
                "family": "scratch",
                "dense": "dense",
                "overrides": ["moe.balance=bias", "moe.noise_std=0.3"],
                "collapse_control": True,
            },
        ],
        "seeds": [0],
    }
    file = _write(tmp_path / "arms.yaml", raw)
    plan = plan_experiment(load_experiment(file), file)
    dense, moe, no_lb = (run.config for run in plan.arms)
    assert not dense.moe.enabled and dense.model.n_embd == 32 and dense.train.max_steps == 6
    assert dense.moe == validate(RunConfig, load_preset("cpu-dense"), "cpu-dense").moe
    assert (moe.moe.balance, moe.moe.noise_std) == (
        "bias",
        load_preset("cpu-moe")["moe"]["noise_std"],
    )
    assert (no_lb.moe.balance, no_lb.moe.lb_coef, no_lb.moe.noise_std) == ("none", 0.0, 0.0)
    assert no_lb.model == moe.model and no_lb.train == moe.train


@pytest.mark.parametrize(
    ("change", "keys"),
    [
        ({"arm": []}, ["arm: unknown field (did you mean 'arms'?)"]),
        (
            {
                "arms": [
                    {"name": "dense", "family": "upcycled", "overrides": ["moe.enabled=false"]},
                    {"name": "moe", "family": "upcycled", "dense": "dnese"},
                    {"name": "moe", "family": "scratch", "dense": "dense"},
                ],
                "seeds": [0, 0],
            },
            [
                "arms.1.dense: names no arm 'dnese' (did you mean 'dense'?)",
                "arms.2.name: arm 'moe' is given twice",
                "arms.2.dense: 'dense' is a upcycled arm; 'moe' is scratch",
                "seeds: a seed is given twice",
            ],
        ),
        (
            {
                "comparisons": [
                    {"arm": "moe", "against": "dnese"},
                    {"arm": "moe", "against": "moe"},
                    {"arm": "dense", "against": "moe"},
                    {"arm": "dense", "against": "moe"},
                ]
            },
            [
                "comparisons.0.against: names no arm 'dnese' (did you mean 'dense'?)",
                "comparisons.1: an arm is not compared with itself",
                "comparisons.3: dense - moe is given twice",
            ],
        ),
        (
            {"arms": [{"name": "moe", "family": "scratch", "overrides": ["moe.lb_cof=0"]}]},
            ["arms.0 (moe): moe.lb_cof: unknown field (did you mean 'lb_coef'?)"],
        ),
        (
            {
                "arms": [{"name": "moe", "family": "scratch"}],
                "corpus": {"path": "x", "prepare": {}},
            },
            ["corpus: give exactly one of path (a prepared corpus) or prepare"],
        ),
        (
            {"arms": [{"name": "moe", "family": "scratch"}]},
            ["arms.0.dense: an MoE arm needs its matched dense arm"],
        ),
        (
            {"arms": [{"name": "moe", "family": "scratch", "colapse_control": True}]},
            ["arms.0.colapse_control: unknown field (did you mean 'collapse_control'?)"],
        ),
        (
            {
                "arms": [
                    {"name": "dense", "family": "scratch", "preset": "cpu-dnese"},
                    {"name": "moe", "family": "scratch", "dense": "dense"},
                ]
            },
            ["arms.0.preset: unknown preset 'cpu-dnese' (did you mean 'cpu-dense'?)"],
        ),
    ],
)
def test_an_invalid_file_is_one_line_per_problem_exit_2_and_writes_nothing(
    cli, tmp_path: Path, change: dict, keys: list[str]
):
    file = _write(tmp_path / "bad.yaml", {**TINY, **change})
    result = cli("experiment", file, "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = [" ".join(line.split()) for line in result.stderr.splitlines()]
    assert lines[0].startswith("error: invalid experiment file")
    assert sorted(lines[1:]) == sorted(keys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_folder_moectl_did_not_make_is_refused(cli, tmp_path: Path):
    file = _write(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    result = cli("experiment", file, "--out", out)
    assert result.exit_code == 2
    assert "holds no moectl experiment" in result.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_the_experiment_runs_and_adding_a_seed_trains_only_its_runs(experiment):
    _, out, first, second, _, _ = experiment
    assert first == {"pretrain-seed0": "done", "dense-seed0": "done", "moe-seed0": "done"}
    assert second == {
        "pretrain-seed0": "already done",
        "dense-seed0": "already done",
        "moe-seed0": "already done",
        "pretrain-seed1": "done",
        "dense-seed1": "done",
        "moe-seed1": "done",
    }
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == [f"{a}-seed{s}" for a in ("dense", "moe", "pretrain") for s in (0, 1)]
    info = json.loads((out / "runs" / "moe-seed1" / "run.json").read_text())
    assert Path(info["init_from"]) == (out / "runs" / "pretrain-seed1" / "best").resolve()
    assert (out / "experiment.json").is_file()


def test_adding_a_seed_evaluates_only_its_runs(experiment):
    _, out, _, _, evaluated, _ = experiment
    now = {p.name: p.stat().st_mtime_ns for p in (out / "eval").glob("*-seed0.json")}
    assert now == evaluated and len(now) == 2
    assert (out / "eval" / "moe-seed1.json").is_file()


def test_status_shows_every_run_done(experiment, cli):
    file, out, *_ = experiment
    result = cli("experiment", file, "--out", out, "--status", "--json")
    assert result.exit_code == 0, result.output
    status = ExperimentOutput.model_validate_json(result.stdout)
    assert status.table is None
    states = {run.name: (run.state, run.detail) for run in status.runs}
    assert states["moe-seed1"] == ("done", "completed at step 6")
    assert states["pretrain-seed0"] == ("done", "completed at step 4")
    assert {state for state, _ in states.values()} == {"done"} and len(states) == 6


def test_markdown_is_the_report(experiment, cli):
    """--markdown prints report.md's table; report.json holds the same rows as data."""
    file, out, *_, second = experiment
    result = cli("experiment", file, "--out", out, "--markdown")
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text(encoding="utf-8")
    assert result.stdout == report
    lines = report.splitlines()
    assert [line.split(" | ")[:3] for line in lines[2:5]] == [
        ["| dense", "-", "2"],
        ["| moe", "0", "2"],
        ["| moe", "1", "2"],
    ]
    assert "(matched dense)" in lines[2] and lines[6].startswith("Router claims: 2 comparisons")
    table = ExperimentTable.model_validate_json((out / "report.json").read_text())
    assert markdown(table) + "\n" == report
    assert ExperimentOutput.model_validate_json(second.stdout).table == table
    moe = table.rows[1]
    assert moe.arm == "moe" and moe.controls == {"dense": "dense"} and len(moe.trained_nmi) == 2
    assert moe.loss is not None and moe.loss.control == "dense"
    # The file's comparisons: moe - dense is the matched-dense loss cell, computed the same way;
    # dense - moe is its mirror image.
    forward, backward = table.comparisons
    assert (forward.arm, forward.against, backward.arm) == ("moe", "dense", "dense")
    assert (forward.mean, forward.ci, forward.verdict) == (
        moe.loss.mean,
        moe.loss.ci,
        moe.loss.verdict,
    )
    # The tiny corpus has too few documents per domain for an interval: no interval, no verdict.
    assert forward.ci is None and backward.ci is None and forward.verdict == "too few documents"
    assert backward.mean == pytest.approx(-forward.mean, abs=1e-12) and len(forward.per_seed) == 2
    assert backward.per_seed == pytest.approx([-d for d in forward.per_seed], abs=1e-12)
    assert forward.mean == pytest.approx(sum(forward.per_seed) / 2, abs=1e-12)
    assert lines[7:10] == [
        "",
        "| comparison | eval loss difference [95% CI] | verdict | per seed |",
        "|---|---|---|---|",
    ]
    for line, row in zip(lines[10:], (forward, backward), strict=True):
        per_seed = ", ".join(f"{d:+.3f}" for d in row.per_seed)
        assert line == (
            f"| {row.arm} - {row.against} | {row.mean:+.3f} | too few documents | {per_seed} |"
        )


def test_the_summary_shows_the_comparisons(experiment, cli):
    """Without --json or --markdown the report is a summary table, and the comparisons a second
    one: each pair's difference and verdict."""
    file, out, *_ = experiment
    result = cli("experiment", file, "--out", out)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "Eval loss between arms" in text
    table = ExperimentTable.model_validate_json((out / "report.json").read_text())
    for row in table.comparisons:
        assert f"{row.arm} - {row.against} │ {row.mean:+.3f} │ too few documents" in text


def test_a_rerun_trains_and_evaluates_nothing(experiment, cli):
    file, out, *_ = experiment
    before = {p: p.stat().st_mtime_ns for p in (out / "eval").iterdir()}
    runs = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    result = cli("experiment", file, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert set(_outcomes(result).values()) == {"already done"} and len(_outcomes(result)) == 6
    assert {p: p.stat().st_mtime_ns for p in (out / "eval").iterdir()} == before
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")} == runs


@pytest.mark.parametrize(
    ("change", "needles", "spared"),
    [
        (
            {"arms": [TINY["arms"][0], {**TINY["arms"][1], "overrides": ["moe.lb_coef=0"]}]},
            ["arm 'moe' seed 0", "arm 'moe' seed 1", "moe.lb_coef: 0.01 -> 0.0"],
            "arm 'dense'",
        ),
        (
            {"pretrain_seed": 0},
            ["arm 'dense' seed 1", "arm 'moe' seed 1", "start: pretrain-seed1 -> pretrain-seed0"],
            "seed 0",
        ),
    ],
)
def test_a_changed_arm_is_refused_naming_it(
    experiment, cli, tmp_path: Path, change: dict, needles: list[str], spared: str
):
    """A run the file no longer describes (its settings, or the pretrain it started from) is
    refused before anything is written, naming the arm and what changed."""
    from conftest import snapshot

    _, out, *_ = experiment
    file = _write(tmp_path / "tiny.yaml", {**TINY, **change})
    before = snapshot(out)
    result = cli("experiment", file, "--out", out)
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert all(needle in text for needle in needles), text
    assert spared not in text
    assert snapshot(out) == before


def test_a_killed_run_is_resumed_from_its_checkpoint(experiment, cli, tmp_path: Path):
    """A run killed after its step-3 checkpoint (no result.json, nothing after step 3) shows
    as queued to resume there (running while its lock is held), and the next run resumes it to
    the same end as before."""
    file, out, *_ = experiment
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    run = copy / "runs" / "moe-seed1"
    finished = json.loads((run / "result.json").read_text())
    (run / "result.json").unlink()
    shutil.rmtree(run / "checkpoints" / "step-6")
    status = cli("experiment", file, "--out", copy, "--status", "--json")
    states = {
        r.name: (r.state, r.detail)
        for r in ExperimentOutput.model_validate_json(status.stdout).runs
    }
    assert states["moe-seed1"] == ("queued", "resumes at step 3")
    with exclusive_lock(run / ".moectl.lock"):  # as a trainer holds it while it writes
        status = cli("experiment", file, "--out", copy, "--status", "--json")
    (moe,) = [
        r for r in ExperimentOutput.model_validate_json(status.stdout).runs if r.name == run.name
    ]
    assert (moe.state, moe.detail) == ("running", "training")
    result = cli("experiment", file, "--out", copy, "--json")
    assert result.exit_code == 0, result.output
    outcomes = _outcomes(result)
    assert outcomes["moe-seed1"] == "resumed and done"
    assert {n: v for n, v in outcomes.items() if n != "moe-seed1"} == dict.fromkeys(
        [n for n in outcomes if n != "moe-seed1"], "already done"
    )
    resumed = json.loads((run / "result.json").read_text())
    assert resumed["resumed_from"].endswith("step-3")
    assert resumed["steps"] == finished["steps"] == 6
    assert resumed["last_train_loss"] == finished["last_train_loss"]
    evaluated = (copy / "eval" / "moe-seed1.json").stat().st_mtime_ns
    assert evaluated >= (run / "result.json").stat().st_mtime_ns


def test_a_stopped_evaluation_keeps_what_it_finished_and_resumes_with_the_rest(
    experiment, cli, tmp_path: Path, monkeypatch
):
    """Each run's evaluation is kept as soon as it is done: stopped at the second of two
    models, the first stays and the next run evaluates only the second. Results made with
    other options are removed before the first new one is kept."""
    import moectl.analysis.evaluate as evaluate

    file, out, *_ = experiment
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    eval_dir = copy / "eval"
    for name in ("dense-seed1", "moe-seed1"):
        (eval_dir / f"{name}.json").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in eval_dir.glob("*-seed0.json")}
    real = evaluate.evaluate_loaded
    calls = []

    def stopped_at_the_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise MoectlError("stopped")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_loaded", stopped_at_the_second)
    assert cli("experiment", file, "--out", copy).exit_code != 0
    assert calls == ["dense-seed1", "moe-seed1"]
    assert (eval_dir / "dense-seed1.json").is_file() and not (eval_dir / "moe-seed1.json").exists()
    first = (eval_dir / "dense-seed1.json").stat().st_mtime_ns

    monkeypatch.setattr(evaluate, "evaluate_loaded", real)
    calls.clear()
    result = cli("experiment", file, "--out", copy, "--json")
    assert result.exit_code == 0, result.output
    assert (eval_dir / "moe-seed1.json").is_file()
    assert (eval_dir / "dense-seed1.json").stat().st_mtime_ns == first
    assert {p.name: p.stat().st_mtime_ns for p in eval_dir.glob("*-seed0.json")} == kept
    assert ExperimentOutput.model_validate_json(result.stdout).table is not None

    # Other options (as a file with another evaluation section): every old result goes.
    (eval_dir / "options.json").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(evaluate, "evaluate_loaded", stopped_at_the_second)
    assert cli("experiment", file, "--out", copy).exit_code != 0
    assert sorted(p.name for p in eval_dir.glob("*.json")) == ["dense-seed0.json", "options.json"]
    assert (eval_dir / "options.json").read_text(encoding="utf-8") != "{}"


def test_a_failed_run_shows_failed_with_its_last_line(cli, tmp_path: Path):
    """A run that fails (a context shorter than the corpus blocks) is recorded, and --status
    shows it failed with the failure's line."""
    raw = {
        **TINY,
        "arms": [
            {
                "name": "dense",
                "family": "scratch",
                "overrides": ["moe.enabled=false", "model.n_positions=8"],
            }
        ],
        "seeds": [0],
    }
    file = _write(tmp_path / "bad.yaml", raw)
    out = tmp_path / "out"
    result = cli("experiment", file, "--out", out)
    assert result.exit_code == 2
    assert "stage dense-seed0 failed: model.n_positions 8 is shorter" in " ".join(
        result.stderr.split()
    )
    status = cli("experiment", file, "--out", out, "--status", "--json")
    (run,) = ExperimentOutput.model_validate_json(status.stdout).runs
    assert run.state == "failed" and run.detail.startswith("model.n_positions 8 is shorter")
