"""`moectl inspect CORPUS`: manifest, tables, samples, --json, and broken corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moectl.cli.inspect_corpus import shorten

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from moectl.cli.app import app

    out = tmp_path_factory.mktemp("inspect") / "mix"
    result = CliRunner().invoke(
        app,
        [
            "prepare-data",
            "--domain",
            f"code={EXAMPLES / 'code'}",
            "--domain",
            f"prose={EXAMPLES / 'prose'}",
            "--tokenizer",
            "bpe:300",
            "--block-size",
            "32",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_inspect_shows_manifest_tables_and_samples(cli, corpus: Path) -> None:
    result = cli("inspect", corpus, "--samples", "2")
    assert result.exit_code == 0, result.output
    for needle in ("bpe:300", "block size", "sources", "train split", "eval split", "files"):
        assert needle in result.output
    assert result.output.count("code sample") == 2
    assert result.output.count("prose sample") == 2


def test_inspect_json(cli, corpus: Path) -> None:
    result = cli("inspect", corpus, "--json", "--samples", "1")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["kind"] == "corpus"
    assert payload["domains"] == ["code", "prose"]
    assert payload["block_size"] == 32
    assert payload["rows"]["train"] == sum(s["blocks_balanced"] for s in payload["stats"]["train"])
    assert len(payload["samples"]["code"]) == 1
    assert payload["samples"]["code"][0].startswith(('"""', "from", "import", "class", "def"))


def test_inspect_corrupted_manifest(cli, corpus: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(corpus, broken)
    (broken / "manifest.json").write_text('{"domains": ')
    result = cli("inspect", broken)
    output = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "not valid JSON" in output and "--force" in output
    assert "Traceback" not in output

    (broken / "manifest.json").write_text(json.dumps({"domains": ["code"]}))
    result = cli("inspect", broken)
    assert result.exit_code == 2
    assert "not a valid corpus manifest" in " ".join(result.output.split())


def test_inspect_missing_manifest(cli, corpus: Path, tmp_path: Path) -> None:
    import shutil

    stripped = tmp_path / "stripped"
    shutil.copytree(corpus, stripped)
    (stripped / "manifest.json").unlink()
    result = cli("inspect", stripped)
    assert result.exit_code == 2 and "Traceback" not in result.output
    # train/, eval/, tokenizer/ and dataset_dict.json
    assert "is a folder with 4 entries, not a prepared corpus" in " ".join(result.output.split())


def test_shorten_keeps_head_and_tail() -> None:
    text = " ".join(f"word{i}" for i in range(400))
    short = shorten(text, head=100, tail=40)
    assert short.startswith("word0 word1") and short.endswith("word399")
    assert "chars ...]" in short and len(short) < 200
    assert shorten("short text") == "short text"
