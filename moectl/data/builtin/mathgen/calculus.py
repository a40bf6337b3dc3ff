"""Derivatives and integrals with rule-by-rule working; antiderivatives are built from known rules.

sympy's `integrate` is far too slow for a corpus generator, so integrands are drawn term by term
from a table whose antiderivatives are exact; sympy differentiates, substitutes and prints.
"""

from __future__ import annotations

import random

import sympy as sp

from moectl.data.builtin.mathgen.base import Notation, Problem, tex

x = sp.Symbol("x")
PRIME = "'"


def _coef(rng: random.Random) -> int:
    return rng.choice([-7, -5, -4, -3, -2, -1, 1, 1, 2, 2, 3, 4, 5, 6, 8, 9])


def _fname(rng: random.Random) -> str:
    return rng.choice(["f", "g", "h", "y"])


def derivative_power(rng: random.Random, nt: Notation) -> Problem:
    powers = rng.sample([-2, -1, 1, 2, 3, 4, 5, 6, sp.Rational(1, 2), sp.Rational(3, 2)], 3)
    coeffs = [_coef(rng) for _ in powers]
    terms = [c * x**p for c, p in zip(coeffs, powers, strict=True)]
    terms.append(sp.Integer(rng.randint(-9, 9)))
    f = sp.Add(*terms)
    name = _fname(rng)
    ddx = nt.m(r"\frac{d}{dx}", "d/dx")
    question = rng.choice(
        [
            f"Differentiate {nt.eq(sp.Symbol(name + '(x)'), f)}.",
            f"Find the derivative of {nt.ex(f)} with respect to x.",
            f"Compute {ddx} of {nt.ex(f)}.",
            f"What is the derivative of {nt.ex(f)}?",
        ]
    )
    rule = nt.m(r"\frac{d}{dx} x^n = n x^{n-1}", "d/dx x^n = n x^(n-1)")
    steps = [f"Apply the power rule {rule} to each term:"]
    derivatives = [c * p * x ** (p - 1) for c, p in zip(coeffs, powers, strict=True)]
    steps += [
        f"the derivative of {nt.ex(t)} is {nt.ex(d)}"
        for t, d in zip(terms, [*derivatives, sp.Integer(0)], strict=True)
    ]
    result = sp.Add(*derivatives)
    steps.append(f"Altogether, {nt.eq(sp.Symbol(name + PRIME + '(x)'), result)}.")
    return Problem.expression(
        "derivative_power_rule", question, steps, nt, result, given={"function": f}
    )


def _inner(rng: random.Random) -> sp.Expr:
    a, b = _coef(rng), rng.randint(-6, 6)
    return a * x + b if rng.random() < 0.6 else a * x**2 + b


def derivative_chain(rng: random.Random, nt: Notation) -> Problem:
    u = sp.Symbol("u")
    inner = _inner(rng)
    outer = rng.choice(
        [sp.sin(u), sp.cos(u), sp.exp(u), sp.log(u), sp.sqrt(u), u ** rng.randint(3, 7)]
    )
    f = outer.subs(u, inner)
    d_outer, d_inner = sp.diff(outer, u), sp.diff(inner, x)
    result = sp.diff(f, x)
    question = rng.choice(
        [
            f"Differentiate {nt.ex(f)}.",
            f"Find the derivative of {nt.ex(f)}.",
            f"Use the chain rule to differentiate {nt.ex(f)}.",
        ]
    )
    steps = [
        f"Write the function as {nt.ex(outer)} with {nt.eq(u, inner)}.",
        f"The outer derivative is {nt.ex(d_outer)} and the inner derivative is {nt.ex(d_inner)}.",
        "By the chain rule, multiply them: "
        + nt.eq(sp.Mul(d_outer.subs(u, inner), d_inner, evaluate=False), result)
        + ".",
    ]
    return Problem.expression(
        "derivative_chain_rule", question, steps, nt, result, given={"function": f}
    )


def derivative_product(rng: random.Random, nt: Notation) -> Problem:
    k = rng.choice([1, 2, 3, -1, -2, 4])
    first = _coef(rng) * x ** rng.randint(1, 4) + rng.randint(-5, 5)
    second = rng.choice([sp.sin(k * x), sp.cos(k * x), sp.exp(k * x), sp.log(x)])
    quotient = rng.random() < 0.35
    if quotient:
        f = first / (x**2 + rng.randint(1, 9))
        num, den = sp.fraction(f)
        dn, dd = sp.diff(num, x), sp.diff(den, x)
        result = sp.expand(dn * den - num * dd) / den**2
        steps = [
            f"Use the quotient rule with numerator {nt.ex(num)} and denominator {nt.ex(den)}.",
            f"Their derivatives are {nt.ex(dn)} and {nt.ex(dd)}.",
            "So the derivative is "
            + nt.m(r"\frac{u'v - uv'}{v^2}", "(u'v - uv')/v^2")
            + f" = {nt.ex(result)}.",
        ]
        family = "derivative_quotient_rule"
    else:
        f = first * second
        d1, d2 = sp.diff(first, x), sp.diff(second, x)
        result = sp.expand(d1 * second + first * d2)
        steps = [
            f"Use the product rule with u = {nt.ex(first)} and v = {nt.ex(second)}.",
            f"Then u' = {nt.ex(d1)} and v' = {nt.ex(d2)}.",
            f"So (uv)' = u'v + uv' = {nt.ex(result)}.",
        ]
        family = "derivative_product_rule"
    question = rng.choice(
        [
            f"Differentiate {nt.ex(f)} with respect to x.",
            f"Find {nt.ex(sp.Derivative(f, x))}.",
            f"Compute the derivative of {nt.ex(f)}.",
        ]
    )
    return Problem.expression(family, question, steps, nt, result, given={"function": f})


def _antiderivative_term(rng: random.Random) -> tuple[sp.Expr, sp.Expr, str]:
    """(integrand term, antiderivative, the rule used)."""
    a = _coef(rng)
    kind = rng.choice(["power", "power", "power", "exp", "sin", "cos", "recip"])
    if kind == "power":
        n = rng.randint(0, 5)
        return a * x**n, sp.Rational(a, n + 1) * x ** (n + 1), "the power rule"
    k = rng.choice([1, 2, 3, -1, 4])
    if kind == "exp":
        return a * sp.exp(k * x), sp.Rational(a, k) * sp.exp(k * x), "the exponential rule"
    if kind == "sin":
        return a * sp.sin(k * x), sp.Rational(-a, k) * sp.cos(k * x), "the sine rule"
    if kind == "cos":
        return a * sp.cos(k * x), sp.Rational(a, k) * sp.sin(k * x), "the cosine rule"
    return a / x, a * sp.log(x), "the rule for 1/x"


def integral(rng: random.Random, nt: Notation) -> Problem:
    parts = [_antiderivative_term(rng) for _ in range(rng.randint(2, 3))]
    seen: dict[str, tuple[sp.Expr, sp.Expr, str]] = {}
    for part in parts:
        seen.setdefault(sp.srepr(part[0].as_independent(x)[1]), part)
    parts = list(seen.values())
    integrand = sp.Add(*(p[0] for p in parts))
    anti = sp.Add(*(p[1] for p in parts))
    c = sp.Symbol("C")
    integral_expr = sp.Integral(integrand, x)
    question = rng.choice(
        [
            f"Find {nt.ex(integral_expr)}.",
            f"Compute the indefinite integral of {nt.ex(integrand)}.",
            f"Find an antiderivative of {nt.ex(integrand)}.",
        ]
    )
    steps = ["Integrate term by term:"]
    steps += [f"{nt.ex(p[0])} integrates to {nt.ex(p[1])} by {p[2]}" for p in parts]
    steps.append(f"Adding the constant of integration: {nt.eq(integral_expr, anti + c)}.")
    return Problem(
        "indefinite_integral",
        question,
        steps,
        nt.ex(anti + c),
        tex(anti + c),
        value=anti,
        given={"integrand": integrand},
    )


def definite_integral(rng: random.Random, nt: Notation) -> Problem:
    degree = rng.randint(1, 3)
    integrand = sp.Add(*(rng.randint(-6, 6) * x**i for i in range(degree))) + _coef(rng) * x**degree
    lo = rng.randint(-3, 2)
    hi = lo + rng.randint(1, 4)
    anti = sp.Add(*(c / (i + 1) * x ** (i + 1) for i, c in _poly_terms(integrand)))
    at_hi, at_lo = anti.subs(x, hi), anti.subs(x, lo)
    result = at_hi - at_lo
    integral_expr = sp.Integral(integrand, (x, lo, hi))
    question = rng.choice(
        [
            f"Evaluate {nt.ex(integral_expr)}.",
            f"Compute the integral of {nt.ex(integrand)} from {lo} to {hi}.",
            f"Find the area under {nt.ex(integrand)} between x = {lo} and "
            f"x = {hi}, counted with sign.",
        ]
    )
    steps = [
        f"An antiderivative is {nt.eq(sp.Symbol('F(x)'), anti)}.",
        f"At the upper limit: F({hi}) = {nt.ex(at_hi)}. At the lower limit: F({lo}) = "
        f"{nt.ex(at_lo)}.",
        f"The integral is F({hi}) - F({lo}) = {nt.ex(result)}.",
    ]
    return Problem.expression(
        "definite_integral",
        question,
        steps,
        nt,
        result,
        given={"integrand": integrand, "limits": (lo, hi)},
    )


def _poly_terms(poly: sp.Expr) -> list[tuple[int, sp.Expr]]:
    coeffs = sp.Poly(poly, x).all_coeffs()[::-1]
    return [(i, sp.Integer(c)) for i, c in enumerate(coeffs) if c != 0]


def tangent_line(rng: random.Random, nt: Notation) -> Problem:
    f = _coef(rng) * x ** rng.randint(2, 3) + rng.randint(-6, 6) * x + rng.randint(-9, 9)
    a = rng.randint(-3, 3)
    fa, slope = f.subs(x, a), sp.diff(f, x).subs(x, a)
    y = sp.Symbol("y")
    line = sp.expand(slope * (x - a) + fa)
    question = rng.choice(
        [
            f"Find the equation of the tangent line to {nt.eq(y, f)} at x = {a}.",
            f"What line touches the curve {nt.eq(y, f)} at the point where x = {a}?",
        ]
    )
    steps = [
        f"The point is ({a}, {fa}), since f({a}) = {nt.ex(fa)}.",
        f"The derivative is {nt.ex(sp.diff(f, x))}, so the slope at x = {a} is {nt.ex(slope)}.",
        f"Point-slope form: y - ({fa}) = {slope}(x - ({a})), which gives {nt.eq(y, line)}.",
    ]
    return Problem(
        "tangent_line",
        question,
        steps,
        nt.eq(y, line),
        tex(line),
        value=line,
        given={"function": f, "point": a},
    )


def critical_points(rng: random.Random, nt: Notation) -> Problem:
    r1, r2 = sorted(rng.sample(range(-5, 6), 2))
    m = rng.choice([1, 1, 2, -1])
    f = sp.expand(m * (2 * x**3 - 3 * (r1 + r2) * x**2 + 6 * r1 * r2 * x)) + rng.randint(-9, 9)
    d1 = sp.diff(f, x)
    d2 = sp.diff(d1, x)
    kinds = {r: "local maximum" if d2.subs(x, r) < 0 else "local minimum" for r in (r1, r2)}
    question = rng.choice(
        [
            f"Find the local extrema of {nt.eq(sp.Symbol('f(x)'), f)}.",
            f"Where does {nt.ex(f)} have a local maximum or minimum?",
            f"Find and classify the critical points of {nt.ex(f)}.",
        ]
    )
    steps = [
        f"The derivative is {nt.ex(d1)} = {nt.ex(sp.Mul(6 * m, x - r1, x - r2, evaluate=False))}.",
        f"It is zero at x = {r1} and x = {r2}.",
        f"The second derivative is {nt.ex(d2)}.",
    ]
    steps += [
        f"At x = {r}, f'' = {d2.subs(x, r)}, so it is a {kinds[r]} with value {f.subs(x, r)}."
        for r in (r1, r2)
    ]
    answer = "; ".join(f"{kinds[r]} at x = {r}" for r in (r1, r2))
    return Problem(
        "critical_points",
        question,
        steps,
        answer,
        value={r1: kinds[r1], r2: kinds[r2]},
        given={"function": f},
    )
