"""The token-level routing page: sample texts with every token coloured by its expert.

One self-contained HTML file (inline CSS, no scripts, no network) so it opens from disk in any
browser. Each sample shows one row per MoE layer; hovering a token shows its text, expert,
router probability and the router entropy (the native `title` tooltip).
"""

from __future__ import annotations

import html
from pathlib import Path

from moectl.analysis.results import EvaluationResult, TokenRouting
from moectl.fs import write_text
from moectl.viz.palette import domain_color, expert_color, text_color_on

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; }
table.routing { border-collapse: collapse; margin-bottom: 1.5em; }
table.routing th { text-align: right; padding: 4px 8px; vertical-align: top;
  font-weight: normal; color: #666; white-space: nowrap; }
table.routing td { padding: 4px 0; line-height: 1.9; }
span.tok, span.legend { font-family: ui-monospace, monospace; font-size: 13px; white-space: pre;
  padding: 1px 0; border-radius: 2px; }
span.tok:hover { outline: 2px solid #000; }
span.legend { padding: 2px 6px; margin-right: 4px; }
p.note { color: #666; font-size: 0.9em; }
"""


def _display(token: str) -> str:
    shown = token.replace("\n", "\u21b5").replace("\t", "\u2192")
    return shown if shown else "\u2205"


def _token_span(token: str, layer: str, sample: TokenRouting, index: int) -> str:
    expert = sample.layers[layer][index]
    color = expert_color(expert)
    tip = (
        f"token {token!r} | layer {layer} | expert {expert} | "
        f"router prob {sample.probs[layer][index]:.3f} | "
        f"entropy {sample.entropy[layer][index]:.3f} nats"
    )
    return (
        f'<span class="tok" style="background:{color};color:{text_color_on(color)}" '
        f'title="{html.escape(tip, quote=True)}">{html.escape(_display(token))}</span>'
    )


def _sample_table(sample: TokenRouting) -> str:
    rows = []
    for layer in sorted(sample.layers, key=int):
        spans = "".join(_token_span(t, layer, sample, i) for i, t in enumerate(sample.tokens))
        rows.append(f"<tr><th>layer {html.escape(layer)}</th><td>{spans}</td></tr>")
    return '<table class="routing">' + "".join(rows) + "</table>"


def render_token_page(results: list[EvaluationResult], title: str = "Token routing") -> str:
    """The HTML text of the page for every result that has routed samples."""
    with_samples = [r for r in results if r.samples]
    n_experts = max((r.n_experts or 0 for r in with_samples), default=0)
    legend = "".join(
        f'<span class="legend" style="background:{expert_color(e)};'
        f'color:{text_color_on(expert_color(e))}">expert {e}</span>'
        for e in range(n_experts)
    )
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p class='note'>Each token is coloured by the expert its MoE layer chose first "
        "(one row per layer). Hover a token for its expert, its router probability and the "
        "router entropy. &#8629; marks a newline.</p>",
        f"<p>{legend}</p>",
    ]
    for result in with_samples:
        parts.append(
            f"<h2>{html.escape(result.name)} <small>(top-{result.top_k}, "
            f"{result.n_experts} experts, {html.escape(result.corpus_name)})</small></h2>"
        )
        domains = list(result.domain_loss)
        for sample in result.samples:
            color = domain_color(sample.domain, domains)
            parts.append(
                f"<h3 style='color:{color}'>{html.escape(sample.domain)}</h3>"
                + _sample_table(sample)
            )
    if not with_samples:
        parts.append("<p>No MoE model among the evaluated models: nothing is routed.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_token_page(results: list[EvaluationResult], path: Path) -> Path:
    """Write the token routing page for `results` to `path`."""
    return write_text(path, render_token_page(results))
