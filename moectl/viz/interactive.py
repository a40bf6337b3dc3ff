"""Interactive figures for report.html: Plotly heatmaps with hover values, and the routing over
training with a step slider.

Each figure is an HTML fragment (a div and its script). plotly.js (about 4.8 MB) is inlined once,
in the report's first interactive figure, so the page still opens offline; the static PNG of the
same data stays beside each one for printing and for TensorBoard. The data is the routing log
(`routing.jsonl`: every router-log step's domain x expert shares per layer) and the evaluation
results, the same numbers the static figures draw.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from moectl.analysis.results import EvaluationResult
from moectl.analysis.runs import RunLogs

Panel = tuple[str, list[str], list[list[float]]]
"""(title, domains, shares): one layer's domain x expert heatmap."""

HOVER = "domain %{y}<br>expert %{x}<br>share %{z:.3f}<extra></extra>"
CONFIG = {"responsive": True, "displaylogo": False, "scrollZoom": False}


def _heatmaps(panels: list[Panel], title: str) -> go.Figure:
    """One heatmap per layer, stacked (one per row: it reads the same on a phone)."""
    fig = make_subplots(
        rows=len(panels), cols=1, subplot_titles=[t for t, _, _ in panels], vertical_spacing=0.12
    )
    for row, (_, domains, shares) in enumerate(panels, start=1):
        fig.add_trace(
            go.Heatmap(
                z=shares,
                x=[f"e{e}" for e in range(len(shares[0]))],
                y=domains,
                zmin=0,
                zmax=1,
                colorscale="Viridis",
                hovertemplate=HOVER,
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
    panels = [
        (
            f"layer {layer.layer}: NMI {layer.specialization.nmi:.3f}",
            [d for d in layer.domains if d in layer.domain_fractions],
            [layer.domain_fractions[d] for d in layer.domains if d in layer.domain_fractions],
        )
        for layer in result.routing
    ]
    return _heatmaps(panels, f"{result.name}: domain x expert shares (top-{result.top_k})")


def _row_panels(row: dict[str, Any]) -> list[Panel]:
    return [
        (f"layer {layer}", list(shares), list(shares.values()))
        for layer, stats in sorted(row["layers"].items(), key=lambda item: int(item[0]))
        if (shares := stats.get("domain_fractions"))
    ]


def routing_over_training(run: RunLogs) -> go.Figure | None:
    """The run's domain x expert shares per layer at every router-log step, with a slider over
    the steps (it starts at the last one); None without a routing log with domain shares."""
    rows = [row for row in run.routing or [] if _row_panels(row)]
    if not rows:
        return None
    fig = _heatmaps(_row_panels(rows[-1]), f"{run.name}: routing over training")
    fig.frames = [
        go.Frame(
            name=str(row["step"]),
            data=[go.Heatmap(z=shares) for _, _, shares in _row_panels(row)],
            traces=list(range(len(fig.data))),
        )
        for row in rows
    ]
    still = {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
             "transition": {"duration": 0}}  # fmt: skip
    steps = [
        {"label": str(row["step"]), "method": "animate", "args": [[str(row["step"])], still]}
        for row in rows
    ]
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


def fragments(figures: list[tuple[str, go.Figure]]) -> dict[str, str]:
    """Each (name, figure) as an HTML fragment keyed by name; plotly.js is inlined in the first
    only, so the page carries it once."""
    return {
        name: pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=i == 0,
            auto_play=False,
            config=CONFIG,
            div_id=name,
            default_height=f"{fig.layout.height}px",
        )
        for i, (name, fig) in enumerate(figures)
    }
