"""The one palette: a domain has the same colour in every figure, table and page.

The built-in domains have fixed colours so that a study's figures match across runs and corpora;
other domains take the next free colour in the order they are listed.
"""

from __future__ import annotations

FIXED_DOMAIN_COLORS = {"code": "#1f77b4", "math": "#d62728", "prose": "#2ca02c"}
EXTRA_DOMAIN_COLORS = ["#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
EXPERT_COLORS = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#a6761d",
]
RUN_COLORS = ["#333333", "#e15759", "#4e79a7", "#59a14f", "#b07aa1", "#f28e2b", "#76b7b2"]


def domain_color(domain: str, domains: list[str] | None = None) -> str:
    """The hex colour of `domain`; unknown domains are coloured by their place in `domains`."""
    if domain in FIXED_DOMAIN_COLORS:
        return FIXED_DOMAIN_COLORS[domain]
    others = [d for d in (domains or [domain]) if d not in FIXED_DOMAIN_COLORS]
    index = others.index(domain) if domain in others else len(others)
    return EXTRA_DOMAIN_COLORS[index % len(EXTRA_DOMAIN_COLORS)]


def expert_color(expert: int) -> str:
    """The hex colour of expert number `expert` (cycles after 16 experts)."""
    return EXPERT_COLORS[expert % len(EXPERT_COLORS)]


def run_color(index: int) -> str:
    """The colour of the index-th run in a comparison."""
    return RUN_COLORS[index % len(RUN_COLORS)]


def relative_luminance(hex_color: str) -> float:
    """WCAG 2 relative luminance of an sRGB colour '#rrggbb' (0 black .. 1 white)."""
    channels = []
    for i in (1, 3, 5):
        c = int(hex_color[i : i + 2], 16) / 255
        channels.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    red, green, blue = channels
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two colours (1 .. 21; body text needs at least 4.5)."""
    light, dark = sorted((relative_luminance(foreground), relative_luminance(background)))[::-1]
    return (light + 0.05) / (dark + 0.05)


def text_color_on(hex_color: str) -> str:
    """Black or white, whichever contrasts more with `hex_color` (by WCAG's ratio, so at least
    4.58:1 on any background)."""
    black, white = "#000000", "#ffffff"
    return black if contrast_ratio(black, hex_color) >= contrast_ratio(white, hex_color) else white
