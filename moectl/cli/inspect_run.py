"""`moectl inspect` for run directories, checkpoints and model artifacts (rich or --json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from moectl.cli.common import console, domain_style


def render_run(path: Path, as_json: bool = False) -> None:
    """Print a run directory for people (rich) or scripts (--json)."""
    from moectl.rundir.summary import run_summary

    summary = run_summary(path)
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
        return
    table = Table(title=escape(f"run {path}"), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("name", f"{escape(summary.name)}  [dim]{escape(summary.description)}[/]")
    table.add_row("corpus", escape(str(summary.data_dir)))
    if summary.init_from:
        table.add_row("init from", escape(summary.init_from))
    table.add_row("model", escape(_describe_model(summary.model)))
    table.add_row("moe", escape(_describe_moe(summary.moe)))
    train = summary.train
    table.add_row(
        "train",
        f"batch {train['batch_size']} x accum {train['grad_accum']}, lr {train['lr']:g}",
    )
    table.add_row("progress", f"{summary.steps_done} / {summary.max_steps} steps")
    for amendment in summary.amendments:
        table.add_row(
            "amended",
            f"{amendment.key} {amendment.old} -> {amendment.new} at step {amendment.step}",
        )
    if summary.last_train_loss is not None:
        table.add_row("last train loss", f"{summary.last_train_loss:.4f}")
    best = summary.best_eval
    if best:
        table.add_row("best eval loss", f"{best.loss:.4f} (step {best.step})")
    checkpoints = ", ".join(str(c.step) for c in summary.checkpoints) or "none"
    table.add_row("checkpoints", checkpoints)
    table.add_row("best model", escape(summary.best_model or "none"))
    console.print(table)
    last_eval = summary.last_eval
    if last_eval:
        domains = list(last_eval.domain_loss)
        evals = Table(title=f"eval at step {last_eval.step}", title_justify="left")
        for column in ("domain", "loss", "ppl"):
            evals.add_column(column, justify="left" if column == "domain" else "right")
        for domain in domains:
            evals.add_row(
                Text(domain, style=domain_style(domain, domains)),
                f"{last_eval.domain_loss[domain]:.4f}",
                f"{last_eval.domain_ppl[domain]:.2f}",
            )
        evals.add_row("all", f"{last_eval.loss:.4f}", f"{last_eval.ppl:.2f}", style="bold")
        console.print(evals)
    events = summary.collapse_events
    if events:
        verdict = "[bold red]run stopped on collapse[/]" if summary.collapse_stop else ""
        console.print(f"[bold yellow]{len(events)} collapse warning(s)[/] {verdict}")
        for event in events:
            console.print(
                f"  step {event.step}: layers {escape(str(event.layers))}, "
                f"{event.consecutive} consecutive"
            )
    else:
        console.print("no collapse warnings")


def render_study(path: Path, as_json: bool = False) -> None:
    """Print a quickstart study folder: its settings, then one row per run."""
    from moectl.study.pipeline import study_summary

    summary = study_summary(path)
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
        return
    seeds = ", ".join(map(str, summary.seeds))
    overrides = f" ({' '.join(summary.overrides)})" if summary.overrides else ""
    console.print(
        f"[bold]study {escape(str(path))}[/]: '{escape(summary.size)}' '{escape(summary.plan)}'"
        f"{escape(overrides)}, seeds {seeds}; done: {escape(', '.join(summary.stages_done))}",
        highlight=False,
    )
    table = Table(title="runs", title_justify="left")
    for column in ("run", "model", "steps", "best eval loss", "collapse", "evaluations"):
        table.add_column(column, justify="left" if column in ("run", "model") else "right")
    for run in summary.runs:
        best = run.best_eval
        table.add_row(
            escape(run.name),
            escape(_describe_moe(run.moe)),
            f"{run.steps_done} / {run.max_steps}",
            f"{best.loss:.4f} (step {best.step})" if best else "-",
            "stopped" if run.collapse_stop else str(len(run.collapse_events)),
            str(len(summary.evaluations[Path(run.path).name])),
        )
    console.print(table)
    if summary.report:
        console.print(f"report: {escape(summary.report)}", highlight=False)


def model_summary(path: Path) -> dict[str, Any]:
    """Architecture, experts per layer, parameter counts, step and metrics of an artifact."""
    from moectl.interop.loading import load_model
    from moectl.model.arch import family_of
    from moectl.model.factory import count_parameters
    from moectl.model.routing import moe_layers
    from moectl.rundir.layout import STATE_NAME
    from moectl.training.checkpoint import read_trainer_state

    loaded = load_model(path)
    arch = family_of(loaded.model)
    sizes = arch.sizes(loaded.model.config)
    layers = moe_layers(loaded.model)
    params = count_parameters(loaded.model)
    meta = loaded.meta
    summary: dict[str, Any] = {
        "kind": "checkpoint" if (path / STATE_NAME).is_file() else "model",
        "path": str(path),
        "architecture": {
            "arch": arch.name,
            "family": arch.label,
            "n_layer": sizes.layers,
            "n_embd": sizes.hidden,
            "n_head": sizes.heads,
            "n_positions": sizes.positions,
            "vocab_size": sizes.vocab,
        },
        "experts": {str(i): layer.n_experts for i, layer in layers.items()},
        "top_k": next(iter(layers.values())).top_k if layers else None,
        "routing": meta.moe.routing_label if meta.moe and layers else None,
        "parameters": {"total": params.total, "active": params.active},
        "step": meta.step,
        "metrics": meta.metrics,
        "tokenizer": meta.tokenizer,
        "has_tokenizer": loaded.tokenizer is not None,
    }
    if summary["kind"] == "checkpoint":
        state = read_trainer_state(path)
        summary["trainer"] = {"tokens": state["tokens"], "best": state["best"]}
    return summary


def render_model(path: Path, as_json: bool = False) -> None:
    """Print a model artifact or checkpoint for people (rich) or scripts (--json)."""
    summary = model_summary(path)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    arch = summary["architecture"]
    title = escape(f"{summary['kind']} {path}")
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "architecture",
        f"{arch['family']}, {arch['n_layer']} layers, width {arch['n_embd']}, "
        f"{arch['n_head']} heads, {arch['n_positions']} positions, vocab {arch['vocab_size']:,}",
    )
    experts = summary["experts"]
    table.add_row(
        "experts",
        ", ".join(f"layer {k}: {v}" for k, v in experts.items()) + f" (top-{summary['top_k']})"
        if experts
        else "dense",
    )
    if summary["routing"]:
        table.add_row("routing", escape(summary["routing"]))
    params = summary["parameters"]
    table.add_row("parameters", f"{params['total']:,} total, {params['active']:,} active per token")
    table.add_row("step", str(summary["step"]))
    for key, value in summary["metrics"].items():
        table.add_row(escape(key), escape(_format_metric(value)))
    tokenizer = summary["tokenizer"]
    if tokenizer:
        name = escape(str(tokenizer.get("name")))
        table.add_row("tokenizer", f"{name} ({tokenizer.get('vocab_size')} ids)")
    if "trainer" in summary:
        trainer = summary["trainer"]
        table.add_row("tokens seen", f"{trainer['tokens']:,}")
        if trainer["best"]["loss"] is not None:
            best = trainer["best"]
            table.add_row("best eval so far", f"{best['loss']:.4f} (step {best['step']})")
    console.print(table)


def _format_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_format_metric(v)}" for k, v in value.items())
    return str(value)


def _describe_model(model: dict[str, Any]) -> str:
    from moectl.model.arch import family

    base = model["pretrained"] or f"scratch {family(model.get('arch', 'gpt2')).label}"
    if model["pretrained"]:
        return base
    return f"{base}, {model['n_layer']} layers, width {model['n_embd']}, {model['n_head']} heads"


def _describe_moe(moe: dict[str, Any] | None) -> str:
    if moe is None:
        return "dense"
    from moectl.config import MoEConfig
    from moectl.model.balance import balance_setting

    config = MoEConfig.model_validate(moe)
    where = f"layers {moe['layers']}" if moe["layers"] is not None else f"last {moe['last_n']}"
    return (
        f"{config.routing_label} in {where}, {balance_setting(config)}, "
        f"z {moe['z_coef']:g}, noise {moe['noise_std']:g}"
    )
