"""Figures, token page and report from synthetic run logs and results written per the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.figures import (
    _parse,
    _png_size,
    synthetic_result,
    write_run,
)

from moectl.viz.study import visualize_study
from moectl.viz.tokens_html import write_token_page


@pytest.fixture
def study(tmp_path: Path):
    runs = [
        write_run(tmp_path / "dense", moe=False),
        write_run(tmp_path / "moe", moe=True),
        write_run(tmp_path / "no-lb", moe=True, collapse=True),
    ]
    results = [synthetic_result("dense", moe=False), synthetic_result("moe", seed=1)]
    return runs, results


def test_visualize_study_writes_valid_pngs_and_html(study, tmp_path: Path) -> None:
    runs, results = study
    warnings: list[str] = []
    written = visualize_study(runs, results, tmp_path / "figures", "png", warnings=warnings)
    names = {p.name for p in written}
    assert {
        "domain-loss.png", "router-entropy.png", "collapse-trajectory.png", "lb-loss.png",
        "nmi-over-training.png",
        "routing-heatmap-moe.png", "token-types-moe.png", "tokens.html", "report.html",
    } == names  # fmt: skip
    for path in written:
        if path.suffix == ".png":
            width, height = _png_size(path)
            assert 300 < width < 4000 and 200 < height < 4000, (path.name, width, height)
    narrow = {p.name for p in written if p.parent.name == "narrow"}
    assert narrow == {n for n in names if n.endswith(".png")} - {"lb-loss.png"}
    for name in ("routing-heatmap-moe.png", "router-entropy.png", "domain-loss.png"):
        (wide_w, wide_h), (narrow_w, narrow_h) = (
            _png_size(tmp_path / "figures" / sub / name) for sub in ("", "narrow")
        )
        assert narrow_w < wide_w and narrow_h > wide_h, name  # its panels stacked
    assert any("dense" in w for w in warnings)
    tokens = _parse(tmp_path / "figures" / "tokens.html")
    assert tokens.tokens == 3 * 9 * 2  # 3 samples x 9 tokens x 2 MoE layers
    assert "script" not in tokens.tags
    report = (tmp_path / "figures" / "report.html").read_text(encoding="utf-8")
    _parse(tmp_path / "figures" / "report.html")
    assert report.count("data:image/png;base64,") == 7 + 6  # and the stacked ones
    assert _parse(tmp_path / "figures" / "report.html").tokens == tokens.tokens  # inside it
    assert "layer 2 at step" in report  # collapse event of the no-lb run
    assert "random-assignment baseline" in report and "uniform-router" not in report
    assert "frozen gate NMI" in report and "no control (no init record)" in report
    assert report.count("eval sample: code has 8 eval documents (fewer than 20)") == 1


def test_svg_format_and_missing_routing_log(tmp_path: Path) -> None:
    runs = [write_run(tmp_path / "moe-nolog", moe=True, routing=False)]
    warnings: list[str] = []
    written = visualize_study(runs, [], tmp_path / "out", "svg", warnings=warnings)
    names = {p.name for p in written}
    assert names == {"domain-loss.svg", "lb-loss.svg", "report.html"}
    assert any("no routing.jsonl" in w for w in warnings)
    assert (tmp_path / "out" / "domain-loss.svg").read_text().lstrip().startswith("<?xml")
    assert "<svg" in (tmp_path / "out" / "report.html").read_text()


def test_token_page_escapes_tokens(tmp_path: Path) -> None:
    result = synthetic_result("moe")
    result.samples[0].tokens[0] = "<b>&"
    page = write_token_page([result], tmp_path / "t.html")
    text = page.read_text(encoding="utf-8")
    assert "&lt;b&gt;&amp;" in text
    assert _parse(page).tokens == 54
