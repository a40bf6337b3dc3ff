"""Records match what ran: config.yaml's data is the corpus's, --resume keeps the saved config
(but for train.max_steps, recorded as an amendment), and refusals change nothing on disk."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import invoke_cli, refused, tree_hash

from moectl.data.store import read_manifest


@pytest.fixture(scope="module")
def run(tiny_corpus, tmp_path_factory):
    """A finished 4-step dense run of the tiny preset (saves at steps 2 and 4)."""
    path = tmp_path_factory.mktemp("records") / "run"
    result = invoke_cli(
        "train", "--preset", "tiny", "--data", tiny_corpus, "--run-dir", path,
        "--set", "train.max_steps=4", "--set", "train.save_every=2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return path


def test_config_data_section_is_the_corpus_manifests(run, tiny_corpus):
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"] == read_manifest(tiny_corpus).config.model_dump(mode="json")
    assert saved["data"]["tokenizer"] == "bpe:300"  # the corpus's, not the preset's bpe:512


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--preset", "tiny"], "--preset cannot change them"),
        (["--set", "train.lr=0.5"], "--set train.lr=0.5 cannot change them"),
        (["--data", "elsewhere"], "--data cannot change them"),
        (["--init-from", "elsewhere"], "--resume and --init-from cannot be combined"),
    ],
)
def test_resume_refuses_changes_and_touches_nothing(cli, run, extra, needle):
    before = tree_hash(run)
    refused(cli("train", "--run-dir", run, "--resume", *extra), needle)
    assert tree_hash(run) == before


def test_resume_of_a_complete_run_is_a_no_op(cli, run):
    before = tree_hash(run)
    result = cli("train", "--run-dir", run, "--resume")
    assert result.exit_code == 0, result.output
    assert "already complete at step 4" in result.output.strip().splitlines()[-1]
    assert tree_hash(run) == before


def test_resume_with_more_steps_is_recorded_as_an_amendment(cli, tiny_corpus, tmp_path):
    path = tmp_path / "run"
    first = cli(
        "train", "--preset", "tiny", "--data", tiny_corpus, "--run-dir", path,
        "--set", "train.max_steps=2", "--set", "train.save_every=2",
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    resumed = cli("train", "--run-dir", path, "--resume", "--set", "train.max_steps=3")
    assert resumed.exit_code == 0, resumed.output
    info = json.loads((path / "run.json").read_text())
    amendment = info["amendments"][0]
    assert (amendment["step"], amendment["key"]) == (2, "train.max_steps")
    assert (amendment["old"], amendment["new"]) == (2, 3)
    assert yaml.safe_load((path / "config.yaml").read_text())["train"]["max_steps"] == 3
    summary = json.loads(cli("inspect", path, "--json").output)
    assert summary["steps_done"] == 3 and summary["amendments"][0]["new"] == 3
