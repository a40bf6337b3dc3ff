"""What a generated problem is, and the notation it is written in (plain text or LaTeX).

Each problem draws one notation so that a corpus mixes `x^2 + 3x` with `$x^{2} + 3 x$`,
`3/4` with `\\frac{3}{4}`, and `3 × 4` with GSM8K-style `<<3*4=12>>` calculator notes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import sympy as sp

from moectl.data.builtin.mathgen.fastprint import fast_print

_NUM_TIMES_SYMBOL = re.compile(r"(?<=[\d)])\*(?=[a-zA-Z(])")


@dataclass(frozen=True)
class Problem:
    """One problem with its computed solution.

    `value` is the structured answer and `given` the structured problem (sympy objects, numbers),
    so correctness can be checked by substitution or differentiation instead of parsing text.
    """

    family: str
    question: str
    steps: list[str]
    answer: str
    answer_tex: str | None = None
    value: Any = None
    given: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def expression(
        cls,
        family: str,
        question: str,
        steps: list[str],
        nt: Notation,
        result: Any,
        given: dict[str, Any],
    ) -> Problem:
        """A problem answered by one sympy expression.

        The answer in the problem's notation, its LaTeX and the value all come from `result`,
        so the three cannot disagree.
        """
        return cls(family, question, steps, nt.ex(result), tex(result), value=result, given=given)


def plain(expr: Any) -> str:
    """A sympy expression as a person types it: `3x^2 - x/2`, not `3*x**2 - x/2`."""
    fast = fast_print(expr, latex=False)
    if fast is not None:
        return fast
    text = sp.sstr(expr).replace("**", "^")
    return _NUM_TIMES_SYMBOL.sub("", text)


def tex(expr: Any) -> str:
    """A sympy expression in LaTeX (without delimiters)."""
    fast = fast_print(expr, latex=True)
    return fast if fast is not None else sp.latex(expr)


def frac_plain(value: Fraction | int) -> str:
    value = Fraction(value)
    return (
        str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    )


def frac_tex(value: Fraction | int) -> str:
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return rf"{sign}\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def decimal(value: Fraction | int, places: int = 2) -> str:
    """An exact value with a finite decimal expansion, without trailing zeros."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):.{places}f}".rstrip("0").rstrip(".")
    return text


def money(cents: int, currency: str) -> str:
    amount = f"{cents // 100}" if cents % 100 == 0 else f"{cents // 100}.{cents % 100:02d}"
    symbols = {"dollars": "$", "pounds": "£", "euros": "€"}
    return f"{symbols[currency]}{amount}" if currency in symbols else f"{amount} {currency}"


class Notation:
    """How one problem writes its mathematics, chosen once per problem."""

    def __init__(self, rng: random.Random) -> None:
        self.latex = rng.random() < 0.5
        self.calc = rng.choice(["latex", "gsm"]) if self.latex else rng.choice(["plain", "gsm"])
        self.times = (
            rng.choice([r"\times", r"\cdot"]) if self.latex else rng.choice(["×", "*", "x"])
        )
        self.display_open, self.display_close = rng.choice([("$$", "$$"), (r"\[", r"\]")])

    def m(self, tex: str, text: str) -> str:
        """Inline mathematics: `tex` wrapped in $...$ in LaTeX notation, `text` otherwise."""
        return f"${tex}$" if self.latex else text

    def text(self, expr: Any) -> str:
        """The expression in this notation, without $ delimiters."""
        return tex(expr) if self.latex else plain(expr)

    def ex(self, expr: Any) -> str:
        return self.m(self.text(expr), self.text(expr))

    def eq(self, lhs: Any, rhs: Any) -> str:
        body = f"{self.text(lhs)} = {self.text(rhs)}"
        return self.m(body, body)

    def display(self, tex: str, text: str) -> str:
        """A line of its own: a display formula in LaTeX notation."""
        if self.latex:
            return f"{self.display_open} {tex} {self.display_close}"
        return text

    def deq(self, lhs: Any, rhs: Any) -> str:
        body = f"{self.text(lhs)} = {self.text(rhs)}"
        return self.display(body, body)

    def num(self, value: Fraction | int) -> str:
        return self.m(frac_tex(value), frac_plain(value))

    def calc_line(self, terms: list[Fraction | int], ops: list[str], result: Fraction | int) -> str:
        """A left-to-right arithmetic line such as `3 × 12 = 36`, in this problem's calc style."""
        py = {"+": "+", "-": "-", "*": "*", "/": "/"}
        if self.calc == "latex":
            shown = {"+": "+", "-": "-", "*": self.times, "/": r"\div"}
        elif self.calc == "gsm":
            shown = py
        else:
            shown = {"+": "+", "-": "-", "*": self.times, "/": "/"}
        text = [decimal(terms[0], 4)]
        code = [decimal(terms[0], 4)]
        for op, term in zip(ops, terms[1:], strict=True):
            shown_term = decimal(term, 4) if term >= 0 else f"({decimal(term, 4)})"
            text += [shown[op], shown_term]
            code += [py[op], shown_term]
        lhs = " ".join(text)
        res = decimal(result, 4)
        if self.calc == "latex":
            return f"${lhs} = {res}$"
        if self.calc == "gsm":
            return f"{lhs} = <<{''.join(code)}={res}>>{res}"
        return f"{lhs} = {res}"
