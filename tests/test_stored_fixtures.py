"""The stored-fixture policy (docs/testing.md): every file in tests/fixtures is registered in
tests/stored.py with the tolerance it is compared with, and tests reach fixtures only through it,
so no stored number is compared bitwise against a computation made on another CPU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from stored import FIXTURES, STORED, assert_matches_stored

TESTS = Path(__file__).parent


def test_every_fixture_is_registered_with_its_tolerance():
    assert sorted(p.name for p in FIXTURES.iterdir()) == sorted(STORED)
    for name, tol in STORED.items():
        path = FIXTURES / name
        numeric = path.suffix in {".json", ".safetensors", ".npy", ".npz", ".pt"}
        assert (tol is not None) == numeric, f"{name}: numeric fixtures need a tolerance"
        if tol is not None:
            assert 0 < tol.rel <= 1e-4 and 0 < tol.abs <= 1e-4, f"{name}: tolerance too loose"


def test_tests_open_fixtures_only_through_the_stored_module():
    """Every test folder and helper module, not only the top level."""
    direct = re.compile(r"""["']fixtures["']|fixtures/[\w.]+["']""")
    scanned = sorted(TESTS.rglob("*.py"))
    assert {path.parent.name for path in scanned} >= {"model", "interop", "helpers", "rundir"}
    offenders = [
        str(path.relative_to(TESTS))
        for path in scanned
        if path.name not in {"stored.py", Path(__file__).name} and direct.search(path.read_text())
    ]
    assert offenders == []


def test_stored_comparison_has_a_tolerance_for_floats_and_none_for_counts():
    name = "switch_reference.json"
    expected = {"loss": 4.0, "counts": [3, 5]}
    assert_matches_stored(name, {"loss": 4.0 * (1 + 7.6e-8), "counts": [3, 5]}, expected)
    with pytest.raises(AssertionError):
        assert_matches_stored(name, {"loss": 4.0 * (1 + 1e-3), "counts": [3, 5]}, expected)
    with pytest.raises(AssertionError):
        assert_matches_stored(name, {"loss": 4.0, "counts": [3, 6]}, expected)
    with pytest.raises(AssertionError):
        assert_matches_stored(name, {"loss": 4.0, "counts": [3.0, 5]}, expected)
