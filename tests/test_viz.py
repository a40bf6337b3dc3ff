"""Figures, token page and report from synthetic run logs and results written per the contract."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from moectl.analysis.eval_blocks import SAMPLE_NOTE
from moectl.analysis.results import EvaluationResult, TokenRouting
from moectl.analysis.routing import LayerRouting
from moectl.analysis.runs import load_run
from moectl.analysis.tokentypes import CODE_TYPES, MATH_TYPES
from moectl.viz import interactive
from moectl.viz.seed_bands import arms, metric_bands
from moectl.viz.study import visualize_study
from moectl.viz.tokens_html import write_token_page

DOMAINS = ["code", "math", "prose"]
N_EXPERTS = 4


def write_run(
    path: Path, *, moe: bool, collapse: bool = False, routing: bool = True, seed: int = 0
) -> Path:
    """A run directory as `moectl train` writes it (config.yaml, metrics.jsonl, routing.jsonl);
    another `seed` of the same arm has its losses 0.05 and its NMI 0.01 higher per seed."""
    path.mkdir(parents=True)
    lb = 0.0 if collapse else 0.01
    (path / "config.yaml").write_text(
        f"name: {path.name}\nmoe:\n  enabled: {str(moe).lower()}\n  last_n: 2\n"
        f"  n_experts: {N_EXPERTS}\n"
        f"  top_k: 1\n  lb_coef: {lb}\ntrain:\n  seed: {seed}\n  collapse:\n    threshold: 0.6\n",
        encoding="utf-8",
    )
    rows = []
    for step in range(10, 110, 10):
        decay = 5.0 * np.exp(-step / 60) + 0.05 * seed
        losses = {"code": 2.0 + decay, "math": 1.0 + decay, "prose": 3.0 + decay}
        rows.append(
            {"kind": "train", "step": step, "tokens": 64 * step, "lr": 1e-3,
             "loss": 2 + decay, "lm_loss": 2 + decay,
             "lb_loss": (1.0 + (step / 100 if collapse else 0.02)) if moe else None,
             "z_loss": 0.1 if moe else None, "grad_norm": 1.0, "tokens_per_s": 1000.0,
             "domain_loss": losses, "time": 0.0}
        )  # fmt: skip
        if step % 50 == 0:
            rows.append(
                {"kind": "eval", "step": step, "loss": 2.1 + decay, "ppl": 8.0,
                 "domain_loss": {d: v + 0.1 for d, v in losses.items()}, "domain_ppl": {}}
            )  # fmt: skip
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    if moe and routing:
        lines = []
        consecutive = 0
        for step in range(0, 110, 10):
            top = min(0.25 + step / 100, 0.9) if collapse else 0.3
            fractions = [top] + [(1 - top) / (N_EXPERTS - 1)] * (N_EXPERTS - 1)
            layers = {
                str(layer): {
                    "fractions": fractions,
                    "domain_fractions": {d: fractions for d in DOMAINS},
                    "entropy": float(np.log(N_EXPERTS)) * (1 - top / 2),
                    "domain_entropy": {d: 1.0 for d in DOMAINS},
                    "max_fraction": top - 0.05 * layer,
                    "counts": [[100 + step, 10, 10, 10], [10, 100, 10, 10], [10, 10, 100, 10]],
                    "nmi": 0.3 + step / 1000 + 0.01 * seed,
                }
                for layer in (2, 3)
            }
            warned = [int(k) for k, v in layers.items() if v["max_fraction"] > 0.6]
            consecutive = consecutive + 1 if warned else 0
            collapse = {
                "warning": bool(warned),
                "layers": warned,
                "consecutive": consecutive,
                "stop": consecutive >= 3,
            }
            lines.append(
                {"step": step, "layers": layers, "collapse": collapse if step else None}
            )  # fmt: skip
        (path / "routing.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return path


def synthetic_result(name: str, moe: bool = True, seed: int = 0) -> EvaluationResult:
    """A result built through the real analysis code from domain-biased random routing."""
    rng = np.random.default_rng(seed)
    routing, samples = [], []
    if moe:
        domains = np.repeat([0, 1, 2], 200)
        for layer in (2, 3):
            recorder = LayerRouting(layer, N_EXPERTS, 1)
            experts = np.where(rng.random(600) < 0.5, domains, rng.integers(0, N_EXPERTS, 600))
            code_types = np.where(domains == 0, rng.integers(0, len(CODE_TYPES), 600), -1)
            math_types = np.where(domains == 1, rng.integers(0, len(MATH_TYPES), 600), -1)
            recorder.add(
                domains,
                np.arange(600) // 50,
                experts[:, None],
                rng.random(600),
                {"code": code_types, "math": math_types},
            )
            routing.append(
                recorder.analyse(
                    DOMAINS,
                    {"code": CODE_TYPES, "math": MATH_TYPES},
                    {"code": "code", "math": "math"},
                    n_permutations=5,
                )
            )
        tokens = ["def", " f", "(x", "):", "\n   ", " return", " x", " <", " 2"]
        samples = [
            TokenRouting(
                domain=d,
                tokens=tokens,
                layers={"2": [i % N_EXPERTS for i in range(9)], "3": [1] * 9},
                probs={"2": [1.0] * 9, "3": [0.5] * 9},
                entropy={"2": [0.3] * 9, "3": [1.1] * 9},
            )
            for d in DOMAINS
        ]
    return EvaluationResult(
        name=name, model_path=f"runs/{name}/best", kind="moe" if moe else "dense", step=100,
        corpus="data/mix", corpus_name="mix", split="eval", blocks=12, tokens=600,
        loss=2.5 + seed / 10, ppl=float(np.exp(2.5 + seed / 10)),
        domain_loss={"code": 2.0, "math": 1.2 + seed, "prose": 3.5},
        domain_ppl={"code": 7.4, "math": 3.3, "prose": 33.1},
        domain_tokens={d: 200 for d in DOMAINS},
        moe_layers=[2, 3] if moe else [], n_experts=N_EXPERTS if moe else None,
        top_k=1 if moe else None, routing=routing, samples=samples,
        notes=[f"{SAMPLE_NOTE} code has 8 eval documents (fewer than 20)"],
    )  # fmt: skip


class _Spans(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "span" and ("class", "tok") in attrs:
            self.tokens += 1
            assert dict(attrs).get("tabindex") == "0"  # a tap focuses it: no hover needed


def _parse(path: Path) -> _Spans:
    parser = _Spans()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def _plots(report: str) -> list[str]:
    """The ids of the report's Plotly figures, in page order."""
    return re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', report)


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        return image.size


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
