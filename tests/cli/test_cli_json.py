"""Output scripts can use (issue 27, section 4): every command's --json parses as its schema,
train's summary says what to do next, and a run that fails as it runs exits 1 with one line
while bad input exits 2."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from conftest import invoke_cli, refused, untouched

from moectl.cli.schemas import (
    COMMAND_SCHEMAS,
    ExportOutput,
    GenerateOutput,
    LogOutput,
    PrepareDataOutput,
    PresetsOutput,
    TrainOutput,
)
from moectl.config import preset_names

MOE = [
    "--preset", "tiny", "--set", "train.max_steps=4", "--set", "train.save_every=2",
    "--set", "moe.enabled=true", "--set", "moe.last_n=1", "--set", "moe.n_experts=4",
]  # fmt: skip


def parsed(result, schema):
    """The command's stdout as its schema (stderr is kept apart by the runner)."""
    assert result.exit_code == 0, result.output
    return schema.model_validate_json(result.stdout)


@pytest.fixture(scope="module")
def moe_run(tiny_corpus, tmp_path_factory):
    """A 4-step MoE run trained with --json, and what it printed."""
    path = tmp_path_factory.mktemp("json") / "run"
    result = invoke_cli("train", *MOE, "--data", tiny_corpus, "--run-dir", path, "--json")
    return path, parsed(result, TrainOutput)


def test_train_json_is_the_final_summary_with_what_comes_next(moe_run, cli, tiny_corpus, tmp_path):
    path, summary = moe_run
    assert summary.schema_version == 1 and summary.kind == "moe"
    assert (summary.steps, summary.max_steps, summary.stop_reason) == (4, 4, "completed")
    assert summary.best_dir == str(path / "best") and (path / "best").is_dir()
    assert summary.wall_seconds > 0 and summary.tokens_per_s > 0
    assert set(summary.eval_domain_loss) == {"code", "math", "prose"}
    assert summary.next_command == f"moectl evaluate {path}"
    dense = cli("train", "--preset", "tiny", "--set", "train.max_steps=2", "--data", tiny_corpus,
                "--run-dir", tmp_path / "dense")  # fmt: skip
    assert dense.exit_code == 0, dense.output
    table = " ".join(dense.stdout.replace("│", " ").split())
    assert "model dense" in table and "wall time" in table, table
    lines = dense.stdout.splitlines()
    assert f"best model: {tmp_path / 'dense' / 'best'}" in lines
    assert f"next: moectl evaluate {tmp_path / 'dense'}" in lines


def test_train_validates_before_it_says_training(cli, tiny_corpus, tmp_path):
    bad = cli("train", "--preset", "tiny", "--data", tiny_corpus, "--run-dir", tmp_path / "r",
              "--set", "model.n_positions=8")  # fmt: skip
    refused(bad, "n_positions")
    assert "training" not in bad.output


@pytest.mark.parametrize(
    "fault, needle",
    [
        ("nan", "the training loss is nan at step 1"),
        ("oom", "out of memory during training"),
        ("disk", "no space left on the device"),
    ],
)
def test_a_run_that_fails_as_it_runs_exits_1_with_one_line(
    cli, tiny_corpus, tmp_path, monkeypatch, fault, needle
):
    import dataclasses

    import torch

    from moectl.training import saving, update

    forward = update.forward_losses

    def faulty_forward(*args, **kwargs):
        losses = forward(*args, **kwargs)
        if fault == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return dataclasses.replace(losses, loss=losses.loss * float("nan"))

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "run/checkpoints/step-2")

    if fault == "disk":
        monkeypatch.setattr(saving, "save_model", full_disk)
    else:
        monkeypatch.setattr(update, "forward_losses", faulty_forward)
    result = cli("train", "--preset", "tiny", "--data", tiny_corpus, "--run-dir", tmp_path / "r",
                 "--set", "train.max_steps=4", "--set", "train.save_every=2",
                 "--set", "train.log_every=1")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    error = next(line for line in lines if line.startswith("error:"))
    assert needle in error and "Traceback" not in result.output
    assert "hint:" in lines[-1]


def test_generate_json_has_text_tokens_and_experts(moe_run, cli):
    path, _ = moe_run
    out = parsed(
        cli("generate", path, "--prompt", "def f(x):", "--max-new-tokens", "4", "--json"),
        GenerateOutput,
    )
    assert out.prompt == "def f(x):" and not out.unconditional and out.moe_layers == [1]
    assert 1 <= len(out.tokens) <= 4 and out.text == "".join(t.text for t in out.tokens)
    assert all(set(t.experts) == {1} and 0 <= t.experts[1] < 4 for t in out.tokens)


def test_generate_without_a_prompt_says_it_is_unconditional(moe_run, cli):
    path, _ = moe_run
    result = cli("generate", path, "--max-new-tokens", "3", "--json")
    out = parsed(result, GenerateOutput)
    assert out.unconditional and out.prompt == ""
    assert "no --prompt: generating unconditionally" in " ".join(result.stderr.split())
    prompted = cli("generate", path, "--prompt", "x", "--max-new-tokens", "2")
    assert "unconditionally" not in prompted.output


def test_presets_json_lists_every_preset(cli):
    out = parsed(cli("presets", "--json"), PresetsOutput)
    assert [p.name for p in out.presets] == preset_names()
    assert all(p.description for p in out.presets)


def test_export_json_names_class_path_and_reason(moe_run, cli, tmp_path):
    path, _ = moe_run
    out = parsed(cli("export", path, "--out", tmp_path / "hf", "--json"), ExportOutput)
    assert out.path == str(tmp_path / "hf") and out.kind == "moe"
    assert out.remote_code and out.reason and "config.json" in out.files
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == [out.architecture]


def test_prepare_data_json(cli, tmp_path):
    from conftest import write_domain_texts

    files = write_domain_texts(tmp_path / "texts", n_texts=20)
    args = [a for d, (f,) in files.items() for a in ("--domain", f"{d}={f}/*.txt")]
    out = parsed(
        cli(
            "prepare-data",
            "--source",
            "files",
            *args,
            "--tokenizer",
            "bpe:300",
            "--block-size",
            "16",
            "--out",
            tmp_path / "c",
            "--json",
        ),
        PrepareDataOutput,
    )
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert out.domains == ["code", "math", "prose"] == manifest["domains"]
    assert out.block_size == 16 and out.train_blocks > 0 and out.eval_blocks > 0


def test_log_json_and_no_second_copy_inside_a_run(moe_run, cli, tmp_path):
    path, _ = moe_run
    out = parsed(cli("log", path, "--to", "tensorboard", "--out", tmp_path / "tb", "--json"),
                 LogOutput)  # fmt: skip
    (logged,) = out.runs
    assert logged.rows > 0 and logged.destination == str(tmp_path / "tb" / path.name)
    with untouched(path):
        inside = cli("log", path, "--to", "tensorboard", "--out", path / "tensorboard")
        refused(inside, "is inside run")
    assert f"tensorboard --logdir {path / 'tensorboard'}" in " ".join(inside.output.split())


def test_quickstart_json_is_its_findings():
    from moectl.analysis.results import Finding
    from moectl.cli.quickstart import quickstart_output
    from moectl.cli.schemas import QuickstartOutput
    from moectl.study.pipeline import StudyResult

    finding = Finding(key="k", title="t", reproduced=True, verdict="made by the router",
                      text="words", measure="m", value=0.2, ci=(0.1, 0.3), control="c",
                      seeds=[0])  # fmt: skip
    result = StudyResult(out="s", size="tiny", plan="scratch", corpus="s/data", seeds=[0],
                         runs={"moe": "s/runs/moe"}, eval_files=[], figures=[],
                         report="s/report.html", token_page=None, stages=[], findings=[finding],
                         seconds=3.0)  # fmt: skip
    text = quickstart_output(result).model_dump_json()
    out = QuickstartOutput.model_validate_json(text)
    assert out.findings == [finding] and out.report == "s/report.html"
    assert json.loads(text)["findings"][0]["ci"] == [0.1, 0.3]


def test_every_listed_command_has_json_and_a_schema(cli):
    for name, schema in COMMAND_SCHEMAS.items():
        assert "--json" in cli(name, "--help").output, name
        assert schema.model_fields["schema_version"].default == 1
        assert schema.model_json_schema()["properties"]["command"]["default"] == name


@pytest.mark.parametrize(
    "args, needles",
    [
        (["train", "--max-step", "5"], ["No such option: --max-step", "--set train.max_steps=5"]),
        (["log", "r", "--to", "tensorbord"], ["did you mean 'tensorboard'"]),
        (["train", "--seed", "3"], ["--set data.seed=3 or --set train.seed=3"]),
        (
            ["train", "--preset", "tiny", "--set", "moe.enabled=true", "--print-config"],
            ["--set moe.last_n=2"],
        ),
    ],
)
def test_usage_errors_name_the_fix(cli, args, needles):
    result = cli(*args)
    refused(result)
    text = " ".join(result.output.split())
    assert all(needle in text for needle in needles) and "Value error" not in text, text


def test_prepare_data_points_only_to_data_keys(cli):
    result = cli("prepare-data", "--out", "c", "--max-step", "5")
    refused(result, "No such option: --max-step")
    assert "--set" not in result.output
    seed = " ".join(cli("prepare-data", "--out", "c", "--sed", "5").output.split())
    assert "did you mean --seed?" in seed and "--set data.seed" not in seed
    ratio = " ".join(cli("prepare-data", "--out", "c", "--eval-fraction", "0.2").output.split())
    assert "did you mean --set data.eval_fraction=0.2?" in ratio


def test_log_to_a_missing_tracker_does_not_blame_train_sinks(cli, moe_run, monkeypatch, tmp_path):
    import importlib.util

    path, _ = moe_run
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    result = refused(cli("log", path, "--to", "wandb", "--out", tmp_path / "w"), "--to wandb")
    assert "train.sinks" not in result


def test_schema_docs_list_every_command():
    text = (Path(__file__).parents[2] / "docs" / "interop.md").read_text()
    rows = {line.split("`")[1]: line for line in text.splitlines() if "--json` |" in line}
    for name, schema in COMMAND_SCHEMAS.items():
        row = rows[f"moectl {name} --json"]
        for field in schema.model_fields:
            assert field in ("schema_version", "command") or f"`{field}`" in row, (name, field)
