"""Taking documents from a seeded stream until a character budget is met, and fingerprinting them.

Every builtin domain uses the same rule so that `max_chars` means the same thing everywhere: keep
whole documents, in order, until their characters reach the budget (the last one may overshoot by
less than its own length); a source that runs out first returns everything it has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from moectl.errors import DataError

OFFLINE_HINT = 'pip install "moectl[offline]"'


def check_budget(max_chars: int) -> None:
    """Reject a budget that could select nothing, before any source is read."""
    if max_chars < 1:
        raise DataError(
            f"max_chars must be at least 1, got {max_chars}",
            hint="set data.size_mb to a positive number of millions of characters",
        )


def take_until(documents: Iterable[str], max_chars: int) -> tuple[list[str], bool]:
    """Whole documents until their characters reach `max_chars`; also says if the stream ran out."""
    texts: list[str] = []
    total = 0
    for doc in documents:
        texts.append(doc)
        total += len(doc)
        if total >= max_chars:
            return texts, False
    return texts, True


def fingerprint(texts: list[str]) -> str:
    """A short content hash, so two corpora built from different texts never look alike."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(len(text).to_bytes(8, "little"))
        digest.update(text.encode("utf-8"))
    return digest.hexdigest()[:16]
