"""Matplotlib figures of a study, each from plain data (results, run logs) to a written file.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot state), so they are safe to
draw from a library call or a test without a display. Each function returns the written path,
or None when its data is absent (the caller says why).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from moectl.analysis.metrics import random_assignment_nmi
from moectl.analysis.results import EvaluationResult
from moectl.analysis.runs import RunLogs
from moectl.fs import atomic_file
from moectl.viz.palette import domain_color, expert_color, run_color
from moectl.viz.seed_bands import metric_bands

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format=path.suffix.lstrip("."))
    return path


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def routing_heatmaps(result: EvaluationResult, path: Path, stacked: bool = False) -> Path | None:
    """Domain x expert share heatmaps, one panel per MoE layer, for one evaluated model
    (`stacked`: one panel per row, for a phone)."""
    if not result.routing:
        return None
    panels = []
    for layer in result.routing:
        domains = [d for d in layer.domains if d in layer.domain_fractions]
        spec = layer.specialization
        title = f"layer {layer.layer}: NMI {spec.nmi:.3f} (uniform {spec.baseline_nmi:.3f})"
        panels.append((title, domains, [layer.domain_fractions[d] for d in domains]))
    title = f"{result.name}: which experts each domain's tokens go to (top-{result.top_k})"
    return _save(_share_heatmaps(panels, title, 1 if stacked else 3), path)


def routing_last_step(run: RunLogs, path: Path, stacked: bool = False) -> Path | None:
    """The run's heatmaps at its last router-log step: the static image beside the report's
    heatmap with a slider over every step."""
    rows = [row for row in run.routing or [] if row.get("layers")]
    if not rows:
        return None
    title = f"{run.name}: routing at step {rows[-1]['step']}"
    return _save(routing_row_heatmaps(rows[-1], title, 1 if stacked else 3), path)


def routing_row_heatmaps(row: dict[str, Any], title: str, max_cols: int = 3) -> Figure:
    """The same heatmaps for one routing.jsonl row (the router during training, as the
    metric sinks show it at every router-log step)."""
    panels = []
    for layer, stats in sorted(row["layers"].items(), key=lambda item: int(item[0])):
        domains = list(stats["domain_fractions"])
        nmi = f": NMI {stats['nmi']:.3f}" if stats.get("nmi") is not None else ""
        panels.append((f"layer {layer}{nmi}", domains, list(stats["domain_fractions"].values())))
    return _share_heatmaps(panels, title, max_cols)


def figure_pixels(fig: Figure) -> np.ndarray:
    """A figure rendered to an (H, W, 3) uint8 array, for trackers that take images."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _share_heatmaps(
    panels: list[tuple[str, list[str], list[list[float]]]], title: str, max_cols: int = 3
) -> Figure:
    """One domain x expert heatmap per (title, domains, shares) panel, a shared colour bar."""
    rows, cols = _grid(len(panels), max_cols)
    n_experts = max(len(shares[0]) for _, _, shares in panels if shares)
    fig = Figure(
        layout="constrained", figsize=(1.0 + 0.55 * n_experts * cols + 1.2, 0.6 + 0.55 * 4 * rows)
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    all_domains = list(dict.fromkeys(d for _, domains, _ in panels for d in domains))
    image = None
    for k, (ax, (panel_title, domains, shares)) in enumerate(zip(axes.flat, panels, strict=False)):
        matrix = np.array(shares)
        image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=max(matrix.max(), 1e-9))
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value < 0.6 * matrix.max() else "black",
            )
        ax.set_xticks(range(matrix.shape[1]))
        ax.set_yticks(range(len(domains)), labels=domains)
        for label, domain in zip(ax.get_yticklabels(), domains, strict=True):
            label.set_color(domain_color(domain, all_domains))
            label.set_fontweight("bold")
        ax.set_xlabel("expert")
        if k % cols == 0:
            ax.set_ylabel("domain")
        ax.set_title(panel_title, fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="share of the domain's tokens")
    fig.suptitle(title)
    return fig


def _panel_row(
    n: int, width: float, height: float, stacked: bool, sharey: bool = False
) -> tuple[Figure, list[Any]]:
    """`n` panels side by side, or one under the other when `stacked` (a phone's figure)."""
    shape = (n, 1) if stacked else (1, n)
    fig = Figure(layout="constrained", figsize=(width * shape[1], height * shape[0]))
    axes = fig.subplots(*shape, squeeze=False, sharey=sharey and not stacked)
    return fig, list(axes.flat)


def _routing_runs(runs: list[RunLogs]) -> list[RunLogs]:
    return [run for run in runs if run.routing]


def _layer_series(run: RunLogs, key: str) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in run.routing or []:
        for layer, values in (row.get("layers") or {}).items():
            if values.get(key) is None:
                continue
            steps, ys = series.setdefault(str(layer), ([], []))
            steps.append(int(row["step"]))
            ys.append(float(values[key]))
    return dict(sorted(series.items(), key=lambda kv: int(kv[0])))


def _n_experts(run: RunLogs) -> int | None:
    for row in run.routing or []:
        for values in (row.get("layers") or {}).values():
            if values.get("fractions"):
                return len(values["fractions"])
    return None


def _layer_panels(
    runs: list[RunLogs], key: str, height: float, stacked: bool = False
) -> tuple[Figure, list[tuple[Any, RunLogs, dict[str, tuple[list[int], list[float]]]]]] | None:
    """One panel per run whose routing log has `key`, each with one line per MoE layer; returns
    the figure and (axes, run, series) per panel for the caller's extra marks, or None."""
    runs = [run for run in _routing_runs(runs) if _layer_series(run, key)]
    if not runs:
        return None
    fig, axes = _panel_row(len(runs), 4.2, height, stacked, sharey=True)
    panels = []
    for ax, run in zip(axes, runs, strict=True):
        series = _layer_series(run, key)
        for i, (layer, (steps, values)) in enumerate(series.items()):
            ax.plot(steps, values, color=expert_color(i), label=f"layer {layer}")
        ax.set_title(run.name)
        ax.set_xlabel("step")
        panels.append((ax, run, series))
    return fig, panels


def entropy_over_training(runs: list[RunLogs], path: Path, stacked: bool = False) -> Path | None:
    """Mean router entropy per layer against step, one panel per run with routing logs."""
    drawn = _layer_panels(runs, "entropy", 3.4, stacked)
    if drawn is None:
        return None
    fig, panels = drawn
    for ax, run, _ in panels:
        n_experts = _n_experts(run)
        if n_experts:
            ax.axhline(math.log(n_experts), color="gray", ls="--", lw=1, label="uniform router")
        ax.legend(fontsize=7)
    panels[0][0].set_ylabel("router entropy (nats)")
    fig.suptitle("Router entropy over training")
    return _save(fig, path)


def nmi_over_training(runs: list[RunLogs], path: Path, stacked: bool = False) -> Path | None:
    """NMI(domain; expert) per layer against step, one panel per MoE run, from the routing log's
    counts: the step-0 row (the init router) as a dotted level per layer, and the
    random-assignment level (same totals, no dependence) as a grey dashed line."""
    drawn = _layer_panels(runs, "nmi", 3.6, stacked)
    if drawn is None:
        return None
    fig, panels = drawn
    for ax, run, series in panels:
        for i, (steps, values) in enumerate(series.values()):
            if steps[0] == 0:
                ax.axhline(values[0], color=expert_color(i), ls=":", lw=1.2)
        levels = [
            (int(row["step"]), np.mean([random_assignment_nmi(v["counts"]) for v in layers]))
            for row in run.routing or []
            if (layers := list((row.get("layers") or {}).values()))
            and all(v.get("counts") for v in layers)
        ]
        if levels:
            steps, values = zip(*levels, strict=True)
            ax.plot(steps, values, color="gray", ls="--", lw=1, label="random assignment")
        ax.plot([], [], color="black", ls=":", lw=1.2, label="init router (step 0)")
        ax.legend(fontsize=7)
    panels[0][0].set_ylabel("NMI(domain; expert)")
    fig.suptitle("Domain specialization over training (dotted: the same layer at step 0)")
    return _save(fig, path)


def collapse_trajectory(runs: list[RunLogs], path: Path, stacked: bool = False) -> Path | None:
    """Busiest expert's share per layer against step, with the collapse threshold and events."""
    drawn = _layer_panels(runs, "max_fraction", 3.6, stacked)
    if drawn is None:
        return None
    fig, panels = drawn
    for ax, run, series in panels:
        ax.axhline(
            run.collapse_threshold,
            color="black",
            ls="--",
            lw=1,
            label=f"threshold {run.collapse_threshold:.2f}",
        )
        n_experts = _n_experts(run)
        if n_experts:
            ax.axhline(1 / n_experts, color="gray", ls=":", lw=1, label="uniform share")
        layer_order = list(series)
        events = run.collapse_events()
        for event in events:
            for layer in event["layers"]:
                if str(layer) in series:
                    steps, values = series[str(layer)]
                    y = values[steps.index(event["step"])] if event["step"] in steps else 1.0
                    ax.plot(
                        event["step"],
                        y,
                        marker="x",
                        color=expert_color(layer_order.index(str(layer))),
                        ms=8,
                        mew=2,
                    )
        stop = next((e["step"] for e in events if e["stop"]), None)
        if stop is not None:
            ax.axvline(stop, color="red", lw=1.2, label=f"collapse stop (step {stop})")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    panels[0][0].set_ylabel("busiest expert's share of tokens")
    fig.suptitle("Expert utilization: collapse trajectory (x = collapse warning)")
    return _save(fig, path)


def domain_losses(runs: list[RunLogs], path: Path, stacked: bool = False) -> Path | None:
    """Train (thin) and eval (bold) loss per domain against step, a panel per domain."""
    domains: list[str] = []
    for run in runs:
        for row in run.eval + run.train:
            for domain in row.get("domain_loss") or {}:
                if domain not in domains:
                    domains.append(domain)
    if not domains:
        return None
    fig, axes = _panel_row(len(domains), 4.0, 3.4, stacked)
    for ax, domain in zip(axes, domains, strict=True):
        for i, run in enumerate(runs):
            for rows, style in (
                (run.train, dict(lw=0.8, alpha=0.45)),
                (run.eval, dict(lw=2, marker="o", ms=3)),
            ):
                points = [
                    (r["step"], r["domain_loss"][domain])
                    for r in rows
                    if (r.get("domain_loss") or {}).get(domain) is not None
                ]
                if points:
                    steps, values = zip(*points, strict=True)
                    label = f"{run.name} eval" if rows is run.eval else f"{run.name} train"
                    ax.plot(steps, values, color=run_color(i), label=label, **style)
        ax.set_title(domain, color=domain_color(domain, domains), fontweight="bold")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.legend(fontsize=7)
    fig.suptitle("Loss per domain (bold: eval, thin: train)")
    return _save(fig, path)


def lb_loss_over_training(runs: list[RunLogs], path: Path) -> Path | None:
    """The load-balancing loss of each MoE run's train rows against step (1.0 = balanced)."""
    plotted = False
    fig = Figure(layout="constrained", figsize=(6.0, 3.4))
    ax = fig.subplots()
    for i, run in enumerate(runs):
        points = [(r["step"], r["lb_loss"]) for r in run.train if r.get("lb_loss") is not None]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, color=run_color(i), label=run.name)
            plotted = True
    if not plotted:
        return None
    ax.axhline(1.0, color="gray", ls="--", lw=1, label="perfect balance")
    ax.set_xlabel("step")
    ax.set_ylabel("load-balancing loss")
    ax.set_title("Load-balancing loss over training")
    ax.legend(fontsize=7)
    return _save(fig, path)


def seed_bands(runs: list[RunLogs], path: Path, stacked: bool = False) -> Path | None:
    """Eval loss and NMI over training per arm: the mean over the arm's seeds, shaded from
    their minimum to their maximum; a panel per metric. None without an arm of two seeds."""
    metrics = metric_bands(runs)
    if not metrics:
        return None
    fig, axes = _panel_row(len(metrics), 4.6, 3.4, stacked)
    arm_names = list(dict.fromkeys(band.arm for _, found in metrics for band in found))
    for ax, (axis_label, found) in zip(axes, metrics, strict=True):
        for band in found:
            color = run_color(arm_names.index(band.arm))
            ax.fill_between(band.steps, band.low, band.high, color=color, alpha=0.2, lw=0)
            ax.plot(band.steps, band.mean, color=color, label=band.label)
        ax.set_xlabel("step")
        ax.set_ylabel(axis_label)
        ax.legend(fontsize=7)
    fig.suptitle("Over seeds: mean per arm, shaded from the lowest to the highest seed")
    return _save(fig, path)


def token_type_bars(result: EvaluationResult, path: Path, stacked: bool = False) -> Path | None:
    """Expert shares of each token type (stacked bars), a panel per layer and domain group."""
    panels = [(layer, tt) for layer in result.routing for tt in layer.token_types]
    if not panels:
        return None
    groups = sorted({tt.group for _, tt in panels})
    layers = [layer.layer for layer in result.routing]
    rows, cols = (len(layers) * len(groups), 1) if stacked else (len(layers), len(groups))
    fig = Figure(layout="constrained", figsize=(5.5 * cols, 1.0 + 3.0 * rows))
    grid = fig.subplots(rows, cols, squeeze=False)
    axes = [grid.flat[i * len(groups) : (i + 1) * len(groups)] for i in range(len(layers))]
    n_experts = result.routing[0].n_experts
    for layer, tt in panels:
        ax = axes[layers.index(layer.layer)][groups.index(tt.group)]
        types = [t for t in tt.types if tt.tokens.get(t, 0) > 0]
        left = np.zeros(len(types))
        for expert in range(n_experts):
            widths = np.array([tt.fractions[t][expert] for t in types])
            ax.barh(
                types,
                widths,
                left=left,
                color=expert_color(expert),
                label=f"expert {expert}" if (layer, tt) == panels[0] else None,
            )
            left += widths
        ax.set_yticks(range(len(types)), labels=[f"{t} ({tt.tokens[t]})" for t in types])
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the type's assignments")
        spec = tt.specialization
        ax.set_title(
            f"{tt.domain} tokens, layer {layer.layer}: NMI {spec.nmi:.3f} "
            f"(uniform {spec.baseline_nmi:.3f})",
            fontsize=9,
            color=domain_color(tt.domain, result.routing[0].domains),
        )
    fig.legend(loc="outside lower center", ncol=min(n_experts, 8), fontsize=7)
    fig.suptitle(f"{result.name}: token-type routing (bars: share of each expert)")
    return _save(fig, path)
