"""Pydantic results of `evaluate_models`: what eval/<corpus>.json holds and visualize reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from moectl.analysis.bootstrap import Verdict
from moectl.analysis.metrics import NMI_NORMALIZATION
from moectl.errors import MoectlError
from moectl.fs import read_text

RESULT_FORMAT = 2
"""2: the gate null (`GateNull`), bias-corrected NMIs, the per-document count tables and the
2x2 of body x gate; `emergent` and `router_made` are bias-corrected differences. Results of
format 1 load with those fields missing."""


class Emergence(BaseModel):
    """Trained minus init-router NMI on the same documents, with its paired bootstrap interval.

    `verdict` is 'emerged' (interval above 0), 'inherited' (contains 0), 'reduced' (below 0),
    or None when the model has no init control (then difference and ci are None too). In
    results of format 2 the difference is bias-corrected: `bias` (the two routers' difference
    in document-permutation baseline) was subtracted from the plug-in difference and from its
    interval; raw = difference + bias.
    """

    difference: float | None = None
    ci: tuple[float, float] | None = None
    verdict: Verdict | None = None
    bias: float | None = None


class UnitCounts(BaseModel):
    """Per document (units in ascending order of EvaluationResult.block_document values),
    per expert, the layer's top-k assignment counts: what seed- and document-level intervals
    are recomputed from. A unit's domain is `bootstrap.unit_strata(block_domain,
    block_document)`."""

    trained: list[list[int]] = Field(description="(U, E) the trained model, trained gate")
    first_choice: list[list[int]] = Field(description="(U, E) first choice only")
    frozen_gate: list[list[int]] | None = Field(None, description="trained body, init gate")
    init: list[list[int]] | None = Field(None, description="step-0 body, init gate")
    trained_gate_on_init: list[list[int]] | None = Field(
        None, description="step-0 body, trained gate (the 2x2 cell)"
    )


class GateRank(BaseModel):
    """The trained router's bias-corrected domain NMI ranked among n gates' on the same tokens
    (each NMI minus its own document-permutation baseline)."""

    p_value: float = Field(
        description="(1 + #gates with corrected NMI >= the trained router's) / (n + 1)"
    )
    percentile: float = Field(description="share of gates below the router (ties half), 0-100")
    trained_nmi: float = Field(description="the trained router's corrected NMI")
    mean: float = Field(description="the gates' mean corrected NMI")
    q05: float
    q95: float
    raw_mean: float = Field(description="the gates' mean plug-in NMI (no correction)")
    excess: float = Field(description="trained_nmi - mean")
    excess_se: float = Field(description="document-bootstrap standard error of `excess`")


class GateNull(BaseModel):
    """The trained router against the distribution of gates drawn as the init draws them, on
    the trained model's hidden states at the layer input, each routed by the model's own rule
    (with the learned selection bias under a bias scheme). `plain` ranks it among the gates as
    drawn; `balanced` among the same gates with per-expert logit offsets fitted so that each
    gate's expert load matches the trained router's, on a token subsample (`balanced_tokens`).
    `p_value`, the stricter of the two, is what a verdict uses (before any family correction).
    """

    n: int
    p_value: float = Field(description="max(plain p, balanced p): the decision's p-value")
    plain: GateRank
    balanced: GateRank | None = None
    balanced_tokens: int | None = Field(None, description="tokens the balanced null routes")
    balance_error: float | None = Field(
        None, description="largest |expert share - the trained router's| over the fitted gates"
    )
    frozen_gate_percentile: float | None = Field(
        None, description="the init gate's corrected NMI among the gates' (it is one draw)"
    )
    selection_bias: bool = Field(False, description="the gates chose with the learned bias")
    n_permutations: int = Field(description="document permutations per NMI baseline")


class CorrectedNMI(BaseModel):
    """Domain NMIs minus each one's own document-permutation baseline (domain labels permuted
    across whole documents, each document's count vector kept; the mean over `n_permutations`
    seeded permutations, the same for every router). Plug-in NMI is biased upward by more for a
    more concentrated router, so differences are taken between these."""

    n_permutations: int
    trained: float
    first_choice: float
    frozen_gate: float | None = None
    init: float | None = None
    trained_gate_on_init: float | None = None
    interaction: float | None = Field(
        None,
        description="co-adaptation: trained - frozen gate - trained gate on init + init",
    )
    interaction_ci: tuple[float, float] | None = Field(
        None, description="95% document-bootstrap interval of `interaction`"
    )


class Probe(BaseModel):
    """A linear domain probe on the layer's input, fit on half the eval documents and scored on
    the other half: the ceiling of how much domain routing the representation allows.
    `chance` is the held-out share of the most common domain (a probe that ignores the input)."""

    accuracy: float
    nmi: float = Field(description="NMI(domain; probe prediction) on the held-out documents")
    chance: float
    train_documents: int
    test_documents: int


class TokenIdScore(BaseModel):
    """Domain routing beyond vocabulary: MI(domain; expert | token id) / H(domain | token id).

    Near 0 when the expert follows the token id alone (OLMoE found routing largely does)."""

    nmi: float
    ci: tuple[float, float] | None = None


class SpecializationScore(BaseModel):
    """Normalized MI between a label (domain or token type) and the chosen expert.

    `baseline_nmi` is the random-assignment baseline (labels shuffled across the same tokens: a
    router that ignores the token), i.e. the estimator's finite-sample bias. It cannot fail and
    is no control; the control is the init router (`init_nmi`, `emergent`).
    """

    normalization: str = NMI_NORMALIZATION
    mutual_information: float = Field(description="MI(label; expert) in nats")
    label_entropy: float = Field(description="H(label) in nats")
    nmi: float
    baseline_nmi: float = Field(
        description="random-assignment baseline: mean NMI with labels permuted across tokens"
    )
    baseline_nmi_std: float
    n_permutations: int
    nmi_ci: tuple[float, float] | None = Field(
        None, description="95% bootstrap interval over eval blocks"
    )
    init_nmi: float | None = Field(None, description="the same model's router at step 0")
    init_nmi_ci: tuple[float, float] | None = None
    emergent: Emergence = Field(default_factory=Emergence)
    n_bootstrap: int = 0
    # The router's own share (domain labels only; None for token types and without an init
    # record): the trained hidden states at the layer input routed through the init gate (same
    # top-k, same rule), and trained minus that, paired. `emergent` above compares whole models
    # (body and gate at step 0); `router_made` holds the body fixed and changes only the gate.
    frozen_gate_nmi: float | None = None
    frozen_gate_nmi_ci: tuple[float, float] | None = None
    router_made: Emergence = Field(default_factory=Emergence)
    # The router against the distribution of gates (it decides; the frozen gate above is one
    # of its draws and descriptive), the bias-corrected NMIs, the trained gate on the step-0
    # body (the 2x2 of body x gate) and the per-document tables (domain labels only).
    gate_null: GateNull | None = None
    corrected: CorrectedNMI | None = None
    trained_gate_on_init_nmi: float | None = None
    unit_counts: UnitCounts | None = None
    probe: Probe | None = None
    token_id: TokenIdScore | None = None
    # First choice only (each token counted once), the like-for-like number across top-k.
    first_choice_nmi: float | None = None
    first_choice_nmi_ci: tuple[float, float] | None = None

    @property
    def excess(self) -> float:
        """NMI above what a label-blind router scores on the same tokens."""
        return self.nmi - self.baseline_nmi


class SampleSize(BaseModel):
    """How many eval blocks of a domain were evaluated and from how many documents: the
    documents are the units the intervals resample."""

    blocks: int
    documents: int


FunctionalVerdict = Literal["specialized", "not specialized"]


class FunctionalArm(BaseModel):
    """One model's functional test for one (domain, layer, m): the domain's eval loss with its
    tokens routed only among the m experts it uses most, against m experts drawn at random."""

    experts: list[int] = Field(description="the domain's m most-used experts in this layer")
    own_loss: float
    random_loss: float = Field(description="mean over the random draws")
    n_draws: int
    difference: float = Field(description="own_loss - random_loss")
    ci: tuple[float, float] | None = Field(None, description="95% paired interval over documents")
    verdict: FunctionalVerdict | None = None


class FunctionalScore(BaseModel):
    """Do the experts a domain is routed to matter for it? (EMO-style keep-own-experts test)."""

    domain: str
    layer: int
    m: int
    full_loss: float = Field(description="the domain's eval loss with every expert available")
    trained: FunctionalArm
    init: FunctionalArm | None = None


class TopExpert(BaseModel):
    """A label's busiest expert and how far its share exceeds the uniform 1/E."""

    expert: int
    share: float
    ratio_to_uniform: float
    ratio_ci: tuple[float, float] | None = Field(
        None, description="95% bootstrap interval of the top share over uniform"
    )


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
    experts: dict[str, list[list[int]]] = Field(
        default_factory=dict, description="layer -> every top-k expert per token, in order"
    )
    weights: dict[str, list[list[float]]] = Field(
        default_factory=dict, description="layer -> the combine weight of each of those experts"
    )

    def choices(self, layer: str, index: int) -> list[tuple[int, float | None]]:
        """Every (expert, combine weight) a token was routed to in a layer, first choice first;
        results written before all choices were kept give the first choice alone."""
        if layer in self.experts:
            return list(zip(self.experts[layer][index], self.weights[layer][index], strict=True))
        return [(self.layers[layer][index], None)]


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
    routing_label: str | None = Field(
        None, description="MoEConfig.routing_label of the model (None: dense, or not recorded)"
    )
    routing: list[RoutingAnalysis] = Field(default_factory=list)
    samples: list[TokenRouting] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    init_control: str | None = Field(
        None, description="why the init-router control is missing (None when it was evaluated)"
    )
    block_index: list[int] = Field(
        default_factory=list, description="the evaluated blocks' rows in the split, in order"
    )
    block_domain: list[int] = Field(default_factory=list)
    block_loss: list[float] = Field(
        default_factory=list, description="mean per-token loss of each evaluated block"
    )
    block_document: list[int] = Field(
        default_factory=list,
        description="the document (the bootstrap's unit) of each evaluated block, in order",
    )
    sample: dict[str, SampleSize] = Field(
        default_factory=dict, description="per domain: evaluated blocks and their documents"
    )
    sample_seed: int | None = Field(None, description="the seed that drew the eval blocks")
    functional: list[FunctionalScore] = Field(default_factory=list)

    def mean_specialization(self) -> SpecializationScore | None:
        """Domain NMI, its init-router value and the baseline averaged over MoE layers (None for
        a dense model; init_nmi None when any layer lacks the control)."""
        if not self.routing:
            return None
        n = len(self.routing)
        scores = [layer.specialization for layer in self.routing]
        inits = [s.init_nmi for s in scores]
        return SpecializationScore(
            mutual_information=sum(s.mutual_information for s in scores) / n,
            label_entropy=scores[0].label_entropy,
            nmi=sum(s.nmi for s in scores) / n,
            baseline_nmi=sum(s.baseline_nmi for s in scores) / n,
            baseline_nmi_std=max(s.baseline_nmi_std for s in scores),
            n_permutations=scores[0].n_permutations,
            init_nmi=None if None in inits else sum(inits) / n,
        )


class Finding(BaseModel):
    """One claim of the reference study checked against a study's own measurements.

    The report's findings table shows `verdict`, the one number that decides it (`measure`,
    `value`, `ci`) and what that number is compared against (`control`); `details` are the
    supporting numbers below the table. Over several seeds `value`/`ci` are the mean over seeds
    and its seed-then-document interval, and `seed_verdicts` counts the seeds per verdict.
    """

    key: str
    title: str
    reproduced: bool
    verdict: str = Field(description="the finding in a word or two, e.g. 'made by the router'")
    text: str = Field(description="the finding in one or two sentences")
    measure: str | None = Field(None, description="what the deciding number is")
    value: float | None = None
    ci: tuple[float, float] | None = Field(None, description="95% interval of `value`")
    control: str | None = Field(None, description="what `value` is compared against")
    seeds: list[int] = Field(default_factory=list)
    seed_verdicts: dict[str, int] = Field(
        default_factory=dict, description="verdict -> how many seeds give it"
    )
    details: list[str] = Field(default_factory=list)


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
        raw = json.loads(read_text(path, hint="re-run `moectl evaluate`"))
        if isinstance(raw, dict) and "results" in raw:
            return EvaluationSet.model_validate(raw).results
        return [EvaluationResult.model_validate(raw)]
    except (json.JSONDecodeError, ValidationError) as exc:
        raise MoectlError(
            f"{path} is not an evaluation result written by moectl evaluate",
            hint=f"re-run `moectl evaluate` ({str(exc).splitlines()[0]})",
        ) from None
