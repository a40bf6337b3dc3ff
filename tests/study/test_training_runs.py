"""study/experiment/training.py, the one way the quickstart and `moectl experiment` train many
runs: a finished run is skipped, the others train (here in this process, `serial_runs`), and
one `training` bar sums every run's steps so that its rate gives the whole stage's ETA."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_experiment import TINY, serial_runs

from moectl.progress import ProgressEvent
from moectl.study.experiment import plan_experiment
from moectl.study.experiment.layout import ExperimentLayout
from moectl.study.experiment.run import prepared_corpus
from moectl.study.experiment.spec import ExperimentSpec
from moectl.study.experiment.training import train_runs


def test_the_training_bar_sums_every_runs_steps_and_a_finished_run_counts_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("moectl.study.parallel.run_parallel", serial_runs)
    spec = ExperimentSpec.model_validate(
        {
            **TINY,
            "pretrain": None,
            "seeds": [0],
            "arms": [
                {"name": "dense", "family": "scratch", "overrides": ["moe.enabled=false"]},
                {"name": "moe", "family": "scratch", "dense": "dense"},
            ],
        }
    )
    plan = plan_experiment(spec, tmp_path / "tiny.yaml")
    layout = ExperimentLayout(tmp_path / "out")
    corpus = prepared_corpus(plan, layout)
    steps = [run.config.train.max_steps for run in plan.arms]
    assert steps == [6, 6]

    def train(runs, events):
        ended = []
        train_runs(
            runs,
            layout.run_dir,
            corpus,
            1,
            events.append,
            on_run=lambda name, status, seconds: ended.append((name, status)),
            resume_hint="again",
        )
        return [e for e in events if e.stage == "training"], ended

    bar, ended = train(plan.arms[:1], [])
    assert ended == [("dense-seed0", "done")]
    assert [e.completed for e in bar] == [0, 1, 2, 3, 4, 5, 6, 6]
    assert {e.total for e in bar} == {6} and bar[-1].message == "1/1 runs done"

    events: list[ProgressEvent] = []
    bar, ended = train(plan.arms, events)
    assert ended == [("dense-seed0", "skipped"), ("moe-seed0", "done")]
    assert bar[0].completed == 6 and bar[0].message == "1/2 runs done"  # the finished run, whole
    assert [e.completed for e in bar[1:]] == [7, 8, 9, 10, 11, 12, 12]
    assert {e.total for e in bar} == {12} and bar[-1].message == "2/2 runs done"
    assert any(e.stage == "train moe-seed0" for e in events)  # each run keeps its own bar
