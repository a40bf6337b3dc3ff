"""`moectl generate`: sample text from a model, optionally showing each token's experts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from moectl.cli.common import DeviceOption, console, err_console, render_warnings
from moectl.cli.schemas import GenerateOutput, JsonOption, print_json

if TYPE_CHECKING:
    from moectl.analysis.generation import GenerationResult


def generate(
    model: Annotated[Path, typer.Argument(help="A run directory or a model artifact directory.")],
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt",
            help="Text to continue; without it the text is unconditional.",
            show_default=False,
        ),
    ] = None,
    max_new_tokens: Annotated[
        int,
        typer.Option(
            "--max-new-tokens", min=1, help="Tokens to add (fewer than the model's context)."
        ),
    ] = 50,
    temperature: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Sampling temperature; 0 or unset with no --top-k/--top-p means greedy."
        ),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="Sample from the k most likely tokens.")
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling probability mass."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed for sampling.")] = 0,
    show_experts: Annotated[
        bool,
        typer.Option(
            "--show-experts/--no-show-experts",
            help="Show the expert each MoE layer chose per token.",
        ),
    ] = False,
    device: DeviceOption = "auto",
    options: Annotated[
        list[str] | None,
        typer.Option(
            "--gen",
            metavar="KEY=VALUE",
            help="Another transformers GenerationConfig field, e.g. --gen repetition_penalty=1.3 "
            "(repeatable).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Generate text from a model artifact or a run's best model, with its own tokenizer.

    Decoding is transformers' generate() with the KV cache: greedy by default; --temperature,
    --top-k and --top-p sample (seeded by --seed); --gen passes any other GenerationConfig field.
    --show-experts prints, for each generated token, the expert every MoE layer routed it to.
    MODEL may also be a `moectl export` directory. Without --prompt the model starts from
    nothing (unconditional text), and says so. --json prints the text, each new token and,
    for an MoE, its expert per layer.

    Examples:

      moectl generate runs/moe --prompt "def fibonacci(n):" --max-new-tokens 40

      moectl generate runs/moe/best --prompt "What is 12 times 7?" --temperature 0.8 --top-p 0.9

      moectl generate runs/moe --prompt "The history of" --show-experts

      moectl generate runs/moe --prompt "x = " --temperature 0.7 --gen repetition_penalty=1.3
    """
    from moectl.analysis.generation import generate as run_generation
    from moectl.analysis.generation import typed_generation_options
    from moectl.config import parse_override
    from moectl.interop.loading import load_model
    from moectl.rundir.locate import resolve_model

    extra: dict[str, object] = {}
    for text in options or []:
        extra.update(parse_override(text))
    extra = typed_generation_options(extra)

    artifact, _ = resolve_model(model)
    loaded = load_model(artifact, device=device)
    sampling = (
        (temperature is not None and temperature > 0) or top_k is not None or top_p is not None
    )
    if not prompt:
        err_console.print(
            "no --prompt: generating unconditionally, from an empty prompt "
            '(give --prompt "TEXT" to continue a text)',
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    result = run_generation(
        loaded,
        prompt or "",
        max_new_tokens=max_new_tokens,
        temperature=(temperature or 1.0) if sampling else 0.0,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        options=extra,
    )
    render_warnings(result.warnings)
    if as_json:
        output = {**result.model_dump(), "unconditional": not prompt}
        print_json(GenerateOutput.model_validate(output))
        return
    text = Text(result.prompt_seen, style="bold")
    text.append(result.text)
    console.print(text)
    if show_experts:
        if result.moe_layers:
            console.print(expert_table(result))
        else:
            console.print("[yellow]dense model: no experts to show[/]")


def expert_table(result: GenerationResult) -> Table:
    """One row per generated token: its text and the expert chosen in each MoE layer."""
    from moectl.viz.palette import expert_color

    table = Table(title="Experts per generated token (first choice, router probability)")
    table.add_column("#", justify="right")
    table.add_column("token")
    for layer in result.moe_layers:
        table.add_column(f"layer {layer}", justify="center")
    for position, token in enumerate(result.tokens, start=1):
        cells = [str(position), escape(repr(token.text))]
        for layer in result.moe_layers:
            expert = token.experts.get(layer)
            if expert is None:
                cells.append("-")
                continue
            cells.append(
                f"[bold {expert_color(expert)}]e{expert}[/] {token.probs.get(layer, 0.0):.2f}"
            )
        table.add_row(*cells)
    return table
