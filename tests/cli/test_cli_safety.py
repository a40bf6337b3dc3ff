"""Safety: --force replaces only a corpus, conflicting flags are refused, one writer per run,
interrupts exit 128 + signal after their checkpoint, device errors are one line, files follow
the umask and no text is eaten by rich markup. Every refusal leaves the disk as it was."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest
from conftest import refused, trained_run, tree_hash

from moectl.errors import DataError

TINY = ["--preset", "tiny", "--set", "train.max_steps=4", "--set", "train.save_every=2"]


@pytest.fixture(scope="module")
def run(tiny_corpus, tmp_path_factory):
    return trained_run(tmp_path_factory, "safety", *TINY, "--data", tiny_corpus)


def test_force_never_replaces_a_run_or_other_files(cli, run, tmp_path):
    before = tree_hash(run)
    line = refused(
        cli("prepare-data", "--source", "builtin", "--out", run, "--force"),
        "--force replaces only a moectl corpus or an empty folder",
        "is a run directory",
    )
    assert tree_hash(run) == before and "--force" not in line.split("folder")[-1]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    before = tree_hash(other)
    refused(cli("prepare-data", "--out", other, "--force"), "a folder with 1 entries")
    assert tree_hash(other) == before
    hint = cli("train", *TINY, "--data", run, "--run-dir", tmp_path / "r").output
    assert "is a run directory, not a prepared corpus" in hint and "--force" not in hint


def test_conflicting_prepare_flags_are_refused(cli, tmp_path):
    out = tmp_path / "out"
    refused(
        cli("prepare-data", "--source", "builtin", "--domain", "code=x.py", "--out", out),
        "--domain NAME=PATH gives files, but --source is builtin",
    )
    refused(
        cli("prepare-data", "--source", "builtin", "--text-column", "body", "--out", out),
        "--text-column applies to files and hub datasets",
    )
    assert not out.exists()


def test_a_second_writer_is_refused_naming_the_holder(cli, run, tiny_corpus):
    from moectl.fs import exclusive_lock
    from moectl.rundir.layout import LOCK_NAME

    with exclusive_lock(run / LOCK_NAME):  # flock: a second open file is refused, even here
        before = tree_hash(run)
        line = refused(
            cli("train", "--run-dir", run, "--resume", "--set", "train.max_steps=6"),
            f"is in use by another moectl process (pid {os.getpid()})",
        )
        assert tree_hash(run) == before and "Traceback" not in line
        reader = cli("inspect", run, "--json")  # readers need no lock
        assert reader.exit_code == 0 and '"steps_done": 4' in reader.output


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_train_exits_128_plus_signal_after_its_checkpoint(
    cli, tiny_corpus, tmp_path, monkeypatch, signum, code
):
    from moectl.cli import train as train_cli

    original = train_cli.TrainProgress.__call__

    def interrupt_at_step_3(self, event):
        original(self, event)
        if event.stage == "train" and event.completed == 3:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(train_cli.TrainProgress, "__call__", interrupt_at_step_3)
    path = tmp_path / "run"
    result = cli("train", *TINY, "--set", "train.max_steps=8", "--data", tiny_corpus,
                 "--run-dir", path)  # fmt: skip
    assert result.exit_code == code, result.output
    assert "interrupted at step 3; checkpoint saved" in result.output
    assert (path / "checkpoints" / "step-3" / "trainer_state.pt").is_file()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_an_absent_device_is_one_line_in_every_command(cli, run, tiny_corpus, tmp_path):
    before = tree_hash(run)
    refused(cli("evaluate", run, "--device", "cuda"), "device cuda was asked for")
    refused(cli("generate", run, "--device", "cuda"), "device cuda was asked for")
    cuda = ["--set", "train.device=cuda"]
    new_run = ["--data", tiny_corpus, "--run-dir", tmp_path / "r"]
    refused(cli("train", *TINY, *cuda, *new_run), "device cuda was asked for")
    assert tree_hash(run) == before and not (tmp_path / "r").exists()


def test_written_files_and_folders_follow_the_umask(cli, tiny_corpus, tmp_path):
    old = os.umask(0o022)
    try:
        result = cli("train", *TINY, "--data", tiny_corpus, "--run-dir", tmp_path / "run")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for folder in (run, run / "best", run / "best" / "tokenizer", run / "checkpoints" / "step-4"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    for file in (run / "best" / "model.safetensors", run / "run.json", run / "config.yaml"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file


def test_text_in_square_brackets_is_printed_literally(cli, tmp_path, monkeypatch):
    def missing(config, domain):
        raise DataError("sympy is not installed", hint='pip install "moectl[offline]"')

    monkeypatch.setattr("moectl.data.prepare.load_domain", missing)
    result = cli("prepare-data", "--source", "builtin", "--out", tmp_path / "out")
    assert 'pip install "moectl[offline]"' in result.output
    assert not (tmp_path / "out").exists()
    help_text = " ".join(cli("prepare-data", "--help").output.split())
    assert "[default: 1.0]" in help_text and "[default: gpt2]" in help_text


def test_run_dir_that_is_a_corpus_is_refused(cli, tiny_corpus):
    before = tree_hash(Path(tiny_corpus))
    refused(
        cli("train", *TINY, "--data", tiny_corpus, "--run-dir", tiny_corpus),
        "is a prepared corpus, not a moectl run directory",
    )
    assert tree_hash(Path(tiny_corpus)) == before
