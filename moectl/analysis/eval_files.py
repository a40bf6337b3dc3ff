"""Where evaluation results go: each result's default file under its run (or model) folder, or
one EvaluationSet; and the corpus a run recorded, for an evaluation given none."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from moectl.analysis.results import EvaluationResult
from moectl.fs import write_json
from moectl.rundir.locate import evaluation_folder, resolve_model
from moectl.rundir.reading import corpus_dir


def result_path(result: EvaluationResult) -> Path:
    """Where a result is saved by default: <run dir or model dir>/eval/<corpus name>.json."""
    run_dir = Path(result.run_dir) if result.run_dir else None
    return evaluation_folder(Path(result.model_path), run_dir) / f"{result.corpus_name}.json"


def save_results(results: list[EvaluationResult], out: Path | None = None) -> list[Path]:
    """Each result to its default path, or all of them as one EvaluationSet at `out`."""
    from moectl.analysis.results import EvaluationSet

    if out is not None:
        return [write_json(out, EvaluationSet(results=results))]
    return [write_json(result_path(r), r) for r in results]


def corpus_for(models: Sequence[Path | str]) -> Path | None:
    """The corpus recorded in run.json of the first run dir among `models`, if any."""
    for model in models:
        _, run_dir = resolve_model(Path(model))
        found = corpus_dir(run_dir) if run_dir is not None else None
        if found is not None:
            return found
    return None
