"""The model card (README.md) of an exported model: the hub's YAML metadata, what the model is,
its routing configuration, its measured losses and specialization verdicts, and how to load it.

Numbers come only from records: the artifact's model.json and, when the run was evaluated, its
eval/*.json results of the exported step (each verdict with its interval and its control). A
model without them says so instead of showing anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from moectl.analysis.results import Emergence, EvaluationResult, SpecializationScore
from moectl.errors import MoectlError

# GPT-2 MoEs' only class: no reason
from moectl.interop.families.gpt2 import MOE_CLASS as GPT2_MOE_CLASS
from moectl.interop.plan import ExportPlan
from moectl.version import __version__

CARD_NAME = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
NO_LICENSE = "other"
"""The hub's license for "none of the listed ones": moectl cannot know what the weights and
the corpus allow, so without --license the card says so instead of guessing."""


def model_card(
    loaded: Any,
    artifact: Path,
    run_dir: Path | None,
    n_positions: int,
    has_tokenizer: bool,
    plan: ExportPlan,
    *,
    location: str = ".",
    license: str | None = None,
) -> str:
    """The README.md text of the export of `loaded` (read from `artifact`, part of `run_dir`),
    written as the class `plan` chose. `location` is what the usage snippet loads (the hub
    repo id, or the export folder); `license` a hub license id. The metadata goes through
    huggingface_hub's ModelCardData, and the card is read back with ModelCard, so it parses as
    the hub parses it. No local path is written: the run is named, with this moectl's version."""
    from huggingface_hub import ModelCard, ModelCardData

    from moectl.model.arch import family_of

    meta = loaded.meta
    moe = meta.moe
    arch = family_of(loaded.model)
    config, info = _run_records(run_dir)
    base = config.model.pretrained if config is not None else None
    datasets, corpus = _corpus(info)
    data = ModelCardData(
        license=license or NO_LICENSE,
        language="en",
        library_name="transformers",
        pipeline_tag="text-generation",
        base_model=base if _is_hub_id(base) else None,
        datasets=datasets or None,
        tags=["moectl", arch.name, "text-generation"]
        + (["mixture-of-experts"] if moe else [])
        + ([] if plan.native else ["custom_code"]),
    )
    name = config.name if config is not None else artifact.name
    parts = [
        f"# {name}",
        _what(meta, config, info, artifact, n_positions, arch),
        corpus,
        _license(license),
        _routing(meta) if moe else "",
        _evaluation(meta, *_evaluations(run_dir, meta.step)),
        _usage(plan, moe is not None, n_positions, has_tokenizer, location),
    ]
    body = "\n\n".join(part for part in parts if part)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")
    return str(card)


def _is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a hub model id rather than a local folder."""
    return bool(name) and bool(_HUB_ID.match(name)) and not Path(name).exists()


def _run_records(run_dir: Path | None) -> tuple[Any, Any]:
    """The run's config and run.json, or None for what is absent or unreadable."""
    from moectl.rundir.reading import read_run_config, read_run_info

    if run_dir is None:
        return None, None
    try:
        return read_run_config(run_dir), read_run_info(run_dir)
    except (MoectlError, OSError, ValueError):
        return None, None


def _corpus(info: Any) -> tuple[list[str], str]:
    """The hub datasets the run's corpus was drawn from, and a section describing it (per
    domain: its sources and token counts), from the corpus manifest when it is still there."""
    from moectl.data.store import read_manifest

    if info is None or not info.data_dir:
        return [], ""
    try:
        manifest = read_manifest(Path(info.data_dir))
    except (MoectlError, OSError, ValueError):
        domains = ", ".join(info.domains)
        return [], f"## Training data\n\nDomains: {domains}." if domains else ""
    hub = [s.dataset for s in manifest.sources if s.kind == "hf" and s.dataset]
    lines = ["## Training data", "", "| domain | source | kind | revision |", "|---|---|---|---|"]
    for source in manifest.sources:
        dataset = source.dataset or "local files"
        where = "/".join(x for x in (dataset, source.config, source.split) if x)
        lines.append(f"| {source.domain} | {where} | {source.kind} | {source.revision or '-'} |")
    return list(dict.fromkeys(hub)), "\n".join(lines)


def _license(license: str | None) -> str:
    if license:
        return ""
    return (
        "## License\n\nNot set at export (`license: other`): the base model's and the training "
        "data's licenses apply. Export again with `moectl export --license ID` to set one."
    )


def _local_name(path: str) -> str:
    """A hub id as it is; a local model folder as its run's name (RUN/best, RUN/checkpoints/
    step-N), never the exporter's absolute path."""
    from moectl.rundir.kinds import detect_kind

    if _is_hub_id(path):
        return path
    folder = Path(path)
    for run in (folder, folder.parent, folder.parent.parent):
        if detect_kind(run) == "run":
            inside = folder.relative_to(run).as_posix()
            return f"the moectl run {run.name}" + ("" if inside == "." else f" ({inside})")
    return f"a local model ({folder.name})"


def _what(
    meta: Any,
    config: Any,
    info: Any,
    artifact: Path,
    n_positions: int,
    arch: Any,
) -> str:
    sizes = arch.sizes(arch.config_from_dict(meta.hf_config))
    size = f"{sizes.layers} layers, width {sizes.hidden}, {n_positions}-token context"
    if meta.moe is None:
        kind = f"A dense {arch.label} ({size}): every token goes through the same MLP"
    else:
        origin = (
            f"upcycled from a dense {arch.label} (every expert starts as a copy of its MLP)"
            if meta.moe.init == "upcycle"
            else "trained from random weights (independently drawn experts)"
        )
        kind = (
            f"A mixture-of-experts {arch.label} ({size}): {meta.moe.routed_experts} experts "
            f"with top-{meta.moe.routed_top_k} routing in layers "
            f"{', '.join(str(layer) for layer in meta.moe_layers)}, {origin}"
        )
    lines = [f"{kind}, trained with moectl for {meta.step} steps."]
    if info is not None and info.domains:
        lines.append(f"Training corpus domains: {', '.join(info.domains)}.")
    if meta.tokenizer.get("name"):
        lines.append(f"Tokenizer: {_local_name(str(meta.tokenizer['name']))}.")
    if config is not None and config.model.pretrained:
        lines.append(f"Base model: {_local_name(config.model.pretrained)}.")
    if info is not None and info.init_from:
        lines.append(f"Initialized from: {_local_name(info.init_from)}.")
    lines.append(f"Exported with moectl {__version__} from {_local_name(str(artifact))}.")
    return "\n".join(lines)


def _routing(meta: Any) -> str:
    from moectl.model.balance import SCHEMES, balance_setting

    moe = meta.moe
    scores = "softmax" if moe.score == "softmax" else "sigmoid (DeepSeek-V3)"
    biased = SCHEMES[moe.balance].selects_with_bias
    selection = ", plus the balancing scheme's per-expert selection bias" if biased else ""
    rows = [
        ("MoE layers", ", ".join(str(layer) for layer in meta.moe_layers)),
        ("routed experts per layer", moe.routed_experts),
        ("routed experts per token (top-k)", moe.routed_top_k),
        ("fine-grained slices of each upcycled expert", moe.granularity),
        ("router", f"linear gate without bias, float32 {scores} scores"),
        ("expert choice", f"top-k of the scores{selection}"),
        ("expert weights", "1.0 for top-1; the chosen scores renormalized for top-k > 1"),
        ("shared experts (always on)", moe.shared_experts),
        ("load balancing", f"{moe.balance}: {balance_setting(moe)}"),
        ("router z-loss coefficient (training only)", moe.z_coef),
        ("router noise during training", f"std {moe.noise_std}, annealed to 0"),
        ("initialization", moe.init),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        "## Routing\n\n| setting | value |\n|---|---|\n"
        + table
        + "\n\nRouter logits are returned only when asked for: `output_router_logits` is false "
        "in config.json, so pass `output_router_logits=True` to the forward call."
    )


def _evaluations(run_dir: Path | None, step: int) -> tuple[list[EvaluationResult], list[str]]:
    """The run's evaluation results of the exported step (wherever moectl wrote them:
    `rundir.evaluation_files`), and why others were left out."""
    from moectl.analysis.results import load_results
    from moectl.rundir.locate import evaluation_files

    if run_dir is None:
        return [], []
    found, notes = [], []
    for path in evaluation_files(run_dir):
        try:
            results = load_results(path)
        except MoectlError:
            notes.append(f"{path.name} is not a moectl evaluation result and was left out.")
            continue
        for result in results:
            if result.step == step:
                found.append(result)
            else:
                notes.append(f"{path.name} evaluates step {result.step}, not this one.")
    return found, notes


def _evaluation(meta: Any, results: list[EvaluationResult], notes: list[str]) -> str:
    if not results:
        scores = (meta.metrics or {}).get("eval") or {}
        if "loss" not in scores:
            return "## Evaluation\n\nNo evaluation was recorded for this model."
        domains = ", ".join(f"{d} {v:.4f}" for d, v in (scores.get("domain_loss") or {}).items())
        missing = (
            "No `moectl evaluate` results of this step were found, so there are no "
            "specialization verdicts."
            if meta.moe is not None
            else "No `moectl evaluate` results of this step were found."
        )
        return (
            f"## Evaluation\n\nEval loss at step {meta.step} (the training run's own eval): "
            f"{scores['loss']:.4f}"
            + (f" ({domains})" if domains else "")
            + ". "
            + missing
            + "".join(f"\n\n{note}" for note in notes)
        )
    sections = ["## Evaluation"]
    for result in results:
        sections.append(_result(result))
    sections += notes
    return "\n\n".join(sections)


def _result(result: EvaluationResult) -> str:
    lines = [
        f"`moectl evaluate` on the {result.split} split of {result.corpus_name} "
        f"({result.blocks} blocks, {result.tokens} tokens).",
        "",
        "| domain | loss | perplexity |",
        "|---|---|---|",
        f"| all | {result.loss:.4f} | {result.ppl:.2f} |",
    ]
    lines += [
        f"| {domain} | {loss:.4f} | {result.domain_ppl.get(domain, float('nan')):.2f} |"
        for domain, loss in result.domain_loss.items()
    ]
    if result.routing:
        lines += [
            "",
            "Specialization: NMI(domain; expert) of the top-k assignments, with 95% bootstrap "
            "intervals over eval documents, against its controls: the same model's router at "
            "step 0 and further controls where they were measured. Beside them, the "
            "random-assignment baseline (domain labels permuted across whole documents): the "
            "estimator's bias, not a control. The token-id control is the domain NMI given the "
            "token id minus a null that permutes domain labels within each token id across "
            "documents; only an excess whose interval is above 0 says routing carries the "
            "domain beyond the token id.",
            "",
            "| layer | NMI | random-assignment baseline | step-0 router | trained - step 0 "
            "| other controls |",
            "|---|---|---|---|---|---|",
        ]
        for layer in result.routing:
            spec = layer.specialization
            lines.append(
                f"| {layer.layer} | {_ci(spec.nmi, spec.nmi_ci)} | "
                f"{spec.baseline_nmi:.3f} ± {spec.baseline_nmi_std:.3f} | "
                f"{_ci(spec.init_nmi, spec.init_nmi_ci)} | {_verdict(spec.emergent)} | "
                f"{_other_controls(spec)} |"
            )
    lines += [f"\nNote: {note}" for note in result.notes]
    return "\n".join(lines)


def _other_controls(spec: SpecializationScore) -> str:
    """The router controls an evaluation measured (newer results only); '-' for none."""
    parts = []
    if spec.router_made.verdict is not None:
        parts.append(f"router vs frozen gate (one draw): {_verdict(spec.router_made)}")
    if spec.gate_null is not None:
        null = spec.gate_null
        parts.append(
            f"gate null: {null.n} random gates, trained router at percentile "
            f"{null.plain.percentile:.0f}, p {null.p_value:.3f} (the stricter of plain and "
            "balanced; no family correction)"
        )
    if spec.probe is not None:
        probe = spec.probe
        parts.append(f"linear probe accuracy {probe.accuracy:.2f} (chance {probe.chance:.2f})")
    if spec.token_id is not None:
        parts.append(f"token id: {spec.token_id.describe()}")
    return "; ".join(parts) or "-"


def _ci(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _verdict(emergence: Emergence) -> str:
    if emergence.verdict is None or emergence.difference is None:
        return "-"
    return f"{emergence.verdict}: {_ci(emergence.difference, emergence.ci)}"


def _usage(
    plan: ExportPlan, is_moe: bool, n_positions: int, has_tokenizer: bool, location: str
) -> str:
    remote = "" if plan.native else ", trust_remote_code=True"
    code = [
        "import torch",
        "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline",
        "",
        f"path = {location!r}  # this folder, or its hub id",
        f"model = AutoModelForCausalLM.from_pretrained(path{remote})",
    ]
    if has_tokenizer:
        code += [
            f"tokenizer = AutoTokenizer.from_pretrained(path{remote})",
            f'generate = pipeline("text-generation", model=path{remote})',
            f'print(generate("def add(a, b):", max_new_tokens={min(40, n_positions // 2)}, '
            'handle_long_generation="hole")[0]["generated_text"])',
            'input_ids = tokenizer("def add(a, b):", return_tensors="pt").input_ids',
        ]
    else:
        code += ["input_ids = torch.tensor([[0, 1, 2, 3]])  # token ids of your tokenizer"]
    if is_moe:
        code += [
            "",
            "with torch.no_grad():",
            "    out = model(input_ids, output_router_logits=True)",
            "print([logits.shape for logits in out.router_logits])  # (tokens, experts) per layer",
        ]
    else:
        code += [
            "with torch.no_grad():",
            "    print(model(input_ids).logits.shape)",
        ]
    text = (
        "## How to load\n\nWith transformers alone (moectl need not be installed). The "
        "generation config is greedy, as `moectl generate` is by default, so the pipeline "
        "gives the same text:\n\n```python\n" + "\n".join(code) + "\n```"
    )
    modeling = [name for name in plan.code_files if name.startswith("modeling_")]
    if modeling:
        text += (
            "\n\nThe MoE layers are custom code shipped in this folder "
            f"(`{modeling[0]}`), hence `trust_remote_code=True`; transformers "
            "reads config.json for AutoTokenizer too, so pass it there as well."
        )
        if plan.architecture != GPT2_MOE_CLASS:
            text += f" It is custom code (`{plan.architecture}`) because {plan.reason}."
    elif is_moe:
        text += (
            f"\n\nThis is transformers' own `{plan.architecture}`, so no custom code runs: "
            f"{plan.reason}."
        )
        if plan.logits_difference is not None:
            text += (
                " The export ran both on a probe batch: the largest logit difference from "
                f"moectl's own model was {plan.logits_difference:.1e}."
            )
    if has_tokenizer:
        text += (
            f"\n\nThe context is {n_positions} tokens (`tokenizer.model_max_length`). A longer "
            'prompt needs `handle_long_generation="hole"` in the pipeline, which keeps the '
            "prompt's last tokens; `moectl generate` does the same and says so."
        )
    else:
        text += (
            "\n\nThis export has no tokenizer: export again with `--tokenizer DATA_DIR/tokenizer`."
        )
    return text
