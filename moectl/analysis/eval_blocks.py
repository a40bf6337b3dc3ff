"""Which blocks an evaluation runs on: a seeded sample stratified by domain and spread over
documents (the bootstrap's units), its size per domain with the notes that warn of too few
documents, and each code or math token's type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moectl.analysis.eval_options import EvaluationOptions
from moectl.analysis.results import SampleSize
from moectl.analysis.tokentypes import GROUP_TYPES, classify_block
from moectl.errors import DataError

if TYPE_CHECKING:
    from moectl.data.store import Corpus


MIN_DOCUMENTS = 20
"""Fewer eval documents than this in a domain make its intervals rest on too few units."""
SAMPLE_NOTE = "eval sample:"
"""The prefix of `EvaluationResult.notes` about the sample; the report shows these notes."""


@dataclass
class Block:
    """One eval block: its row in the split, domain, document (unique across the split: the
    bootstrap's unit) and token ids."""

    index: int
    domain: int
    document: int
    ids: list[int]
    types: dict[str, list[int]] = field(default_factory=dict)


def block_unit(block: Block) -> int:
    """The independent unit a block belongs to (its document), for the functional test's split
    and interval."""
    return block.document


def select_blocks(corpus: Corpus, options: EvaluationOptions) -> list[Block]:
    """The blocks to evaluate (in row order): all of the split, or `max_blocks` drawn at random
    with `options.seed`, split evenly across domains and spread over as many documents as each
    domain has (see `sample_rows`)."""
    if options.split not in ("train", "eval"):
        raise DataError(f"unknown split '{options.split}'", hint="use --split eval or train")
    dataset = corpus.eval if options.split == "eval" else corpus.train
    if len(dataset) == 0:
        raise DataError(f"the {options.split} split of {corpus.path} is empty")
    domain_column = np.asarray(dataset["domain"], dtype=np.int64)
    documents = split_documents(dataset, domain_column)
    chosen = sample_rows(domain_column, documents, options.max_blocks, options.seed)
    rows = dataset.select(chosen.tolist())
    return [
        Block(index=int(i), domain=int(d), document=int(documents[i]), ids=[int(t) for t in ids])
        for i, d, ids in zip(chosen, rows["domain"], rows["input_ids"], strict=True)
    ]


def split_documents(dataset: Any, domain_column: np.ndarray) -> np.ndarray:
    """Each row's document, unique across the split (a domain's document indices offset past
    the previous domains'); in a corpus without a document column, each row is its own."""
    if "document" not in dataset.column_names:
        return np.arange(len(domain_column))
    documents = np.asarray(dataset["document"], dtype=np.int64)
    offsets = np.zeros(int(domain_column.max()) + 2, dtype=np.int64)
    np.maximum.at(offsets, domain_column + 1, documents + 1)
    return documents + np.cumsum(offsets)[domain_column]


def sample_rows(
    domains: np.ndarray, documents: np.ndarray, max_blocks: int | None, seed: int
) -> np.ndarray:
    """Rows (ascending) of a random sample, stratified by domain and spread across documents.

    `max_blocks` is split evenly across domains (a domain with fewer blocks gives its unused
    share to the others). Within a domain, documents come in a random order and each gives one
    random block before any gives a second, so the sample spans as many documents as it can.
    """
    present = np.unique(domains)
    limit = len(domains) if max_blocks is None else min(max_blocks, len(domains))
    sizes = {int(d): int((domains == d).sum()) for d in present}
    quota = {d: 0 for d in sizes}
    while sum(quota.values()) < limit:
        open_domains = [d for d in sizes if quota[d] < sizes[d]]
        share = max(1, (limit - sum(quota.values())) // len(open_domains))
        for d in open_domains:
            quota[d] = min(sizes[d], quota[d] + share, quota[d] + limit - sum(quota.values()))
    chosen = []
    for d, n in quota.items():
        rng = np.random.default_rng([seed, d])
        rows = rng.permutation(np.flatnonzero(domains == d))
        unique, local = np.unique(documents[rows], return_inverse=True)
        document_rank = rng.permutation(len(unique))[local]
        # Rows were shuffled, so a row's place among its document's rows is a random round.
        order = np.argsort(local, kind="stable")
        round_of = np.empty(len(rows), dtype=np.int64)
        starts = np.r_[0, np.flatnonzero(np.diff(local[order])) + 1]
        counts = np.diff(np.r_[starts, len(rows)])
        round_of[order] = np.arange(len(rows)) - np.repeat(starts, counts)
        chosen.append(rows[np.lexsort((document_rank, round_of))[:n]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def sample_sizes(blocks: list[Block], domains: list[str]) -> dict[str, SampleSize]:
    """Per domain with blocks: how many were evaluated and from how many documents."""
    sizes = {}
    for index, name in enumerate(domains):
        documents = [b.document for b in blocks if b.domain == index]
        if documents:
            sizes[name] = SampleSize(blocks=len(documents), documents=len(set(documents)))
    return sizes


def sample_notes(sample: dict[str, SampleSize], has_documents: bool, corpus: Path) -> list[str]:
    """Warnings about the units the intervals rest on, one line each."""
    if not has_documents:
        return [
            f"{SAMPLE_NOTE} corpus {corpus} does not record each block's document, so "
            "the intervals resample blocks, which understates their width when blocks of one "
            "document are alike; re-run `moectl prepare-data` to record documents"
        ]
    return [
        f"{SAMPLE_NOTE} {domain} has {size.documents} eval documents (fewer than "
        f"{MIN_DOCUMENTS}), so its intervals rest on few independent units; evaluate more blocks "
        "(--max-blocks) or give the eval split more texts (data.eval_min_texts)"
        for domain, size in sample.items()
        if size.documents < MIN_DOCUMENTS
    ]


def annotate_token_types(
    blocks: list[Block], corpus: Corpus, tokenizer: Any, options: EvaluationOptions
) -> None:
    """Token-type ids per token for blocks of code and math domains (-1 elsewhere)."""
    eos_id = corpus.manifest.tokenizer.eos_id
    groups = {"code": options.code_domains, "math": options.math_domains}
    piece_cache: dict[int, str] = {}
    for block in blocks:
        domain = corpus.domains[block.domain]
        for group, domains in groups.items():
            if not any(d in corpus.domains for d in domains):
                continue
            if domain not in domains:
                block.types[group] = [-1] * len(block.ids)
                continue
            pieces = [decode_piece(tokenizer, t, piece_cache) for t in block.ids]
            names = GROUP_TYPES[group]
            labels = classify_block(pieces, block.ids, eos_id, group)
            block.types[group] = [-1 if lab is None else names.index(lab) for lab in labels]


def decode_piece(tokenizer: Any, token_id: int, cache: dict[int, str]) -> str:
    """The text of one token id, exactly as it contributes to the decoded block."""
    if token_id not in cache:
        cache[token_id] = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
    return cache[token_id]
