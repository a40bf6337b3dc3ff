"""Pydantic results of `evaluate_models`: what eval/<corpus>.json holds and visualize reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from moectl.analysis.metrics import NMI_NORMALIZATION
from moectl.errors import MoectlError

RESULT_FORMAT = 1


class SpecializationScore(BaseModel):
    """Normalized MI between a label (domain or token type) and the chosen expert."""

    normalization: str = NMI_NORMALIZATION
    mutual_information: float = Field(description="MI(label; expert) in nats")
    label_entropy: float = Field(description="H(label) in nats")
    nmi: float
    baseline_nmi: float = Field(description="mean NMI with labels permuted across tokens")
    baseline_nmi_std: float
    n_permutations: int

    @property
    def excess(self) -> float:
        """NMI above what a label-blind router scores on the same tokens."""
        return self.nmi - self.baseline_nmi


class TopExpert(BaseModel):
    """A label's busiest expert and how far its share exceeds the uniform 1/E."""

    expert: int
    share: float
    ratio_to_uniform: float


class TokenTypeRouting(BaseModel):
    """Token type x expert routing of one domain group ("code" or "math") in one layer."""

    group: str
    domain: str
    types: list[str]
    counts: list[list[int]] = Field(description="type x expert top-k assignment counts")
    fractions: dict[str, list[float]] = Field(description="per type: share of each expert")
    tokens: dict[str, int]
    specialization: SpecializationScore


class RoutingAnalysis(BaseModel):
    """Routing statistics of one MoE layer over the evaluated tokens."""

    layer: int
    n_experts: int
    top_k: int
    tokens: int
    domains: list[str]
    counts: list[list[int]] = Field(description="domain x expert top-k assignment counts")
    domain_fractions: dict[str, list[float]]
    utilization: list[float] = Field(description="share of all assignments per expert")
    max_over_mean: float
    cv: float = Field(description="coefficient of variation of the expert shares")
    entropy: float = Field(description="mean router entropy (nats) over tokens")
    domain_entropy: dict[str, float]
    specialization: SpecializationScore
    top_expert: dict[str, TopExpert]
    token_types: list[TokenTypeRouting] = Field(default_factory=list)


class TokenRouting(BaseModel):
    """One sample text with its tokens' routing, for the token-level HTML page."""

    domain: str
    tokens: list[str]
    layers: dict[str, list[int]] = Field(description="layer -> first-choice expert per token")
    probs: dict[str, list[float]] = Field(
        description="layer -> router probability of the first-choice expert per token"
    )
    entropy: dict[str, list[float]]


class EvaluationResult(BaseModel):
    """Losses and routing analysis of one model on one corpus split."""

    format_version: int = RESULT_FORMAT
    name: str
    model_path: str
    run_dir: str | None = None
    kind: Literal["dense", "moe"]
    step: int | None = None
    corpus: str
    corpus_name: str
    split: str
    blocks: int
    tokens: int
    loss: float
    ppl: float
    domain_loss: dict[str, float]
    domain_ppl: dict[str, float]
    domain_tokens: dict[str, int]
    moe_layers: list[int] = Field(default_factory=list)
    n_experts: int | None = None
    top_k: int | None = None
    routing: list[RoutingAnalysis] = Field(default_factory=list)
    samples: list[TokenRouting] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def mean_specialization(self) -> SpecializationScore | None:
        """Domain NMI and its baseline averaged over MoE layers (None for a dense model)."""
        if not self.routing:
            return None
        n = len(self.routing)
        scores = [layer.specialization for layer in self.routing]
        return SpecializationScore(
            mutual_information=sum(s.mutual_information for s in scores) / n,
            label_entropy=scores[0].label_entropy,
            nmi=sum(s.nmi for s in scores) / n,
            baseline_nmi=sum(s.baseline_nmi for s in scores) / n,
            baseline_nmi_std=max(s.baseline_nmi_std for s in scores),
            n_permutations=scores[0].n_permutations,
        )


class Finding(BaseModel):
    """One claim of the reference study checked against a study's own measurements."""

    key: str
    title: str
    reproduced: bool
    text: str


class EvaluationSet(BaseModel):
    """Several models evaluated on the same corpus: the comparison `--out` writes."""

    format_version: int = RESULT_FORMAT
    results: list[EvaluationResult]


def load_results(path: Path) -> list[EvaluationResult]:
    """The results in an evaluate JSON: one EvaluationResult or an EvaluationSet."""
    if not path.is_file():
        raise MoectlError(
            f"evaluation results not found: {path}", hint="run `moectl evaluate` first"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(raw, dict) and "results" in raw:
            return EvaluationSet.model_validate(raw).results
        return [EvaluationResult.model_validate(raw)]
    except (json.JSONDecodeError, ValidationError) as exc:
        raise MoectlError(
            f"{path} is not an evaluation result written by moectl evaluate",
            hint=f"re-run `moectl evaluate` ({str(exc).splitlines()[0]})",
        ) from None
