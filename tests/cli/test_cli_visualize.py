"""`moectl visualize` on synthetic run logs plus real evaluate results of the tiny study."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers.figures import _parse, _png_size, write_run

from moectl.analysis.results import load_results


def _text(result) -> str:
    return " ".join(result.output.split())


def test_visualize_runs_with_evaluations(cli, tiny_study, tmp_path: Path) -> None:
    study = tmp_path / "study"
    moe = write_run(study / "moe", moe=True)
    write_run(study / "dense", moe=False)
    evaluated = cli(
        "evaluate", tiny_study["moe"], "--max-blocks", "6", "--permutations", "2",
        "--out", moe / "eval" / "mix.json",
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    result = cli("visualize", study / "moe", study / "dense")
    assert result.exit_code == 0, result.output
    figures = study / "figures"
    for name in ("routing-heatmap-moe", "token-types-moe", "collapse-trajectory", "domain-loss"):
        width, height = _png_size(figures / f"{name}.png")
        assert width > 300 and height > 200
    assert (study / "report.html").is_file()
    page = _parse(figures / "tokens.html")
    (evaluation,) = load_results(moe / "eval" / "mix.json")
    samples = evaluation.samples
    assert page.tokens == sum(len(s.tokens) * len(s.layers) for s in samples)


def test_visualize_svg_single_run_default_folder(cli, tmp_path: Path) -> None:
    run = write_run(tmp_path / "no-lb", moe=True, collapse=True)
    result = cli("visualize", run, "--format", "svg")
    assert result.exit_code == 0, result.output
    assert (run / "figures" / "collapse-trajectory.svg").read_text().count("<svg") >= 1
    assert (run / "report.html").is_file()
    assert "no evaluation results" in _text(result)


def test_visualize_bad_input(cli, tmp_path: Path) -> None:
    missing = cli("visualize", tmp_path / "missing")
    assert missing.exit_code == 2 and "does not exist" in _text(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    not_run = cli("visualize", empty)
    assert not_run.exit_code == 2 and "not a run directory" in _text(not_run)
    run = write_run(tmp_path / "moe", moe=True)
    bad_format = cli("visualize", run, "--format", "gif")
    assert bad_format.exit_code == 2 and "unknown figure format" in _text(bad_format)
    (run / "eval").mkdir()
    (run / "eval" / "broken.json").write_text("{not json")
    broken = cli("visualize", run)
    assert broken.exit_code == 2 and "not an evaluation result" in _text(broken)
    shutil.rmtree(run / "eval")
    nothing = cli("visualize")
    assert nothing.exit_code == 2 and "Traceback" not in nothing.output
