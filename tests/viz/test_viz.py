"""Figures, token page and report from synthetic run logs and results written per the contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.figures import (
    DOMAINS,
    _parse,
    _plots,
    _png_size,
    synthetic_result,
    write_run,
)

from moectl.analysis.runs import load_run
from moectl.viz import interactive
from moectl.viz.seed_bands import arms, metric_bands
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
        "routing-steps-moe.png", "routing-steps-no-lb.png",
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
    assert report.count("src='data:image/png;base64,") == 9
    assert report.count("srcset='data:image/png;base64,") == 8  # the stacked versions
    # interactive: the step slider per routing log, hover heatmaps per model; plotly.js once
    assert _plots(report) == ["routing-steps-moe", "routing-steps-no-lb", "routing-heatmap-moe"]
    assert report.count("* plotly.js v") == 1
    assert report.index("* plotly.js v") < report.index("</head>")
    assert _parse(tmp_path / "figures" / "report.html").tokens == tokens.tokens  # inside it
    assert "layer 2 at step" in report  # collapse event of the no-lb run
    assert "random-assignment baseline" in report and "uniform-router" not in report
    assert "frozen gate NMI" in report and "no control (no init record)" in report
    assert report.count("eval sample: code has 8 eval documents (fewer than 20)") == 1


def test_seed_bands_average_the_seeds_of_each_arm(tmp_path: Path) -> None:
    runs = [write_run(tmp_path / "dense", moe=False)]
    runs += [write_run(tmp_path / f"moe{'-seed' + str(s) if s else ''}", moe=True, seed=s)
             for s in (0, 1, 2)]  # fmt: skip
    logs = [load_run(run) for run in runs]
    grouped = {arm: [run.name for run in members] for arm, members in arms(logs).items()}
    assert grouped == {"dense": ["dense"], "moe": ["moe", "moe-seed1", "moe-seed2"]}
    (_, [loss]), (_, [nmi]) = metric_bands(logs)  # the one-seed dense arm has no band
    assert loss.arm == "moe" and loss.seeds == [0, 1, 2] and loss.steps == [50, 100]
    eval_50 = 2.1 + 5.0 * np.exp(-50 / 60)  # write_run's seed 0; each seed adds 0.05
    assert loss.mean[0] == pytest.approx(eval_50 + 0.05, abs=1e-12)
    assert (loss.low[0], loss.high[0]) == pytest.approx((eval_50, eval_50 + 0.1), abs=1e-12)
    assert nmi.steps == list(range(0, 110, 10))
    assert (nmi.low[0], nmi.mean[0], nmi.high[0]) == pytest.approx((0.3, 0.31, 0.32), abs=1e-12)
    figure = interactive.seed_bands(logs)
    high, low, mean = figure.data[:3]  # one arm per metric: edges, then the mean
    assert list(high.y) == loss.high and low.fill == "tonexty" and list(mean.y) == loss.mean
    assert [tuple(c) for c in mean.customdata] == list(zip(loss.low, loss.high, strict=True))
    written = {p.name for p in visualize_study(runs, [], tmp_path / "figures")}
    assert {"seed-bands.png", "routing-steps-moe-seed2.png"} <= written
    report = (tmp_path / "figures" / "report.html").read_text(encoding="utf-8")
    assert "seed-bands" in _plots(report) and report.count("* plotly.js v") == 1


def test_interactive_heatmaps_carry_each_cell_s_share_and_count(tmp_path: Path) -> None:
    result = synthetic_result("moe")
    layer = result.routing[0]
    heatmap = interactive.routing_heatmaps(result).data[0]
    assert [list(r) for r in heatmap.z] == [layer.domain_fractions[d] for d in DOMAINS]
    assert [list(c) for c in heatmap.customdata[1]] == [
        [count, sum(layer.counts[1])] for count in layer.counts[1]
    ]
    assert "%{customdata[0]} of the domain's %{customdata[1]}" in heatmap.hovertemplate
    run = load_run(write_run(tmp_path / "no-lb", moe=True, collapse=True))
    slider = interactive.routing_over_training(run).layout.sliders[0]
    assert [s.label for s in slider.steps] == [str(s) for s in range(0, 110, 10)]
    assert slider.active == 10  # it opens at the last step, as the static image beside it
    data, titles = slider.steps[0].args  # step 0: the router at init
    assert data["z"][0] == [run.routing[0]["layers"]["2"]["domain_fractions"][d] for d in DOMAINS]
    assert data["customdata"][1][0][0] == [100, 130]  # layer 3, code, expert 0 at step 0
    assert titles == {"annotations[0].text": "layer 2: NMI 0.300",
                      "annotations[1].text": "layer 3: NMI 0.300"}  # fmt: skip


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
