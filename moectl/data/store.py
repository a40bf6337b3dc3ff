"""The prepared corpus on disk: its manifest and loading it back.

A corpus is `manifest.json` + Arrow splits `train/` and `eval/` + `tokenizer/` (DESIGN.md
section 4), plus `dataset_dict.json`, which makes the corpus root a `datasets.DatasetDict`.
Everything downstream (training, evaluation, analysis) reads it through `load_corpus`, which
validates the manifest so that a corrupt or half-written corpus is reported as one clear
`DataError` instead of failing later inside a training loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from moectl.config import DataConfig
from moectl.data.types import SourceInfo
from moectl.errors import DataError
from moectl.rundir.kinds import describe_path, detect_kind

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast

MANIFEST_NAME = "manifest.json"
DATASET_DICT_NAME = "dataset_dict.json"
TOKENIZER_DIR = "tokenizer"
SPLITS = ("train", "eval")
FORMAT_VERSION = 2
"""2 added the `document` column (each block's text); version 1 corpora load without it."""
DOCUMENT_COLUMN = "document"


class TokenizerInfo(BaseModel):
    """Enough to tell whether a model and a corpus speak the same token ids."""

    name: str
    vocab_size: int
    eos_id: int
    hash: str


class DomainStats(BaseModel):
    """One domain in one split; `*_balanced` are the figures after token balancing."""

    domain: str
    texts: int
    chars: int
    tokens: int
    blocks: int
    tokens_balanced: int
    blocks_balanced: int
    documents: int | None = Field(
        None,
        description="distinct texts among the stored (balanced) blocks; None before format 2",
    )


class CorpusManifest(BaseModel):
    """The validated description of a prepared corpus (manifest.json)."""

    format_version: int = FORMAT_VERSION
    moectl_version: str
    created: str
    domains: list[str] = Field(min_length=1)
    tokenizer: TokenizerInfo
    block_size: int = Field(gt=0)
    seed: int
    config: DataConfig
    sources: list[SourceInfo]
    stats: dict[str, list[DomainStats]] = Field(
        description="split name ('train', 'eval') -> one entry per domain, in `domains` order"
    )
    warnings: list[str] = Field(default_factory=list)

    def split_stats(self, split: str) -> list[DomainStats]:
        """Per-domain figures of `split`, in domain order."""
        return self.stats.get(split, [])

    def blocks(self, split: str) -> int:
        """Blocks stored in `split` (after balancing, i.e. what the Arrow split holds)."""
        return sum(s.blocks_balanced for s in self.split_stats(split))


@dataclass
class Corpus:
    """A prepared corpus opened for reading; the splits are memory-mapped Arrow datasets."""

    path: Path
    manifest: CorpusManifest
    train: Dataset
    eval: Dataset

    @property
    def domains(self) -> list[str]:
        return list(self.manifest.domains)

    @property
    def block_size(self) -> int:
        return self.manifest.block_size

    @property
    def has_documents(self) -> bool:
        """Whether the splits record each block's document (format 2 on)."""
        return DOCUMENT_COLUMN in self.eval.column_names

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """The tokenizer the corpus was built with, from the corpus's own copy."""
        return load_tokenizer_dir(self.path / TOKENIZER_DIR)


def load_tokenizer_dir(path: Path) -> PreTrainedTokenizerFast:
    """A fast tokenizer saved with `save_pretrained`, loaded without touching the network."""
    from transformers import AutoTokenizer

    if not path.is_dir():
        raise DataError(
            f"tokenizer directory {path} is missing",
            hint="the corpus is incomplete; prepare it again with `moectl prepare-data --force`",
        )
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot load the tokenizer in {path}: {exc}",
            hint="prepare the corpus again with `moectl prepare-data --force`",
        ) from None


def read_manifest(path: Path) -> CorpusManifest:
    """The validated manifest of the corpus at `path`, or a DataError saying what is wrong."""
    manifest_path = path / MANIFEST_NAME
    rebuild = f"prepare it again with `moectl prepare-data ... --out {path} --force`"
    if not path.exists():
        raise DataError(f"corpus {path} does not exist", hint="run `moectl prepare-data` first")
    if not manifest_path.is_file():
        found = describe_path(path)
        hint = (
            f"pass the corpus it was trained on (`moectl inspect {path}` shows it)"
            if detect_kind(path) == "run"
            else "prepare one with `moectl prepare-data --out NEW_DIR`"
        )
        raise DataError(f"{path} is {found}, not a prepared corpus (no {MANIFEST_NAME})", hint=hint)
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{manifest_path} is not valid JSON ({exc})", hint=rebuild) from None
    try:
        manifest = CorpusManifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise DataError(
            f"{manifest_path} is not a valid corpus manifest ({where}: {first['msg']})",
            hint=rebuild,
        ) from None
    if manifest.format_version > FORMAT_VERSION:
        raise DataError(
            f"{manifest_path} has format version {manifest.format_version}; this moectl reads "
            f"up to {FORMAT_VERSION}",
            hint="upgrade moectl",
        )
    return manifest


def load_corpus(path: str | Path) -> Corpus:
    """Open a prepared corpus; a DataError if it is missing, incomplete or inconsistent."""
    from datasets import load_from_disk

    path = Path(path)
    manifest = read_manifest(path)
    splits: dict[str, Any] = {}
    for split in SPLITS:
        split_path = path / split
        try:
            splits[split] = load_from_disk(str(split_path))
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise DataError(
                f"cannot read the {split} split of corpus {path}: {exc}",
                hint=f"prepare it again with `moectl prepare-data ... --out {path} --force`",
            ) from None
        _check_split(path, split, splits[split], manifest)
    return Corpus(path=path, manifest=manifest, train=splits["train"], eval=splits["eval"])


def _check_split(path: Path, split: str, dataset: Any, manifest: CorpusManifest) -> None:
    hint = f"prepare it again with `moectl prepare-data ... --out {path} --force`"
    expected = {"input_ids", "domain"}
    if manifest.format_version >= 2:
        expected.add(DOCUMENT_COLUMN)
    if set(dataset.column_names) != expected:
        raise DataError(
            f"the {split} split of {path} has columns {dataset.column_names}, "
            f"expected {', '.join(sorted(expected))}",
            hint=hint,
        )
    names = getattr(dataset.features["domain"], "names", None)
    if names != manifest.domains:
        raise DataError(
            f"the {split} split of {path} labels domains {names}, the manifest says "
            f"{manifest.domains}",
            hint=hint,
        )
    if len(dataset) != manifest.blocks(split):
        raise DataError(
            f"the {split} split of {path} holds {len(dataset)} blocks, the manifest says "
            f"{manifest.blocks(split)}",
            hint=hint,
        )


def write_manifest(directory: Path, manifest: CorpusManifest) -> None:
    """Write manifest.json into `directory` (itself a temp dir that is renamed into place).

    dataset_dict.json goes next to it, listing the splits as `DatasetDict.save_to_disk` would,
    so `datasets.load_from_disk(corpus)` returns a DatasetDict of train and eval.
    """
    text = manifest.model_dump_json(indent=2)
    (directory / MANIFEST_NAME).write_text(text + "\n", encoding="utf-8")
    splits = json.dumps({"splits": list(SPLITS)})
    (directory / DATASET_DICT_NAME).write_text(splits + "\n", encoding="utf-8")
