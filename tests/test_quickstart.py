"""The whole tiny study end to end: interrupted mid-stage, resumed, every artefact checked."""

from __future__ import annotations

import json
import os
import signal
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from moectl.analysis.results import load_results
from moectl.errors import MoectlError
from moectl.progress import ProgressEvent
from moectl.study import VARIANTS, StudyInterrupted, run_study
from moectl.study.findings import LOSS_TOLERANCE

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


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("study")
    interrupter = _Interrupter()
    with pytest.raises(StudyInterrupted, match="moe"):
        run_study(out, "tiny", callback=interrupter)
    assert interrupter.sent
    state = json.loads((out / "study.json").read_text())
    assert {"prepare-data", "pretrain"} <= set(state["done"]) and "moe" not in state["done"]
    assert (out / "runs" / "moe" / "checkpoints").is_dir()
    result = run_study(out, "tiny")
    return out, result


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
    out, result = study
    status = {s.name: s.status for s in result.stages}
    assert status["prepare-data"] == status["pretrain"] == "skipped"
    assert status["moe"] == "resumed"
    assert status["dense"] in ("skipped", "resumed")
    assert status["evaluate"] == status["visualize"] == "done"
    moe = json.loads((out / "runs" / "moe" / "result.json").read_text())
    assert moe["resumed_from"] and moe["steps"] == moe["max_steps"] == 40
    assert moe["stop_reason"] == "completed"


def test_every_artefact_is_written(study):
    out, result = study
    assert (out / "data" / "manifest.json").is_file()
    for name in ("pretrain", *VARIANTS):
        run = out / "runs" / name
        for part in ("config.yaml", "metrics.jsonl", "best/model.safetensors", "best/model.json"):
            assert (run / part).is_file(), f"{run}/{part} missing"
    for variant in ("moe", "no-lb", "top2"):
        rows = [json.loads(line) for line in (out / "runs" / variant / "routing.jsonl").open()]
        assert rows and all(abs(sum(r["layers"]["1"]["fractions"]) - 1) < 1e-6 for r in rows)
    evaluated = {v: load_results(out / "eval" / f"{v}.json")[0] for v in VARIANTS}
    assert evaluated["dense"].kind == "dense" and not evaluated["dense"].routing
    for variant in ("moe", "no-lb", "top2"):
        assert evaluated[variant].kind == "moe" and len(evaluated[variant].routing) == 2
    assert evaluated["top2"].top_k == 2
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


def test_findings_are_measured_not_asserted(study):
    out, result = study
    findings = {f.key: f for f in result.findings}
    assert set(findings) == {"loss", "top2", "collapse", "specialization", "figures"}
    no_lb_routing = [json.loads(line) for line in (out / "runs" / "no-lb" / "routing.jsonl").open()]
    collapsed = any(row["collapse"]["warning"] for row in no_lb_routing)
    assert findings["collapse"].reproduced == collapsed
    moe = load_results(out / "eval" / "moe.json")[0]
    dense = load_results(out / "eval" / "dense.json")[0]
    assert findings["loss"].reproduced == (moe.loss < dense.loss * (1 - LOSS_TOLERANCE))
    assert f"{moe.loss:.3f}" in findings["loss"].text
    assert findings["figures"].reproduced


def test_rerun_skips_everything_and_sizes_do_not_mix(study, cli):
    out, _ = study
    again = run_study(out, "tiny")
    assert {s.status for s in again.stages} == {"skipped"}
    result = cli("quickstart", "--tiny", "--out", out)
    assert result.exit_code == 0, result.output
    assert "already done" in result.output and "report" in result.output
    with pytest.raises(MoectlError, match="holds a 'tiny' study"):
        run_study(out, "default")
    result = cli("quickstart", "--out", out)
    assert result.exit_code == 2
