"""The `hf` source: Hugging Face datasets, streamed so only the budgeted characters are read.

The defaults are the reference study's datasets. A domain may list several datasets: later ones
top up the budget when earlier ones run out (GSM8K alone is smaller than 10 MB, so MATH fills
the rest). Without network the hub error becomes an OfflineError that names the offline sources.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from moectl.config import DataConfig, HFDatasetSpec
from moectl.data.collect import TextCollector, texts_fingerprint
from moectl.data.types import DomainTexts, SourceInfo
from moectl.errors import DataError, OfflineError

DEFAULT_HF_DATASETS: dict[str, list[HFDatasetSpec]] = {
    "code": [HFDatasetSpec(path="codeparrot/codeparrot-clean", text_fields=["content"])],
    "math": [
        HFDatasetSpec(path="openai/gsm8k", name="main", text_fields=["question", "answer"]),
        HFDatasetSpec(path="hendrycks/competition_math", text_fields=["problem", "solution"]),
    ],
    "prose": [
        HFDatasetSpec(
            path="Salesforce/wikitext", name="wikitext-103-raw-v1", join_wikitext_articles=True
        )
    ],
}
OFFLINE_HINT = (
    "use --source builtin for the offline corpus, or --source files --domain NAME=PATH "
    "for your own files"
)
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


def specs_for(config: DataConfig, domain: str) -> list[HFDatasetSpec]:
    """The datasets configured for `domain`, else the reference study's defaults."""
    specs = config.hf_datasets.get(domain) or DEFAULT_HF_DATASETS.get(domain)
    if not specs:
        raise DataError(
            f"no Hugging Face dataset is configured for domain '{domain}'",
            hint=f"add data.hf_datasets.{domain} to the config file (path, name, split, "
            "text_fields), or use --source files",
        )
    return specs


def load_hf_domain(
    domain: str, specs: list[HFDatasetSpec], collector: TextCollector
) -> DomainTexts:
    """Texts of one domain from its datasets in order, until the collector's budget."""
    sources: list[SourceInfo] = []
    for spec in specs:
        if collector.full:
            break
        dataset = _open(spec)
        taken = collector.add_from(_guard(spec, iter_spec_texts(spec, dataset)))
        sources.append(_source_info(domain, spec, dataset, taken))
    return DomainTexts(domain=domain, texts=collector.texts, sources=sources)


def _open(spec: HFDatasetSpec) -> Any:
    import datasets

    kwargs: dict[str, Any] = {"split": spec.split, "streaming": True}
    if spec.revision:
        kwargs["revision"] = spec.revision
    if spec.data_files:
        kwargs["data_files"] = spec.data_files
    try:
        return datasets.load_dataset(spec.path, spec.name, **kwargs)
    except Exception as exc:
        raise _translate(spec, exc) from None


def _guard(spec: HFDatasetSpec, texts: Iterable[str]) -> Iterator[str]:
    """Streaming reads lazily, so network errors can also surface while iterating."""
    try:
        yield from texts
    except (DataError, OfflineError):
        raise
    except Exception as exc:
        raise _translate(spec, exc) from None


def _translate(spec: HFDatasetSpec, exc: Exception) -> Exception:
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    name = spec.path + (f" ({spec.name})" if spec.name else "")
    if isinstance(exc, ConnectionError | TimeoutError | OfflineModeIsEnabled):
        return OfflineError(f"cannot reach the Hugging Face hub for dataset {name}", OFFLINE_HINT)
    if isinstance(exc, LocalEntryNotFoundError):
        return OfflineError(f"dataset {name} is not cached and the hub is offline", OFFLINE_HINT)
    if isinstance(exc, DatasetNotFoundError | FileNotFoundError):
        return DataError(
            f"dataset {name} was not found: {exc}",
            hint="check data.hf_datasets (path, name, data_files)",
        )
    if isinstance(exc, ValueError):
        return DataError(f"cannot load dataset {name}: {exc}", hint="check data.hf_datasets")
    return exc


def iter_spec_texts(spec: HFDatasetSpec, rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One text per row (its text fields joined by a blank line), or per WikiText article."""
    if spec.join_wikitext_articles:
        yield from join_wikitext_articles(_field(spec, row, spec.text_fields[0]) for row in rows)
        return
    for row in rows:
        parts = [_field(spec, row, name) for name in spec.text_fields]
        yield "\n\n".join(p.strip() for p in parts if p.strip())


def _field(spec: HFDatasetSpec, row: dict[str, Any], name: str) -> str:
    if name not in row:
        raise DataError(
            f"dataset {spec.path} has no field '{name}' (its fields: {', '.join(row)})",
            hint="set text_fields of this dataset in data.hf_datasets",
        )
    value = row[name]
    return "" if value is None else str(value)


def join_wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    """WikiText has one line per row; ` = Title = ` opens an article, ` = = Section = = ` not."""
    article: list[str] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")) and any(a.strip() for a in article):
            yield "".join(article).strip()
            article = []
        article.append(line)
    if any(a.strip() for a in article):
        yield "".join(article).strip()


def _source_info(domain: str, spec: HFDatasetSpec, dataset: Any, taken: list[str]) -> SourceInfo:
    info = getattr(dataset, "info", None)
    version = getattr(info, "version", None)
    details: dict[str, Any] = {"texts": len(taken), "chars": sum(map(len, taken))}
    if version is not None:
        details["version"] = str(version)
    if spec.data_files:
        details["data_files"] = list(spec.data_files)
    return SourceInfo(
        domain=domain,
        kind="hf",
        dataset=spec.path,
        config=spec.name or getattr(info, "config_name", None),
        split=spec.split,
        revision=spec.revision,
        fingerprint=texts_fingerprint(taken),
        details=details,
    )
