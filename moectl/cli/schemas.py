"""What `--json` prints: one pydantic schema per command, each with a `schema_version`.

A script reads stdout as one JSON document (progress, warnings and errors go to stderr). A
field is only ever added within a version; renaming or removing one raises the version.
docs/interop.md lists every schema; `moectl inspect` and `moectl evaluate` print their own
on-disk formats (each with its `format_version`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from pydantic import BaseModel, Field

from moectl.analysis.generation import GeneratedToken
from moectl.analysis.results import Finding
from moectl.study.experiment.layout import RunStatus
from moectl.study.experiment.slurm import SubmittedJob
from moectl.study.experiment.table import ExperimentTable

SCHEMA_VERSION = 1


class CommandOutput(BaseModel):
    """The fields every command's JSON starts with."""

    schema_version: int = SCHEMA_VERSION
    command: str


class TrainOutput(CommandOutput):
    command: Literal["train"] = "train"
    run_dir: str
    kind: Literal["dense", "moe"]
    steps: int
    max_steps: int
    stop_reason: str = Field(description="completed, collapse, interrupted or already_complete")
    stop_signal: str | None = None
    wall_seconds: float = Field(description="this command's time, setup and saves included")
    best_dir: str | None = Field(description="the best/ model, the one evaluate and export use")
    best_step: int | None = None
    best_eval_loss: float | None = None
    last_train_loss: float | None = None
    eval_domain_loss: dict[str, float] = Field(default_factory=dict)
    tokens_per_s: float
    collapse_warnings: int
    last_checkpoint: str | None = None
    next_command: str


class GenerateOutput(CommandOutput):
    command: Literal["generate"] = "generate"
    prompt: str
    unconditional: bool = Field(description="no --prompt: the text starts from nothing")
    prompt_seen: str = Field(description="the prompt the model continued (its tail if cut)")
    text: str = Field(description="the generated continuation only")
    tokens: list[GeneratedToken] = Field(description="each new token with its experts per layer")
    moe_layers: list[int]
    stopped_at_eos: bool
    warnings: list[str] = Field(default_factory=list)


class PresetEntry(BaseModel):
    name: str
    description: str


class PresetsOutput(CommandOutput):
    command: Literal["presets"] = "presets"
    presets: list[PresetEntry]


class ExportOutput(CommandOutput):
    command: Literal["export"] = "export"
    path: str
    source: str
    kind: Literal["dense", "moe"]
    architecture: str = Field(description="the transformers class written to config.json")
    remote_code: bool = Field(description="loading needs trust_remote_code=True")
    reason: str = Field(description="why that class (the fallback reason for custom code)")
    files: list[str]
    has_tokenizer: bool
    warnings: list[str] = Field(default_factory=list)


class QuickstartOutput(CommandOutput):
    command: Literal["quickstart"] = "quickstart"
    out: str
    size: str
    plan: str
    seeds: list[int]
    seconds: float
    report: str | None
    runs: dict[str, str]
    findings: list[Finding]


class PrepareDataOutput(CommandOutput):
    command: Literal["prepare-data"] = "prepare-data"
    path: str
    domains: list[str]
    tokenizer: str
    vocab_size: int
    block_size: int
    train_blocks: int
    eval_blocks: int
    seconds: float
    tokens_per_s: float
    warnings: list[str] = Field(default_factory=list)


class LoggedRun(BaseModel):
    run_dir: str
    rows: int
    destination: str


class LogOutput(CommandOutput):
    command: Literal["log"] = "log"
    tracker: Literal["tensorboard", "wandb"]
    runs: list[LoggedRun]


class ExperimentOutput(CommandOutput):
    command: Literal["experiment"] = "experiment"
    out: str
    seeds: list[int]
    runs: list[RunStatus] = Field(description="every run's state (--status prints only these)")
    report_markdown: str | None = None
    report_json: str | None = None
    table: ExperimentTable | None = Field(None, description="report.json; None with --status")
    seconds: float | None = None
    jobs: list[SubmittedJob] | None = Field(
        None, description="--launcher slurm: each job submitted, still queued or done"
    )


COMMAND_SCHEMAS: dict[str, type[CommandOutput]] = {
    schema.model_fields["command"].default: schema
    for schema in (
        TrainOutput,
        GenerateOutput,
        PresetsOutput,
        ExportOutput,
        QuickstartOutput,
        PrepareDataOutput,
        LogOutput,
        ExperimentOutput,
    )
}
"""Command name -> the schema its --json prints."""


def print_json(output: BaseModel) -> None:
    """The one JSON document on stdout."""
    typer.echo(output.model_dump_json(indent=2))


JsonOption = Annotated[
    bool,
    typer.Option("--json/--no-json", help="Print one JSON document for scripts (docs/interop.md)."),
]
