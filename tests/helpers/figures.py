"""A synthetic evaluation result and run directory for the figure and report tests, and readers of
the written PNG and HTML.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from moectl.analysis.eval_blocks import SAMPLE_NOTE
from moectl.analysis.results import EvaluationResult, TokenRouting
from moectl.analysis.routing import LayerRouting
from moectl.analysis.tokentypes import CODE_TYPES, MATH_TYPES

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
