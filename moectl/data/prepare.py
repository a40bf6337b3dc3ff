"""`prepare_corpus`: sources -> text split -> tokenizer -> packing -> balancing -> corpus on disk.

The stages follow DESIGN.md section 2 (Data). The corpus is written into a temp directory beside
`out` and renamed into place only when complete, so an interrupted run leaves nothing that looks
like a corpus, and `force` replaces an old corpus only once the new one is whole.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from moectl.config import DataConfig
from moectl.data.balance import balanced_rows, imbalance_warning
from moectl.data.packing import block_documents, pack_blocks, quiet_datasets, tokenize_documents
from moectl.data.sources import load_domain
from moectl.data.split import split_texts
from moectl.data.store import (
    SPLITS,
    TOKENIZER_DIR,
    CorpusManifest,
    DomainStats,
    TokenizerInfo,
    write_manifest,
)
from moectl.data.tokenizer import resolve_tokenizer, tokenizer_fingerprint
from moectl.data.types import SourceInfo
from moectl.errors import DataError
from moectl.fs import atomic_directory, check_writable_folder
from moectl.progress import ProgressCallback, report
from moectl.rundir.kinds import KIND_LABELS, describe_path
from moectl.version import __version__

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


class PrepareResult(BaseModel):
    """What prepare_corpus built: where, its manifest, and how fast it tokenized."""

    path: Path
    manifest: CorpusManifest
    seconds: float
    tokenize_seconds: float
    tokens_per_s: float

    @property
    def warnings(self) -> list[str]:
        return self.manifest.warnings


def prepare_corpus(
    config: DataConfig,
    out: Path,
    force: bool = False,
    callback: ProgressCallback | None = None,
) -> PrepareResult:
    """Build the corpus described by `config` at `out` (refused if it exists, unless `force`)."""
    started = time.perf_counter()
    out = Path(out)
    check_out(out, force)
    check_writable_folder(out, "--out")  # before the data is loaded, naming the user's folder
    domains = list(config.domains)
    texts: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    sources: list[SourceInfo] = []
    for index, domain in enumerate(domains):
        report(callback, "load", index, len(domains), message=domain)
        loaded = load_domain(config, domain)
        sources.extend(loaded.sources)
        texts["train"][domain], texts["eval"][domain] = split_texts(
            domain, loaded.texts, config, index
        )
    report(callback, "load", len(domains), len(domains), message="done")

    tokenizer = resolve_tokenizer(
        config.tokenizer,
        training_texts=(t for domain in domains for t in texts["train"][domain]),
    )
    tokenize_started = time.perf_counter()
    blocks, documents, stats = _tokenize_and_pack(config, domains, texts, tokenizer, callback)
    tokenize_seconds = time.perf_counter() - tokenize_started
    _check_sizes(config, stats)

    warnings = []
    train_tokens = {s.domain: s.tokens for s in stats["train"]}
    warning = imbalance_warning(train_tokens, config.imbalance_warning_ratio, config.balance_tokens)
    if warning:
        warnings.append(warning)
    for salt, split in enumerate(SPLITS):
        if config.balance_tokens and (split == "train" or config.balance_eval):
            sizes = {domain: len(b) for domain, b in blocks[split].items()}
            for domain, kept in balanced_rows(sizes, config.seed, salt).items():
                blocks[split][domain] = blocks[split][domain][kept]
                documents[split][domain] = documents[split][domain][kept]
    for split in SPLITS:
        for stat in stats[split]:
            stat.blocks_balanced = len(blocks[split][stat.domain])
            stat.tokens_balanced = stat.blocks_balanced * config.block_size
            stat.documents = len(np.unique(documents[split][stat.domain]))

    manifest = CorpusManifest(
        moectl_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        domains=domains,
        tokenizer=TokenizerInfo(
            name=config.tokenizer,
            vocab_size=len(tokenizer),
            eos_id=tokenizer.eos_token_id,
            hash=tokenizer_fingerprint(tokenizer),
        ),
        block_size=config.block_size,
        seed=config.seed,
        config=config,
        sources=sources,
        stats=stats,
        warnings=warnings,
    )
    with atomic_directory(out) as temp:
        for split in SPLITS:
            report(callback, "write", SPLITS.index(split), len(SPLITS), message=split)
            write_split(temp / split, blocks[split], documents[split], domains, config.block_size)
        tokenizer.save_pretrained(str(temp / TOKENIZER_DIR))
        write_manifest(temp, manifest)
        report(callback, "write", len(SPLITS), len(SPLITS), message="done")
    total_tokens = sum(s.tokens for split in SPLITS for s in stats[split])
    return PrepareResult(
        path=out,
        manifest=manifest,
        seconds=time.perf_counter() - started,
        tokenize_seconds=tokenize_seconds,
        tokens_per_s=total_tokens / max(tokenize_seconds, 1e-9),
    )


def check_out(out: Path, force: bool) -> None:
    """A DataError unless `out` is new, or `force` and it is a moectl corpus or an empty folder:
    --force never replaces a run, a model or anyone's other files."""
    if not out.exists():
        return
    found = describe_path(out)
    if not force:
        hint = "choose another --out" + (
            ", or pass --force to replace it"
            if found in (KIND_LABELS["corpus"], "an empty folder")
            else ""
        )
        raise DataError(f"{out} already exists ({found})", hint=hint)
    if found not in (KIND_LABELS["corpus"], "an empty folder"):
        raise DataError(
            f"--force replaces only a moectl corpus or an empty folder, and {out} is {found}",
            hint="choose another --out",
        )


def _tokenize_and_pack(
    config: DataConfig,
    domains: list[str],
    texts: dict[str, dict[str, list[str]]],
    tokenizer: PreTrainedTokenizerFast,
    callback: ProgressCallback | None,
) -> tuple[
    dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]], dict[str, list[DomainStats]]
]:
    """Per split and domain: the packed blocks, each block's document (`block_documents`) and
    the domain's figures before balancing."""
    total = sum(len(texts[split][d]) for split in SPLITS for d in domains)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        report(callback, "tokenize", done, total)

    report(callback, "tokenize", 0, total)
    blocks: dict[str, dict[str, np.ndarray]] = {split: {} for split in SPLITS}
    documents: dict[str, dict[str, np.ndarray]] = {split: {} for split in SPLITS}
    stats: dict[str, list[DomainStats]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for domain in domains:
            domain_texts = texts[split][domain]
            ids, lengths = tokenize_documents(domain_texts, tokenizer, config.num_proc, advance)
            packed = pack_blocks(ids, config.block_size)
            blocks[split][domain] = packed
            documents[split][domain] = block_documents(lengths, config.block_size)
            stats[split].append(
                DomainStats(
                    domain=domain,
                    texts=len(domain_texts),
                    chars=sum(map(len, domain_texts)),
                    tokens=len(ids),
                    blocks=len(packed),
                    tokens_balanced=len(packed) * config.block_size,
                    blocks_balanced=len(packed),
                )
            )
    return blocks, documents, stats


def _check_sizes(config: DataConfig, stats: dict[str, list[DomainStats]]) -> None:
    """Every domain needs at least one full block in each split, or it would vanish silently."""
    for split in ("eval", "train"):
        for stat in stats[split]:
            if stat.blocks == 0:
                raise DataError(
                    f"domain '{stat.domain}' has {stat.tokens:,} {split} tokens, fewer than one "
                    f"block of {config.block_size}",
                    hint=f"lower --block-size (at most {stat.tokens}) or give '{stat.domain}' "
                    "more text (--size-mb, more files)",
                )


def write_split(
    path: Path,
    blocks: dict[str, np.ndarray],
    documents: dict[str, np.ndarray],
    domains: list[str],
    size: int,
) -> None:
    """One split as an Arrow dataset: input_ids int32[size], domain as a ClassLabel and
    document, the index of the block's text among its domain's texts in this split."""
    import datasets
    import pyarrow as pa

    features = datasets.Features(
        {
            "input_ids": datasets.List(datasets.Value("int32"), length=size),
            "domain": datasets.ClassLabel(names=domains),
            "document": datasets.Value("int32"),
        }
    )
    flat = np.concatenate([blocks[d].reshape(-1) for d in domains]).astype(np.int32, copy=False)
    labels = np.concatenate(
        [np.full(len(blocks[d]), i, dtype=np.int64) for i, d in enumerate(domains)]
    )
    table = pa.table(
        {
            "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.int32()), size),
            "domain": pa.array(labels, pa.int64()),
            "document": pa.array(np.concatenate([documents[d] for d in domains]), pa.int32()),
        }
    ).cast(features.arrow_schema)
    dataset = datasets.Dataset(table, info=datasets.DatasetInfo(features=features))
    with quiet_datasets():
        dataset.save_to_disk(str(path))
