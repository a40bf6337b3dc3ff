"""The generated math domain: correct answers, variety, determinism, budget."""

from __future__ import annotations

import itertools
import math
import os
import re
import subprocess
import sys
from fractions import Fraction

import pytest

sp = pytest.importorskip("sympy")

from moectl.data.builtin import load_builtin_domain  # noqa: E402
from moectl.data.builtin.mathgen import FAMILIES, generate_problems  # noqa: E402

x = sp.Symbol("x")


@pytest.fixture(scope="module")
def problems():
    return list(itertools.islice(generate_problems(11), 220))


def _zero(expr) -> bool:
    return sp.simplify(expr) == 0


def _check(problem) -> bool:
    """Verifies the structured answer against the structured problem, never the text."""
    g, v, fam = problem.given, problem.value, problem.family
    if "equations" in g:
        return all(_zero((lhs - rhs).subs(v)) for lhs, rhs in g["equations"])
    if fam == "quadratic_equation":
        poly, s = g["polynomial"], g["symbol"]
        return all(_zero(poly.subs(s, r)) for r in v) and set(v) == set(sp.solve(poly, s))
    if fam.startswith("derivative_"):
        return _zero(sp.diff(g["function"], x) - v)
    if fam == "indefinite_integral":
        return _zero(sp.diff(v, x) - g["integrand"])
    if fam == "definite_integral":
        return sp.integrate(g["integrand"], (x, *g["limits"])) == v
    if fam in ("expand", "factor"):
        return sp.expand(g["expression"] - v) == 0
    if fam == "simplify_rational":
        return _zero(g["expression"] - v)
    if fam == "evaluate_polynomial":
        return g["expression"].subs(x, g["point"]) == v
    if fam == "tangent_line":
        f, a = g["function"], g["point"]
        return v.subs(x, a) == f.subs(x, a) and sp.diff(v, x) == sp.diff(f, x).subs(x, a)
    if fam == "critical_points":
        d2 = sp.diff(g["function"], x, 2)
        return all(
            sp.diff(g["function"], x).subs(x, r) == 0
            and (d2.subs(x, r) < 0) == (kind == "local maximum")
            for r, kind in v.items()
        )
    if fam == "fraction_arithmetic":
        p, q = g["p"], g["q"]
        return v == {"+": p + q, "-": p - q, "*": p * q, "/": p / q}[g["op"]]
    if fam in ("gcd", "lcm", "euclid"):
        a, b = g["a"], g["b"]
        expected = {"gcd": math.gcd(a, b), "lcm": math.lcm(a, b)}
        return v == (expected["gcd"], expected["lcm"]) if fam == "euclid" else v == expected[fam]
    if fam == "arithmetic_sequence":
        a1, d, n = g["a1"], g["d"], g["n"]
        return v == (a1 + (n - 1) * d, Fraction(sum(a1 + i * d for i in range(n))))
    if fam == "geometric_sequence":
        a1, r, n = g["a1"], g["r"], g["n"]
        return v == (a1 * r ** (n - 1), Fraction(sum(a1 * r**i for i in range(n))))
    return False


def test_symbolic_answers_are_correct(problems) -> None:
    checked = [p for p, _ in problems if p.given]
    assert len(checked) >= 110
    wrong = [p.family for p in checked if not _check(p)]
    assert wrong == []
    families = {p.family for p in checked}
    assert {"linear_equation", "quadratic_equation", "linear_system"} <= families
    assert {"derivative_chain_rule", "indefinite_integral", "factor"} <= families


def test_answers_appear_in_the_documents(problems) -> None:
    for problem, doc in problems:
        assert problem.question in doc
        assert problem.answer in doc or (problem.answer_tex and problem.answer_tex in doc)
        assert all(step in doc for step in problem.steps)


def test_problems_are_varied(problems) -> None:
    sample = problems[:200]
    docs = [doc for _, doc in sample]
    assert len({p.family for p, _ in sample}) >= 30
    masked = {re.sub(r"-?\d+", "#", d.splitlines()[0]) for d in docs}
    assert len(masked) >= 120
    grams = [tuple(w[i : i + 5]) for d in docs for w in [d.split()] for i in range(len(w) - 4)]
    assert len(set(grams)) / len(grams) > 0.6
    latex = sum("$" in d and "\\" in d for d in docs)
    assert 40 <= latex <= 160
    assert any("<<" in d for d in docs) and any("####" in d for d in docs)
    assert any("\\boxed" in d for d in docs)


def test_every_family_generates(problems) -> None:
    import random

    from moectl.data.builtin.mathgen.base import Notation

    rng = random.Random(0)
    for family, _ in FAMILIES:
        for _ in range(5):
            problem = family(rng, Notation(rng))
            assert problem.question and problem.steps and problem.answer


def test_math_domain_is_deterministic_and_seeded() -> None:
    a = load_builtin_domain("math", 20_000, seed=4)
    b = load_builtin_domain("math", 20_000, seed=4)
    c = load_builtin_domain("math", 20_000, seed=5)
    assert a.texts == b.texts and a.texts != c.texts
    total = sum(len(t) for t in a.texts)
    assert total >= 20_000 and total - len(a.texts[-1]) < 20_000
    info = a.sources[0]
    assert info.kind == "builtin" and info.details["sympy_version"] == sp.__version__
    assert sum(info.details["families"].values()) == len(a.texts)


def test_math_is_identical_across_hash_seeds() -> None:
    code = (
        "from moectl.data.builtin import load_builtin_domain;"
        "print(load_builtin_domain('math', 8000, seed=9).sources[0].fingerprint)"
    )
    prints = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        prints.add(out.stdout.strip())
    assert prints == {load_builtin_domain("math", 8000, seed=9).sources[0].fingerprint}
