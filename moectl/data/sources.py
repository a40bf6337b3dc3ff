"""Turning a domain's configured source into its texts, within the per-domain character budget.

Every source (builtin, files, hf) yields texts lazily; the same `collect.TextCollector` applies
the length filter and the character budget to all of them, so `--size-mb` means the same thing
whatever the texts came from, and a streamed hub dataset is read only as far as needed.
"""

from __future__ import annotations

import platform

from moectl.config import DataConfig
from moectl.data.collect import TextCollector, new_collector, texts_fingerprint
from moectl.data.files import load_files_domain
from moectl.data.hf import load_hf_domain, specs_for
from moectl.data.types import DomainTexts
from moectl.errors import DataError


def load_domain(config: DataConfig, domain: str) -> DomainTexts:
    """The filtered, budgeted texts of one domain from the configured source."""
    collector = new_collector(config)
    if config.source == "files":
        patterns = config.files.get(domain)
        if not patterns:
            raise DataError(
                f"domain '{domain}' has no input files",
                hint=f"pass --domain {domain}=PATH_OR_GLOB, or drop '{domain}' from data.domains",
            )
        result = load_files_domain(domain, patterns, config.text_column, collector)
    elif config.source == "hf":
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
