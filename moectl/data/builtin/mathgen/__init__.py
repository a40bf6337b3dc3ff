"""A seeded generator of math problems with worked solutions, built on sympy.

Many problem families (arithmetic word problems, equations, number work, polynomials, calculus),
several phrasings each, random values and names, plain-text and LaTeX notation: varied enough that
a small model cannot learn the domain by memorizing a few templates.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from moectl.data.builtin.mathgen import algebra, arithmetic, calculus, numbers, polynomials
from moectl.data.builtin.mathgen.base import Notation, Problem
from moectl.data.builtin.mathgen.document import render

GENERATOR_VERSION = "1"

Family = Callable[[random.Random, Notation], Problem]

# (generator, weight): word problems and equations weigh most, as in GSM8K and MATH.
FAMILIES: tuple[tuple[Family, int], ...] = (
    (arithmetic.shopping, 3),
    (arithmetic.wages, 2),
    (arithmetic.sharing, 2),
    (arithmetic.travel, 2),
    (arithmetic.recipe, 2),
    (arithmetic.inventory, 2),
    (arithmetic.discount, 2),
    (arithmetic.clock, 1),
    (arithmetic.work_rate, 1),
    (arithmetic.ratio, 2),
    (algebra.linear, 3),
    (algebra.quadratic, 3),
    (algebra.system, 2),
    (algebra.number_puzzle, 2),
    (algebra.ages, 1),
    (numbers.fractions_, 2),
    (numbers.percent, 2),
    (numbers.gcd_lcm, 2),
    (numbers.sequences, 2),
    (numbers.units, 2),
    (numbers.order_of_operations, 2),
    (polynomials.expand, 2),
    (polynomials.factor, 2),
    (polynomials.simplify_rational, 1),
    (polynomials.evaluate, 1),
    (calculus.derivative_power, 2),
    (calculus.derivative_chain, 2),
    (calculus.derivative_product, 2),
    (calculus.integral, 2),
    (calculus.definite_integral, 1),
    (calculus.tangent_line, 1),
    (calculus.critical_points, 1),
)


def generate_problems(seed: int) -> Iterator[tuple[Problem, str]]:
    """An endless, deterministic stream of (problem, rendered document) for `seed`."""
    rng = random.Random(seed)
    generators = [f for f, _ in FAMILIES]
    weights = [w for _, w in FAMILIES]
    while True:
        family = rng.choices(generators, weights)[0]
        nt = Notation(rng)
        problem = family(rng, nt)
        yield problem, render(problem, nt, rng)


__all__ = ["FAMILIES", "GENERATOR_VERSION", "Notation", "Problem", "generate_problems"]
