"""Token-type labels for code and math tokens, including fragments that do not tokenize."""

from __future__ import annotations

from moectl.analysis.tokentypes import (
    classify_block,
    classify_code,
    classify_math,
    split_documents,
    token_spans,
)


def test_code_token_types() -> None:
    pieces = [
        "def",
        " add",
        "(a",
        ",",
        " b",
        "):",
        "\n    ",
        "return",
        " a",
        " +",
        " 10",
        "  # sum",
        "\n",
        "s",
        " =",
        " 'x'",
        "\n",
    ]
    assert classify_code(pieces) == [
        "keyword", "name", "operator", "operator", "name", "operator", "whitespace",
        "keyword", "name", "operator", "number", "comment", "whitespace", "name",
        "operator", "string", "whitespace",
    ]  # fmt: skip


def test_fragment_starting_mid_block_and_unterminated_string() -> None:
    # A block that starts inside an indented body and ends inside a docstring.
    pieces = ["        x", " = ", "1", "\n", "if", " x", ":", "\n", "    y", ' = """', "doc", " 42"]
    labels = classify_code(pieces)
    assert labels[:3] == ["name", "operator", "number"]
    assert labels[4:7] == ["keyword", "name", "operator"]
    assert labels[8] == "name"
    assert len(labels) == len(pieces)
    assert labels[-1] == "number"  # falls back to a character-class guess


def test_math_token_types() -> None:
    assert classify_math(["What", " is", " 12", " *", " 3", "?", "\n", " x"]) == [
        "word", "word", "digit", "operator", "digit", "operator", "whitespace", "word",
    ]  # fmt: skip


def test_documents_split_at_eos() -> None:
    assert split_documents([5, 6, 0, 0, 7, 8, 0], eos_id=0) == [(0, 2), (4, 6)]
    assert split_documents([5, 6], eos_id=None) == [(0, 2)]
    text, spans = token_spans(["ab", "", "c"])
    assert text == "abc" and spans == [(0, 2), (2, 2), (2, 3)]


def test_block_documents_are_classified_separately() -> None:
    # The first document ends inside an open string; the second must not inherit it.
    ids = [1, 2, 0, 3, 4]
    pieces = ["s", " = '", "<eos>", "return", " 1"]
    labels = classify_block(pieces, ids, eos_id=0, group="code")
    assert labels[2] is None
    assert labels[3:] == ["keyword", "number"]
