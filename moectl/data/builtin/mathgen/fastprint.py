"""A quick printer for polynomial-like sympy expressions, in plain text or LaTeX.

sympy's printers spend about a millisecond per expression on term ordering and assumption
queries, which would make corpus generation minutes long. Sums of rational multiples of monomials,
and unevaluated products or powers of them, are printed here directly; anything else returns None
and goes to sympy's printer.
"""

from __future__ import annotations

from typing import Any

import sympy as sp


def _exponent(e: sp.Rational, latex: bool) -> str:
    if e.q == 1:
        return f"^{{{e.p}}}" if latex else f"^{e.p}"
    return rf"^{{\frac{{{e.p}}}{{{e.q}}}}}" if latex else f"^({e.p}/{e.q})"


FUNCTIONS = {"sin": r"\sin", "cos": r"\cos", "tan": r"\tan", "log": r"\ln"}


def _factor(base: sp.Expr, exp: sp.Expr, latex: bool) -> tuple[str, float] | None:
    """base**exp as text (exp positive or symbolic) and its degree in the variables, or None."""
    if base is sp.E:
        power = fast_print(exp, latex)
        if power is None:
            return None
        return (f"e^{{{power}}}" if latex else f"exp({power})"), 0.0
    if not exp.is_Rational:
        return None
    if base.is_Symbol:
        return (base.name if exp == 1 else base.name + _exponent(exp, latex)), float(exp)
    if base.is_Add:
        inner = _sum(base, latex)
        if inner is None:
            return None
        if exp == sp.Rational(1, 2):
            return (rf"\sqrt{{{inner}}}" if latex else f"sqrt({inner})"), 0.0
        text = _paren(inner, latex)
        return (text if exp == 1 else text + _exponent(exp, latex)), 0.0
    name = type(base).__name__
    if name in FUNCTIONS and exp.is_Integer and len(base.args) == 1:
        arg = fast_print(base.args[0], latex)
        if arg is None:
            return None
        if latex:
            power = "" if exp == 1 else f"^{{{exp}}}"
            return rf"{FUNCTIONS[name]}{power}{_paren(arg, latex)}", 0.0
        shown = "ln" if name == "log" else name
        return (f"{shown}({arg})" if exp == 1 else f"{shown}({arg})^{exp}"), 0.0
    return None


def _term(coeff: sp.Rational, key: sp.Expr, latex: bool) -> tuple[float, str, str, bool] | None:
    """(-degree, factor names, text of |term|, negative), or None for an unsupported key."""
    up: list[str] = []
    down: list[str] = []
    degree = 0.0
    if key != 1:
        for base, exp in key.as_powers_dict().items():
            below = exp.is_Rational and exp < 0
            factor = _factor(base, -exp if below else exp, latex)
            if factor is None:
                return None
            (down if below else up).append((factor[1] == 0, factor[0]))
            degree += -factor[1] if below else factor[1]
    up.sort()
    down.sort()
    join = " " if latex else "*"
    num_mono, den_mono = join.join(t for _, t in up), join.join(t for _, t in down)
    p, q = abs(int(coeff.p)), int(coeff.q)
    sep = " " if latex else ""
    num = num_mono if (p == 1 and num_mono) else f"{p}{sep}{num_mono}".rstrip()
    den = f"{q}{sep}{den_mono}".strip() if q != 1 else den_mono
    names = " ".join(t for _, t in up + down)
    if not den:
        text = num
    elif latex:
        text = rf"\frac{{{num}}}{{{den}}}"
    else:
        text = f"{num}/({den})" if (q != 1 and den_mono) or len(down) > 1 else f"{num}/{den}"
    return -degree, names, text, bool(coeff < 0)


def _sum(expr: sp.Expr, latex: bool) -> str | None:
    terms = []
    for key, coeff in expr.as_coefficients_dict().items():
        if not coeff.is_Rational:
            return None
        term = _term(coeff, key, latex)
        if term is None:
            return None
        terms.append(term)
    if not terms:
        return "0"
    terms.sort()
    out = ""
    for i, (_, _, text, negative) in enumerate(terms):
        if i == 0:
            space = " " if latex and not text[0].isdigit() else ""
            out = f"-{space}{text}" if negative else text
        else:
            out += f" - {text}" if negative else f" + {text}"
    return out


def _paren(text: str, latex: bool) -> str:
    return rf"\left({text}\right)" if latex else f"({text})"


def fast_print(expr: Any, latex: bool) -> str | None:
    """The expression's text, or None when it is not a (product or power of) polynomial(s)."""
    if not isinstance(expr, sp.Basic):
        return None
    if expr.is_Mul and not expr.is_commutative:
        return None
    if expr.is_Pow and expr.base.is_Add and expr.exp.is_Integer and expr.exp > 1:
        base = _sum(expr.base, latex)
        if base is None:
            return None
        exp = f"^{{{expr.exp}}}" if latex else f"^{expr.exp}"
        return _paren(base, latex) + exp
    if expr.is_Mul:
        over = [a.base for a in expr.args if a.is_Pow and a.base.is_Add and a.exp == -1]
        if over and not any(a.is_Pow and a.exp.is_Number and a.exp < -1 for a in expr.args):
            rest = [a for a in expr.args if not (a.is_Pow and a.base.is_Add and a.exp == -1)]
            top = fast_print(sp.Mul(*rest, evaluate=False) if len(rest) > 1 else rest[0], latex)
            bottom = fast_print(over[0], latex) if len(over) == 1 else None
            if top is None or bottom is None:
                return None
            if latex:
                return rf"\frac{{{top}}}{{{bottom}}}"
            return f"{_paren(top, latex) if ' ' in top else top}/{_paren(bottom, latex)}"
    grouped = [a.is_Add or (a.is_Pow and a.base.is_Add and a.exp.is_Integer) for a in expr.args]
    negative = [a.is_Pow and a.exp.is_Number and a.exp < 0 for a in expr.args]
    if expr.is_Mul and any(grouped) and not any(negative):
        number = [a for a in expr.args if a.is_Number]
        parts = []
        for arg in expr.args:
            if arg.is_Number:
                continue
            text = fast_print(arg, latex)
            if text is None:
                return None
            parts.append(_paren(text, latex) if arg.is_Add else text)
        lead = ""
        if number:
            value = number[0]
            if not value.is_Integer:
                return None
            lead = "-" if value == -1 else "" if value == 1 else str(value)
        gap = " " if latex and lead not in ("", "-") else ""
        return lead + gap + "".join(parts)
    return _sum(expr, latex)
