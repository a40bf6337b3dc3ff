"""Plain data passed from a source to the corpus pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field


class SourceInfo(BaseModel):
    """Where a domain's texts came from, precisely enough to fetch the same texts again."""

    domain: str
    kind: Literal["builtin", "files", "hf"]
    dataset: str | None = None
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    fingerprint: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


@dataclass
class DomainTexts:
    """The raw documents of one domain, in source order, with their provenance."""

    domain: str
    texts: list[str]
    sources: list[SourceInfo] = field(default_factory=list)
