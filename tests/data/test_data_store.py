"""Corpus store: manifest round-trip and load_corpus checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moectl import __version__
from moectl.config import DataConfig
from moectl.data.store import (
    CorpusManifest,
    DomainStats,
    TokenizerInfo,
    load_corpus,
    read_manifest,
    write_manifest,
)
from moectl.data.types import SourceInfo
from moectl.errors import DataError

DOMAINS = ["code", "prose"]


def _manifest(train_blocks: dict[str, int], eval_blocks: dict[str, int]) -> CorpusManifest:
    def stats(blocks: dict[str, int]) -> list[DomainStats]:
        return [
            DomainStats(
                domain=d,
                texts=3,
                chars=100,
                tokens=4 * n,
                blocks=n,
                tokens_balanced=4 * n,
                blocks_balanced=n,
            )
            for d, n in blocks.items()
        ]

    # Format 1: splits without the document column, as _write_corpus writes them.
    return CorpusManifest(
        format_version=1,
        moectl_version=__version__,
        created="2024-01-01T00:00:00Z",
        domains=DOMAINS,
        tokenizer=TokenizerInfo(name="bpe:300", vocab_size=300, eos_id=0, hash="abc"),
        block_size=4,
        seed=7,
        config=DataConfig(source="files", domains=DOMAINS, block_size=4, seed=7),
        sources=[SourceInfo(domain=d, kind="files", details={"files": 1}) for d in DOMAINS],
        stats={"train": stats(train_blocks), "eval": stats(eval_blocks)},
        warnings=["an example warning"],
    )


def _write_corpus(path: Path, manifest: CorpusManifest) -> None:
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    features = Features(
        {
            "input_ids": Sequence(Value("int32"), length=manifest.block_size),
            "domain": ClassLabel(names=manifest.domains),
        }
    )
    path.mkdir(parents=True)
    for split in ("train", "eval"):
        rows = [
            (index, [index, index + 1, index + 2, index + 3])
            for index, stat in enumerate(manifest.stats[split])
            for _ in range(stat.blocks_balanced)
        ]
        Dataset.from_dict(
            {"input_ids": [r[1] for r in rows], "domain": [r[0] for r in rows]}, features=features
        ).save_to_disk(str(path / split))
    write_manifest(path, manifest)


def test_manifest_round_trip(tmp_path: Path) -> None:
    manifest = _manifest({"code": 2, "prose": 3}, {"code": 1, "prose": 1})
    tmp_path.mkdir(exist_ok=True)
    write_manifest(tmp_path, manifest)
    again = read_manifest(tmp_path)
    assert again == manifest
    assert again.blocks("train") == 5
    assert again.config.seed == 7


def test_load_corpus_reads_splits(tmp_path: Path) -> None:
    manifest = _manifest({"code": 2, "prose": 3}, {"code": 1, "prose": 1})
    _write_corpus(tmp_path / "c", manifest)
    corpus = load_corpus(tmp_path / "c")
    assert corpus.domains == DOMAINS
    assert len(corpus.train) == 5 and len(corpus.eval) == 2
    assert corpus.train.features["domain"].names == DOMAINS
    assert corpus.train[0]["input_ids"] == [0, 1, 2, 3]
    assert not corpus.has_documents


def test_format_2_corpus_needs_the_document_column(tmp_path: Path) -> None:
    manifest = _manifest({"code": 2, "prose": 3}, {"code": 1, "prose": 1})
    _write_corpus(tmp_path / "c", manifest.model_copy(update={"format_version": 2}))
    with pytest.raises(DataError, match="expected document, domain, input_ids"):
        load_corpus(tmp_path / "c")


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda p: (p / "manifest.json").unlink(), "no manifest.json"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "manifest.json").write_text(json.dumps({"domains": []})), "not a valid"),
    ],
)
def test_load_corpus_rejects_broken_manifest(tmp_path: Path, damage, needle: str) -> None:
    _write_corpus(tmp_path / "c", _manifest({"code": 1, "prose": 1}, {"code": 1, "prose": 1}))
    damage(tmp_path / "c")
    with pytest.raises(DataError, match=needle) as info:
        load_corpus(tmp_path / "c")
    # --force may replace only what has a manifest: no hint suggests it for anything else
    forced = "--force" in (info.value.hint or "")
    assert forced == (needle != "no manifest.json")


def test_load_corpus_rejects_block_count_mismatch(tmp_path: Path) -> None:
    manifest = _manifest({"code": 1, "prose": 1}, {"code": 1, "prose": 1})
    _write_corpus(tmp_path / "c", manifest)
    manifest.stats["train"][0].blocks_balanced = 9
    write_manifest(tmp_path / "c", manifest)
    with pytest.raises(DataError, match="holds 2 blocks"):
        load_corpus(tmp_path / "c")


def test_load_corpus_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(tmp_path / "nope")


def test_corpus_root_loads_as_a_datasetdict(tiny_corpus) -> None:
    from datasets import DatasetDict, load_from_disk

    from moectl.data.store import load_corpus

    loaded = load_from_disk(str(tiny_corpus))
    corpus = load_corpus(tiny_corpus)
    assert isinstance(loaded, DatasetDict) and list(loaded) == ["train", "eval"]
    for split in ("train", "eval"):
        assert len(loaded[split]) == len(getattr(corpus, split)) > 0
        assert loaded[split].features == getattr(corpus, split).features
        assert loaded[split][0] == getattr(corpus, split)[0]
