"""prepare_corpus end to end: manifest round-trip, splits, determinism, balancing, atomicity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moectl.config import DataConfig
from moectl.data.prepare import prepare_corpus
from moectl.data.store import load_corpus, read_manifest
from moectl.errors import DataError

SIZES = {"code": 40, "math": 60, "prose": 25}


def write_domains(root: Path) -> None:
    """Three domains of small documents; every document carries a unique marker word."""
    for domain, count in SIZES.items():
        folder = root / domain
        folder.mkdir(parents=True)
        for i in range(count):
            body = {
                "code": f"def f{i}(x):\n    return x + {i}  # marker{domain}{i}q\n",
                "math": f"Question: what is {i} times 3? Answer: {3 * i}. marker{domain}{i}q",
                "prose": f"The tale number {i} tells of rivers and hills. marker{domain}{i}q",
            }[domain]
            (folder / f"{i:03d}.txt").write_text(body * 3)


def config_for(root: Path, **kwargs) -> DataConfig:
    if not root.exists():
        write_domains(root)
    return DataConfig(
        source="files",
        domains=list(SIZES),
        files={d: [str(root / d / "*.txt")] for d in SIZES},
        tokenizer=kwargs.pop("tokenizer", "bpe:400"),
        block_size=kwargs.pop("block_size", 16),
        **kwargs,
    )


def test_prepare_writes_a_consistent_corpus(tmp_path: Path) -> None:
    config = config_for(tmp_path / "src")
    events = []
    result = prepare_corpus(config, tmp_path / "out", callback=events.append)
    corpus = load_corpus(tmp_path / "out")

    assert read_manifest(tmp_path / "out") == result.manifest
    assert corpus.manifest.config == config
    assert corpus.domains == list(SIZES)
    assert corpus.train.features["domain"].names == list(SIZES)
    assert corpus.train.features["input_ids"].feature.dtype == "int32"
    ids = np.asarray(corpus.train.data.column("input_ids").combine_chunks().flatten())
    assert ids.dtype == np.int32 and len(ids) == len(corpus.train) * 16

    stats = {s.domain: s for s in corpus.manifest.stats["train"]}
    eval_stats = {s.domain: s for s in corpus.manifest.stats["eval"]}
    for domain, count in SIZES.items():
        assert eval_stats[domain].texts == max(1, min(10, count // 10))
        assert stats[domain].texts + eval_stats[domain].texts == count
        assert stats[domain].blocks == stats[domain].tokens // 16
    labels = np.asarray(corpus.train.data.column("domain"))
    assert np.bincount(labels, minlength=3).tolist() == [stats[d].blocks for d in SIZES]

    tokenizer = corpus.tokenizer()
    assert tokenizer.eos_token_id == corpus.manifest.tokenizer.eos_id
    assert corpus.manifest.tokenizer.vocab_size == len(tokenizer)
    assert {e.stage for e in events} == {"load", "tokenize", "write"}
    assert result.tokens_per_s > 0


def _markers(corpus, split: str) -> set[str]:
    import re

    tokenizer = corpus.tokenizer()
    dataset = getattr(corpus, split)
    text = tokenizer.decode(np.asarray(dataset["input_ids"]).reshape(-1).tolist())
    return set(re.findall(r"marker[a-z]+\d+q", text))


def test_no_document_in_both_splits(tmp_path: Path) -> None:
    prepare_corpus(config_for(tmp_path / "src"), tmp_path / "out")
    corpus = load_corpus(tmp_path / "out")
    train, evaluation = _markers(corpus, "train"), _markers(corpus, "eval")
    assert train and evaluation
    assert not train & evaluation


def test_eos_separates_documents_in_blocks(tmp_path: Path) -> None:
    prepare_corpus(config_for(tmp_path / "src", block_size=8), tmp_path / "out")
    corpus = load_corpus(tmp_path / "out")
    eos = corpus.manifest.tokenizer.eos_id
    ids = np.asarray(corpus.eval["input_ids"]).reshape(-1)
    stats = corpus.manifest.stats["eval"]
    assert int((ids == eos).sum()) >= sum(s.texts for s in stats) - len(stats)
    tokenizer = corpus.tokenizer()
    first_doc = tokenizer.decode(ids[: int(np.argmax(ids == eos))].tolist())
    assert first_doc.count("marker") == 3 and "<|endoftext|>" not in first_doc


def test_same_inputs_and_seed_give_identical_ids(tmp_path: Path) -> None:
    config = config_for(tmp_path / "src", seed=5)
    prepare_corpus(config, tmp_path / "a")
    prepare_corpus(config, tmp_path / "b")
    prepare_corpus(config.model_copy(update={"seed": 6}), tmp_path / "c")
    a, b, c = (load_corpus(tmp_path / n) for n in "abc")
    for split in ("train", "eval"):
        assert getattr(a, split)["input_ids"] == getattr(b, split)["input_ids"]
        assert getattr(a, split)["domain"] == getattr(b, split)["domain"]
    assert a.eval["input_ids"] != c.eval["input_ids"]


def test_balancing_equalizes_domains_and_warns(tmp_path: Path) -> None:
    result = prepare_corpus(config_for(tmp_path / "src", balance_tokens=True), tmp_path / "out")
    corpus = load_corpus(tmp_path / "out")
    train = corpus.manifest.stats["train"]
    smallest = min(s.blocks for s in train)
    assert [s.blocks_balanced for s in train] == [smallest] * 3
    assert [s.tokens_balanced for s in train] == [smallest * 16] * 3
    assert len(corpus.train) == 3 * smallest
    assert any("balancing cut every domain" in w for w in result.warnings)
    evals = corpus.manifest.stats["eval"]
    assert [s.blocks_balanced for s in evals] == [s.blocks for s in evals]
    assert len(corpus.eval) == sum(s.blocks for s in evals)


def test_document_column_stays_aligned_through_balancing(tmp_path: Path) -> None:
    """Every stored block's `document` is the split text holding most of its tokens, after
    balancing shuffled and cut the blocks: found again from the texts, block by block."""
    from moectl.data.packing import tokenize_documents
    from moectl.data.sources import load_domain
    from moectl.data.split import split_texts

    config = config_for(tmp_path / "src", balance_tokens=True, balance_eval=True)
    prepare_corpus(config, tmp_path / "out")
    corpus = load_corpus(tmp_path / "out")
    tokenizer = corpus.tokenizer()
    for split_index, split in enumerate(("train", "eval")):
        dataset = getattr(corpus, split).with_format("numpy")[:]
        stats = {s.domain: s for s in corpus.manifest.stats[split]}
        for index, domain in enumerate(corpus.domains):
            texts = split_texts(domain, load_domain(config, domain).texts, config, index)
            ids, lengths = tokenize_documents(texts[split_index], tokenizer)
            owner = np.repeat(np.arange(len(lengths)), lengths)
            rows = np.flatnonzero(dataset["domain"] == index)
            documents = dataset["document"][rows]
            assert stats[domain].documents == len(set(documents.tolist())) > 1
            for block, document in zip(dataset["input_ids"][rows], documents, strict=True):
                starts = [
                    s for s in range(0, len(ids) - 15, 16) if np.array_equal(ids[s : s + 16], block)
                ]
                assert starts, "every stored block is a block of the packed texts"
                majority = {int(np.bincount(owner[s : s + 16]).argmax()) for s in starts}
                assert int(document) in majority


def test_balance_eval_balances_the_eval_split_too(tmp_path: Path) -> None:
    config = config_for(tmp_path / "src", balance_tokens=True, balance_eval=True)
    prepare_corpus(config, tmp_path / "out")
    evals = load_corpus(tmp_path / "out").manifest.stats["eval"]
    smallest = min(s.blocks for s in evals)
    assert len({s.blocks for s in evals}) > 1, "the fixture's eval domains differ in size"
    assert [s.blocks_balanced for s in evals] == [smallest] * 3


def test_block_larger_than_eval_tokens_names_domain(tmp_path: Path) -> None:
    needle = r"domain 'code' has [\d,]+ eval tokens, fewer than one block of 300"
    with pytest.raises(DataError, match=needle) as info:
        prepare_corpus(config_for(tmp_path / "src", block_size=300), tmp_path / "out")
    assert "--block-size" in (info.value.hint or "")
    assert not (tmp_path / "out").exists()


def test_existing_out_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="already exists") as info:
        prepare_corpus(DataConfig(source="files", domains=["x"]), tmp_path / "out")
    assert "--force" in (info.value.hint or "")


def test_interrupted_prepare_leaves_no_corpus(tmp_path: Path, monkeypatch) -> None:
    config = config_for(tmp_path / "src")
    calls = []

    def failing_write(path, *args):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(path, *args)

    from moectl.data import prepare

    real_write = prepare.write_split
    monkeypatch.setattr(prepare, "write_split", failing_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]

    monkeypatch.setattr(prepare, "write_split", real_write)
    first = prepare_corpus(config, tmp_path / "out")
    calls.clear()
    monkeypatch.setattr(prepare, "write_split", failing_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(config.model_copy(update={"seed": 9}), tmp_path / "out", force=True)
    assert load_corpus(tmp_path / "out").manifest == first.manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
