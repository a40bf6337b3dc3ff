"""report.html's structure: the findings table first (verdict, deciding number with its CI,
control, seed counts), details below, the eval sample with its warnings, captions that say what
each figure shows, and the provenance (version, commit, seeds, commands, every run's config)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helpers.figures import synthetic_result, write_run
from markupsafe import escape

from moectl import __version__
from moectl.analysis.results import Finding, SampleSize, TokenIdScore
from moectl.analysis.runs import load_run
from moectl.viz import report as report_module
from moectl.viz.report import CAPTIONS, Provenance, caption, render_report


def _finding(key: str, verdict: str, reproduced: bool) -> Finding:
    return Finding(
        key=key, title=f"title {key}", reproduced=reproduced, verdict=verdict,
        text=f"summary of {key} <b>", measure=f"measure {key}", value=-0.062,
        ci=(-0.07, -0.054), control=f"control {key}", seeds=[0, 1],
        seed_verdicts={verdict: 1, "inherited": 1}, details=[f"detail {key} one", "two"],
    )  # fmt: skip


def test_report_structure(tmp_path: Path, monkeypatch) -> None:
    runs = [load_run(write_run(tmp_path / "moe", moe=True))]
    moe = synthetic_result("moe")
    moe.sample = {
        "code": SampleSize(blocks=4, documents=3),
        "math": SampleSize(blocks=4, documents=30),
    }
    moe.sample_seed = 7
    moe.notes = ["eval sample: code has 3 eval documents (fewer than 20)"]
    findings = [_finding("loss", "better", True), _finding("collapse", "mixed over seeds", False)]
    figure = tmp_path / "routing-heatmap-moe.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")
    monkeypatch.setattr(report_module, "git_commit", lambda: "abc123")
    provenance = Provenance.of(
        ["moectl quickstart --out s --seeds 0,1"], [0, 1], ["moectl train x"]
    )
    page = render_report(runs, [moe], [figure], findings=findings, provenance=provenance)

    assert "name='viewport'" in page
    table = re.search(r"<table class='findings cards'>(.*?)</table>", page, re.S).group(1)
    assert page.index("<table class='findings cards'>") < page.index("Findings in detail")
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    assert len(rows) == 2
    labels = re.findall(r"<td data-label='([^']*)'>", rows[0])
    assert labels == ["finding", "verdict", "deciding number [95% CI]", "compared against",
                      "seeds"]  # fmt: skip
    cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[0], re.S)
    assert "better" in cells[1] and "<b>-0.062</b> [-0.070, -0.054]" in cells[2]
    assert cells[3] == "control loss" and cells[4] == "better 1/2, inherited 1/2"
    assert "summary of loss &lt;b&gt;" in page and "<li>detail loss one</li>" in page
    sample = page[page.index("<h2>Eval sample</h2>") :]
    assert "<td>code</td><td>4</td><td>3</td>" in sample and "seed 7" in sample
    assert "<p class='warning'>eval sample: code has 3" in sample
    assert (
        str(escape(CAPTIONS["routing-heatmap"])) in page
        and "<figcaption><b>routing heatmap moe.</b>" in page
    )
    provenance_html = page[page.index("<h2>Provenance</h2>") :]
    for text in (
        f"moectl {__version__}",
        "commit abc123",
        "seeds 0, 1",
        "moectl quickstart --out s --seeds 0,1",
        "moectl train x",
        "moe: config.yaml",
    ):
        assert text in provenance_html, text  # fmt: skip


def test_a_one_seed_study_shows_its_seed_count_and_lists_the_seed_in_provenance(
    tmp_path: Path,
) -> None:
    runs = [load_run(write_run(tmp_path / "moe", moe=True))]
    finding = _finding("loss", "better", True).model_copy(update={"seeds": [7]})
    page = render_report(runs, [], [], findings=[finding], provenance=Provenance.of([], [7]))
    table = re.search(r"<table class='findings cards'>(.*?)</table>", page, re.S).group(1)
    row = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[4] == "1"
    assert "seeds 7" in page[page.index("<h2>Provenance</h2>") :]


def test_the_token_id_column_reports_the_excess_over_its_null(tmp_path: Path) -> None:
    moe = synthetic_result("moe")
    spec = moe.routing[0].specialization
    spec.token_id = TokenIdScore(
        nmi=0.157, ci=(0.14, 0.17), null_nmi=0.155, excess=0.002, excess_ci=(-0.006, 0.01)
    )
    page = render_report([], [moe], [])
    assert "NMI given token id: excess over its null" in page
    assert "+0.002 [-0.006, +0.010] over null, raw 0.157: none shown" in page


def test_every_figure_has_a_caption_that_says_what_it_shows() -> None:
    for stem in ("domain-loss", "router-entropy", "nmi-over-training", "collapse-trajectory",
                 "lb-loss", "routing-heatmap-top2", "token-types-moe-seed1"):  # fmt: skip
        text = caption(stem)
        assert len(text.split()) > 8 and text != stem.replace("-", " "), stem
    assert caption("token-types-moe-seed1").startswith("moe-seed1: ")


def test_git_commit_names_this_checkout_and_none_elsewhere(monkeypatch, tmp_path: Path) -> None:
    root = Path(report_module.__file__).resolve().parents[2]
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    commit = report_module.git_commit()
    assert commit is not None and commit.removesuffix("-dirty") == head
    elsewhere = tmp_path / "site-packages" / "moectl" / "viz" / "report.py"
    monkeypatch.setattr(report_module, "__file__", str(elsewhere))
    assert report_module.git_commit() is None
