"""`moectl export`: write a model as a standard transformers directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from moectl.cli.common import console, render_warnings
from moectl.cli.schemas import ExportOutput, JsonOption, print_json
from moectl.errors import MoectlError


def export(
    model: Annotated[
        Path,
        typer.Argument(
            help="A run directory (its best/ model), a model artifact, or a quickstart study "
            "folder (each run to --out/NAME)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory to write.", show_default=False)
    ],
    force: Annotated[
        bool, typer.Option("--force/--no-force", help="Replace an existing --out.")
    ] = False,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            "--tokenizer",
            help="Tokenizer directory for a model saved without one (e.g. data/mix/tokenizer).",
            show_default=False,
        ),
    ] = None,
    license: Annotated[
        str | None,
        typer.Option(
            "--license",
            help="Hub license id for the card (e.g. mit, apache-2.0); default 'other', with a "
            "note that the base model's and data's licenses apply.",
            show_default=False,
        ),
    ] = None,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            metavar="REPO",
            help="Also upload the export to this hub model repo (token: HF_TOKEN or `hf auth "
            "login`); off by default.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Export a model as a transformers directory that loads without moectl.

    Writes config.json, model.safetensors, generation_config.json, the tokenizer files (its
    model_max_length is the model's context) and README.md, a model card with the hub's
    metadata, the routing settings, and the run's eval losses and specialization verdicts
    (with intervals) when `moectl evaluate` has results for the exported step.

    Dense: the plain transformers class (GPT-2, Llama, Qwen3, ...),
    AutoModelForCausalLM.from_pretrained(DIR).

    Llama-family MoE: transformers' own MoE class where one computes exactly what moectl's
    layers do (Qwen3 -> Qwen3MoeForCausalLM; Llama/Mistral with every layer MoE ->
    MixtralForCausalLM; Qwen2, or Llama/Mistral with dense layers -> Qwen2MoeForCausalLM), so
    no trust_remote_code; otherwise (sigmoid scores, balance bias, shared experts) custom code.
    The output says which class was written and why (--json: class, path and reason).

    GPT-2 MoE: custom code, from_pretrained(DIR, trust_remote_code=True). Router logits are
    off by default; a forward call with output_router_logits=True returns them.

    Back into moectl: --init-from DIR, or --set model.pretrained=DIR for a dense model.

    Examples:

      moectl export runs/moe --out exported/moe

      moectl export runs/moe/checkpoints/step-400 --out exported/moe-400
        --tokenizer data/mix/tokenizer

      moectl export runs/dense/best --out exported/dense --force

      moectl export study --out exported/

      moectl export runs/moe --out exported/moe --license mit --push-to-hub me/moe-tiny
    """
    from moectl.fs import check_writable
    from moectl.interop.export import check_out
    from moectl.rundir.kinds import detect_kind
    from moectl.rundir.locate import resolve_model, study_runs

    check_writable(out, "--out")
    if detect_kind(model) != "study":
        _export_one(model, out, force, tokenizer, license, push_to_hub, as_json)
        return
    if as_json:
        raise MoectlError(
            "--json prints one export, and a study holds several runs",
            hint=f"export one run with --json: moectl export {model}/runs/moe --out DIR --json",
        )
    if push_to_hub:
        raise MoectlError(
            "--push-to-hub takes one model, and a study holds several runs",
            hint=f"export the study, then push one run: moectl export {model}/runs/moe "
            "--out DIR --push-to-hub REPO",
        )
    runs = study_runs(model)
    for run in runs:  # every destination is checked before anything is written
        check_out(out / run.name, resolve_model(run)[0], force)
    for run in runs:
        _export_one(run, out / run.name, force, tokenizer, license, None, False)


def _export_one(
    model: Path,
    out: Path,
    force: bool,
    tokenizer: Path | None,
    license: str | None,
    push_to_hub: str | None,
    as_json: bool,
) -> None:
    from moectl.interop.export import export_model

    result = export_model(
        model, out, force=force, tokenizer=tokenizer, license=license, repo_id=push_to_hub
    )
    render_warnings(result.warnings)
    if as_json:
        print_json(ExportOutput.model_validate(result.model_dump()))
        return
    code = " (custom code)" if result.remote_code else ""
    console.print(
        f"exported {escape(result.source)} -> [bold]{escape(result.path)}[/] as "
        f"{escape(result.architecture)}{code}: {escape(result.reason)}",
        highlight=False,
    )
    remote = ", trust_remote_code=True" if result.remote_code else ""
    console.print(
        f"  load it with AutoModelForCausalLM.from_pretrained({escape(repr(result.path))}{remote})",
        highlight=False,
    )
    if push_to_hub:
        from moectl.interop.hub import push_to_hub as push

        url = push(out, push_to_hub)
        console.print(f"pushed to {escape(push_to_hub)}: {escape(url)}", highlight=False)
