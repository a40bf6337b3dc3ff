"""The one door to tests/fixtures: every stored numeric fixture and the tolerance it is read with.

Numbers written to a file on one CPU are not bitwise portable to another: oneDNN, ATen and MKL
pick kernels per instruction set and vendor (a loss fixture moved by 7.6e-8 relative on an Intel
Xeon with AVX-512/AMX). So a test compares stored floats within the fixture's stated tolerance,
integers (routing counts, shapes, ids) exactly, and keeps bitwise checks for two computations
made by the same test on the same machine. `tests/test_stored_fixtures.py` fails if a fixture is
missing here or a test opens tests/fixtures without this module. docs/testing.md states the policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Tolerance:
    """|got - expected| <= abs + rel * |expected| for every stored float."""

    rel: float
    abs: float


# Every entry of tests/fixtures. None: not compared as numbers (a model artifact that is loaded;
# what it computes is compared through the logits fixture beside it).
STORED: dict[str, Tolerance | None] = {
    # Losses of 6 training steps: the largest cross-CPU difference seen is 7.6e-8 relative; a
    # changed loss formula or schedule moves them by 1e-3 or more.
    "switch_reference.json": Tolerance(rel=1e-5, abs=1e-8),
    # Logits of a tiny model (values ~1): float32 matmuls in another kernel order.
    "model_v1_moe_logits.safetensors": Tolerance(rel=1e-5, abs=1e-6),
    "model_v1_moe": None,
    "README.md": None,
}


def fixture(name: str) -> Path:
    """The path of a stored fixture; only names listed in STORED exist for tests."""
    if name not in STORED:
        raise KeyError(f"{name} is not a registered fixture: add it to tests/stored.py STORED")
    return FIXTURES / name


def tolerance(name: str) -> Tolerance:
    stated = STORED[name]
    if stated is None:
        raise KeyError(f"{name} is not compared as numbers")
    return stated


def assert_matches_stored(name: str, got: Any, expected: Any, where: str = "") -> None:
    """Nested JSON-like values equal, floats within `name`'s tolerance, everything else exact."""
    tol = tolerance(name)
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), f"{where}: keys differ"
        for key in expected:
            assert_matches_stored(name, got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), f"{where}: lengths differ"
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_matches_stored(name, a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert isinstance(got, (int, float)), f"{where}: {got!r} is not a number"
        assert math.isclose(got, expected, rel_tol=tol.rel, abs_tol=tol.abs), (
            f"{where}: {got!r} vs stored {expected!r} (tolerance rel {tol.rel}, abs {tol.abs})"
        )
    else:
        assert got == expected and type(got) is type(expected), f"{where}: {got!r} != {expected!r}"


def assert_tensor_matches_stored(name: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    tol = tolerance(name)
    torch.testing.assert_close(got, expected, rtol=tol.rel, atol=tol.abs)
