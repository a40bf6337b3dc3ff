"""The one check that a model and a corpus fit together: same token ids, enough positions.

Training from an artifact (`--init-from`), resuming from a checkpoint and evaluating all ask the
same question, so they get the same answer and the same message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moectl.errors import ModelError

if TYPE_CHECKING:
    from moectl.data.store import Corpus
    from moectl.model.artifact import ModelMeta

HINT = (
    "use a corpus prepared with the model's tokenizer "
    "(prepare-data --tokenizer <run>/best/tokenizer); `moectl inspect` shows both"
)


def check_model_fits_corpus(meta: ModelMeta, corpus: Corpus, where: str) -> None:
    """A ModelError when the model at `where` was trained on other token ids than the corpus
    holds (tokenizer hash or vocabulary size differ, or the corpus has ids the model cannot
    embed), or when the corpus blocks are longer than the model's positions."""
    theirs = meta.tokenizer or {}
    ours = corpus.manifest.tokenizer
    if theirs.get("hash") and theirs["hash"] != ours.hash:
        raise ModelError(
            f"{where} was trained with tokenizer {theirs.get('name')} (hash "
            f"{str(theirs['hash'])[:12]}) but corpus {corpus.path} uses {ours.name} "
            f"(hash {ours.hash[:12]})",
            hint=HINT,
        )
    from moectl.model.arch import config_sizes

    vocab = theirs.get("vocab_size")
    sizes = config_sizes(meta.hf_config) if meta.hf_config else None
    embedded = sizes.vocab if sizes else ours.vocab_size
    if (vocab is not None and vocab != ours.vocab_size) or ours.vocab_size > embedded:
        raise ModelError(
            f"{where} has a vocabulary of {vocab or embedded} tokens but corpus {corpus.path} "
            f"was tokenized with {ours.vocab_size}",
            hint=HINT,
        )
    positions = sizes.positions if sizes else corpus.block_size
    if corpus.block_size > positions:
        raise ModelError(
            f"corpus blocks of {corpus.block_size} tokens exceed the {positions} positions of "
            f"{where}",
            hint=f"prepare the corpus with data.block_size <= {positions}",
        )
