"""The experiment file (`moectl experiment FILE.yaml`): one controlled comparison of arms over
seeds, validated like a run config before anything is written.

An experiment names its corpus (a prepared corpus, or a `prepare-data` spec built into the
experiment's folder), the base config every arm starts from (a preset plus `--set`-style
overrides), the shared dense pretrain the upcycled arms continue from, each family's overrides
(e.g. the scratch family's longer schedule), the arms (name, family, overrides, and the controls
each is judged against, named explicitly), the seeds, the evaluation's sizes, and the launcher
(`local`, the worker pool, or `slurm`, one SLURM job per run, with its `slurm:` resources).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from moectl.config import SEED_MAX, StrictModel, deep_merge, load_preset, parse_override, read_yaml
from moectl.errors import ConfigError, did_you_mean

Family = Literal["upcycled", "scratch"]
PRETRAIN = "pretrain"
"""The shared dense pretrain's name (runs/pretrain-seedN); no arm may take it."""
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


class ConfigSpec(StrictModel):
    """A config as a preset plus `--set`-style overrides (`section.key=value`), applied in order."""

    preset: str | None = Field(None, description="a preset name (`moectl presets`)")
    overrides: list[str] = Field(default_factory=list, description="key=value, as --set")


class CorpusSpec(StrictModel):
    """Where the corpus comes from: exactly one of a prepared corpus or a prepare-data spec."""

    path: str | None = Field(
        None, description="a prepared corpus folder (relative paths: to the experiment file)"
    )
    prepare: ConfigSpec | None = Field(
        None,
        description="a corpus built into the experiment's data/: the preset's `data` section "
        "plus overrides (data.KEY=VALUE or KEY=VALUE)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> CorpusSpec:
        if (self.path is None) == (self.prepare is None):
            raise ValueError("give exactly one of path (a prepared corpus) or prepare")
        return self


class FamilySpec(StrictModel):
    """Overrides every arm of a family gets, after the base's and before its own."""

    overrides: list[str] = Field(default_factory=list)


class ArmSpec(StrictModel):
    """One arm: trained once per seed from the base config, its family's and its own overrides."""

    name: str = Field(pattern=NAME_PATTERN)
    family: Family = Field(
        description="upcycled: continues from the shared dense pretrain of its seed; scratch: "
        "from random weights"
    )
    preset: str | None = Field(
        None,
        description="the arm's own preset in place of the base's, under the base's overrides "
        "(e.g. cpu-dense next to a cpu-moe base)",
    )
    overrides: list[str] = Field(default_factory=list)
    collapse_control: bool = Field(
        False,
        description="the collapse control: no balancing loss, no router noise and no loss-free "
        "scheme (bias), whatever the base, family and arm overrides say",
    )
    dense: str | None = Field(
        None, description="its matched dense arm (same family): the loss control; MoE arms need one"
    )
    frozen_router: str | None = Field(
        None, description="its frozen-router arm (same family, moe.router_lr_scale=0)"
    )


class ComparisonSpec(StrictModel):
    """Two arms whose eval losses the report compares, run by run: the same seed, the same eval
    documents (e.g. one balancing scheme against another)."""

    arm: str
    against: str


class EvaluationSpec(StrictModel):
    """The evaluation's sizes (`moectl evaluate`'s options)."""

    max_blocks: int | None = Field(None, ge=1, description="eval blocks per run (None: all)")
    random_gates: int | None = Field(
        None,
        ge=64,
        description="random gates per MoE layer; None: enough for Holm over the experiment's "
        "arms x layers (gates_for_family)",
    )
    n_permutations: int = Field(20, ge=1)
    functional: bool = Field(
        False, description="the functional test too (many more forward passes per layer)"
    )


SLURM_TIME = r"^(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})$"
"""SLURM's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""


class SlurmSpec(StrictModel):
    """What each run's SLURM job asks for (`launcher: slurm`; the --slurm-* options override)."""

    partition: str | None = Field(None, description="the partition (None: the cluster's default)")
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_run: int = Field(
        0, ge=0, description="GPUs per run; above 1 a run trains with torchrun (train.parallel)"
    )
    cpus_per_run: int = Field(1, ge=1)
    mem_gb: int | None = Field(None, ge=1, description="memory per job (None: the default)")
    time: str = Field(
        "4:00:00",
        description="the time limit per job, as sbatch --time: minutes (90), 8:00:00 or 1-12:00:00",
    )
    setup: list[str] = Field(
        default_factory=list,
        description="shell lines each job runs first (e.g. `module load cuda`, `source venv`)",
    )

    @field_validator("time", mode="before")
    @classmethod
    def _slurm_time(cls, value: object) -> object:
        """`time: 90` in YAML is 90 minutes, as for sbatch; a text must be a SLURM time."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and not re.match(SLURM_TIME, value):
            raise ValueError(
                f"'{value}' is not a SLURM time: give minutes (90), 8:00:00 or 1-12:00:00"
            )
        return value

    @property
    def minutes(self) -> int:
        """The time limit in whole minutes (what submitit's `time` takes)."""
        days, _, clock = self.time.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if days:  # D-H[:M[:S]]
            parts += [0] * (3 - len(parts))
        elif len(parts) < 3:  # M or M:S
            parts = [0, *parts, *[0] * (2 - len(parts))]
        hours, minutes, seconds = parts
        seconds += ((int(days or 0) * 24 + hours) * 60 + minutes) * 60
        return max(1, -(-seconds // 60))


class ExperimentSpec(StrictModel):
    """The whole experiment file."""

    description: str = ""
    launcher: Literal["local", "slurm"] = Field(
        "local",
        description="local: this machine's worker pool (--workers); slurm: one SLURM job per "
        "run through submitit (the `slurm` section)",
    )
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)
    corpus: CorpusSpec
    base: ConfigSpec = Field(description="the config every arm starts from")
    pretrain: ConfigSpec | None = Field(
        None, description="the dense pretrain upcycled arms continue from (its best/ model)"
    )
    pretrain_seed: Seed | None = Field(
        None,
        description="None: each seed's arms continue from a pretrain of that seed; a seed: "
        "every seed's arms continue from that one pretrain",
    )
    families: dict[Family, FamilySpec] = Field(default_factory=dict)
    arms: list[ArmSpec] = Field(min_length=1)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    comparisons: list[ComparisonSpec] = Field(
        default_factory=list,
        description="pairs of arms whose eval loss difference (arm - against) the report gives "
        "over seeds, paired by seed and eval document",
    )


def load_experiment(path: Path) -> ExperimentSpec:
    """The validated experiment in the YAML file `path`: a ConfigError listing every problem,
    one per key, when it is not one (nothing is resolved or written here)."""
    from moectl.config import validate

    raw = read_yaml(Path(path), hint="check the experiment file's path")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"experiment file {path} must hold a mapping (corpus, base, arms, ...), not "
            f"{type(raw).__name__}",
            hint="see examples/specialization.yaml",
        )
    spec = validate(ExperimentSpec, raw, f"experiment file {path}")
    problems = spec_problems(spec)
    if problems:
        raise ConfigError(f"invalid experiment file {path}", problems)
    return spec


def spec_problems(spec: ExperimentSpec) -> list[tuple[str, str]]:
    """(key, message) for what the schema cannot see: repeated arm names or seeds, controls that
    name no arm of the same family, comparisons of unknown, identical or repeated arms, upcycled
    arms without a pretrain."""
    problems: list[tuple[str, str]] = []
    families: dict[str, str] = {}
    for i, arm in enumerate(spec.arms):
        if arm.name == PRETRAIN:
            problems.append((f"arms.{i}.name", f"'{PRETRAIN}' names the shared pretrain"))
        elif arm.name in families:
            problems.append((f"arms.{i}.name", f"arm '{arm.name}' is given twice"))
        families.setdefault(arm.name, arm.family)
    names = list(families)
    for i, arm in enumerate(spec.arms):
        for key in ("dense", "frozen_router"):
            control = getattr(arm, key)
            if control is None:
                continue
            if control not in families:
                message = f"names no arm '{control}'{did_you_mean(control, names)}"
            elif families[control] != arm.family:
                message = f"'{control}' is a {families[control]} arm; '{arm.name}' is {arm.family}"
            elif control == arm.name:
                message = "an arm is not its own control"
            else:
                continue
            problems.append((f"arms.{i}.{key}", message))
    pairs: set[tuple[str, str]] = set()
    for i, comparison in enumerate(spec.comparisons):
        pair = (comparison.arm, comparison.against)
        for key, name in zip(("arm", "against"), pair, strict=True):
            if name not in families:
                problems.append(
                    (f"comparisons.{i}.{key}", f"names no arm '{name}'{did_you_mean(name, names)}")
                )
        if comparison.arm == comparison.against:
            problems.append((f"comparisons.{i}", "an arm is not compared with itself"))
        elif pair in pairs:
            problems.append((f"comparisons.{i}", f"{pair[0]} - {pair[1]} is given twice"))
        pairs.add(pair)
    upcycled = [arm.name for arm in spec.arms if arm.family == "upcycled"]
    if upcycled and spec.pretrain is None:
        problems.append(("pretrain", f"the upcycled arms ({', '.join(upcycled)}) need one"))
    if len(set(spec.seeds)) != len(spec.seeds):
        problems.append(("seeds", "a seed is given twice"))
    return problems


def merged(spec: ConfigSpec, key: str, section: str | None = None) -> dict[str, Any]:
    """The raw dict of `spec` (its preset, or its `section` of it, then its overrides); a
    ConfigError whose problems name `key` (the spec's place in the file)."""
    problems: list[tuple[str, str]] = []
    raw: dict[str, Any] = {}
    if spec.preset is not None:
        try:
            raw = load_preset(spec.preset)
        except ConfigError as error:
            problems.append((f"{key}.preset", error.message))
        if section is not None:
            raw = raw.get(section) or {}
    raw = apply_overrides(raw, spec.overrides, f"{key}.overrides", problems, section)
    if problems:
        raise ConfigError("invalid experiment file", problems)
    return raw


def apply_overrides(
    raw: dict[str, Any],
    overrides: list[str],
    key: str,
    problems: list[tuple[str, str]],
    section: str | None = None,
) -> dict[str, Any]:
    """`raw` with each `key=value` merged in; an unparseable one is a problem at `key`.N. With a
    `section`, an override may name it (`data.size_mb=1`) or not (`size_mb=1`)."""
    for n, text in enumerate(overrides):
        try:
            parsed = parse_override(text)
        except ConfigError as error:
            problems.append((f"{key}.{n}", error.message))
            continue
        if section is not None:
            parsed = parsed.get(section, parsed)
        raw = deep_merge(raw, parsed)
    return raw
