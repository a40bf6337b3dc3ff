"""`moectl inspect CORPUS`: manifest, per-domain tables and decoded sample blocks of a corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from moectl.cli.common import console, domain_style, render_warnings

if TYPE_CHECKING:
    from moectl.data.store import Corpus, CorpusManifest

SAMPLE_HEAD_CHARS = 480
SAMPLE_TAIL_CHARS = 120


def render_split_table(manifest: CorpusManifest, split: str) -> None:
    """One row per domain: texts, chars, tokens, blocks before and after balancing, share."""
    stats = manifest.split_stats(split)
    total_blocks = sum(s.blocks_balanced for s in stats) or 1
    table = Table(title=f"{split} split", title_justify="left")
    for column in ("domain", "texts", "chars", "tokens", "blocks", "balanced", "share"):
        table.add_column(column, justify="left" if column == "domain" else "right")
    for s in stats:
        table.add_row(
            Text(s.domain, style=domain_style(s.domain, manifest.domains)),
            f"{s.texts:,}",
            f"{s.chars:,}",
            f"{s.tokens:,}",
            f"{s.blocks:,}",
            f"{s.blocks_balanced:,}",
            f"{s.blocks_balanced / total_blocks:.1%}",
        )
    table.add_row(
        "total",
        f"{sum(s.texts for s in stats):,}",
        f"{sum(s.chars for s in stats):,}",
        f"{sum(s.tokens for s in stats):,}",
        f"{sum(s.blocks for s in stats):,}",
        f"{sum(s.blocks_balanced for s in stats):,}",
        "100.0%",
        style="bold",
    )
    console.print(table)


def shorten(text: str, head: int = SAMPLE_HEAD_CHARS, tail: int = SAMPLE_TAIL_CHARS) -> str:
    """The start and end of a long decoded block, cut at line or word boundaries where possible."""
    if len(text) <= head + tail + 20:
        return text
    start = text[:head]
    cut = max(start.rfind("\n"), start.rfind(" "))
    start = start[:cut] if cut > head // 2 else start
    end = text[-tail:]
    cut = max(end.find("\n"), end.find(" "))
    end = end[cut + 1 :] if 0 <= cut < tail // 2 else end
    skipped = len(text) - len(start) - len(end)
    return f"{start} [... {skipped:,} chars ...] {end}"


def sample_blocks(corpus: Corpus, samples: int) -> dict[str, list[str]]:
    """The first `samples` train blocks of each domain, decoded."""
    import numpy as np

    if samples <= 0:
        return {}
    tokenizer = corpus.tokenizer()
    labels = np.asarray(corpus.train.data.column("domain"))
    decoded: dict[str, list[str]] = {}
    for index, domain in enumerate(corpus.domains):
        rows = np.flatnonzero(labels == index)[:samples].tolist()
        blocks = corpus.train.select(rows)["input_ids"] if rows else []
        decoded[domain] = [tokenizer.decode(list(block)) for block in blocks]
    return decoded


def render_corpus(path: Path, samples: int = 0, as_json: bool = False) -> None:
    """Print a prepared corpus for people (rich) or scripts (--json)."""
    from moectl.data.store import load_corpus

    corpus = load_corpus(path)
    manifest = corpus.manifest
    decoded = sample_blocks(corpus, samples)
    if as_json:
        payload: dict[str, Any] = {"kind": "corpus", "path": str(path)}
        payload.update(manifest.model_dump(mode="json"))
        payload["rows"] = {"train": len(corpus.train), "eval": len(corpus.eval)}
        if decoded:
            payload["samples"] = decoded
        typer.echo(json.dumps(payload, indent=2))
        return
    _render_header(path, manifest)
    _render_sources(manifest)
    for split in ("train", "eval"):
        render_split_table(manifest, split)
    render_warnings(manifest.warnings)
    for domain, texts in decoded.items():
        style = domain_style(domain, manifest.domains)
        for number, text in enumerate(texts, 1):
            console.print(
                Panel(
                    Text(shorten(text)),
                    title=escape(f"{domain} sample {number}"),
                    title_align="left",
                    border_style=style,
                )
            )


def _render_header(path: Path, manifest: CorpusManifest) -> None:
    tok = manifest.tokenizer
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("corpus", Text(str(path)))
    grid.add_row("created", f"{manifest.created} by moectl {manifest.moectl_version}")
    grid.add_row("source", manifest.config.source)
    grid.add_row("domains", Text(", ".join(manifest.domains)))
    grid.add_row(
        "tokenizer",
        Text(f"{tok.name} ({tok.vocab_size:,} tokens, eos {tok.eos_id}, hash {tok.hash})"),
    )
    grid.add_row("block size", str(manifest.block_size))
    grid.add_row("seed", str(manifest.seed))
    balanced = "no"
    if manifest.config.balance_tokens:
        balanced = "train and eval" if manifest.config.balance_eval else "train only"
    grid.add_row("balanced", balanced)
    console.print(grid)


def _render_sources(manifest: CorpusManifest) -> None:
    table = Table(title="sources", title_justify="left")
    for column in ("domain", "kind", "dataset", "config", "split", "version"):
        table.add_column(column, overflow="fold")
    table.add_column("fingerprint", no_wrap=True, min_width=16)
    for source in manifest.sources:
        version = source.revision or source.details.get("version") or source.details.get("python")
        table.add_row(
            Text(source.domain, style=domain_style(source.domain, manifest.domains)),
            source.kind,
            Text(source.dataset or "-"),
            Text(source.config or "-"),
            Text(source.split or "-"),
            Text(str(version or "-")),
            source.fingerprint or "-",
        )
    console.print(table)
