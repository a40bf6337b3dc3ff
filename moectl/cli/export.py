"""`moectl export`: write a model as a standard transformers directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from moectl.cli.common import console, render_warnings


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
) -> None:
    """Export a model as a transformers directory that loads without moectl.

    Writes config.json, model.safetensors, generation_config.json and the tokenizer files.

    Dense: a plain GPT-2, AutoModelForCausalLM.from_pretrained(DIR).

    MoE: custom code, from_pretrained(DIR, trust_remote_code=True); output_router_logits=True.

    Back into moectl: --init-from DIR, or --set model.pretrained=DIR for a dense model.

    Examples:

      moectl export runs/moe --out exported/moe

      moectl export runs/moe/checkpoints/step-400 --out exported/moe-400
        --tokenizer data/mix/tokenizer

      moectl export runs/dense/best --out exported/dense --force
    """
    from moectl.export import export_model
    from moectl.fs import check_writable

    check_writable(out, "--out")
    result = export_model(model, out, force=force, tokenizer=tokenizer)
    render_warnings(result.warnings)
    kind = "GPT-2" if result.kind == "dense" else "MoE GPT-2 (custom code)"
    console.print(
        f"exported {escape(result.source)} -> [bold]{escape(result.path)}[/] as a {kind}",
        highlight=False,
    )
    remote = "" if result.kind == "dense" else ", trust_remote_code=True"
    console.print(
        f"  load it with AutoModelForCausalLM.from_pretrained({escape(repr(result.path))}{remote})",
        highlight=False,
    )
