"""`moectl evaluate` end to end on the tiny study: tables, JSON files, bad input exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from moectl.analysis.results import load_results


def test_evaluate_compares_models_and_saves_json(cli, tiny_study) -> None:
    result = cli(
        "evaluate", tiny_study["dense"], tiny_study["moe"], tiny_study["top2"],
        "--max-blocks", "6", "--permutations", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Evaluation on mix" in result.output
    assert "random" in result.output and "moe: routing per MoE layer" in result.output
    assert "uniform-router" not in result.output
    # hand-made run dirs without init/: the control is missing, said so, never invented
    assert "no init-router control" in _text(result) and "no control" in result.output
    assert "dense model" in result.output  # the dense run is reported with losses only
    # 2 documents per domain: warned once for the shared sample, not once per model
    assert _text(result).count("eval sample: code has 2 eval documents (fewer than 20)") == 1
    for name in ("dense", "moe", "top2"):
        (saved,) = load_results(tiny_study[name] / "eval" / "mix.json")
        assert saved.name == name and saved.blocks == 6
    moe = load_results(tiny_study["moe"] / "eval" / "mix.json")[0]
    assert f"{moe.routing[0].specialization.nmi:.3f}" in result.output
    assert f"{moe.routing[0].specialization.baseline_nmi:.3f}" in result.output


def test_evaluate_out_and_json(cli, tiny_study, tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    result = cli(
        "evaluate", tiny_study["moe"] / "best", "--data", tiny_study["corpus"],
        "--max-blocks", "3", "--permutations", "2", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["results"][0]["run_dir"] == str(tiny_study["moe"])
    assert load_results(out)[0].kind == "moe"


def _text(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_evaluate_bad_input(cli, tiny_study, tmp_path: Path) -> None:
    missing = cli("evaluate", tmp_path / "nope", "--data", tiny_study["corpus"])
    assert missing.exit_code == 2 and "does not exist" in _text(missing)
    assert "Traceback" not in _text(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    not_model = cli("evaluate", empty, "--data", tiny_study["corpus"])
    assert not_model.exit_code == 2 and "neither a run directory" in _text(not_model)
    artifact_only = cli("evaluate", tiny_study["moe"] / "best")
    assert artifact_only.exit_code == 0  # best/ sits in a run dir whose run.json names the data
    bad_corpus = cli("evaluate", tiny_study["moe"], "--data", empty)
    assert bad_corpus.exit_code == 2 and "manifest.json" in _text(bad_corpus)
    bad_split = cli("evaluate", tiny_study["moe"], "--split", "test")
    assert bad_split.exit_code == 2 and "unknown split" in _text(bad_split)


def test_evaluate_prints_the_router_and_functional_tables(cli, tiny_study) -> None:
    result = cli(
        "evaluate", tiny_study["moe"], "--max-blocks", "6", "--permutations", "3",
        "--functional", "--out", tiny_study["moe"] / "functional.json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())  # a title may wrap on a narrow terminal
    assert "moe: the router against random gates" in words
    assert "moe: functional test" in words
    (saved,) = load_results(tiny_study["moe"] / "functional.json")
    spec = saved.routing[0].specialization
    null = spec.gate_null
    assert null.n == 199 and f"{null.plain.p_value:.3f}" in result.output
    assert f"{null.plain.excess:+.3f}" in result.output
    assert spec.router_made.verdict is None  # no init/ in these hand-made runs
    assert saved.functional and all(s.init is None for s in saved.functional)
    assert f"{saved.functional[0].trained.difference:+.3f}" in result.output
    # Tables fit 90 columns; warnings are one soft-wrapped line each (the terminal wraps them).
    table_lines = [ln for ln in result.output.splitlines() if not ln.startswith("warning:")]
    assert max(len(line) for line in table_lines) <= 90
