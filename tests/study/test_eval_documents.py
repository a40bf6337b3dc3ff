"""The quickstart's corpus holds enough eval documents per domain for a document bootstrap."""

from __future__ import annotations

import pytest

from moectl.data.sources import load_domain
from moectl.data.split import eval_count
from moectl.study.plan import plan_configs

MIN_EVAL_DOCUMENTS = 20


def test_study_eval_rule_gives_20_documents_from_80_texts() -> None:
    data, _ = plan_configs("default")
    assert eval_count(79, data) < MIN_EVAL_DOCUMENTS <= eval_count(80, data)
    assert eval_count(4000, data) == 200, "large domains keep 5%, as before"


@pytest.mark.parametrize("domain", ["code", "prose"])
def test_builtin_domains_at_the_quickstart_size_have_20_eval_documents(domain: str) -> None:
    """Code (long stdlib modules) is the domain with the fewest texts; prose is next. Math's
    generated problems are a few hundred characters each, thousands per domain."""
    data, _ = plan_configs("default")
    texts = load_domain(data, domain).texts
    assert eval_count(len(texts), data) >= MIN_EVAL_DOCUMENTS
    assert len(texts) - eval_count(len(texts), data) >= 3 * MIN_EVAL_DOCUMENTS
