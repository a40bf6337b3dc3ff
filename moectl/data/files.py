"""The `files` source: a user's own documents, one domain per --domain NAME=PATH_OR_GLOB.

Plain-text files (.txt, .md, .py, anything not tabular) are one document each; .jsonl, .json,
.parquet and .csv hold one document per row in a text column. Rows are streamed, so a large
table is only read as far as the character budget needs.
"""

from __future__ import annotations

import csv
import glob
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from moectl.data.collect import TextCollector, texts_fingerprint
from moectl.data.types import DomainTexts, SourceInfo
from moectl.errors import DataError

TABLE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def expand_patterns(domain: str, patterns: list[str]) -> list[Path]:
    """The files named by paths, directories (walked recursively) and globs, in sorted order."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        if not matches:
            raise DataError(
                f"no files match '{pattern}' (domain '{domain}')",
                hint="check the path; quote globs so the shell does not expand them: "
                f"--domain {domain}='dir/*.txt'",
            )
        for match in matches:
            if match.is_dir():
                found.extend(sorted(p for p in match.rglob("*") if p.is_file()))
            else:
                found.append(match)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError(
            f"the inputs of domain '{domain}' contain no files", hint="point --domain at files"
        )
    return unique


def load_files_domain(
    domain: str, patterns: list[str], text_column: str, collector: TextCollector
) -> DomainTexts:
    """Texts of one domain from its files, in file order, until the collector's budget."""
    paths = expand_patterns(domain, patterns)
    used = 0
    for path in paths:
        if collector.full:
            break
        collector.add_from(iter_file_texts(path, text_column))
        used += 1
    if not collector.texts:
        raise DataError(
            f"the {len(paths)} input file(s) of domain '{domain}' hold no text "
            f"({collector.dropped} texts dropped as empty or outside the length limits)",
            hint="check that the files are not empty, or relax --min-example-chars / "
            "--max-example-chars",
        )
    source = SourceInfo(
        domain=domain,
        kind="files",
        dataset=", ".join(patterns),
        fingerprint=texts_fingerprint(collector.texts),
        details={"files_matched": len(paths), "files_read": used, "text_column": text_column},
    )
    return DomainTexts(domain=domain, texts=collector.texts, sources=[source])


def iter_file_texts(path: Path, text_column: str) -> Iterator[str]:
    """The documents in one file: the whole file, or one per row of a table."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _jsonl_texts(path, text_column)
    elif suffix == ".json":
        yield from _json_texts(path, text_column)
    elif suffix == ".parquet":
        yield from _parquet_texts(path, text_column)
    elif suffix == ".csv":
        yield from _csv_texts(path, text_column)
    else:
        yield path.read_text(encoding="utf-8", errors="replace")


def _column_error(path: Path, column: str, available: list[str]) -> DataError:
    return DataError(
        f"{path} has no '{column}' column (it has: {', '.join(map(str, available)) or 'none'})",
        hint="name the column with --text-column (data.text_column)",
    )


def _row_text(path: Path, row: object, column: str) -> str:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        raise DataError(
            f"{path} holds a {type(row).__name__} where a record with a '{column}' field "
            "was expected",
            hint="use one JSON object per row with a text field",
        )
    if column not in row:
        raise _column_error(path, column, list(row))
    value = row[column]
    return "" if value is None else str(value)


def _jsonl_texts(path: Path, column: str) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path} line {number} is not valid JSON ({exc.msg})",
                    hint="a .jsonl file holds one JSON object per line",
                ) from None
            yield _row_text(path, row, column)


def _json_texts(path: Path, column: str) -> Iterator[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        yield from _jsonl_texts(path, column)
        return
    rows = data if isinstance(data, list) else [data]
    for row in rows:
        yield _row_text(path, row, column)


def _parquet_texts(path: Path, column: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for unreadable files
        raise DataError(f"cannot read parquet file {path}: {exc}") from None
    names = parquet.schema_arrow.names
    if column not in names:
        raise _column_error(path, column, names)
    for batch in parquet.iter_batches(columns=[column], batch_size=1024):
        for value in batch.column(0).to_pylist():
            yield "" if value is None else str(value)


def _csv_texts(path: Path, column: str) -> Iterator[str]:
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return
        if column not in reader.fieldnames:
            raise _column_error(path, column, list(reader.fieldnames))
        for row in reader:
            yield row[column] or ""
