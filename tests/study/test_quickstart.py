"""The whole tiny study end to end: interrupted mid-stage, resumed, every artefact checked."""

from __future__ import annotations

import json
import os
import signal
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers.training import read_tensorboard

from moectl.analysis.bootstrap import MIN_DOCUMENTS
from moectl.analysis.multiplicity import holm_rejections
from moectl.analysis.results import load_results
from moectl.cli.schemas import QuickstartOutput
from moectl.errors import MoectlError
from moectl.progress import ProgressEvent
from moectl.rundir.reading import read_run_config
from moectl.study import VARIANTS, StudyInterrupted, run_study
from moectl.study.findings.seed_combination import paired_difference
from moectl.study.plan import PLAN_NAMES, PLANS, plan_configs

pytestmark = pytest.mark.slow


class _Interrupter:
    """Sends this process SIGINT at train step 3 of the moe run, like a user's Ctrl-C."""

    def __init__(self) -> None:
        self.sent = False

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage == "train moe" and event.completed >= 3:
            self._send_once()

    def _send_once(self) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module", params=PLAN_NAMES)
def study(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    plan = request.param
    out = tmp_path_factory.mktemp(f"study-{plan}")
    interrupter = _Interrupter()
    # A shell starts background jobs with SIGINT ignored, and Python then raises no
    # KeyboardInterrupt: give this process the handler a terminal's Ctrl-C would meet.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(StudyInterrupted, match="moe"):
            run_study(out, "tiny", callback=interrupter, plan_name=plan)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupter.sent
    state = json.loads((out / "study.json").read_text())
    before = {"prepare-data", "pretrain"} if plan == "upcycle" else {"prepare-data"}
    assert before <= set(state["done"]) and "moe" not in state["done"]
    assert (out / "runs" / "moe" / "checkpoints").is_dir()
    # The dense worker runs beside moe: how far it got by the Ctrl-C is up to the clock, so the
    # expected outcome of its stage on resume is read from what is on disk now.
    if "dense" in state["done"]:
        dense = "skipped"
    elif (out / "runs" / "dense").exists():
        dense = "resumed"
    else:
        dense = "done"
    result = run_study(out, "tiny", plan_name=plan)
    assert result.plan == plan
    return out, result, dense


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


class _Spans(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "span" and "tok" in (dict(attrs).get("class") or "").split():
            self.tokens += 1


def test_interrupted_stage_resumes_from_its_checkpoint(study):
    out, result, dense = study
    status = {s.name: s.status for s in result.stages}
    assert status["prepare-data"] == "skipped"
    assert status.get("pretrain", "skipped") == "skipped"
    assert ("pretrain" in status) == (result.plan == "upcycle")
    assert status["moe"] == "resumed"
    assert status["dense"] == dense
    assert status["evaluate"] == status["visualize"] == "done"
    moe = json.loads((out / "runs" / "moe" / "result.json").read_text())
    steps = {"upcycle": PLANS["tiny"].variant_steps, "scratch": PLANS["tiny"].scratch_steps}
    assert moe["resumed_from"] and moe["steps"] == moe["max_steps"] == steps[result.plan]
    assert moe["stop_reason"] == "completed"


def test_every_artefact_is_written(study):
    out, result, _ = study
    assert (out / "data" / "manifest.json").is_file()
    for name in result.runs:
        run = out / "runs" / name
        for part in ("config.yaml", "metrics.jsonl", "best/model.safetensors", "best/model.json"):
            assert (run / part).is_file(), f"{run}/{part} missing"
    for variant in ("moe", "no-lb", "top2"):
        rows = [json.loads(line) for line in (out / "runs" / variant / "routing.jsonl").open()]
        assert rows and all(abs(sum(r["layers"]["1"]["fractions"]) - 1) < 1e-6 for r in rows)
    # TensorBoard by default: every run's event files, with the config and, for an MoE, the
    # heatmap at every router-log step (the interrupted moe run's across both sessions).
    for name in result.runs:
        board = read_tensorboard(out / "runs" / name / "tensorboard")
        assert "train/loss" in board.scalars and "eval/loss" in board.scalars
        assert board.hparams["name"] == name and "config/text_summary" in board.texts
        if name in ("moe", "no-lb", "top2"):
            routing = [json.loads(line) for line in (out / "runs" / name / "routing.jsonl").open()]
            images = board.images["routing/heatmap"]
            assert sorted({step for step, *_ in images}) == [row["step"] for row in routing]
    evaluated = {v: load_results(out / "eval" / f"{v}.json")[0] for v in VARIANTS}
    assert evaluated["dense"].kind == "dense" and not evaluated["dense"].routing
    for variant in ("moe", "no-lb", "top2"):
        assert evaluated[variant].kind == "moe" and len(evaluated[variant].routing) == 2
        assert (out / "runs" / variant / "init" / "init.json").is_file()
        assert evaluated[variant].init_control is None
        raw = json.loads((out / "eval" / f"{variant}.json").read_text())["results"][0]
        for layer in raw["routing"]:
            spec = layer["specialization"]
            assert {"nmi", "baseline_nmi", "init_nmi", "nmi_ci", "init_nmi_ci"} <= set(spec)
            assert len(spec["nmi_ci"]) == len(spec["init_nmi_ci"]) == 2
            assert set(spec["emergent"]) == {"difference", "ci", "verdict", "bias"}
            few = _too_few_documents(evaluated[variant])
            verdicts = ("too few documents",) if few else ("emerged", "inherited", "reduced")
            assert spec["emergent"]["verdict"] in verdicts
            lo, hi = spec["emergent"]["ci"]
            assert lo <= spec["emergent"]["difference"] <= hi
            for top in layer["top_expert"].values():
                assert top["ratio_ci"][0] <= top["ratio_to_uniform"] <= top["ratio_ci"][1]
            for types in layer["token_types"]:
                assert types["specialization"]["emergent"]["verdict"] is not None
    assert evaluated["top2"].top_k == 2
    assert "nmi-over-training" in {Path(f).stem for f in result.figures}
    heatmaps = [Path(f) for f in result.figures if "routing-heatmap" in f]
    assert len(heatmaps) == 3
    for figure in map(Path, result.figures):
        width, height = _png_size(figure)
        assert width >= 300 and height >= 200
    parser = _Spans()
    parser.feed(Path(result.token_page).read_text())
    assert parser.tokens > 50
    report = Path(result.report).read_text()
    assert ("Findings" in report and "routing-heatmap" not in report) or "<img" in report
    assert "<img" in report and "base64," in report
    assert "frozen gate NMI" in report and "trained - step 0" in report
    assert "gate null (bias-corrected NMI)" in report and "2x2 body x gate" in report
    assert "nmi over training" in report and "<figcaption>" in report
    assert "<table class='findings cards'>" in report and "Provenance" in report
    assert "--run-dir runs/moe" in report  # how to reproduce each run
    inside = _Spans()
    inside.feed(report)
    assert inside.tokens == parser.tokens  # the token routing is inside: the report stands alone


def _streak(run_dir: Path, threshold: float = 0.6) -> int:
    """Longest run of consecutive router-log steps (step 0 excluded) over the threshold."""
    streak = longest = 0
    for line in (run_dir / "routing.jsonl").open():
        row = json.loads(line)
        if row["collapse"] is None:
            continue
        over = max(layer["max_fraction"] for layer in row["layers"].values()) > threshold
        streak = streak + 1 if over else 0
        longest = max(longest, streak)
    return longest


def _too_few_documents(result) -> bool:
    """Whether the eval sample holds fewer than MIN_DOCUMENTS documents in some domain (the
    tiny study's code domain is two stdlib files): then no finding may give a verdict."""
    return min(size.documents for size in result.sample.values()) < MIN_DOCUMENTS


def test_findings_are_measured_not_asserted(study):
    out, result, _ = study
    findings = {f.key: f for f in result.findings}
    assert set(findings) == {"loss", "top2", "collapse", "specialization", "figures"}
    collapsed = _streak(out / "runs" / "no-lb") >= 3 and _streak(out / "runs" / "moe") < 3
    assert findings["collapse"].reproduced == collapsed
    moe = load_results(out / "eval" / "moe.json")[0]
    dense = load_results(out / "eval" / "dense.json")[0]
    diff = paired_difference(moe, dense)
    assert findings["loss"].value == pytest.approx(diff.difference)
    if _too_few_documents(moe):
        # no verdict from an interval over so few documents: the counts instead
        for key in ("loss", "top2", "specialization"):
            assert findings[key].verdict == "too few documents" and not findings[key].reproduced
            assert findings[key].ci is None and "at least 10 per domain" in findings[key].text
        assert findings["figures"].reproduced
        return
    assert findings["loss"].reproduced == (diff.ci[1] < 0)
    assert findings["loss"].ci == pytest.approx(diff.ci)
    assert f"{moe.loss:.3f}" in findings["loss"].details[0]
    assert f"{diff.difference:+.3f}" in findings["loss"].text
    top2 = load_results(out / "eval" / "top2.json")[0]
    # "Made by the router" only where the router beats the gate null after Holm over every
    # (arm, layer) and the model's routing rose over step 0; never for a router inside it.
    layers = [
        (label, layer) for label, r in (("top-1", moe), ("top-2", top2)) for layer in r.routing
    ]
    rejected = holm_rejections([layer.specialization.gate_null.p_value for _, layer in layers])
    made = [
        beats and layer.specialization.emergent.verdict == "emerged"
        for beats, (_, layer) in zip(rejected, layers, strict=True)
    ]
    special = findings["specialization"]
    assert special.reproduced == any(made)
    assert f"{len(layers)} comparisons" in special.text
    for beats, (label, layer) in zip(rejected, layers, strict=True):
        claim = f"{label} layer {layer.layer}: made by the router"
        assert beats or not any(line.startswith(claim) for line in special.details)
    if not any(made):
        assert "made it" not in special.text and "emerged" not in special.text
    details = " ".join(special.details)
    for layer in moe.routing:
        assert f"{layer.specialization.init_nmi:.3f}" in details
    assert special.value is not None and special.ci is not None and special.control
    assert findings["figures"].reproduced


def test_rerun_skips_everything_and_sizes_do_not_mix(study, cli):
    out, first, _ = study
    plan, other = first.plan, next(p for p in PLAN_NAMES if p != first.plan)
    again = run_study(out, "tiny", plan_name=plan)
    assert {s.status for s in again.stages} == {"skipped"}
    result = cli("quickstart", "--tiny", "--plan", plan, "--out", out)
    assert result.exit_code == 0, result.output
    assert "already done" in result.output and "report" in result.output
    as_json = cli("quickstart", "--tiny", "--plan", plan, "--out", out, "--json")
    assert as_json.exit_code == 0, as_json.output
    assert "already done" in as_json.stderr
    parsed = QuickstartOutput.model_validate_json(as_json.stdout)
    assert parsed.findings == first.findings and parsed.report == first.report
    with pytest.raises(  # the default size runs three seeds, the tiny one one
        MoectlError,
        match=rf"holds a 'tiny' '{plan}' \(train.sinks=\[tensorboard\]\) seeds 0 study, not a "
        rf"'default' '{plan}' \(train.sinks=\[tensorboard\]\) seeds 0,1,2 one",
    ):
        run_study(out, "default", plan_name=plan)
    result = cli("quickstart", "--plan", plan, "--out", out)
    assert result.exit_code == 2
    with pytest.raises(
        MoectlError, match=f"holds a 'tiny' '{plan}' .*study, not a 'tiny' '{other}'"
    ):
        run_study(out, "tiny", plan_name=other)
    with pytest.raises(MoectlError, match=r"not a 'tiny' '.*' \(.* moe.top_k=2\) one"):
        run_study(out, "tiny", plan_name=plan, overrides=["moe.top_k=2"])
    # Without TensorBoard it is another study (its runs' configs differ in train.sinks).
    no_board = cli("quickstart", "--tiny", "--plan", plan, "--no-tensorboard", "--out", out)
    assert no_board.exit_code == 2 and "train.sinks=[tensorboard]" in no_board.output
    unknown = cli("quickstart", "--tiny", "--plan", "sideways", "--out", out)
    assert unknown.exit_code == 2 and "unknown plan 'sideways'" in unknown.output


def test_a_users_folder_is_never_a_study_and_bad_config_writes_nothing(tmp_path: Path, cli):
    """A non-empty --out without the study's state file is the user's: refused before any
    write; an invalid --set is refused before the --out folder is even made."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep", encoding="utf-8")
    result = cli("quickstart", "--tiny", "--out", mine)
    assert result.exit_code == 2 and "holds no moectl study" in result.output
    assert "Traceback" not in result.output
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    assert (mine / "keep.txt").read_text(encoding="utf-8") == "keep"
    fresh = tmp_path / "fresh"
    bad = cli("quickstart", "--tiny", "--set", "moe.balance=globl", "--out", fresh)
    assert bad.exit_code == 2 and "moe.balance" in bad.output and not fresh.exists()


def test_scratch_plan_trains_every_variant_from_random_weights():
    data, upcycle = plan_configs("default", "upcycle")
    _, scratch = plan_configs("default", "scratch", ["moe.router_lr_scale=10"])
    assert "pretrain" not in scratch and set(scratch) == set(VARIANTS)
    for name, config in scratch.items():
        assert config.train.max_steps == 650 and config.train.lr == 2e-3
        assert config.moe.router_lr_scale == 10
        assert config.model == upcycle[name].model and config.train.num_threads == 1
        assert config.moe.init == ("scratch" if config.moe.enabled else config.moe.init)
    assert scratch["top2"].moe.top_k == 2 and scratch["no-lb"].moe.lb_coef == 0
    assert (data.size_mb, data.tokenizer, upcycle["moe"].model.n_embd) == (1.25, "bpe:4096", 128)


def test_no_lb_variant_stays_the_collapse_control_under_any_scheme():
    """--set reaches every stage, but the no-LB arm keeps no balancing and no noise: with the
    bias scheme (which balances without a loss) it drops the scheme, with a loss scheme the
    coefficient; the other variants keep what --set asked for."""
    overrides = ["moe.balance=bias", "moe.lb_coef=0.05", "moe.noise_std=0.2"]
    _, runs = plan_configs("tiny", "scratch", overrides)
    no_lb, moe = runs["no-lb"].moe, runs["moe"].moe
    assert (no_lb.balance, no_lb.lb_coef, no_lb.noise_std) == ("none", 0.0, 0.0)
    assert (moe.balance, moe.lb_coef, moe.noise_std) == ("bias", 0.05, 0.2)
    assert runs["top2"].moe.balance == "bias" and runs["no-lb"].train.collapse.stop
    _, runs = plan_configs("tiny", "scratch", ["moe.balance=global", "moe.lb_coef=0.05"])
    assert (runs["no-lb"].moe.balance, runs["no-lb"].moe.lb_coef) == ("global", 0.0)
    _, default = plan_configs("tiny", "scratch")
    assert default["no-lb"].moe.balance == "switch" and default["no-lb"].moe.lb_coef == 0.0


def test_seeds_run_every_arm_per_seed_and_findings_count_them(tmp_path: Path):
    out = tmp_path / "seeds"
    short = ["train.max_steps=12"]
    result = run_study(
        out, "tiny", plan_name="scratch", overrides=short, seeds=[0, 1], functional=True
    )
    assert result.seeds == [0, 1]
    for variant in VARIANTS:
        for name, seed in ((variant, 0), (f"{variant}-seed1", 1)):
            assert read_run_config(out / "runs" / name).train.seed == seed
            evaluated = load_results(out / "eval" / f"{name}.json")[0]
            assert evaluated.block_index == load_results(out / "eval" / "moe.json")[0].block_index
    for finding in result.findings[:-1]:  # all but the figures
        assert finding.seeds == [0, 1] and sum(finding.seed_verdicts.values()) == 2
    loss = next(f for f in result.findings if f.key == "loss")
    few = _too_few_documents(load_results(out / "eval" / "moe.json")[0])
    assert (loss.ci is None) == few and (few or "Over 2 seeds" in loss.text)
    assert "/2" in Path(result.report).read_text()
    seed1 = load_results(out / "eval" / "moe-seed1.json")[0]
    special = next(f for f in result.findings if f.key == "specialization")
    if min(size.documents for size in seed1.sample.values()) >= 2:
        assert seed1.functional
        assert any(line.startswith("Functional test") for line in special.details)
    else:  # own experts are chosen on other documents than they are scored on: none to spare
        assert not seed1.functional
        assert any("functional test: skipped" in note for note in seed1.notes)
    with pytest.raises(MoectlError, match=r"seeds 0,1 study, not a .* seeds 0 one"):
        run_study(out, "tiny", plan_name="scratch", overrides=short, seeds=[0], functional=True)
    with pytest.raises(MoectlError, match="with the functional test study, not a"):
        run_study(out, "tiny", plan_name="scratch", overrides=short, seeds=[0, 1])


@pytest.mark.parametrize("seeds", ["0,a", "1,1", "-1"])
def test_bad_seeds_are_one_line_and_write_nothing(cli, tmp_path: Path, seeds: str):
    result = cli("quickstart", "--tiny", "--seeds", seeds, "--out", tmp_path / "study")
    assert result.exit_code == 2 and "--seeds" in result.output
    assert not (tmp_path / "study").exists()


def test_every_command_takes_the_study_and_finds_its_evaluations(study, cli, tmp_path):
    """inspect, evaluate, export and visualize take the quickstart's folder (its runs) and a
    run inside it; the quickstart's eval/NAME.json is found as the run's evaluation."""
    import yaml

    from moectl.rundir.locate import evaluation_files

    out, result, _ = study
    moe = out / "runs" / "moe"
    assert evaluation_files(moe) == [out / "eval" / "moe.json"]
    for name in set(result.runs) - set(VARIANTS):  # the pretrain run is not evaluated
        assert evaluation_files(out / "runs" / name) == []

    shown = cli("inspect", out, "--json")
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.output)
    assert summary["kind"] == "study" and summary["plan"] == result.plan
    assert [run["name"] for run in summary["runs"]] == sorted(result.runs)
    assert summary["evaluations"]["moe"] == [str(out / "eval" / "moe.json")]
    table = cli("inspect", out)
    assert table.exit_code == 0 and "no-lb" in table.output and "report" in table.output

    # The card of a run inside the study carries the study's verdicts, with intervals.
    card = cli("export", moe, "--out", tmp_path / "moe")
    assert card.exit_code == 0, card.output
    text = (tmp_path / "moe" / "README.md").read_text()
    assert "no specialization verdicts" not in text
    spec = load_results(out / "eval" / "moe.json")[0].routing[0].specialization
    low, high = spec.emergent.ci
    assert (
        f"{spec.emergent.verdict}: {spec.emergent.difference:.3f} [{low:.3f}, {high:.3f}]" in text
    )
    assert str(out) not in text
    # The whole study: every run to --out/NAME, each a loadable export.
    every = cli("export", out, "--out", tmp_path / "all")
    assert every.exit_code == 0, every.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == sorted(result.runs)
    again = cli("export", out, "--out", tmp_path / "all")
    assert again.exit_code == 2 and "already exists" in again.output
    header = (tmp_path / "all" / "dense" / "README.md").read_text().split("---\n")[1]
    assert "mixture-of-experts" not in yaml.safe_load(header)["tags"]

    evaluated = cli(
        "evaluate", out, "--max-blocks", "6", "--permutations", "2", "--bootstrap", "100",
        "--random-gates", "64", "--out", tmp_path / "again.json", "--json",
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    names = [r["name"] for r in json.loads(evaluated.output)["results"]]
    assert len(names) == len(result.runs)


def test_visualize_study_rebuilds_the_report_with_its_findings(study, cli):
    out, result, _ = study
    report = out / "report.html"
    before = report.read_text()
    report.unlink()
    rebuilt = cli("visualize", out)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "no evaluation results" not in rebuilt.output
    text = report.read_text()
    assert "<table class='findings cards'>" in text
    for finding in result.findings:
        if finding.key != "figures":
            assert finding.title in text and finding.title in before
    assert f"moectl visualize {out}" in text  # provenance names the command that rebuilt it
    # Several runs of the study: each finds the study's evaluation (heatmaps drawn).
    runs = [out / "runs" / name for name in VARIANTS]
    several = cli("visualize", *runs, "--out", out / "again")
    assert several.exit_code == 0, several.output
    assert "no evaluation results" not in several.output
    assert len(list((out / "again").glob("routing-heatmap-*.png"))) == 3
