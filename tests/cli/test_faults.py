"""Faults and bad input by class (issue 28 section 3): each is refused with exit 2 and one line
that names the problem, before anything is built, and leaves the watched folders as they were."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import refused, trained_run, untouched

REPO = Path(__file__).resolve().parents[2]

QUICK = ["--set", "train.max_steps=1", "--set", "train.save_every=1"]
MOE = ["--preset", "tiny", *QUICK, "--set", "moe.enabled=true", "--set", "moe.last_n=1",
       "--set", "moe.n_experts=4"]  # fmt: skip
LLAMA = ["--set", "model.arch=llama"]


@pytest.fixture(scope="module")
def moe_run(tiny_corpus, tmp_path_factory):
    return trained_run(tmp_path_factory, "faults", *MOE, "--data", tiny_corpus)


@pytest.fixture
def run_copy(moe_run, tmp_path):
    """A copy of the MoE run that a test may damage (its lock file holds this process's pid, as
    a resume here writes it)."""
    copy = tmp_path / "damaged"
    shutil.copytree(moe_run, copy)
    return copy


@pytest.mark.parametrize("name", ["metrics.jsonl", "routing.jsonl"])
def test_a_log_line_that_is_json_but_not_an_object_is_one_line(
    cli, moe_run, run_copy, tmp_path, name
):
    damaged = run_copy / name
    lines = damaged.read_bytes().splitlines(keepends=True)
    damaged.write_bytes(lines[0] + b"[1, 2]\n" + b"".join(lines[1:]))
    needle = f"{damaged} line 2 is not a JSON object (list)"
    tb, figures = tmp_path / "tb", tmp_path / "figures"
    with untouched(run_copy, tb, figures):
        refused(cli("log", run_copy, "--to", "tensorboard", "--out", tb), needle)
        # the good run first: nothing of it is written either (no partial logdir to block a retry)
        refused(cli("log", moe_run, run_copy, "--to", "tensorboard", "--out", tb), needle)
        refused(cli("inspect", run_copy), needle)
        refused(cli("visualize", run_copy, "--out", figures), needle)
        resume = ["train", "--run-dir", run_copy, "--resume", "--set", "train.max_steps=2"]
        refused(cli(*resume), needle)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**64])
def test_a_seed_outside_numpys_range_is_a_config_error(cli, tiny_corpus, tmp_path, seed):
    with untouched(tmp_path):
        result = cli("train", *MOE, "--set", f"train.seed={seed}", "--data", tiny_corpus,
                     "--run-dir", tmp_path / "run")  # fmt: skip
        refused(result, "invalid run configuration")
    assert "train.seed" in result.output, result.output


@pytest.fixture(scope="module")
def torn_exports(tiny_corpus, tmp_path_factory):
    """A dense Llama and a native Llama-family MoE (Qwen2-MoE), each a one-step run on the tiny
    corpus exported through `moectl export`, then with model.safetensors cut in half."""
    from conftest import invoke_cli

    found = {}
    for name, sets in (
        ("dense", LLAMA),
        ("native-moe", [*LLAMA, "--set", "moe.enabled=true", "--set", "moe.last_n=1"]),
    ):
        run = trained_run(tmp_path_factory, name, "--preset", "tiny", *QUICK, *sets,
                          "--data", tiny_corpus)  # fmt: skip
        out = run.parent / "hf"
        assert invoke_cli("export", run, "--out", out).exit_code == 0
        weights = out / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        found[name] = out
    return found


@pytest.mark.parametrize("name", ["dense", "native-moe"])
def test_a_torn_safetensors_in_a_transformers_export_is_one_line(
    cli, tiny_corpus, tmp_path, torn_exports, name
):
    export = torn_exports[name]
    needle = "Error while deserializing header"
    # model.pretrained takes a dense base: an MoE export is refused from its config alone,
    # before its (torn) weights are read
    as_base = "is an MoE model" if name == "native-moe" else needle
    with untouched(export, tmp_path):
        pretrained = ["--set", f"model.pretrained={export}", *LLAMA]
        refused(
            cli("train", "--preset", "tiny", *QUICK, *pretrained, "--data", tiny_corpus,
                "--run-dir", tmp_path / "run"),
            f"{export}", as_base,
        )  # fmt: skip
        refused(cli("evaluate", export, "--data", tiny_corpus, "--out", tmp_path / "r.json"),
                f"cannot load the model in {export}", needle)  # fmt: skip


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    return path


def test_a_file_where_a_folder_goes_is_named(cli, moe_run, a_file, tmp_path):
    with untouched(tmp_path):
        refused(cli("log", moe_run, "--to", "tensorboard", "--out", a_file),
                f"--out {a_file} is a file, not a folder")  # fmt: skip
        refused(cli("quickstart", "--tiny", "--out", a_file),
                f"--out {a_file} is a file, not a folder")  # fmt: skip
        for command in (
            ["quickstart", "--tiny"],
            ["export", moe_run],
            ["log", moe_run, "--to", "tensorboard"],
        ):
            refused(cli(*command, "--out", a_file / "sub"),
                    f"cannot write {a_file / 'sub'}: {a_file} is a file, not a folder")  # fmt: skip


def test_experiment_status_names_a_file_where_its_folder_goes(cli, a_file, tmp_path):
    # --status only reads the folder, so a missing one is all queued; a file there or above
    # it is refused like the run's own --out.
    experiment = REPO / "examples" / "router.yaml"
    with untouched(tmp_path):
        refused(cli("experiment", experiment, "--out", a_file, "--status"),
                f"--out {a_file} is a file, not a folder")  # fmt: skip
        refused(cli("experiment", experiment, "--out", a_file / "sub", "--status"),
                f"--out {a_file / 'sub'}: {a_file} is a file, not a folder")  # fmt: skip
        result = cli("experiment", experiment, "--out", tmp_path / "new", "--status")
        assert result.exit_code == 0, result.output


def test_bad_seeds_are_refused_before_anything_is_built(cli, tmp_path, monkeypatch):
    import moectl.study

    def built(*args, **kwargs):
        raise AssertionError("the study began")

    monkeypatch.setattr(moectl.study, "run_study", built)
    out = tmp_path / "study"
    many = ",".join(map(str, range(20_000)))
    with untouched(tmp_path):
        refused(
            cli("quickstart", "--tiny", "--out", out, "--seeds", "0,4294967296"),
            "--seeds: 4294967296 is outside the seeds a run takes (0 to 4294967295)",
        )
        for seeds, needle in (
            (f"{many},4294967296", "4294967296 is outside"),
            (f"{many},7", "--seeds names 7 twice"),
            (f"{many},x{many}", "is not one"),
        ):
            line = refused(cli("quickstart", "--tiny", "--out", out, "--seeds", seeds), needle)
            assert len(line) < 120, line


def test_prepare_data_into_a_read_only_folder_refuses_before_loading(
    cli, tmp_path, read_only, monkeypatch
):
    import moectl.data.prepare as prepare

    def loaded(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(prepare, "load_domain", loaded)
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    with untouched(tmp_path):
        line = refused(
            cli("prepare-data", "--source", "builtin", "--out", locked / "corpus"),
            f"cannot write {locked / 'corpus'}: {locked} is not writable",
        )
    assert ".tmp-" not in line
