"""The typed records of a run directory: the pydantic shape of every row of metrics.jsonl and
routing.jsonl, of run.json, and the one perplexity rule their scores share."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PPL_MAX_LOSS = 50.0
"""Perplexity is exp(loss) with the loss capped here (exp(50) ~ 5e21), so JSON stays finite."""


def perplexity(loss: float) -> float:
    """The one perplexity rule of every eval row, result and table."""
    return math.exp(min(loss, PPL_MAX_LOSS))


class EvalScores(BaseModel):
    """One evaluation's losses (nats/token) and perplexities, overall and per domain: the same
    structure in metrics.jsonl, model.json, TrainResult and the CLI."""

    loss: float
    ppl: float
    domain_loss: dict[str, float] = Field(default_factory=dict)
    domain_ppl: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def of(cls, loss: float, domain_loss: dict[str, float]) -> EvalScores:
        """Scores from the losses, with perplexities by `perplexity`."""
        return cls(
            loss=loss,
            ppl=perplexity(loss),
            domain_loss=domain_loss,
            domain_ppl={d: perplexity(v) for d, v in domain_loss.items()},
        )


class TrainRow(BaseModel):
    """A metrics.jsonl row for the train steps since the previous row (means over them)."""

    kind: Literal["train"] = "train"
    step: int
    tokens: int
    lr: float
    loss: float
    lm_loss: float
    lb_loss: float | None = None
    z_loss: float | None = None
    grad_norm: float
    tokens_per_s: float
    domain_loss: dict[str, float] = Field(default_factory=dict)
    time: float


class EvalRow(EvalScores):
    """A metrics.jsonl row for one evaluation of the fixed eval subset."""

    kind: Literal["eval"] = "eval"
    step: int
    lb_loss: float | None = None
    z_loss: float | None = None

    def scores(self) -> EvalScores:
        return EvalScores.model_validate(self.model_dump(include=set(EvalScores.model_fields)))


class LayerRoutingRow(BaseModel):
    """One MoE layer in a routing.jsonl row: shares of the top-k assignments (they sum to 1)."""

    fractions: list[float]
    domain_fractions: dict[str, list[float]] = Field(default_factory=dict)
    entropy: float
    domain_entropy: dict[str, float] = Field(default_factory=dict)
    max_fraction: float
    counts: list[list[int]] = Field(
        default_factory=list, description="domain x expert assignment counts (in domain order)"
    )
    nmi: float | None = Field(None, description="NMI(domain; expert) of those counts")
    balance: dict[str, float] = Field(
        default_factory=dict,
        description="the balancing scheme's state at the row's step: bias_min/bias_max (bias), "
        "f_i of the last step's global batch (global); empty for the others",
    )


class CollapseFlag(BaseModel):
    """The collapse detector's verdict on one routing row."""

    warning: bool = False
    layers: list[int] = Field(default_factory=list)
    consecutive: int = 0
    stop: bool = False


class RoutingRow(BaseModel):
    """A routing.jsonl row: per layer routing over the tokens since the previous row."""

    step: int
    layers: dict[str, LayerRoutingRow]
    collapse: CollapseFlag | None = Field(
        default_factory=CollapseFlag,
        description="None on the step-0 row: the init router, before any update, is no "
        "collapse check",
    )


class CollapseEvent(BaseModel):
    """One router-log step at which at least one layer was over the collapse threshold."""

    step: int
    layers: list[int]
    max_fraction: dict[str, float]
    consecutive: int
    stop: bool


def collapse_events(rows: list[RoutingRow]) -> list[CollapseEvent]:
    """The warnings in a routing log, one event per warning row."""
    return [
        CollapseEvent(
            step=row.step,
            layers=row.collapse.layers,
            max_fraction={
                str(k): row.layers[str(k)].max_fraction
                for k in row.collapse.layers
                if str(k) in row.layers
            },
            consecutive=row.collapse.consecutive,
            stop=row.collapse.stop,
        )
        for row in rows
        if row.collapse is not None and row.collapse.warning
    ]


class Amendment(BaseModel):
    """A setting changed on --resume (only RESUMABLE_KEYS may be), and from which step."""

    time: str
    step: int
    key: str
    old: Any
    new: Any


class Resume(BaseModel):
    time: str
    checkpoint: str


class RunInfo(BaseModel):
    """run.json: where the run's inputs came from, and every resume and amendment."""

    model_config = ConfigDict(extra="allow")

    created: str | None = None
    moectl_version: str | None = None
    data_dir: str = Field(description="absolute path of the corpus the run trains on")
    init_from: str | None = None
    domains: list[str] = Field(default_factory=list)
    resumes: list[Resume] = Field(default_factory=list)
    amendments: list[Amendment] = Field(default_factory=list)
    precision: str | None = Field(
        None,
        description="what train.precision resolved to (fp32 or bf16); a resume keeps it. None: "
        "a run from before it was recorded (auto was fp32 on every CPU)",
    )
