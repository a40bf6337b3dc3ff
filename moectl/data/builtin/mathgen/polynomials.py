"""Expanding, factoring, simplifying and evaluating polynomials, each step computed by sympy."""

from __future__ import annotations

import random

import sympy as sp

from moectl.data.builtin.mathgen.base import Notation, Problem, plain, tex

x = sp.Symbol("x")


def _binomial(rng: random.Random, v: sp.Symbol) -> sp.Expr:
    return rng.choice([1, 1, 2, 3, -1, 4, 5]) * v + rng.choice(
        [-9, -7, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 8]
    )


def expand(rng: random.Random, nt: Notation) -> Problem:
    v = sp.Symbol(rng.choice("xyt"))
    kind = rng.randrange(3)
    if kind == 0:
        f, g = _binomial(rng, v), _binomial(rng, v)
        product = sp.Mul(f, g, evaluate=False)
        lead, const = f.coeff(v) * v, f - f.coeff(v) * v
        partial = [sp.expand(lead * g), sp.expand(const * g)]
        steps = [
            "Distribute each term of the first factor: "
            + nt.m(
                f"{tex(lead)}({tex(g)}) + ({tex(const)})({tex(g)})",
                f"{plain(lead)}({plain(g)}) + ({plain(const)})({plain(g)})",
            )
            + ".",
            f"This gives {nt.ex(partial[0])} and {nt.ex(partial[1])}.",
        ]
    elif kind == 1:
        f = _binomial(rng, v)
        power = rng.choice([2, 2, 3])
        product = sp.Pow(f, power, evaluate=False)
        a, b = f.coeff(v) * v, f - f.coeff(v) * v
        if power == 2:
            steps = [
                "Use "
                + nt.m("(a + b)^2 = a^2 + 2ab + b^2", "(a + b)^2 = a^2 + 2ab + b^2")
                + f" with a = {nt.ex(a)} and b = {nt.ex(b)}.",
                f"The terms are {nt.ex(sp.expand(a**2))}, {nt.ex(sp.expand(2 * a * b))} and "
                f"{nt.ex(b**2)}.",
            ]
        else:
            steps = [
                "Use "
                + nt.m(
                    "(a + b)^3 = a^3 + 3a^2b + 3ab^2 + b^3", "(a + b)^3 = a^3 + 3a^2b + 3ab^2 + b^3"
                )
                + f" with a = {nt.ex(a)} and b = {nt.ex(b)}.",
                "The terms are "
                + ", ".join(nt.ex(sp.expand(t)) for t in (a**3, 3 * a**2 * b, 3 * a * b**2, b**3))
                + ".",
            ]
    else:
        f, g = _binomial(rng, v), rng.choice([v**2, 2 * v**2, -(v**2)]) + _binomial(rng, v)
        product = sp.Mul(f, g, evaluate=False)
        rows = [sp.expand(t * g) for t in sp.Add.make_args(f)]
        steps = [
            "Multiply every term of the first factor by the second factor: "
            + ", ".join(nt.ex(r) for r in rows)
            + "."
        ]
    result = sp.expand(product)
    steps.append(f"Combine like terms: {nt.eq(product, result)}.")
    question = rng.choice(
        [
            f"Expand {nt.ex(product)}.",
            f"Multiply out {nt.ex(product)}.",
            f"Write {nt.ex(product)} as a polynomial in standard form.",
        ]
    )
    return Problem.expression("expand", question, steps, nt, result, given={"expression": product})


def factor(rng: random.Random, nt: Notation) -> Problem:
    v = sp.Symbol(rng.choice("xyn"))
    kind = rng.randrange(3)
    if kind == 0:
        r1, r2 = rng.randint(-9, 9), rng.randint(-9, 9)
        result = (v - r1) * (v - r2)
        poly = sp.expand(result)
        steps = [
            f"We need two numbers that multiply to {r1 * r2} and add to {-(r1 + r2)}.",
            f"They are {-r1} and {-r2}.",
        ]
    elif kind == 1:
        a, b = rng.randint(1, 6), rng.randint(1, 9)
        result = (a * v - b) * (a * v + b)
        poly = sp.expand(result)
        steps = [
            "This is a difference of squares, "
            + nt.m(r"p^2 - q^2 = (p - q)(p + q)", "p^2 - q^2 = (p - q)(p + q)")
            + f", with p = {nt.ex(a * v)} and q = {b}."
        ]
    else:
        k = rng.choice([2, 3, 4, 5, -2, -3])
        r1, r2 = rng.randint(-6, 6), rng.randint(-6, 6)
        inner = sp.expand((v - r1) * (v - r2))
        common = k * v if rng.random() < 0.5 else sp.Integer(k)
        poly = sp.expand(common * inner)
        result = sp.Mul(common, (v - r1) * (v - r2))
        steps = [
            f"Take out the common factor {nt.ex(common)}: {nt.eq(poly, sp.Mul(common, inner, evaluate=False))}.",  # noqa: E501
            f"Then factor {nt.ex(inner)} into {nt.ex((v - r1) * (v - r2))}.",
        ]
    steps.append(f"So {nt.eq(poly, result)}.")
    question = rng.choice(
        [
            f"Factor {nt.ex(poly)}.",
            f"Factor completely: {nt.ex(poly)}.",
            f"Write {nt.ex(poly)} as a product of factors.",
        ]
    )
    return Problem.expression("factor", question, steps, nt, result, given={"expression": poly})


def simplify_rational(rng: random.Random, nt: Notation) -> Problem:
    v = sp.Symbol(rng.choice("xab"))
    r, s = rng.randint(-8, 8), rng.randint(-8, 8)
    while s == r:
        s = rng.randint(-8, 8)
    k, m = rng.choice([1, 1, 2, 3]), rng.choice([1, 1, 2])
    num = k * v**2 - k * (r + s) * v + k * r * s
    den = m * v - m * r
    expr = sp.Mul(num, sp.Pow(den, -1), evaluate=False)
    result = sp.Rational(k, m) * v - sp.Rational(k * s, m)
    den_factor = sp.Mul(m, v - r, evaluate=False) if m != 1 else v - r
    steps = [
        f"Factor the numerator: {nt.eq(num, sp.Mul(k, v - r, v - s, evaluate=False) if k != 1 else (v - r) * (v - s))}.",  # noqa: E501
        f"The denominator is {nt.ex(den_factor)}.",
        f"Cancel the common factor {nt.ex(v - r)} (valid for "
        + nt.m(rf"{tex(v)} \neq {r}", f"{v} != {r}")
        + ").",
        f"The result is {nt.ex(result)}.",
    ]
    question = rng.choice(
        [
            f"Simplify {nt.ex(expr)}.",
            f"Reduce the rational expression {nt.ex(expr)} to lowest terms.",
        ]
    )
    return Problem.expression(
        "simplify_rational", question, steps, nt, result, given={"expression": expr, "excluded": r}
    )


def evaluate(rng: random.Random, nt: Notation) -> Problem:
    name = rng.choice("fghp")
    degree = rng.randint(2, 4)
    coeffs = [rng.randint(-9, 9) for _ in range(degree)] + [rng.choice([1, 2, 3, -1, -2, 4])]
    poly = sum(c * x**i for i, c in enumerate(coeffs))
    point = rng.randint(-5, 5)
    terms = [(c, i) for i, c in enumerate(coeffs) if c != 0][::-1]
    values = [c * point**i for c, i in terms]
    result = sum(values)
    fx = sp.Function(name)(x)
    question = rng.choice(
        [
            f"Let {nt.eq(fx, poly)}. Find {nt.ex(sp.Function(name)(point))}.",
            f"Evaluate {nt.ex(poly)} at {nt.eq(x, point)}.",
        ]
    )
    steps = [
        "Evaluate each term: "
        + ", ".join(
            nt.m(rf"{tex(c * x**i)} \to {val}", f"{plain(c * x**i)} -> {val}")
            for (c, i), val in zip(terms, values, strict=True)
        )
        + ".",
        f"Add them: {' + '.join(f'({v})' if v < 0 else str(v) for v in values)} = {result}.",
    ]
    return Problem(
        "evaluate_polynomial",
        question,
        steps,
        str(result),
        value=sp.Integer(result),
        given={"expression": poly, "point": point},
    )
