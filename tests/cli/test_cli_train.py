"""`moectl train` from the command line: a run, resume, collapse message and input errors."""

from __future__ import annotations

import json


def test_train_then_resume_and_inspect(cli, tiny_corpus, tmp_path):
    run = tmp_path / "run"
    result = cli(
        "train",
        "--preset",
        "tiny",
        "--data",
        tiny_corpus,
        "--run-dir",
        run,
        "--set",
        "train.max_steps=4",
        "--set",
        "train.save_every=2",
    )
    assert result.exit_code == 0, result.output
    assert "best eval loss" in result.output
    again = cli("train", "--preset", "tiny", "--data", tiny_corpus, "--run-dir", run)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = cli("train", "--run-dir", run, "--resume", "--set", "train.max_steps=6")
    assert resumed.exit_code == 0, resumed.output
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6
    path = run / "checkpoints" / "step-6"
    from_path = cli("train", "--run-dir", run, "--resume", path, "--set", "train.max_steps=7")
    assert from_path.exit_code == 0, from_path.output
    summary = json.loads(cli("inspect", run, "--json").output)
    assert summary["steps_done"] == 7 and summary["max_steps"] == 7


def test_train_input_errors_exit_2(cli, tiny_corpus, tmp_path):
    missing = cli(
        "train", "--preset", "tiny", "--data", tmp_path / "nope", "--run-dir", tmp_path / "r"
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output
    top_k = cli(
        "train",
        "--preset",
        "cpu-moe",
        "--data",
        tiny_corpus,
        "--run-dir",
        tmp_path / "r",
        "--set",
        "moe.top_k=9",
    )
    assert top_k.exit_code == 2 and "top_k" in top_k.output
    no_run = cli("train", "--run-dir", tmp_path / "absent", "--resume")
    assert no_run.exit_code == 2 and "config.yaml" in no_run.output
    init = cli(
        "train",
        "--preset",
        "tiny",
        "--data",
        tiny_corpus,
        "--run-dir",
        tmp_path / "r",
        "--init-from",
        tmp_path / "missing",
    )
    assert init.exit_code == 2 and "init-from" in init.output
    stray = cli(
        "train", "--preset", "tiny", "--data", tiny_corpus, "--run-dir", tmp_path / "r", "x"
    )
    assert stray.exit_code == 2 and "after --resume" in stray.output


def test_collapse_stop_is_reported(cli, tiny_corpus, tmp_path):
    result = cli(
        "train",
        "--preset",
        "tiny",
        "--data",
        tiny_corpus,
        "--run-dir",
        tmp_path / "nolb",
        "--set",
        "moe.enabled=true",
        "--set",
        "moe.last_n=1",
        "--set",
        "moe.n_experts=4",
        "--set",
        "moe.lb_coef=0",
        "--set",
        "moe.noise_std=0",
        "--set",
        "train.lr=0.03",
        "--set",
        "train.warmup_fraction=0",
        "--set",
        "train.max_steps=60",
        "--set",
        "train.router_log_every=2",
        "--set",
        "train.collapse.threshold=0.5",
        "--set",
        "train.collapse.patience=2",
        "--set",
        "train.collapse.stop=true",
    )
    assert result.exit_code == 0, result.output
    assert "stopped: router collapse" in result.output


def test_compile_where_torch_compile_is_unavailable_is_one_line_exit_2(
    cli, tiny_corpus, tmp_path, monkeypatch
):
    from moectl.training import compiling

    monkeypatch.setattr(compiling, "compile_unavailable", lambda device: "no compiler here")
    options = ["--data", tiny_corpus, "--run-dir", tmp_path / "run"]
    result = cli("train", "--preset", "tiny", *options, "--set", "train.compile=true")
    assert result.exit_code == 2
    assert "train.compile is on but no compiler here" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
