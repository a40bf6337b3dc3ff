"""First contact (issue 17, section 1): nothing of the user's is lost, and every failure met
with corrupt, unreadable or misplaced inputs is one line (exit 2, no traceback) that names the
file and the fix, with the watched folders' bytes unchanged."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import refused, trained_run, untouched

MOE = [
    "--preset", "tiny", "--set", "train.max_steps=4", "--set", "train.save_every=2",
    "--set", "moe.enabled=true", "--set", "moe.last_n=1", "--set", "moe.n_experts=4",
]  # fmt: skip
GARBAGE = b"\xff\xfe\x00\x81binary\x9c\xff\n"


@pytest.fixture(scope="module")
def moe_run(tiny_corpus, tmp_path_factory):
    return trained_run(tmp_path_factory, "contact", *MOE, "--data", tiny_corpus)


@pytest.fixture
def run_copy(moe_run, tmp_path):
    """A copy of the MoE run that a test may damage."""
    copy = tmp_path / "run"
    shutil.copytree(moe_run, copy)
    (copy / ".moectl.lock").unlink(missing_ok=True)
    return copy


def test_train_refuses_a_users_folder_and_resumes_only_a_moectl_run(cli, tiny_corpus, tmp_path):
    mine = tmp_path / "mine"
    (mine / "best").mkdir(parents=True)
    (mine / "best" / "keep.txt").write_text("my notes")
    (mine / "metrics.jsonl").write_text('{"mine": 1}\n')
    with untouched(mine):
        refused(
            cli("train", *MOE, "--data", tiny_corpus, "--run-dir", mine),
            f"--run-dir {mine} is a folder with 2 entries, not a moectl run",
        )
        refused(cli("train", "--run-dir", mine, "--resume"), "not a moectl run")
    (mine / "config.yaml").write_text("name: mine\n")  # looks like a run, but moectl made none
    with untouched(mine):
        refused(cli("train", *MOE, "--data", tiny_corpus, "--run-dir", mine), "not a moectl run")


@pytest.mark.parametrize(
    ("name", "commands"),
    [
        ("config.yaml", [["inspect", "{run}"], ["train", "--run-dir", "{run}", "--resume"]]),
        ("run.json", [["evaluate", "{run}"], ["train", "--run-dir", "{run}", "--resume"]]),
    ],
)
def test_binary_garbage_in_a_run_record_is_one_line(cli, run_copy, name, commands):
    (run_copy / name).write_bytes(GARBAGE)
    with untouched(run_copy):
        for command in commands:
            args = [a.format(run=run_copy) for a in command]
            refused(cli(*args), f"{run_copy / name} is not UTF-8 text")


def test_a_garbage_metrics_line_or_results_file_is_one_line(cli, run_copy, tmp_path):
    metrics = run_copy / "metrics.jsonl"
    lines = metrics.read_bytes().splitlines(keepends=True)
    metrics.write_bytes(lines[0] + GARBAGE + b"".join(lines[1:]))
    out, results = tmp_path / "figures", tmp_path / "results.json"
    results.write_bytes(GARBAGE)
    with untouched(run_copy, out):
        refused(cli("inspect", run_copy), f"{metrics} line 2 is not UTF-8 text")
        refused(cli("visualize", run_copy, "--out", out), f"{metrics} line 2")
        refused(cli("visualize", "--eval", results, "--out", out), f"{results} is not UTF-8")


@pytest.mark.parametrize("damage", ["deleted gates", "truncated gates", "garbage record"])
def test_a_damaged_init_record_drops_only_the_init_control(
    cli, run_copy, tiny_corpus, tmp_path, damage
):
    gates, record = run_copy / "init" / "gates.safetensors", run_copy / "init" / "init.json"
    if damage == "deleted gates":
        gates.unlink()
    elif damage == "truncated gates":
        gates.write_bytes(gates.read_bytes()[:40])
    else:
        record.write_bytes(GARBAGE)
    damaged = record if damage == "garbage record" else gates
    out = tmp_path / "results.json"
    with untouched(run_copy):
        result = cli("evaluate", run_copy, "--max-blocks", 6, "--bootstrap", 100, "--out", out)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    text = " ".join(result.output.split())
    assert f"no init-router control: {damaged} is unreadable" in text, result.output
    saved = yaml.safe_load(out.read_text())["results"][0]
    assert saved["init_control"].startswith(f"{damaged} is unreadable")
    assert saved["routing"], "the rest of the evaluation goes on"


def test_an_altered_gates_file_is_named(cli, run_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    gates = run_copy / "init" / "gates.safetensors"
    tensors = {k: v + 0.5 for k, v in load_file(str(gates)).items()}
    save_file(tensors, str(gates))
    out = tmp_path / "results.json"
    with untouched(run_copy):
        result = cli("evaluate", run_copy, "--max-blocks", 6, "--bootstrap", 100, "--out", out)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"{gates} differs from the one written at step 0" in text, result.output
    assert "torch version" not in text


def test_unwritable_destinations_are_refused_before_any_work(
    cli, moe_run, tiny_corpus, tmp_path, read_only, monkeypatch
):
    def no_evaluation(*args, **kwargs):
        raise AssertionError("the destination is checked before the evaluation runs")

    monkeypatch.setattr("moectl.analysis.evaluate.evaluate_models", no_evaluation)
    (tmp_path / "locked").mkdir()
    locked = read_only(tmp_path / "locked")
    with untouched(locked, moe_run):
        refused(
            cli("train", *MOE, "--data", tiny_corpus, "--run-dir", locked / "run"),
            f"cannot write {locked / 'run'}",
        )
        refused(cli("export", moe_run, "--out", locked / "export"), f"cannot write {locked}")
        refused(
            cli("evaluate", moe_run, "--out", locked / "results.json"), f"cannot write {locked}"
        )
    read_only(moe_run)
    with untouched(moe_run):
        line = refused(cli("evaluate", moe_run), f"cannot write {moe_run / 'eval'}")
    assert "--out" in cli("evaluate", moe_run).output and "evaluate" not in line.split(":")[0]


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("num_beams=abc", "num_beams takes an integer (int), not 'abc'"),
        ("repetition_penalty=abc", "repetition_penalty takes a number (float), not 'abc'"),
        ("no_repeat_ngram_size=2.5", "no_repeat_ngram_size takes an integer (int), not 2.5"),
        ("top_p=[0.9]", "top_p takes a number (float), not [0.9]"),
        ("do_sample=2", "do_sample takes true or false (bool), not 2"),
        ("num_beam_groups=abc", "num_beam_groups takes an integer (int), not 'abc'"),
    ],
)
def test_a_generation_option_of_the_wrong_type_is_one_line(cli, moe_run, option, needle):
    with untouched(moe_run):
        result = cli("generate", moe_run, "--max-new-tokens", 4, "--gen", option)
        refused(result, needle)
        assert f"--gen {option.split('=')[0]}=" in result.output


def test_a_bad_generation_option_is_one_line(cli, moe_run):
    with untouched(moe_run):
        refused(
            cli("generate", moe_run, "--max-new-tokens", 4, "--gen", "repetition_penalty=-1"),
            "generation option(s) repetition_penalty=-1",
        )
        fine = cli("generate", moe_run, "--max-new-tokens", 4, "--gen", "repetition_penalty=2")
        assert fine.exit_code == 0, fine.output  # an integer is a float field's value
        result = cli("generate", moe_run, "--max-new-tokens", 500)
        refused(result, "cannot add 500 tokens")
        assert "--max-new-tokens 8" in result.output and "-n " not in result.output


def test_a_context_shorter_than_the_blocks_is_refused_before_writing(cli, tiny_corpus, tmp_path):
    short = ["--set", "model.n_positions=8", "--data", tiny_corpus, "--run-dir", tmp_path / "run"]
    with untouched(tmp_path):
        refused(
            cli("train", *MOE, *short),
            "model.n_positions 8 is shorter than the corpus blocks of 16 tokens",
        )


def test_visualize_refuses_a_file_as_out_and_says_what_it_needs(cli, moe_run, tmp_path):
    file = tmp_path / "report.txt"
    file.write_text("mine")
    with untouched(tmp_path, moe_run):
        refused(cli("visualize", moe_run, "--out", file), f"--out {file} is a file")
        line = refused(cli("visualize"), "nothing to visualize")
    assert "--eval files" not in line
    assert "pass run directories" in cli("visualize").output


def test_a_corpus_without_its_tokenizer_is_refused_before_step_one(cli, tiny_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    (corpus / "tokenizer" / "tokenizer.json").unlink()
    with untouched(tmp_path):
        refused(
            cli("train", *MOE, "--data", corpus, "--run-dir", tmp_path / "run"),
            f"{corpus / 'tokenizer'}",
        )


def test_resume_takes_the_run_lock_before_reading_the_checkpoint(cli, run_copy):
    import os

    from moectl.fs import exclusive_lock

    with exclusive_lock(run_copy / ".moectl.lock"), untouched(run_copy):
        refused(
            cli("train", "--run-dir", run_copy, "--resume", run_copy / "checkpoints" / "step-9"),
            f"in use by another moectl process (pid {os.getpid()})",
        )


def test_init_from_records_the_model_that_trained(cli, tiny_corpus, tmp_path):
    dense = tmp_path / "dense"
    wide = ["--preset", "tiny", "--set", "train.max_steps=2", "--set", "model.n_embd=64"]
    assert cli("train", *wide, "--data", tiny_corpus, "--run-dir", dense).exit_code == 0
    moe = tmp_path / "moe"
    result = cli("train", *MOE, "--data", tiny_corpus, "--run-dir", moe, "--init-from",
                 dense / "best")  # fmt: skip
    assert result.exit_code == 0, result.output
    recorded = yaml.safe_load((moe / "config.yaml").read_text())["model"]
    trained = yaml.safe_load((moe / "best" / "model.json").read_text())["gpt2_config"]
    assert recorded["n_embd"] == trained["n_embd"] == 64


def test_yaml_with_a_duplicate_key_is_refused_naming_it(cli, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  lr: 0.1\n  max_steps: 3\n  lr: 0.2\n")
    with untouched(tmp_path):
        refused(
            cli("train", "--preset", "tiny", "--config", config, "--print-config"),
            f"{config} line 4: duplicate key 'lr'",
        )


def test_one_expert_is_not_an_moe(cli, tiny_corpus, tmp_path):
    with untouched(tmp_path):
        result = cli("train", *MOE, "--set", "moe.n_experts=1", "--data", tiny_corpus,
                     "--run-dir", tmp_path / "run")  # fmt: skip
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "n_experts (1) must be at least 2" in result.output, result.output


def test_the_next_start_removes_stale_checkpoint_temp_folders(cli, run_copy):
    stale = run_copy / "checkpoints" / ".step-6.tmp-x1y2z3"
    (stale / "step-6").mkdir(parents=True)
    (stale / "step-6" / "model.safetensors").write_bytes(b"half")
    result = cli("train", "--run-dir", run_copy, "--resume", "--set", "train.max_steps=5")
    assert result.exit_code == 0, result.output
    assert not stale.exists()
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["step-4", "step-5"]
