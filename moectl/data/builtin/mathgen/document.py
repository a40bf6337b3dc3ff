"""Turning a problem into a text document with varied headers, step layouts and answer lines.

The answer conventions of the reference study's math sets appear side by side: GSM8K's
`#### 42`, MATH's `\\boxed{...}`, and plain "The answer is ..." endings.
"""

from __future__ import annotations

import random

from moectl.data.builtin.mathgen.base import Notation, Problem

QUESTION_HEADERS = (
    "Problem: ",
    "Question: ",
    "Q: ",
    "",
    "Exercise: ",
    "Task: ",
    "Problem {n}. ",
    "Example {n}: ",
    "",
)
SOLUTION_HEADERS = (
    "Solution:",
    "Answer:",
    "A:",
    "Let's solve this step by step.",
    "Step-by-step solution:",
    "Worked solution:",
    "Solution.",
    "",
    "Here is how to solve it.",
)
STEP_LAYOUTS = ("plain", "numbered", "step", "dash")
PLAIN_ENDINGS = (
    "The answer is {a}.",
    "#### {a}",
    "Final answer: {a}",
    "Therefore, the answer is {a}.",
    "So the answer is {a}.",
    "Answer: {a}",
)


def _layout(steps: list[str], layout: str) -> str:
    if layout == "numbered":
        return "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
    if layout == "step":
        return "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))
    if layout == "dash":
        return "\n".join(f"- {s}" for s in steps)
    return "\n".join(steps)


def render(problem: Problem, nt: Notation, rng: random.Random) -> str:
    """The full document: question, worked steps, final answer line."""
    header = rng.choice(QUESTION_HEADERS).format(n=rng.randint(1, 60))
    solution = rng.choice(SOLUTION_HEADERS)
    body = _layout(problem.steps, rng.choice(STEP_LAYOUTS))
    if nt.latex and problem.answer_tex is not None and rng.random() < 0.5:
        ending = rf"The final answer is $\boxed{{{problem.answer_tex}}}$."
    else:
        ending = rng.choice(PLAIN_ENDINGS).format(a=problem.answer)
    parts = [f"{header}{problem.question}", f"{solution}\n{body}" if solution else body, ending]
    return "\n\n".join(parts) if rng.random() < 0.7 else "\n".join(parts)
