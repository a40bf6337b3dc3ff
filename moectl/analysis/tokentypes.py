"""Token-type labels for LM tokens: Python token types for code, digits/operators/words for math.

Corpus blocks are packed token ids, so a block is decoded token by token into character spans,
cut into documents at EOS, and each document is classified on its own. Python's `tokenize` gives
the type of every character span; an LM token takes the type of its first non-blank character.
Blocks start and end mid-document, so tokenizing often fails part-way (an unterminated string or
bracket); the text after the failure is tokenized again from the next line, and characters no
Python token covers fall back to a character-class guess.
"""

from __future__ import annotations

import io
import keyword
import tokenize
from collections.abc import Sequence

CODE_TYPES = ("keyword", "name", "operator", "number", "string", "comment", "whitespace")
MATH_TYPES = ("digit", "operator", "word", "whitespace")

_PY_TYPE = {
    tokenize.NAME: "name",
    tokenize.OP: "operator",
    tokenize.NUMBER: "number",
    tokenize.STRING: "string",
    tokenize.COMMENT: "comment",
}


def token_spans(pieces: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The concatenated text of decoded token pieces and each piece's (start, end) span."""
    spans = []
    cursor = 0
    for piece in pieces:
        spans.append((cursor, cursor + len(piece)))
        cursor += len(piece)
    return "".join(pieces), spans


def split_documents(ids: Sequence[int], eos_id: int | None) -> list[tuple[int, int]]:
    """(start, end) index ranges of the documents in a packed block, EOS tokens excluded."""
    ranges = []
    start = 0
    for index, token in enumerate(ids):
        if eos_id is not None and token == eos_id:
            if index > start:
                ranges.append((start, index))
            start = index + 1
    if start < len(ids):
        ranges.append((start, len(ids)))
    return ranges


def _fallback_char_type(char: str) -> str:
    if char.isspace():
        return "whitespace"
    if char.isdigit():
        return "number"
    if char.isalpha() or char == "_":
        return "name"
    if char in "'\"":
        return "string"
    if char == "#":
        return "comment"
    return "operator"


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for index, char in enumerate(text):
        if char == "\n":
            starts.append(index + 1)
    return starts


def python_char_types(text: str) -> list[str | None]:
    """The Python token type of every character of `text` (None where no token covers it)."""
    types: list[str | None] = [None] * len(text)
    starts = _line_starts(text)
    line = 0
    while line < len(starts):
        offset = starts[line]
        resume = _tokenize_from(text, offset, types)
        if resume is None:
            break
        line = max(line + 1, next((i for i, s in enumerate(starts) if s > resume), len(starts)))
    return types


def _tokenize_from(text: str, offset: int, types: list[str | None]) -> int | None:
    """Tokenize text[offset:] into `types`; on failure, the absolute offset where it failed."""
    sub = text[offset:]
    sub_starts = _line_starts(sub)

    def absolute(position: tuple[int, int]) -> int:
        row, col = position
        return offset + sub_starts[min(row - 1, len(sub_starts) - 1)] + col

    try:
        for tok in tokenize.generate_tokens(io.StringIO(sub).readline):
            kind = _PY_TYPE.get(tok.type)
            if kind is None and "FSTRING" in tokenize.tok_name.get(tok.type, ""):
                kind = "string"
            if kind is None:
                continue
            if kind == "name" and keyword.iskeyword(tok.string):
                kind = "keyword"
            start, end = absolute(tok.start), min(absolute(tok.end), len(text))
            for index in range(start, end):
                if types[index] is None:
                    types[index] = kind
    except (tokenize.TokenError, IndentationError, SyntaxError) as error:
        position = getattr(error, "args", (None, None))
        if isinstance(error, tokenize.TokenError) and len(position) > 1 and position[1]:
            return absolute(position[1])
        lineno = getattr(error, "lineno", None) or 1
        return offset + sub_starts[min(lineno - 1, len(sub_starts) - 1)]
    return None


def classify_code(pieces: Sequence[str]) -> list[str]:
    """A CODE_TYPES label for each decoded token piece of one code document."""
    text, spans = token_spans(pieces)
    char_types = python_char_types(text)
    labels = []
    for start, end in spans:
        label = "whitespace"
        for index in range(start, end):
            if not text[index].isspace():
                label = char_types[index] or _fallback_char_type(text[index])
                break
        labels.append(label)
    return labels


def classify_math(pieces: Sequence[str]) -> list[str]:
    """A MATH_TYPES label for each decoded token piece: by its first non-blank character."""
    labels = []
    for piece in pieces:
        stripped = piece.strip()
        if not stripped:
            labels.append("whitespace")
        elif stripped[0].isdigit():
            labels.append("digit")
        elif stripped[0].isalpha():
            labels.append("word")
        else:
            labels.append("operator")
    return labels


def classify_block(
    pieces: Sequence[str], ids: Sequence[int], eos_id: int | None, group: str
) -> list[str | None]:
    """Per-token labels of one packed block for `group` ("code" or "math"); None for EOS."""
    classify = classify_code if group == "code" else classify_math
    labels: list[str | None] = [None] * len(ids)
    for start, end in split_documents(ids, eos_id):
        labels[start:end] = classify(pieces[start:end])
    return labels


GROUP_TYPES = {"code": CODE_TYPES, "math": MATH_TYPES}
