"""The token-level routing page: sample texts with every token coloured by its expert.

One self-contained HTML file (inline CSS, no scripts, no network) so it opens from disk in any
browser, and the same section inside report.html. Each sample shows one row of chips per MoE
layer. A chip is coloured by the token's first-choice expert; a label under the token names
every top-k choice (and a second choice underlines the chip in its colour), so nothing needs
hover. Tapping or focusing a chip (or hovering it) reveals its router weights and entropy.
Chips wrap on narrow screens; their text colour is picked for WCAG contrast.
"""

from __future__ import annotations

import html
from pathlib import Path

from moectl.analysis.results import EvaluationResult, TokenRouting
from moectl.fs import write_text
from moectl.viz.palette import domain_color, expert_color, text_color_on

VIEWPORT = "<meta name='viewport' content='width=device-width, initial-scale=1'>"
"""Without it a phone lays the page out 980 px wide and shrinks the text to a few pixels."""
PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em auto; color: #222; max-width: 1200px;
  padding: 0 1em; font-size: 16px; line-height: 1.45; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; }
p.note { color: #555; font-size: 0.9em; }
"""
TOKEN_STYLE = """
div.layer { margin: 0.3em 0 0.8em; }
div.lname { color: #555; font-size: 0.85em; }
div.chips { display: flex; flex-wrap: wrap; gap: 2px; }
span.tok, span.legend { font-family: ui-monospace, monospace; font-size: 14px;
  border-radius: 3px; }
span.tok { display: inline-block; position: relative; white-space: pre; padding: 1px 2px;
  text-align: center; border-bottom: 4px solid transparent; cursor: pointer; }
span.tok small { display: block; font-size: 11px; line-height: 1.1; }
span.tok .tip { display: none; position: absolute; left: 0; top: 100%; z-index: 2;
  background: #222; color: #fff; padding: 4px 6px; white-space: normal; width: 14em;
  font-size: 12px; text-align: left; }
span.tok:hover .tip, span.tok:focus .tip { display: block; }
span.tok:focus { outline: 2px solid #000; }
span.legend { display: inline-block; padding: 2px 6px; margin: 2px 4px 2px 0; }
"""


def _display(token: str) -> str:
    shown = token.replace("\n", "\u21b5").replace("\t", "\u2192")
    return shown if shown else "\u2205"


def _token_chip(token: str, layer: str, sample: TokenRouting, index: int) -> str:
    choices = sample.choices(layer, index)
    color = expert_color(choices[0][0])
    style = f"background:{color};color:{text_color_on(color)}"
    if len(choices) > 1:
        style += f";border-bottom-color:{expert_color(choices[1][0])}"
    label = " ".join(f"e{expert}" for expert, _ in choices)
    weights = ", ".join(
        f"e{expert} {weight:.2f}" if weight is not None else f"e{expert}"
        for expert, weight in choices
    )
    tip = (
        f"{token!r}: layer {layer}, experts {weights} (first-choice router prob "
        f"{sample.probs[layer][index]:.3f}), entropy {sample.entropy[layer][index]:.2f} nats"
    )
    return (
        f'<span class="tok" tabindex="0" style="{style}">{html.escape(_display(token))}'
        f"<small>{label}</small><span class='tip'>{html.escape(tip)}</span></span>"
    )


def _sample_rows(sample: TokenRouting) -> str:
    rows = []
    for layer in sorted(sample.layers, key=int):
        chips = "".join(_token_chip(t, layer, sample, i) for i, t in enumerate(sample.tokens))
        rows.append(
            f"<div class='layer'><div class='lname'>layer {html.escape(layer)}</div>"
            f"<div class='chips'>{chips}</div></div>"
        )
    return "".join(rows)


def token_section(results: list[EvaluationResult], heading: str = "h1") -> str:
    """The token routing section (legend and every routed sample) as an HTML fragment; its
    title uses the `heading` tag, the models one level below."""
    with_samples = [r for r in results if r.samples]
    n_experts = max((r.n_experts or 0 for r in with_samples), default=0)
    legend = "".join(
        f'<span class="legend" style="background:{expert_color(e)};'
        f'color:{text_color_on(expert_color(e))}">expert {e}</span>'
        for e in range(n_experts)
    )
    sub = f"h{int(heading[1]) + 1}"
    parts = [
        f"<{heading} id='token-routing'>Token routing</{heading}>",
        "<p class='note'>Sample eval texts, one row per MoE layer. Each token is coloured by "
        "the expert its layer chose first; the label under it lists every top-k choice, and a "
        "second choice underlines it in that expert's colour. Tap, focus or hover a token for "
        "its router weights and entropy. &#8629; marks a newline.</p>",
        f"<p>{legend}</p>",
    ]
    for result in with_samples:
        parts.append(
            f"<{sub}>{html.escape(result.name)} <small>(top-{result.top_k}, "
            f"{result.n_experts} experts, {html.escape(result.corpus_name)})</small></{sub}>"
        )
        domains = list(result.domain_loss)
        for sample in result.samples:
            color = domain_color(sample.domain, domains)
            parts.append(
                f"<p><b style='color:{color}'>{html.escape(sample.domain)}</b></p>"
                + _sample_rows(sample)
            )
    if not with_samples:
        parts.append("<p>No MoE model among the evaluated models: nothing is routed.</p>")
    return "\n".join(parts)


def render_token_page(results: list[EvaluationResult], title: str = "Token routing") -> str:
    """The HTML text of the stand-alone page for every result that has routed samples."""
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{VIEWPORT}"
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}{TOKEN_STYLE}</style></head>"
        f"<body>{token_section(results)}</body></html>"
    )


def write_token_page(results: list[EvaluationResult], path: Path) -> Path:
    """Write the token routing page for `results` to `path`."""
    return write_text(path, render_token_page(results))
