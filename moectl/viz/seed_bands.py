"""Curves over training averaged over the seeds of each arm, with their spread: the data that
both the static figure and the interactive one draw.

An arm is a training procedure: runs whose configs are the same but for the run's name and
`train.seed` (a study's `moe`, `moe-seed1`, ... are one arm). Only arms with two seeds or more
have a band. At each step every seed of the arm logged, the band is the mean over the seeds with
their minimum and maximum: the spread of the training runs themselves, not an interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from moectl.analysis.runs import RunLogs

Series = Callable[[RunLogs], dict[int, float]]
"""A run's curve: step -> value."""


@dataclass(frozen=True)
class Band:
    """One arm's curve over its seeds: mean, minimum and maximum at each common step."""

    arm: str
    seeds: list[int]
    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]

    @property
    def label(self) -> str:
        """The arm and how many seeds it has, as a legend names it."""
        return f"{self.arm} ({len(self.seeds)} seeds)"


def eval_loss(run: RunLogs) -> dict[int, float]:
    """The trainer's periodic eval loss."""
    return {int(r["step"]): float(r["loss"]) for r in run.eval if r.get("loss") is not None}


def mean_layer_nmi(run: RunLogs) -> dict[int, float]:
    """NMI(domain; expert) of each router-log step, averaged over the MoE layers."""
    curve = {}
    for row in run.routing or []:
        values = [v["nmi"] for v in (row.get("layers") or {}).values() if v.get("nmi") is not None]
        if values:
            curve[int(row["step"])] = float(np.mean(values))
    return curve


METRICS: list[tuple[str, Series]] = [
    ("eval loss (nats/token)", eval_loss),
    ("NMI(domain; expert), mean over MoE layers", mean_layer_nmi),
]
"""The curves drawn with seed bands: (axis label, series)."""


def arms(runs: list[RunLogs]) -> dict[str, list[RunLogs]]:
    """Runs grouped by training procedure, each arm named after its first run."""
    groups: dict[str, list[RunLogs]] = {}
    for run in runs:
        procedure = run.config.model_dump_json(exclude={"name": True, "train": {"seed"}})
        groups.setdefault(procedure, []).append(run)
    return {group[0].name: group for group in groups.values()}


def bands(runs: list[RunLogs], series: Series) -> list[Band]:
    """The band of every arm with two seeds or more that each logged the series, over the
    steps all of them logged."""
    drawn = []
    for arm, members in arms(runs).items():
        curves = [series(run) for run in members]
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        if len(members) < 2 or not steps:
            continue
        values = np.array([[curve[s] for s in steps] for curve in curves])
        drawn.append(
            Band(
                arm=arm,
                seeds=[run.config.train.seed for run in members],
                steps=steps,
                mean=values.mean(axis=0).tolist(),
                low=values.min(axis=0).tolist(),
                high=values.max(axis=0).tolist(),
            )
        )
    return drawn


def metric_bands(runs: list[RunLogs]) -> list[tuple[str, list[Band]]]:
    """(axis label, bands) for each metric some multi-seed arm has; empty without one."""
    return [(label, found) for label, series in METRICS if (found := bands(runs, series))]
