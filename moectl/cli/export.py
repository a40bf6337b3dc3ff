"""`moectl export`: write a model as a standard transformers directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from moectl.cli.common import console, render_warnings
from moectl.cli.schemas import ExportOutput, JsonOption, print_json


def export(
    model: Annotated[
        Path, typer.Argument(help="A run directory (its best/ model) or a model artifact.")
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
    """
    from moectl.fs import check_writable
    from moectl.interop.export import export_model

    check_writable(out, "--out")
    result = export_model(model, out, force=force, tokenizer=tokenizer)
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
