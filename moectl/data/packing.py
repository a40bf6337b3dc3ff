"""Batched tokenization and packing of EOS-joined texts into full, unpadded blocks.

Token ids live in Arrow and numpy int32 arrays, never in one Python list of ints: texts are
tokenized in chunks through `datasets.map` (batched, optionally over `num_proc` processes) and
each chunk's ids are flattened straight out of Arrow.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

CHUNK_TEXTS = 4096
MAP_BATCH = 256


def tokenize_texts(
    texts: list[str],
    tokenizer: PreTrainedTokenizerFast,
    num_proc: int = 1,
    on_chunk: Callable[[int], None] | None = None,
) -> np.ndarray:
    """All texts' ids as one flat int32 array, each text followed by the EOS id."""
    return tokenize_documents(texts, tokenizer, num_proc, on_chunk)[0]


def tokenize_documents(
    texts: list[str],
    tokenizer: PreTrainedTokenizerFast,
    num_proc: int = 1,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(flat ids as `tokenize_texts` gives them, tokens of each text including its EOS): the
    lengths say which document every token, and so every block, comes from."""
    import datasets

    encode = _BatchEncoder(tokenizer)
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"))})
    pieces: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    with quiet_datasets():
        for start in range(0, len(texts), CHUNK_TEXTS):
            chunk = texts[start : start + CHUNK_TEXTS]
            procs = min(num_proc, max(1, len(chunk) // MAP_BATCH))
            mapped = (
                datasets.Dataset.from_dict({"text": chunk})
                .with_format("arrow")
                .map(
                    encode,
                    batched=True,
                    batch_size=MAP_BATCH,
                    num_proc=procs if procs > 1 else None,
                    remove_columns=["text"],
                    features=features,
                    load_from_cache_file=False,
                )
            )
            column = mapped.data.table.column("input_ids").combine_chunks()
            pieces.append(column.flatten().to_numpy(zero_copy_only=False).astype(np.int32))
            lengths.append(column.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64))
            if on_chunk is not None:
                on_chunk(len(chunk))
    if not pieces:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    return np.concatenate(pieces), np.concatenate(lengths)


class _BatchEncoder:
    """Arrow batch of texts -> Arrow list column of ids + EOS, built with numpy, not lists.

    Calls the Rust tokenizer directly (`encode_batch_fast` skips offset tracking, which packing
    does not need); picklable, so `datasets.map` can ship it to `num_proc` workers.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerFast) -> None:
        self.backend = tokenizer.backend_tokenizer
        self.eos = int(tokenizer.eos_token_id)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        texts = batch["text"].to_pylist()
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        ids = [encoding.ids for encoding in encode(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        ends = np.cumsum(lengths)
        flat = np.fromiter(
            itertools.chain.from_iterable(ids),
            dtype=np.int32,
            count=int(ends[-1]) if len(ids) else 0,
        )
        values = np.insert(flat, ends, self.eos)
        offsets = np.zeros(len(ids) + 1, dtype=np.int32)
        offsets[1:] = ends + np.arange(1, len(ids) + 1)
        column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))
        return pa.table({"input_ids": column})


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence datasets' own tqdm bars: the core reports progress through callbacks only."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def pack_blocks(ids: np.ndarray, block_size: int) -> np.ndarray:
    """(n_blocks, block_size) view of the ids; the tail shorter than a block is dropped."""
    n_blocks = len(ids) // block_size
    return ids[: n_blocks * block_size].reshape(n_blocks, block_size)


def block_documents(lengths: np.ndarray, block_size: int) -> np.ndarray:
    """The document of each block `pack_blocks` makes from texts of these token `lengths`.

    A block that spans several texts belongs to the one holding most of its tokens (on a tie,
    the earlier text): the index of that text in the list that was tokenized.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n_blocks = int(lengths.sum()) // block_size
    if n_blocks == 0:
        return np.zeros(0, dtype=np.int64)
    token_document = np.repeat(np.arange(len(lengths)), lengths)[: n_blocks * block_size]
    per_block = token_document.reshape(n_blocks, block_size)
    first = per_block[:, 0]
    local = per_block - first[:, None]  # 0.. within each block, ascending
    width = int(local.max()) + 1
    rows = np.repeat(np.arange(n_blocks), block_size)
    counts = np.bincount(rows * width + local.ravel(), minlength=n_blocks * width)
    # argmax returns the first maximum: ties go to the earlier text.
    return first + counts.reshape(n_blocks, width).argmax(axis=1)
