"""The routing label (MoEConfig.routing_label) where runs are compared: `moectl inspect` of a run
and of its model, `moectl evaluate`'s table and saved result, and the report's run and loss
tables, for a run whose balancing, scores, shared and fine-grained experts are all non-default."""

from __future__ import annotations

import html

import pytest
from conftest import trained_run

from moectl.analysis.results import load_results
from moectl.analysis.runs import load_run
from moectl.config import MoEConfig
from moectl.viz.report import render_report

LABEL = "top-1x2 bias sigmoid +1 shared g=2"
SCHEME = [
    "--preset", "tiny", "--set", "train.max_steps=2",
    "--set", "moe.enabled=true", "--set", "moe.last_n=1", "--set", "moe.n_experts=2",
    "--set", "moe.balance=bias", "--set", "moe.score=sigmoid",
    "--set", "moe.shared_experts=1", "--set", "moe.granularity=2",
]  # fmt: skip


def test_the_label_names_the_scheme_and_only_the_options_off_their_default() -> None:
    assert MoEConfig(enabled=True, last_n=1).routing_label == "top-1x8 switch"
    assert MoEConfig(enabled=True, last_n=1, top_k=2, balance="global").routing_label == (
        "top-2x8 global"
    )
    options = {"balance": "bias", "score": "sigmoid", "shared_experts": 1, "granularity": 2}
    assert MoEConfig(enabled=True, last_n=1, n_experts=2, **options).routing_label == LABEL


@pytest.fixture(scope="module")
def scheme_run(tiny_corpus, tmp_path_factory):
    return trained_run(tmp_path_factory, "scheme", *SCHEME, "--data", tiny_corpus)


def test_inspect_evaluate_and_the_report_show_the_label(cli, scheme_run) -> None:
    shown = cli("inspect", scheme_run)
    assert shown.exit_code == 0 and f"{LABEL} in last 1, bias rate 0.001, no LB loss" in _text(
        shown.output
    )
    model = cli("inspect", scheme_run / "best")
    assert model.exit_code == 0 and f"routing {LABEL}" in _text(model.output)
    evaluated = cli("evaluate", scheme_run, "--max-blocks", "3", "--permutations", "2")
    assert evaluated.exit_code == 0, evaluated.output
    (result,) = load_results(next((scheme_run / "eval").glob("*.json")))
    assert result.routing_label == LABEL
    assert LABEL in _text(evaluated.output)
    page = render_report([load_run(scheme_run)], [result], [])
    runs = page[page.index("<h2>Runs compared</h2>") : page.index("<h2>Per-domain loss")]
    assert f"MoE {html.escape(LABEL)}, bias rate 0.001, no LB loss" in runs
    losses = page[page.index("<h2>Per-domain loss") :]
    assert f"{scheme_run.name} ({html.escape(LABEL)})" in losses


def _text(output: str) -> str:
    """The output with rich's line wrapping, table rules and padding undone."""
    return " ".join(output.replace("│", " ").split())
