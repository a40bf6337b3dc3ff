"""Pipeline pieces: the eval split rule, text collection, packing, balancing, WikiText joining."""

from __future__ import annotations

import numpy as np
import pytest

from moectl.config import DataConfig
from moectl.data.balance import balanced_rows, imbalance_warning
from moectl.data.collect import TextCollector
from moectl.data.hf import join_wikitext_articles
from moectl.data.packing import block_documents, pack_blocks, tokenize_documents, tokenize_texts
from moectl.data.split import eval_count, split_texts
from moectl.data.tokenizer import resolve_tokenizer
from moectl.errors import DataError


@pytest.mark.parametrize(
    ("n_texts", "expected"),
    [(2, 1), (5, 1), (50, 5), (100, 10), (150, 10), (300, 15), (1000, 50), (5000, 250)],
)
def test_eval_count_is_min_of_max_10_and_5_percent_and_10_percent(n_texts, expected) -> None:
    assert eval_count(n_texts, DataConfig()) == expected


def test_split_is_disjoint_complete_and_seeded() -> None:
    texts = [f"document {i}" for i in range(200)]
    config = DataConfig(seed=3)
    train, evaluation = split_texts("code", texts, config, 0)
    assert len(evaluation) == 10 and len(train) == 190
    assert not set(train) & set(evaluation)
    assert sorted(train + evaluation) == sorted(texts)
    assert split_texts("code", texts, config, 0) == (train, evaluation)
    assert split_texts("code", texts, DataConfig(seed=4), 0)[1] != evaluation
    assert split_texts("code", texts, config, 1)[1] != evaluation


def test_split_needs_two_texts() -> None:
    with pytest.raises(DataError, match="too few to split"):
        split_texts("math", ["only one"], DataConfig(), 0)


def test_collector_filters_and_cuts_at_budget() -> None:
    collector = TextCollector(budget_chars=25, min_chars=3, max_chars=12)
    inputs = ["ab", "", "   ", "hello world", "x" * 13, "0123456789", "tail text"]
    taken = collector.add_from(inputs)
    assert taken == ["hello world", "0123456789", "tail"]
    assert collector.chars == 25 and collector.full
    assert collector.dropped == 4
    assert collector.add_from(["more"]) == []


@pytest.fixture(scope="module")
def bpe():
    texts = ["def add(a, b):\n    return a + b\n", "The river runs to the sea.", "2 + 2 = 4"] * 20
    return resolve_tokenizer("bpe:300", texts)


def test_tokenize_appends_eos_after_every_text(bpe) -> None:
    texts = ["def add(a, b):", "The river.", "2 + 2 = 4", "x"]
    ids = tokenize_texts(texts, bpe)
    expected = [t for text in texts for t in [*bpe.encode(text), bpe.eos_token_id]]
    assert ids.dtype == np.int32
    assert ids.tolist() == expected
    assert int((ids == bpe.eos_token_id).sum()) == len(texts)


def test_tokenize_in_chunks_equals_one_pass(bpe, monkeypatch) -> None:
    texts = [f"text number {i} runs to the sea" for i in range(50)]
    whole = tokenize_texts(texts, bpe)
    monkeypatch.setattr("moectl.data.packing.CHUNK_TEXTS", 7)
    seen: list[int] = []
    assert tokenize_texts(texts, bpe, on_chunk=seen.append).tolist() == whole.tolist()
    assert sum(seen) == 50 and len(seen) == 8


def test_tokenize_documents_gives_each_texts_length_with_its_eos(bpe, monkeypatch) -> None:
    texts = [f"text {i} " * (1 + i % 4) for i in range(30)]
    monkeypatch.setattr("moectl.data.packing.CHUNK_TEXTS", 7)
    ids, lengths = tokenize_documents(texts, bpe)
    assert lengths.tolist() == [len(bpe.encode(t)) + 1 for t in texts]
    assert ids.tolist() == tokenize_texts(texts, bpe).tolist()
    ends = np.cumsum(lengths) - 1
    assert (ids[ends] == bpe.eos_token_id).all()


def test_block_documents_takes_the_text_holding_most_tokens_ties_to_the_earlier() -> None:
    # Tokens by text: 0 0 0 1 1 | 1 1 1 1 1 | 2 2 3 3 4 | 4 4 4 4 4 | 5 5 5 (tail, dropped)
    documents = block_documents(np.array([3, 7, 2, 2, 6, 3]), 5)
    assert documents.tolist() == [0, 1, 2, 4]
    assert len(documents) == len(pack_blocks(np.zeros(23, np.int32), 5))
    assert block_documents(np.array([2, 2]), 5).tolist() == []


def test_pack_blocks_drops_tail_without_padding() -> None:
    ids = np.arange(23, dtype=np.int32)
    blocks = pack_blocks(ids, 5)
    assert blocks.shape == (4, 5)
    assert blocks.reshape(-1).tolist() == list(range(20))
    assert pack_blocks(ids, 30).shape == (0, 30)


def test_balance_truncates_to_smallest_after_shuffling() -> None:
    blocks = {
        "code": np.arange(100 * 2).reshape(100, 2),
        "math": np.arange(10 * 2).reshape(10, 2) + 1000,
        "prose": np.arange(40 * 2).reshape(40, 2) + 5000,
    }
    rows = balanced_rows({d: len(b) for d, b in blocks.items()}, seed=0)
    balanced = {d: blocks[d][kept] for d, kept in rows.items()}
    assert {d: len(b) for d, b in balanced.items()} == {"code": 10, "math": 10, "prose": 10}
    kept_code = [tuple(row) for row in balanced["code"].tolist()]
    assert set(kept_code) <= {tuple(row) for row in blocks["code"].tolist()}
    assert len(set(kept_code)) == 10
    assert balanced["code"][:, 0].max() > 2 * 10, "kept blocks must not just be the first ones"
    assert np.array_equal(balanced["math"], blocks["math"])
    again = balanced_rows({d: len(b) for d, b in blocks.items()}, seed=0)
    assert all(np.array_equal(again[d], rows[d]) for d in blocks)
    other = balanced_rows({d: len(b) for d, b in blocks.items()}, seed=1)
    assert not np.array_equal(other["code"], rows["code"])


def test_imbalance_warning_threshold() -> None:
    assert imbalance_warning({"a": 140, "b": 100}, 1.5, balanced=False) is None
    message = imbalance_warning({"a": 300, "b": 100, "c": 150}, 1.5, balanced=False)
    assert message is not None and "3.0x" in message and "--balance-tokens" in message
    balanced = imbalance_warning({"a": 300, "b": 100}, 1.5, balanced=True)
    assert balanced is not None and "cut every domain to b's 100" in balanced


def test_wikitext_lines_join_into_articles() -> None:
    lines = [
        "",
        " = Alpha = \n",
        "",
        " Alpha is first . \n",
        " = = History = = \n",
        " It began . \n",
        " = Beta = \n",
        " Beta follows . \n",
    ]
    articles = list(join_wikitext_articles(lines))
    assert len(articles) == 2
    assert articles[0].startswith("= Alpha =") and "= = History = =" in articles[0]
    assert "It began" in articles[0]
    assert articles[1] == "= Beta = \n Beta follows ."
