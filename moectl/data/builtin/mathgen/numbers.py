"""Number work: fractions, percentages, divisibility, sequences, units, order of operations."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction

import sympy as sp

from moectl.data.builtin.mathgen.base import Notation, Problem, decimal, frac_plain, frac_tex


def _fraction(rng: random.Random) -> Fraction:
    den = rng.randint(2, 12)
    return Fraction(rng.randint(1, 2 * den), den)


def fractions_(rng: random.Random, nt: Notation) -> Problem:
    p, q = _fraction(rng), _fraction(rng)
    op = rng.choice(["+", "-", "*", "/"])
    words = {"+": "sum", "-": "difference", "*": "product", "/": "quotient"}
    tex_op = {"+": "+", "-": "-", "*": r"\times", "/": r"\div"}[op]
    txt_op = {"+": "+", "-": "-", "*": "×", "/": "÷"}[op]
    expr = nt.m(
        f"{frac_tex(p)} {tex_op} {frac_tex(q)}", f"{frac_plain(p)} {txt_op} {frac_plain(q)}"
    )
    question = rng.choice(
        [
            f"Compute {expr}.",
            f"Simplify {expr}.",
            f"What is {expr}? Give the answer in lowest terms.",
            f"Find the {words[op]} {expr} as a reduced fraction.",
        ]
    )
    steps: list[str] = []
    if op in "+-":
        lcd = math.lcm(p.denominator, q.denominator)
        a, b = p.numerator * (lcd // p.denominator), q.numerator * (lcd // q.denominator)
        raw = a + b if op == "+" else a - b
        steps.append(
            f"The least common denominator of {p.denominator} and {q.denominator} is {lcd}."
        )
        steps.append(
            "Rewrite: "
            + nt.m(
                rf"\frac{{{a}}}{{{lcd}}} {op} \frac{{{b}}}{{{lcd}}} = \frac{{{raw}}}{{{lcd}}}",
                f"{a}/{lcd} {op} {b}/{lcd} = {raw}/{lcd}",
            )
            + "."
        )
        num, den = raw, lcd
        result = p + q if op == "+" else p - q
    else:
        if op == "/":
            recip = 1 / q
            steps.append(
                "Dividing is multiplying by the reciprocal: "
                + nt.m(
                    rf"{frac_tex(p)} \times {frac_tex(recip)}",
                    f"{frac_plain(p)} × {frac_plain(recip)}",
                )
                + "."
            )
            q = recip
        num, den = p.numerator * q.numerator, p.denominator * q.denominator
        steps.append(
            "Multiply numerators and denominators: "
            + nt.m(
                rf"\frac{{{p.numerator} \cdot {q.numerator}}}{{{p.denominator} \cdot {q.denominator}}} = \frac{{{num}}}{{{den}}}",  # noqa: E501
                f"({p.numerator}*{q.numerator})/({p.denominator}*{q.denominator}) = {num}/{den}",
            )
            + "."
        )
        result = p * q
    g = math.gcd(num, den)
    if g > 1:
        steps.append(f"Divide numerator and denominator by their GCD {g}: {nt.num(result)}.")
    if result.denominator != 1 and abs(result) > 1 and rng.random() < 0.5:
        whole = int(result)
        rest = abs(result - whole)
        steps.append(f"As a mixed number that is {whole} and {nt.num(rest)}.")
    return Problem(
        "fraction_arithmetic",
        question,
        steps,
        nt.num(result),
        frac_tex(result),
        value=result,
        given={"p": p, "q": q if op != "/" else 1 / q, "op": op},
    )


def percent(rng: random.Random, nt: Notation) -> Problem:
    kind = rng.randrange(3)
    if kind == 0:
        pct = rng.choice([5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 60, 75, 80, 120, 150])
        base = rng.randrange(20, 2001, 20)
        value = Fraction(pct * base, 100)
        question = rng.choice(
            [
                f"What is {pct}% of {base}?",
                f"Find {pct} percent of {base}.",
                f"Calculate {pct}% of {base}.",
            ]
        )
        steps = [
            f"{pct}% means " + nt.m(rf"\frac{{{pct}}}{{100}}", f"{pct}/100") + ".",
            f"So {nt.calc_line([pct, 100, base], ['/', '*'], value)}.",
        ]
        return Problem("percent_of", question, steps, decimal(value), value=value)
    if kind == 1:
        whole = rng.choice([20, 25, 40, 50, 80, 200, 250, 400, 500])
        part = rng.randint(1, whole)
        value = Fraction(part * 100, whole)
        question = rng.choice(
            [f"{part} is what percent of {whole}?", f"What percentage of {whole} is {part}?"]
        )
        steps = [
            f"Divide the part by the whole: {nt.calc_line([part, whole], ['/'], Fraction(part, whole))}.",  # noqa: E501
            f"Multiply by 100: {nt.calc_line([Fraction(part, whole), 100], ['*'], value)}%.",
        ]
        return Problem("percent_what", question, steps, f"{decimal(value)}%", value=value)
    old = rng.randrange(20, 1001, 20)
    change = rng.choice([-50, -40, -25, -20, -15, -10, -5, 5, 10, 15, 20, 25, 30, 50, 75, 100])
    new = old * (100 + change) // 100
    thing = rng.choice(
        [
            "The price of a bus pass",
            "A town's population",
            "The rent",
            "A company's revenue",
            "The number of visitors",
        ]
    )
    question = f"{thing} changed from {old} to {new}. What was the percentage " + rng.choice(
        ["change?", "increase or decrease?"]
    )
    steps = [
        f"Change: {nt.calc_line([new, old], ['-'], new - old)}.",
        f"Relative change: {nt.calc_line([new - old, old, 100], ['/', '*'], change)}%.",
        f"That is a {abs(change)}% {'increase' if change > 0 else 'decrease'}.",
    ]
    return Problem("percent_change", question, steps, f"{change}%", value=Fraction(change))


def _factorization(n: int, nt: Notation) -> str:
    parts = sorted(sp.factorint(n).items())
    tex = r" \cdot ".join(f"{p}^{{{e}}}" if e > 1 else str(p) for p, e in parts)
    txt = " * ".join(f"{p}^{e}" if e > 1 else str(p) for p, e in parts)
    return nt.m(f"{n} = {tex}", f"{n} = {txt}")


def gcd_lcm(rng: random.Random, nt: Notation) -> Problem:
    common = rng.choice([2, 3, 4, 5, 6, 8, 9, 10, 12, 14, 15])
    a, b = common * rng.randint(2, 30), common * rng.randint(2, 30)
    while a == b:
        b += common
    g, lcm = math.gcd(a, b), math.lcm(a, b)
    if rng.random() < 0.5:
        ask = rng.choice(["gcd", "lcm"])
        question = {
            "gcd": rng.choice(
                [f"Find the greatest common divisor of {a} and {b}.", f"What is gcd({a}, {b})?"]
            ),
            "lcm": rng.choice(
                [
                    f"Find the least common multiple of {a} and {b}.",
                    f"What is the smallest positive number divisible by both {a} and {b}?",
                ]
            ),
        }[ask]
        fa, fb = sp.factorint(a), sp.factorint(b)
        primes = sorted(set(fa) | set(fb))
        pick = min if ask == "gcd" else max
        chosen = [(p, pick(fa.get(p, 0), fb.get(p, 0))) for p in primes]
        chosen = [(p, e) for p, e in chosen if e > 0]
        value = g if ask == "gcd" else lcm
        steps = [
            f"Prime factorizations: {_factorization(a, nt)} and {_factorization(b, nt)}.",
            f"Take each prime to its {'smallest' if ask == 'gcd' else 'largest'} power: "
            + ", ".join(f"{p}^{e}" if e > 1 else str(p) for p, e in chosen)
            + ".",
            f"Multiply: {value}.",
        ]
        return Problem(ask, question, steps, str(value), value=value, given={"a": a, "b": b})
    question = f"Use the Euclidean algorithm to find gcd({a}, {b}), then find lcm({a}, {b})."
    steps = []
    x, y = max(a, b), min(a, b)
    while y:
        steps.append(f"{x} = {x // y} {nt.times} {y} + {x % y}")
        x, y = y, x % y
    steps.append(f"The last nonzero remainder is {g}, so gcd = {g}.")
    steps.append(f"lcm = {a} {nt.times} {b} / {g} = {lcm}.")
    if nt.latex:
        steps = [f"${s}$" if s[0].isdigit() and "+" in s else s for s in steps]
    return Problem(
        "euclid", question, steps, f"gcd = {g}, lcm = {lcm}", value=(g, lcm), given={"a": a, "b": b}
    )


def sequences(rng: random.Random, nt: Notation) -> Problem:
    n = rng.randint(6, 30)
    if rng.random() < 0.6:
        a1, d = rng.randint(-20, 30), _nonzero_step(rng)
        terms = [a1 + i * d for i in range(4)]
        an = a1 + (n - 1) * d
        total = n * (a1 + an) // 2 if n * (a1 + an) % 2 == 0 else Fraction(n * (a1 + an), 2)
        question = rng.choice(
            [
                f"The arithmetic sequence {', '.join(map(str, terms))}, ... continues. Find term "
                f"number {n} and the sum of the first {n} terms.",
                f"An arithmetic progression starts {terms[0]}, {terms[1]}, {terms[2]}. What is its "
                f"{n}th term, and what do its first {n} terms add up to?",
            ]
        )
        steps = [
            f"The common difference is {nt.calc_line([terms[1], terms[0]], ['-'], d)}.",
            "The nth term is "
            + nt.m(r"a_n = a_1 + (n - 1)d", "a_n = a_1 + (n - 1)d")
            + f", so a_{n} = {a1} + {n - 1} {nt.times} {_signed(d)} = {an}.",
            "The sum is "
            + nt.m(r"S_n = \frac{n(a_1 + a_n)}{2}", "S_n = n(a_1 + a_n)/2")
            + f", so S_{n} = {n}({a1} + {_signed(an)})/2 = {total}.",
        ]
        return Problem(
            "arithmetic_sequence",
            question,
            steps,
            f"a_{n} = {an}, S_{n} = {total}",
            value=(an, Fraction(total)),
            given={"a1": a1, "d": d, "n": n},
        )
    a1, r = rng.randint(1, 9), rng.choice([2, 3, -2, 5, 10])
    n = rng.randint(4, 9)
    an = a1 * r ** (n - 1)
    total = a1 * (r**n - 1) // (r - 1)
    question = rng.choice(
        [
            f"A geometric sequence has first term {a1} and common ratio {r}. Find the {n}th term "
            f"and the sum of the first {n} terms.",
            f"Find a_{n} and S_{n} for the geometric sequence {a1}, {a1 * r}, {a1 * r * r}, ...",
        ]
    )
    steps = [
        "The nth term is "
        + nt.m(r"a_n = a_1 r^{n-1}", "a_n = a_1 * r^(n-1)")
        + f", so a_{n} = {a1} {nt.times} ({r})^{n - 1} = {an}.",
        "The sum is "
        + nt.m(r"S_n = a_1 \frac{r^n - 1}{r - 1}", "S_n = a_1 (r^n - 1)/(r - 1)")
        + f", so S_{n} = {a1}(({r})^{n} - 1)/({r} - 1) = {total}.",
    ]
    return Problem(
        "geometric_sequence",
        question,
        steps,
        f"a_{n} = {an}, S_{n} = {total}",
        value=(an, Fraction(total)),
        given={"a1": a1, "r": r, "n": n},
    )


def _signed(value: int) -> str:
    return f"({value})" if value < 0 else str(value)


def _nonzero_step(rng: random.Random) -> int:
    return rng.choice([-7, -5, -4, -3, -2, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12])


# (quantity, [(unit, factor to the base unit)])
UNITS = (
    ("length", [("km", 1000), ("m", 1), ("cm", Fraction(1, 100)), ("mm", Fraction(1, 1000))]),
    ("mass", [("kg", 1000), ("g", 1), ("mg", Fraction(1, 1000))]),
    ("time", [("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1)]),
    ("volume", [("liters", 1000), ("milliliters", 1)]),
)


def units(rng: random.Random, nt: Notation) -> Problem:
    if rng.random() < 0.3:
        kmh = 18 * rng.randint(1, 8) * rng.choice([1, 2, 5])
        ms = Fraction(kmh * 1000, 3600)
        question = rng.choice(
            [
                f"Convert {kmh} km/h to meters per second.",
                f"A car travels at {kmh} km/h. What is its speed in m/s?",
            ]
        )
        steps = [
            "1 km = 1000 m and 1 h = 3600 s, so multiply by "
            + nt.m(r"\frac{1000}{3600}", "1000/3600")
            + ".",
            f"{nt.calc_line([kmh, 1000, 3600], ['*', '/'], ms)} m/s.",
        ]
        return Problem("unit_speed", question, steps, f"{decimal(ms)} m/s", value=ms)
    quantity, table = rng.choice(UNITS)
    (u1, f1), (u2, f2) = rng.sample(table, 2)
    amount = Fraction(rng.randint(1, 90)) * rng.choice([1, 1, Fraction(1, 2), Fraction(1, 4)])
    if Fraction(f1) < Fraction(f2):
        amount *= Fraction(f2) / Fraction(f1)
    value = amount * Fraction(f1) / Fraction(f2)
    factor = Fraction(f1) / Fraction(f2)
    question = rng.choice(
        [
            f"How many {u2} are in {decimal(amount)} {u1}?",
            f"Convert {decimal(amount)} {u1} to {u2}.",
            f"Express {decimal(amount)} {u1} in {u2}.",
        ]
    )
    rule = (
        f"1 {u1.rstrip('s')} = {decimal(factor, 6)} {u2}"
        if factor >= 1
        else f"1 {u2.rstrip('s')} = {decimal(1 / factor, 6)} {u1}"
    )
    op = "*" if factor >= 1 else "/"
    k = factor if factor >= 1 else 1 / factor
    steps = [f"{rule}.", f"So {nt.calc_line([amount, k], [op], value)} {u2}."]
    return Problem(f"unit_{quantity}", question, steps, f"{decimal(value, 6)} {u2}", value=value)


@dataclass(frozen=True)
class _Op:
    op: str
    left: _Op | int
    right: _Op | int


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _tree(rng: random.Random, size: int) -> _Op | int:
    if size == 0:
        return rng.randint(1, 12)
    left = rng.randint(0, size - 1)
    node = _Op(rng.choice("+-*/"), _tree(rng, left), _tree(rng, size - 1 - left))
    if node.op == "/":
        value = _value(node.right)
        if value == 0 or _value(node.left) % value:
            return _Op(rng.choice("+-*"), node.left, node.right)
    return node


def _value(node: _Op | int | Fraction) -> Fraction:
    if not isinstance(node, _Op):
        return Fraction(node)
    a, b = _value(node.left), _value(node.right)
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else Fraction(0)}[node.op]


def _show(node: _Op | int | Fraction, nt: Notation, parent: int = 0, right: bool = False) -> str:
    if not isinstance(node, _Op):
        text = frac_plain(node)
        return f"({text})" if node < 0 else text
    prec = _PREC[node.op]
    sym = {
        "+": "+",
        "-": "-",
        "*": nt.times if nt.latex else "×",
        "/": r"\div" if nt.latex else "÷",
    }
    inner = f"{_show(node.left, nt, prec)} {sym[node.op]} {_show(node.right, nt, prec, True)}"
    if prec < parent or (right and prec == parent):
        return r"\left(" + inner + r"\right)" if nt.latex else f"({inner})"
    return inner


def _reduce_once(node: _Op | int | Fraction) -> _Op | int | Fraction:
    if not isinstance(node, _Op):
        return node
    if not isinstance(node.left, _Op) and not isinstance(node.right, _Op):
        return _value(node)
    if isinstance(node.left, _Op):
        return _Op(node.op, _reduce_once(node.left), node.right)
    return _Op(node.op, node.left, _reduce_once(node.right))


def order_of_operations(rng: random.Random, nt: Notation) -> Problem:
    size = rng.randint(3, 5)
    tree = _tree(rng, size)
    while not isinstance(tree, _Op):
        tree = _tree(rng, size)
    result = _value(tree)
    shown = _show(tree, nt)
    question = rng.choice(
        [
            f"Evaluate {nt.m(shown, shown)}.",
            f"What is {nt.m(shown, shown)}?",
            f"Compute {nt.m(shown, shown)} step by step.",
        ]
    )
    steps = []
    node: _Op | int | Fraction = tree
    while isinstance(node, _Op):
        node = _reduce_once(node)
        text = _show(node, nt)
        steps.append(nt.m(f"= {text}", f"= {text}"))
    return Problem(
        "order_of_operations", question, steps, nt.num(result), frac_tex(result), value=result
    )
