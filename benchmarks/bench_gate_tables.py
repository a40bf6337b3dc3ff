"""The gate null's domain tables: np.matmul over a stack of gates against one matrix product.

The gate null (analysis/gate_null.py) scores hundreds of random gates per MoE layer, each on
document resamples: a (B*L, U) resample matrix times every gate's (U, E) per-document counts.
np.matmul broadcasts the 2-D matrix over the stack and calls BLAS once per gate;
`nmi_bias.left_multiply` makes it one product. Both run here, in one process, on the same
integer counts (so the tables must agree bit for bit, checked), at the study's shapes: 3
domains, 8 experts, the documents of the quickstart's eval sample, 200 resamples (the excess's
standard error), 199 gates (the product's N_GATES) and 959 (the experiment's Holm family).
Prints the fastest of the repeats and the ratio.

    python benchmarks/bench_gate_tables.py --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from moectl.analysis import bootstrap
from moectl.analysis.gate_null import N_EXCESS_RESAMPLES, N_GATES
from moectl.analysis.nmi_bias import left_multiply


def fastest(repeats: int, work) -> tuple[float, np.ndarray]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--documents", type=int, default=192, help="eval documents (units)")
    parser.add_argument("--experts", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    strata = np.arange(args.documents) % 3
    weights = bootstrap.resample_counts(strata, N_EXCESS_RESAMPLES, seed=0)
    onehot = np.eye(3)[strata]
    matrix = (weights[:, None, :] * onehot.T[None]).reshape(-1, args.documents)
    print(f"{args.documents} documents, {args.experts} experts, {N_EXCESS_RESAMPLES} resamples")
    for n_gates in (N_GATES, 959):
        units = rng.integers(0, 60, (n_gates, args.documents, args.experts)).astype(np.float64)
        slow, a = fastest(args.repeats, lambda u=units: np.matmul(matrix, u))
        fast, b = fastest(args.repeats, lambda u=units: left_multiply(matrix, u))
        assert np.array_equal(a, b), "the two products differ"
        print(
            f"{n_gates} gates: np.matmul {slow:.3f} s, one product {fast:.3f} s, "
            f"ratio {slow / fast:.1f}x (tables identical)"
        )


if __name__ == "__main__":
    main()
