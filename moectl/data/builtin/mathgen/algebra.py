"""Equations built backwards from chosen solutions, so every answer is exact and checkable."""

from __future__ import annotations

import random

import sympy as sp

from moectl.data.builtin.mathgen import words
from moectl.data.builtin.mathgen.base import Notation, Problem, tex

VARIABLES = ("x", "y", "t", "n", "k", "z", "a", "m")


def _nonzero(rng: random.Random, low: int, high: int) -> int:
    return rng.choice([v for v in range(low, high + 1) if v != 0])


def _solution(rng: random.Random) -> sp.Rational:
    if rng.random() < 0.75:
        return sp.Integer(rng.randint(-12, 12))
    return sp.Rational(_nonzero(rng, -9, 9), rng.choice([2, 3, 4, 5]))


def linear(rng: random.Random, nt: Notation) -> Problem:
    v = sp.Symbol(rng.choice(VARIABLES))
    root = _solution(rng)
    a = _nonzero(rng, -9, 9)
    c = rng.choice([w for w in range(-6, 7) if w != a])
    b = rng.randint(-20, 20)
    if rng.random() < 0.4 and abs(a) > 1:
        p = _nonzero(rng, -6, 6)
        lhs = sp.Mul(a, v + p, evaluate=False)
        expanded = a * v + a * p
    else:
        lhs = a * v + b
        expanded = lhs
    rhs = sp.expand(expanded.subs(v, root) - c * root + c * v)
    question = rng.choice(
        [
            f"Solve for {nt.ex(v)}: {nt.eq(lhs, rhs)}.",
            f"Find {nt.ex(v)} if {nt.eq(lhs, rhs)}.",
            f"What value of {nt.ex(v)} satisfies {nt.eq(lhs, rhs)}?",
            f"Solve the equation {nt.eq(lhs, rhs)}.",
        ]
    )
    steps = []
    if lhs != expanded:
        steps.append(f"Expand the left side: {nt.eq(expanded, rhs)}.")
    var_part = rhs.coeff(v) * v
    const_part = rhs - var_part
    left = sp.expand(expanded - var_part)
    if var_part != 0:
        verb = "Subtract" if rhs.coeff(v) > 0 else "Add"
        steps.append(
            f"{verb} {nt.ex(abs(rhs.coeff(v)) * v)} on both sides: {nt.eq(left, const_part)}."
        )
    coef = left.coeff(v)
    const = left - coef * v
    if const != 0:
        steps.append(f"Move the constant: {nt.eq(coef * v, const_part - const)}.")
    if coef == 1:
        steps.append(f"So {nt.eq(v, root)}.")
    else:
        steps.append(f"Divide both sides by {nt.ex(coef)}: {nt.eq(v, root)}.")
    steps.append(
        f"Check: substituting gives {nt.ex(expanded.subs(v, root))} on the left and "
        f"{nt.ex(rhs.subs(v, root))} on the right."
    )
    return Problem(
        "linear_equation",
        question,
        steps,
        nt.eq(v, root),
        tex(root),
        value={v: root},
        given={"equations": [(expanded, rhs)], "symbols": [v]},
    )


def quadratic(rng: random.Random, nt: Notation) -> Problem:
    v = sp.Symbol(rng.choice(VARIABLES[:4]))
    if rng.random() < 0.6:
        r1, r2 = rng.randint(-10, 10), rng.randint(-10, 10)
        lead = rng.choice([1, 1, 1, 2, 3, -1])
        poly = sp.expand(lead * (v - r1) * (v - r2))
        roots = sorted({sp.Integer(r1), sp.Integer(r2)})
        factored = (
            sp.Mul(lead, v - r1, v - r2, evaluate=False) if lead != 1 else (v - r1) * (v - r2)
        )
        steps = [
            f"Factor the left side: {nt.eq(factored, 0)}.",
            "A product is zero when one of its factors is zero, so "
            + " or ".join(nt.eq(v, r) for r in roots)
            + ".",
        ]
        if lead == 1:
            steps.insert(
                0,
                f"Look for two numbers whose product is {nt.ex(r1 * r2)} and whose "
                f"sum is {nt.ex(r1 + r2)}: they are {r1} and {r2}.",
            )
    else:
        a = rng.choice([1, 1, 2, 3, -2])
        while True:
            b, c = rng.randint(-10, 10), rng.randint(-12, 12)
            disc = b * b - 4 * a * c
            if disc > 0 and sp.sqrt(disc).is_Rational is False:
                break
        poly = a * v**2 + b * v + c
        root_expr = [(-b - sp.sqrt(disc)) / (2 * a), (-b + sp.sqrt(disc)) / (2 * a)]
        roots = [sp.radsimp(r) for r in root_expr]
        steps = [
            f"Use the quadratic formula with a = {a}, b = {b}, c = {c}.",
            "The discriminant is "
            + nt.m(f"b^2 - 4ac = ({b})^2 - 4({a})({c}) = {disc}", f"b^2 - 4ac = {disc}")
            + ", which is positive, so there are two real roots.",
            "So "
            + nt.m(
                rf"{tex(v)} = \frac{{{-b} \pm \sqrt{{{disc}}}}}{{{2 * a}}}",
                f"{v} = ({-b} ± sqrt({disc}))/{2 * a}",
            )
            + ".",
            "Simplified: " + " or ".join(nt.eq(v, r) for r in roots) + ".",
        ]
    question = rng.choice(
        [
            f"Solve {nt.eq(poly, 0)}.",
            f"Find all solutions of {nt.eq(poly, 0)}.",
            f"For which values of {nt.ex(v)} is {nt.eq(poly, 0)}?",
            f"Find the roots of the quadratic {nt.ex(poly)}.",
        ]
    )
    answer = ", ".join(nt.eq(v, r) for r in roots)
    return Problem(
        "quadratic_equation",
        question,
        steps,
        answer,
        ", ".join(tex(r) for r in roots),
        value=roots,
        given={"polynomial": poly, "symbol": v},
    )


def system(rng: random.Random, nt: Notation) -> Problem:
    x, y = sp.symbols(rng.choice(["x y", "a b", "m n", "p q", "u v"]))
    x0, y0 = sp.Integer(rng.randint(-9, 9)), sp.Integer(rng.randint(-9, 9))
    while True:
        a1, b1, a2, b2 = (_nonzero(rng, -7, 7) for _ in range(4))
        if a1 * b2 - a2 * b1 != 0:
            break
    e1, e2 = a1 * x + b1 * y, a2 * x + b2 * y
    c1, c2 = a1 * x0 + b1 * y0, a2 * x0 + b2 * y0
    question = rng.choice(
        [
            f"Solve the system {nt.eq(e1, c1)} and {nt.eq(e2, c2)}.",
            f"Find {nt.ex(x)} and {nt.ex(y)} such that {nt.eq(e1, c1)} and {nt.eq(e2, c2)}.",
            f"Two numbers {nt.ex(x)} and {nt.ex(y)} satisfy {nt.eq(e1, c1)} and {nt.eq(e2, c2)}. "
            "What are they?",
        ]
    )
    m1, m2 = a2, a1
    s1, s2 = m1 * a1 * x + m1 * b1 * y, m2 * a2 * x + m2 * b2 * y
    diff_y = (m1 * b1 - m2 * b2) * y
    diff_c = m1 * c1 - m2 * c2
    steps = [
        f"Eliminate {nt.ex(x)}: multiply the first equation by {m1} and the second by {m2}: "
        f"{nt.eq(s1, m1 * c1)} and {nt.eq(s2, m2 * c2)}.",
        f"Subtract the second from the first: {nt.eq(diff_y, diff_c)}, so {nt.eq(y, y0)}.",
        f"Substitute into the first equation: {nt.eq(a1 * x + b1 * y0, c1)}, "
        f"so {nt.eq(a1 * x, c1 - b1 * y0)} and {nt.eq(x, x0)}.",
    ]
    answer = f"{nt.eq(x, x0)}, {nt.eq(y, y0)}"
    return Problem(
        "linear_system",
        question,
        steps,
        answer,
        f"({x0}, {y0})",
        value={x: x0, y: y0},
        given={"equations": [(e1, c1), (e2, c2)], "symbols": [x, y]},
    )


def number_puzzle(rng: random.Random, nt: Notation) -> Problem:
    n = sp.Symbol("n")
    kind = rng.randrange(3)
    if kind == 0:
        first = rng.randint(-20, 60)
        count = rng.choice([3, 4, 5])
        terms = [n + i for i in range(count)]
        total = sum(first + i for i in range(count))
        lhs = sp.Add(*terms)
        question = rng.choice(
            [
                f"The sum of {count} consecutive integers is {total}. What is the smallest?",
                f"{count} consecutive whole numbers add up to {total}. Find the first one.",
            ]
        )
        steps = [
            f"Call the smallest {nt.ex(n)}; the numbers are "
            + ", ".join(nt.ex(t) for t in terms)
            + ".",
            f"Their sum is {nt.eq(lhs, total)}.",
            f"Subtract {count * (count - 1) // 2}: {nt.eq(count * n, total - count * (count - 1) // 2)}.",  # noqa: E501
            f"Divide by {count}: {nt.eq(n, first)}.",
        ]
        eq, root = (lhs, total), sp.Integer(first)
    elif kind == 1:
        root = sp.Integer(rng.randint(2, 40))
        mult, add = rng.randint(2, 9), rng.randint(1, 40)
        result = mult * root + add
        question = rng.choice(
            [
                f"When a number is multiplied by {mult} and {add} is added, the result is "
                f"{result}. What is the number?",
                f"{mult} times a number, plus {add}, equals {result}. Find the number.",
                f"I think of a number, multiply it by {mult} and add {add}. I get {result}. "
                "What was my number?",
            ]
        )
        steps = [
            f"Let the number be {nt.ex(n)}: {nt.eq(mult * n + add, result)}.",
            f"Subtract {add}: {nt.eq(mult * n, result - add)}.",
            f"Divide by {mult}: {nt.eq(n, root)}.",
        ]
        eq = (mult * n + add, result)
    else:
        big, small = sorted(rng.sample(range(1, 80), 2), reverse=True)
        total, gap = big + small, big - small
        question = rng.choice(
            [
                f"Two numbers add up to {total} and differ by {gap}. What is the larger number?",
                f"The sum of two numbers is {total} and their difference is {gap}. "
                "Find the larger.",
            ]
        )
        steps = [
            f"Let the larger be {nt.ex(n)}; the smaller is {nt.ex(n - gap)}.",
            f"Then {nt.eq(n + (n - gap), total)}, so {nt.eq(2 * n, total + gap)}.",
            f"Divide by 2: {nt.eq(n, big)}; the smaller number is {small}.",
        ]
        eq, root = (2 * n - gap, total), sp.Integer(big)
    return Problem(
        "number_puzzle",
        question,
        steps,
        str(root),
        value={n: root},
        given={"equations": [eq], "symbols": [n]},
    )


def ages(rng: random.Random, nt: Notation) -> Problem:
    older, younger = words.pick_names(rng, 2)
    a = sp.Symbol("a")
    young_age, gap = rng.randint(3, 40), rng.randint(2, 30)
    years = rng.randint(2, 15)
    total_then = 2 * young_age + gap + 2 * years
    question = (
        f"{older} is {gap} years older than {younger}. In {years} years, the sum of their ages "
        f"will be {total_then}. "
        + rng.choice([f"How old is {younger} now?", f"What is {younger}'s age today?"])
    )
    lhs = (a + years) + (a + gap + years)
    steps = [
        f"Let {younger}'s age now be {nt.ex(a)}, so {older} is {nt.ex(a + gap)}.",
        f"In {years} years: {nt.eq(sp.Add(a + years, a + gap + years, evaluate=False), total_then)}.",  # noqa: E501
        f"Simplify: {nt.eq(lhs, total_then)}, so {nt.eq(2 * a, total_then - gap - 2 * years)}.",
        f"Divide by 2: {nt.eq(a, young_age)}. {older} is {young_age + gap}.",
    ]
    return Problem(
        "ages",
        question,
        steps,
        str(young_age),
        value={a: sp.Integer(young_age)},
        given={"equations": [(lhs, total_then)], "symbols": [a]},
    )
