"""Coverage of the seed-level intervals (moectl.analysis.seeds; issue 24 section 5).

Simulates studies of S = 3 and 5 seeds whose between-seed spread is 0, 1 or 5 document standard
errors of one seed's estimate, scored on the same documents or on independent ones, for an NMI
difference (trained - init router) and a loss difference (MoE - dense), and counts how often the
95% seed-level interval misses the procedure's true value. Three intervals per replication: the
product's (the seeds' replicates on shared resamples), the bound from each seed's document
standard error, and the t interval over the seed values alone (what the shared documents break).
The simulation (numpy, seeded) is tests/analysis/test_calibration.py's, which runs a reduced
version.
Usage (from the repository root):

    python scripts/calibrate_seed_intervals.py [--replications 1000] [--resamples 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_calibration as simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    print(f"{args.replications} replications, {args.resamples} shared resamples, seed {args.seed}")
    print("| quantity | seeds | spread (SEs) | documents | replicates | bound | values only |")
    print("|---|---|---|---|---|---|---|")
    for setting in simulation.SEED_SETTINGS:
        misses = simulation.seed_misses(setting, args.replications, args.resamples, args.seed)
        rates = " | ".join(f"{misses[k] / args.replications:.1%}" for k in misses)
        documents = "shared" if setting.shared else "independent"
        columns = f"{setting.quantity} | {setting.n_seeds} | {setting.spread:g} | {documents}"
        print(f"| {columns} | {rates} |", flush=True)


if __name__ == "__main__":
    main()
