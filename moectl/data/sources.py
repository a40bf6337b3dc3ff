"""Turning a domain's configured source into its texts, within the per-domain character budget.

Every source (builtin, files, hf) yields texts lazily; `TextCollector` applies the same length
filter and the same character budget to all of them, so `--size-mb` means the same thing
whatever the texts came from, and a streamed hub dataset is read only as far as needed.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterable

from moectl.config import DataConfig
from moectl.data.types import DomainTexts
from moectl.errors import DataError

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


def load_domain(config: DataConfig, domain: str) -> DomainTexts:
    """The filtered, budgeted texts of one domain from the configured source."""
    collector = new_collector(config)
    if config.source == "files":
        from moectl.data.files import load_files_domain

        patterns = config.files.get(domain)
        if not patterns:
            raise DataError(
                f"domain '{domain}' has no input files",
                hint=f"pass --domain {domain}=PATH_OR_GLOB, or drop '{domain}' from data.domains",
            )
        result = load_files_domain(domain, patterns, config.text_column, collector)
    elif config.source == "hf":
        from moectl.data.hf import load_hf_domain, specs_for

        result = load_hf_domain(domain, specs_for(config, domain), collector)
    else:
        result = _load_builtin(config, domain, collector)
    if not result.texts:
        raise DataError(
            f"domain '{domain}' has no texts after filtering ({collector.dropped} dropped as "
            "empty or outside the length limits)",
            hint="check its input, or relax --min-example-chars / --max-example-chars",
        )
    return result


def _load_builtin(config: DataConfig, domain: str, collector: TextCollector) -> DomainTexts:
    from moectl.data.builtin import load_builtin_domain

    loaded = load_builtin_domain(domain, collector.budget, config.seed)
    collector.add_from(loaded.texts)
    for source in loaded.sources:
        source.details.setdefault("python", platform.python_version())
        if source.fingerprint is None:
            source.fingerprint = texts_fingerprint(collector.texts)
    return DomainTexts(domain=domain, texts=collector.texts, sources=loaded.sources)
