"""`moectl quickstart --set model.arch=llama`: the whole tiny study on a scratch Llama, every
arm, every control, the findings and the report (issue 16)."""

from __future__ import annotations

import json

import pytest

from moectl.analysis.results import load_results
from moectl.rundir.reading import read_run_config
from moectl.study import VARIANTS

pytestmark = pytest.mark.slow


def test_quickstart_runs_the_whole_study_on_a_scratch_llama(cli, tmp_path):
    out = tmp_path / "study"
    sets = ["--set", "model.arch=llama", "--set", "train.max_steps=12"]
    result = cli("quickstart", "--tiny", *sets, "--out", out)
    assert result.exit_code == 0, result.output
    for variant in VARIANTS:
        config = read_run_config(out / "runs" / variant)
        assert config.model.arch == "llama" and config.train.max_steps == 12
        model = json.loads((out / "runs" / variant / "best" / "model.json").read_text())
        assert model["gpt2_config"]["model_type"] == "llama"
    evaluated = load_results(out / "eval" / "moe.json")[0]
    assert evaluated.init_control is None  # the step-0 Llama was rebuilt and verified
    for layer in evaluated.routing:
        score = layer.specialization
        assert score.init_nmi is not None and score.frozen_gate_nmi is not None
        assert score.gate_null is not None and score.router_made.verdict is not None
        assert score.corrected.interaction is not None  # the 2x2 cell on a Llama body too
    study = json.loads((out / "study.json").read_text())
    assert {"evaluate", "visualize"} <= set(study["done"])
    assert (out / "report.html").is_file()
