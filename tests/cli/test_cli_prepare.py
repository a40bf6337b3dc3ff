"""`moectl prepare-data` through the CLI: the examples offline, options, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moectl.data.store import load_corpus

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
EXAMPLE_ARGS = [
    "--domain",
    f"code={EXAMPLES / 'code' / '*.py'}",
    "--domain",
    f"math={EXAMPLES / 'math' / 'problems.jsonl'}",
    "--domain",
    f"prose={EXAMPLES / 'prose'}",
]


def _fails_cleanly(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    output = " ".join(result.output.split())
    for needle in needles:
        assert needle in output, output


def test_examples_prepare_offline_with_gpt2(cli, tmp_path: Path) -> None:
    out = tmp_path / "mix"
    result = cli("prepare-data", *EXAMPLE_ARGS, "--block-size", "64", "--out", out)
    assert result.exit_code == 0, result.output
    for needle in ("train split", "eval split", "code", "math", "prose", "corpus written"):
        assert needle in result.output
    corpus = load_corpus(out)
    assert corpus.manifest.config.source == "files"
    assert corpus.manifest.tokenizer.vocab_size == 50257
    assert corpus.domains == ["code", "math", "prose"]
    assert len(corpus.train[0]["input_ids"]) == 64


def test_config_file_and_set_overrides(cli, tmp_path: Path) -> None:
    config = tmp_path / "data.yaml"
    config.write_text(
        "data:\n  source: files\n  block_size: 999\n  tokenizer: bpe:400\n"
        f"  balance_tokens: true\n  seed: 4\n  files:\n    code: ['{EXAMPLES / 'code'}']\n"
        f"    prose: ['{EXAMPLES / 'prose'}']\n  domains: [code, prose]\n"
    )
    out = tmp_path / "c"
    result = cli(
        "prepare-data", "--config", config, "--block-size", "32", "--set", "data.seed=7", "-o", out
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["block_size"] == 32 and manifest["seed"] == 7
    assert manifest["config"]["balance_tokens"] is True
    assert manifest["tokenizer"]["name"] == "bpe:400"
    train = {s["domain"]: s["blocks_balanced"] for s in manifest["stats"]["train"]}
    assert len(set(train.values())) == 1


def test_existing_out_refused_then_forced(cli, tmp_path: Path) -> None:
    out = tmp_path / "mix"
    args = ["prepare-data", *EXAMPLE_ARGS, "--tokenizer", "bpe:300", "--block-size", "32"]
    assert cli(*args, "--out", out).exit_code == 0
    _fails_cleanly(cli(*args, "--out", out), "already exists", "--force")
    forced = cli(*args, "--seed", "1", "--out", out, "--force")
    assert forced.exit_code == 0, forced.output
    assert load_corpus(out).manifest.seed == 1


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--source", "web"], ["invalid data configuration", "source"]),
        (["--tokenizer", "gpt-17"], ["unknown tokenizer 'gpt-17'", "bpe:N"]),
        (["--block-size", "4096"], ["eval tokens, fewer than one block of 4096", "--block-size"]),
        (["--min-example-chars", "100000"], ["no text", "--min-example-chars"]),
    ],
)
def test_bad_options(cli, tmp_path: Path, extra: list[str], needles: list[str]) -> None:
    out = tmp_path / "x"
    result = cli("prepare-data", *EXAMPLE_ARGS, "--tokenizer", "bpe:300", *extra, "-o", out)
    _fails_cleanly(result, *needles)
    assert not (tmp_path / "x").exists()


def test_missing_and_empty_files(cli, tmp_path: Path) -> None:
    pattern = tmp_path / "nope" / "*.py"
    missing = cli("prepare-data", "--domain", f"code={pattern}", "-o", tmp_path / "x")
    _fails_cleanly(missing, "no files match", "domain 'code'")
    (tmp_path / "empty.txt").write_text("")
    empty = cli("prepare-data", "--domain", f"code={tmp_path / 'empty.txt'}", "-o", tmp_path / "x")
    _fails_cleanly(empty, "hold no text")
    bad = cli("prepare-data", "--domain", "code=", "-o", tmp_path / "x")
    _fails_cleanly(bad, "cannot parse --domain")


def test_offline_hub_names_offline_sources(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    result = cli("prepare-data", "--source", "hf", "--domain", "math", "-o", tmp_path / "x")
    _fails_cleanly(result, "openai/gsm8k", "--source builtin", "--source files")


def test_interrupted_prepare_keeps_old_corpus(cli, tmp_path: Path, monkeypatch) -> None:
    from moectl.data import prepare

    out = tmp_path / "mix"
    args = ["prepare-data", *EXAMPLE_ARGS, "--tokenizer", "bpe:300", "--block-size", "32"]
    assert cli(*args, "--out", out).exit_code == 0
    before = (out / "manifest.json").read_text()

    def broken(path, *rest):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "write_split", broken)
    result = cli(*args, "--seed", "3", "--out", out, "--force")
    assert result.exit_code == 130
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix"]
    fresh = cli(*args, "--out", tmp_path / "new")
    assert fresh.exit_code == 130 and not (tmp_path / "new").exists()
