"""report.html in a real headless Chromium (the distribution's package), at a phone's width and
at a laptop's screen: no console errors, every image decodes, no horizontal scroll at 390 px
(the page, and no element inside the findings or the tables that become cards), readable
text, and the findings table within the first 1280x800 screen. Plus the chips' text contrast,
computed from the palette.

CI installs Chromium (.ci/run) and sets CI=true: there a missing browser fails the test; on a
developer's machine without it the test is skipped (apt-get install chromium to run it).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.figures import synthetic_result, write_run

from moectl.analysis.results import Finding
from moectl.viz.palette import EXPERT_COLORS, contrast_ratio, text_color_on
from moectl.viz.study import visualize_study

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# In each framed copy of the report, before anything else runs: collect every error event
# (script errors and resources that fail to load).
PROBE = (
    "<script>window.__errors = []; addEventListener('error', e => __errors.push(String("
    "e.message || ('failed to load ' + (e.target && (e.target.src || e.target.href))))), true);"
    "</script>"
)
# In the frame holder, once every frame has loaded: measure each frame's document.
MEASURE = """<script>
addEventListener('load', () => {
  const out = {};
  for (const frame of document.querySelectorAll('iframe')) {
    const w = frame.contentWindow, d = frame.contentDocument;
    const images = [...d.images];
    const row = d.querySelector('table.findings tr:nth-child(2)');
    out[frame.id] = {
      errors: w.__errors,
      images: images.length,
      decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
      scrollWidth: d.documentElement.scrollWidth,
      width: d.documentElement.clientWidth,
      frameWidth: w.innerWidth,
      overflowing: [...d.body.querySelectorAll('*')]
        .filter(e => !e.closest('div.wide, pre'))
        .filter(e => e.getBoundingClientRect().right > d.documentElement.clientWidth)
        .slice(0, 5).map(e => e.tagName + '.' + e.className),
      // inside the findings and every table that turns into cards: nothing may need a
      // sideways scroll of its own (a box narrower than its content), not just the page
      innerScroll: [...d.querySelectorAll('table.cards, table.cards *')]
        .concat([...d.querySelectorAll('table.findings')].map(t => t.parentElement))
        .filter(e => e.scrollWidth > e.clientWidth && e.clientWidth > 0)
        .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + e.scrollWidth + '>'
          + e.clientWidth + ' ' + e.textContent.slice(0, 40)),
      findingsCells: d.querySelectorAll('table.findings td').length,
      fontSize: parseFloat(w.getComputedStyle(d.body).fontSize),
      findingsBottom: row ? row.getBoundingClientRect().bottom : null,
      height: w.innerHeight,
    };
  }
  const pre = document.createElement('pre');
  pre.id = 'moectl-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""
FRAMES = {"phone": (390, 844), "laptop": (1280, 800)}


def _browser() -> str:
    found = next((path for path in map(shutil.which, BROWSERS) if path), None)
    if found is None:
        message = "no headless Chromium on PATH (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": CI must run the browser test")
        pytest.skip(message)
    return found


def _findings() -> list[Finding]:
    long_text = "The trained router routes by domain more than its own init gate. " * 6
    return [
        Finding(
            key=key,
            title=title,
            reproduced=key == "loss",
            verdict=verdict,
            text=long_text,
            measure="top-2 layer 3: router-made NMI (trained - init gate)",
            value=0.164,
            ci=(0.151, 0.18),
            control="the init gate on the trained hidden states",
            seeds=[0, 1, 2],
            seed_verdicts={verdict: 2, "inherited": 1},
            details=[long_text, "x" * 300],
        )
        for key, title, verdict in (
            ("loss", "MoE vs matched dense", "better"),
            ("collapse", "Collapse without LB (and without router noise)", "reproduced"),
            ("top2", "Top-2 routing", "no detectable difference"),
            ("specialization", "Domain specialization: its source", "made by the router"),
        )
    ]


def _holder(report: Path, out: Path) -> Path:
    """A page framing the report at each size (srcdoc frames share the holder's origin, so
    it can measure them; a framed document lays out at the frame's width, as on a phone)."""
    text = report.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1)
    frames = "".join(
        f"<iframe id='{name}' style='width:{w}px;height:{h}px;border:0;display:block' "
        f'srcdoc="{html.escape(text, quote=True)}"></iframe>'
        for name, (w, h) in FRAMES.items()
    )
    holder = out / "holder.html"
    holder.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>{MEASURE}</head><body>{frames}"
        "</body></html>",
        encoding="utf-8",
    )
    return holder


@pytest.mark.slow
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    browser = _browser()
    runs = [write_run(tmp_path / "dense", moe=False), write_run(tmp_path / "moe", moe=True)]
    results = [synthetic_result("dense", moe=False), synthetic_result("moe", seed=1)]
    report = tmp_path / "report.html"
    visualize_study(runs, results, tmp_path / "figures", report_path=report, findings=_findings())
    holder = _holder(report, tmp_path)
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800",
         "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", holder.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # the report has no scripts: any console line is an error
    found = re.search(r'<pre id="moectl-check">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stdout[-2000:]
    checks = json.loads(html.unescape(found.group(1)))
    for name, page in checks.items():
        assert page["errors"] == [], (name, page["errors"])
        assert page["images"] == 7 and page["decoded"] == page["images"], (name, page)
        assert page["fontSize"] >= 14, (name, page)
    phone, laptop = checks["phone"], checks["laptop"]
    assert phone["frameWidth"] == 390 and phone["scrollWidth"] <= phone["width"], str(phone)
    assert phone["findingsCells"] == 4 * 5 and phone["innerScroll"] == [], phone["innerScroll"]
    assert laptop["findingsBottom"] is not None and laptop["findingsBottom"] <= 800, laptop


def test_chip_text_contrast_is_at_least_4_5() -> None:
    for color in EXPERT_COLORS:
        assert contrast_ratio(text_color_on(color), color) >= 4.5, color
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
