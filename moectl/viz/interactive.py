"""Interactive figures for report.html (Plotly): heatmaps with hover values, the routing over
training with a step slider, and curves with seed bands.

Each figure is an HTML fragment (a div and its script) that expects plotly.js on the page:
`plotly_js()` is inlined once in the report's head, so the page still opens offline. The static
image of the same data stays beside each one, for printing and for TensorBoard. The data is the
routing log (`routing.jsonl`: every router-log step's domain x expert shares and counts per
layer), the evaluation results and the run logs: the same numbers the static figures draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from moectl.analysis.results import EvaluationResult
from moectl.analysis.runs import RunLogs
from moectl.viz.palette import run_color
from moectl.viz.seed_bands import metric_bands

SHARE = "domain %{y}<br>expert %{x}<br>share %{z:.4f}"
COUNT = "<br>%{customdata[0]} of the domain's %{customdata[1]} assignments"
CONFIG = {"responsive": True, "displaylogo": False, "scrollZoom": False}


@dataclass(frozen=True)
class Panel:
    """One layer's domain x expert heatmap: shares, and the assignment counts behind them
    (None where the log has none)."""

    title: str
    domains: list[str]
    shares: list[list[float]]
    counts: list[list[int]] | None

    def customdata(self) -> list[list[list[int]]] | None:
        """Per cell: [the cell's count, its domain's total], for the hover text."""
        if self.counts is None:
            return None
        return [[[c, sum(row)] for c in row] for row in self.counts]


def _heatmaps(panels: list[Panel], title: str) -> go.Figure:
    """One heatmap per layer, stacked (one per row: it reads the same on a phone); the colour
    scale is fixed at 0..1, so steps and models compare by colour."""
    fig = make_subplots(
        rows=len(panels), cols=1, subplot_titles=[p.title for p in panels], vertical_spacing=0.12
    )
    for row, panel in enumerate(panels, start=1):
        counted = panel.counts is not None
        fig.add_trace(
            go.Heatmap(
                z=panel.shares,
                customdata=panel.customdata(),
                x=[f"e{e}" for e in range(len(panel.shares[0]))],
                y=panel.domains,
                zmin=0,
                zmax=1,
                colorscale="Viridis",
                hovertemplate=SHARE + (COUNT if counted else "") + "<extra></extra>",
                showscale=row == 1,
                colorbar={"title": {"text": "share"}, "len": 0.5},
            ),
            row=row,
            col=1,
        )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=140 + 190 * len(panels),
        margin={"l": 60, "r": 20, "t": 70, "b": 40},
    )
    return fig


def routing_heatmaps(result: EvaluationResult) -> go.Figure | None:
    """The evaluated model's domain x expert shares per MoE layer, with hover values."""
    if not result.routing:
        return None
    panels = []
    for layer in result.routing:
        domains = [d for d in layer.domains if d in layer.domain_fractions]
        panels.append(
            Panel(
                title=f"layer {layer.layer}: NMI {layer.specialization.nmi:.3f}",
                domains=domains,
                shares=[layer.domain_fractions[d] for d in domains],
                counts=[layer.counts[layer.domains.index(d)] for d in domains],
            )
        )
    return _heatmaps(panels, f"{result.name}: domain x expert shares (top-{result.top_k})")


def _row_panels(row: dict[str, Any]) -> list[Panel]:
    """A routing.jsonl row's panels. Its counts have a row per training domain; its shares
    only for the domains that had tokens, which are the count rows with a nonzero total."""
    panels = []
    for layer, stats in sorted(row["layers"].items(), key=lambda item: int(item[0])):
        shares = stats.get("domain_fractions")
        if not shares:
            continue
        counts = [r for r in stats.get("counts") or [] if sum(r) > 0]
        nmi = f": NMI {stats['nmi']:.3f}" if stats.get("nmi") is not None else ""
        panels.append(
            Panel(
                title=f"layer {layer}{nmi}",
                domains=list(shares),
                shares=list(shares.values()),
                counts=counts if len(counts) == len(shares) else None,
            )
        )
    return panels


def routing_over_training(run: RunLogs) -> go.Figure | None:
    """The run's domain x expert shares per layer at every router-log step, with a slider over
    the steps (it starts at the last one); None without a routing log with domain shares.

    Each slider step restyles the heatmaps (z, the counts for the hover) and retitles the
    panels with that step's NMI: an `update`, applied at once, with no animation frames."""
    rows = [(row["step"], panels) for row in run.routing or [] if (panels := _row_panels(row))]
    if not rows:
        return None
    last = rows[-1][1]
    fig = _heatmaps(last, f"{run.name}: routing over training")
    steps = []
    for step, panels in rows:
        if [p.domains for p in panels] != [p.domains for p in last]:
            continue  # a step with other layers or domains is not the same heatmap
        data = {"z": [p.shares for p in panels], "customdata": [p.customdata() for p in panels]}
        titles = {f"annotations[{i}].text": p.title for i, p in enumerate(panels)}
        steps.append({"label": str(step), "method": "update", "args": [data, titles]})
    fig.update_layout(
        sliders=[
            {
                "active": len(steps) - 1,
                "currentvalue": {"prefix": "step "},
                "pad": {"t": 40},
                "steps": steps,
            }
        ],
        height=fig.layout.height + 80,
    )
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def seed_bands(runs: list[RunLogs]) -> go.Figure | None:
    """Eval loss and NMI over training per arm with two seeds or more: the mean over seeds as
    a line, the band from the lowest to the highest seed; hover gives all three."""
    metrics = metric_bands(runs)
    if not metrics:
        return None
    fig = make_subplots(rows=len(metrics), cols=1, vertical_spacing=0.15)
    arm_names = list(dict.fromkeys(band.arm for _, found in metrics for band in found))
    for row, (label, found) in enumerate(metrics, start=1):
        for band in found:
            color = run_color(arm_names.index(band.arm))
            common = {"x": band.steps, "legendgroup": band.arm, "name": band.label}
            edge = {**common, "mode": "lines", "line": {"width": 0}, "hoverinfo": "skip",
                    "showlegend": False}  # fmt: skip
            fig.add_trace(go.Scatter(y=band.high, **edge), row=row, col=1)
            fig.add_trace(
                go.Scatter(y=band.low, fill="tonexty", fillcolor=_rgba(color, 0.2), **edge),
                row=row,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    y=band.mean,
                    customdata=list(zip(band.low, band.high, strict=True)),
                    mode="lines+markers",
                    line={"color": color},
                    marker={"size": 4},
                    showlegend=row == 1,
                    hovertemplate=f"{band.label}<br>step %{{x}}<br>mean %{{y:.4f}}<br>seeds from "
                    "%{customdata[0]:.4f} to %{customdata[1]:.4f}<extra></extra>",
                    **common,
                ),
                row=row,
                col=1,
            )
        fig.update_yaxes(title_text=label, row=row, col=1)
        fig.update_xaxes(title_text="step", row=row, col=1)
    fig.update_layout(
        title={"text": "Over seeds: mean per arm, band from lowest to highest seed",
               "font": {"size": 14}},
        height=160 + 260 * len(metrics),
        margin={"l": 60, "r": 20, "t": 70, "b": 40},
        legend={"orientation": "h", "y": -0.12},
    )  # fmt: skip
    return fig


def fragments(figures: list[tuple[str, go.Figure]]) -> dict[str, str]:
    """Each (name, figure) as an HTML fragment keyed by name, without plotly.js (the page
    carries it once: `plotly_js`)."""
    return {
        name: pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            config=CONFIG,
            div_id=name,
            default_height=f"{fig.layout.height}px",
        )
        for name, fig in figures
    }


def plotly_js() -> str:
    """plotly.js itself (minified), for one inline script in the report's head."""
    return get_plotlyjs()
