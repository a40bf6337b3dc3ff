"""`moectl prepare-data`: build a tokenized, packed corpus from builtin, local or hub sources."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from moectl.cli.common import ConfigOption, RichProgress, SetOption, console, render_warnings
from moectl.cli.schemas import JsonOption, PrepareDataOutput, print_json
from moectl.config import DataConfig
from moectl.errors import DataError


def _default(field: str) -> str:
    """'[default: X]' for the DataConfig default an unset option defers to (the bracket escaped,
    as --help text is rich markup)."""
    return rf"\[default: {DataConfig.model_fields[field].default}]"


def parse_domains(values: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """`NAME=PATH_OR_GLOB` (repeatable per name) or a bare `NAME` -> (domain order, files)."""
    order: list[str] = []
    files: dict[str, list[str]] = {}
    for value in values:
        name, sep, pattern = value.partition("=")
        name = name.strip()
        if not name or (sep and not pattern.strip()):
            raise DataError(
                f"cannot parse --domain '{value}'",
                hint="write --domain NAME=PATH_OR_GLOB, e.g. --domain code='src/**/*.py'",
            )
        if name not in order:
            order.append(name)
        if sep:
            files.setdefault(name, []).append(pattern.strip())
    return order, files


def prepare_data(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the corpus.", show_default=False)
    ],
    source: Annotated[
        str | None,
        typer.Option(
            help="builtin (offline corpus), files (--domain NAME=PATH) or hf (hub). "
            + _default("source"),
            show_default=False,
        ),
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option(
            "--domain",
            metavar="NAME=PATH",
            help="NAME=PATH_OR_GLOB for --source files (repeatable), or NAME to pick domains.",
            show_default=False,
        ),
    ] = None,
    size_mb: Annotated[
        float | None,
        typer.Option(
            help="Characters per domain, in millions. " + _default("size_mb"), show_default=False
        ),
    ] = None,
    block_size: Annotated[
        int | None,
        typer.Option(help="Tokens per packed block. " + _default("block_size"), show_default=False),
    ] = None,
    balance_tokens: Annotated[
        bool | None,
        typer.Option(
            "--balance-tokens/--no-balance-tokens",
            help="Cut every domain to the smallest domain's token count.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seed for split, shuffles and sources. " + _default("seed"), show_default=False
        ),
    ] = None,
    min_example_chars: Annotated[
        int | None, typer.Option(help="Drop texts shorter than this.")
    ] = None,
    max_example_chars: Annotated[
        int | None, typer.Option(help="Drop texts longer than this.")
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="gpt2, a local tokenizer path, or bpe:N (trained on the corpus). "
            + _default("tokenizer"),
            show_default=False,
        ),
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Text column of .jsonl/.json/.parquet/.csv inputs.")
    ] = None,
    num_proc: Annotated[int | None, typer.Option(help="Processes for tokenization.")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force/--no-force",
            help="Replace --out if it is a moectl corpus or an empty folder (once the new one "
            "is done); anything else is refused.",
        ),
    ] = False,
    config: ConfigOption = None,
    overrides: SetOption = None,
    as_json: JsonOption = False,
) -> None:
    """Prepare a corpus: load texts per domain, split train/eval, tokenize, pack and balance.

    --json prints where the corpus is, its tokenizer and block counts (`moectl inspect DIR
    --json` has every number).

    Examples:

      moectl prepare-data --source builtin --size-mb 2 --out data/mix

      moectl prepare-data --source files --domain code='examples/data/code/*.py'
        --domain math=examples/data/math/problems.jsonl --domain prose=examples/data/prose
        --block-size 64 --tokenizer bpe:2000 --out data/examples

      moectl prepare-data --source hf --size-mb 10 --balance-tokens --out data/reference

      moectl prepare-data --config study.yaml --set data.seed=3 --out data/mix-seed3
    """
    from moectl.cli.inspect_corpus import render_split_table
    from moectl.config import resolve_data_config
    from moectl.data.prepare import prepare_corpus

    options: dict[str, Any] = {
        "source": source,
        "size_mb": size_mb,
        "block_size": block_size,
        "balance_tokens": balance_tokens,
        "seed": seed,
        "min_example_chars": min_example_chars,
        "max_example_chars": max_example_chars,
        "tokenizer": tokenizer,
        "text_column": text_column,
        "num_proc": num_proc,
    }
    if domain:
        names, files = parse_domains(domain)
        options["domains"] = names
        if files:
            if source in ("builtin", "hf"):
                raise DataError(
                    f"--domain NAME=PATH gives files, but --source is {source}",
                    hint="use --source files with --domain NAME=PATH, or --domain NAME alone "
                    f"to pick {source} domains",
                )
            options["files"] = files
            options["source"] = source or "files"
    if text_column is not None and source == "builtin":
        raise DataError(
            "--text-column applies to files and hub datasets, not --source builtin",
            hint="drop --text-column, or use --source files/hf",
        )
    data_config = resolve_data_config(config, overrides, options)
    with RichProgress(transient=True) as progress:
        result = prepare_corpus(data_config, out, force=force, callback=progress)
    manifest = result.manifest
    render_warnings(manifest.warnings)
    if as_json:
        print_json(
            PrepareDataOutput(
                path=str(result.path),
                domains=manifest.domains,
                tokenizer=manifest.tokenizer.name,
                vocab_size=manifest.tokenizer.vocab_size,
                block_size=manifest.block_size,
                train_blocks=manifest.blocks("train"),
                eval_blocks=manifest.blocks("eval"),
                seconds=result.seconds,
                tokens_per_s=result.tokens_per_s,
                warnings=manifest.warnings,
            )
        )
        return
    for split in ("train", "eval"):
        render_split_table(manifest, split)
    console.print(
        f"[bold green]corpus written to {escape(str(result.path))}[/] "
        f"({manifest.blocks('train'):,} train / {manifest.blocks('eval'):,} eval blocks of "
        f"{manifest.block_size} tokens, tokenizer {escape(manifest.tokenizer.name)} "
        f"with {manifest.tokenizer.vocab_size:,} tokens) in {result.seconds:.1f}s, "
        f"tokenized at {result.tokens_per_s:,.0f} tokens/s",
        highlight=False,
    )
