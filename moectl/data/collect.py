"""The length filter and character budget every text source shares (moectl.data.sources).

`TextCollector` takes texts until the domain's budget is full, so every source means the same
thing by `--size-mb`; `texts_fingerprint` is the content hash a source records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from moectl.config import DataConfig

CHARS_PER_MB = 1_000_000


class TextCollector:
    """Accumulates texts that pass the length filter until the character budget is reached.

    The text that crosses the budget is cut to fit, so every domain that has enough data gets
    exactly the budgeted number of characters.
    """

    def __init__(self, budget_chars: int, min_chars: int = 0, max_chars: int | None = None):
        self.budget = budget_chars
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.texts: list[str] = []
        self.chars = 0
        self.dropped = 0

    @property
    def full(self) -> bool:
        return self.chars >= self.budget

    def add_from(self, texts: Iterable[str]) -> list[str]:
        """Take texts from `texts` until the budget is full; returns the ones taken."""
        taken: list[str] = []
        for text in texts:
            if self.full:
                break
            if not text.strip() or not self._fits(text):
                self.dropped += 1
                continue
            text = text[: self.budget - self.chars]
            taken.append(text)
            self.chars += len(text)
        self.texts.extend(taken)
        return taken

    def _fits(self, text: str) -> bool:
        return len(text) >= self.min_chars and (
            self.max_chars is None or len(text) <= self.max_chars
        )


def texts_fingerprint(texts: Iterable[str]) -> str:
    """A short content hash of exactly the texts a source contributed."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", errors="replace"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def new_collector(config: DataConfig) -> TextCollector:
    return TextCollector(
        int(config.size_mb * CHARS_PER_MB), config.min_example_chars, config.max_example_chars
    )
