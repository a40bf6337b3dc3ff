"""report.html in a real headless Chromium (the distribution's package), at a phone's width and
at a laptop's screen: no console errors, every image decodes, no horizontal scroll at 390 px
(the page, and no element inside the findings or the tables that become cards), readable text,
the findings table within the first 1280x800 screen, and the interactive figures (Plotly,
inlined): pressing the step slider's rail changes the plotted heatmap to that step's shares in
the routing log, hover labels give a cell's share and count and a seed band's values. Plus the
chips' text contrast.

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

import numpy as np
import pytest
from helpers.figures import synthetic_result, write_run

from moectl.analysis.results import Finding
from moectl.viz.palette import EXPERT_COLORS, contrast_ratio, text_color_on
from moectl.viz.study import visualize_study

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# In each framed copy of the report, before anything else runs: collect every error event
# (script errors and resources that fail to load), and make animation frames timers. Under
# --virtual-time-budget, headless Chromium runs timers in virtual time but draws frames in real
# time, so a requestAnimationFrame callback (plotly's slider runs its step in one) may or may not
# run before the budget is spent; as a timer it runs, in order, every time.
PROBE = (
    "<script>window.__errors = []; addEventListener('error', e => __errors.push(String("
    "e.message || ('failed to load ' + (e.target && (e.target.src || e.target.href))))), true);"
    "window.requestAnimationFrame = f => setTimeout(() => f(performance.now()), 16);"
    "window.cancelAnimationFrame = clearTimeout;</script>"
)
# In the frame holder, once every frame has loaded: measure each frame's document.
MEASURE = """<script>
const pause = ms => new Promise(resolve => setTimeout(resolve, ms));
// Two animation frames of the framed report's window w (timers there, see PROBE): a slider runs
// its step's method in the next frame, so after two it has run.
const frames = w => new Promise(resolve => w.requestAnimationFrame(
  () => w.requestAnimationFrame(resolve)));
// The hover label a plot shows for `point` (Plotly.Fx.hover, as a pointer over it would).
async function hover(w, gd, point) {
  w.Plotly.Fx.hover(gd, point, 'xy');
  await pause(100);
  const label = gd.querySelector('.hovertext');
  return label ? label.textContent : null;
}
// Press the step slider of the routing-over-training heatmap at its left end (the first step),
// as a finger or mouse would, and read what the plot holds before and after: the z and the
// counts of each heatmap, and the panel titles; then hover the first cell of the first layer.
async function slide(w, d) {
  const gd = d.getElementById('routing-steps-moe');
  if (!gd || !gd.data) return null;
  const state = () => ({z: gd.data.map(t => t.z), counts: gd.data.map(t => t.customdata),
                        titles: gd.layout.annotations.map(a => a.text),
                        active: gd.layout.sliders[0].active,
                        // the heatmaps as drawn: each layer's cells rendered to an image
                        drawn: [...gd.querySelectorAll('.hm image')].map(
                          i => i.getAttribute('href').length + ':' + i.getAttribute('href'))});
  const before = state(), events = [];
  gd.on('plotly_sliderchange', e => events.push(e.step.label));
  const rail = gd.querySelector('.slider-rail-touch-rect');
  const box = rail.getBoundingClientRect();
  const at = {bubbles: true, view: w, clientX: box.left + 3, clientY: box.top + box.height / 2};
  rail.dispatchEvent(new w.MouseEvent('mousedown', at));
  gd.dispatchEvent(new w.MouseEvent('mouseup', at));
  await frames(w);
  const bands = d.getElementById('seed-bands');
  return {before, after: state(), events,
          plots: [...d.querySelectorAll('.js-plotly-plot')].map(p => p.id),
          hover: await hover(w, gd, {xval: 0, yval: 0}),
          heatmapHover: await hover(w, d.getElementById('routing-heatmap-moe'),
                                    {xval: 0, yval: 0}),
          bandHover: await hover(w, bands, [{curveNumber: 2, pointNumber: 0}]),
          bandTraces: bands.data.map(t => t.fill || t.mode)};
}
addEventListener('load', async () => {
  await pause(1000);
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
    out[frame.id].slider = await slide(w, d);
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
    # its router drifts towards one expert, so the routing heatmap differs between steps; a
    # second seed of the same arm gives the seed bands
    runs = [
        write_run(tmp_path / "dense", moe=False),
        write_run(tmp_path / "moe", moe=True, collapse=True),
        write_run(tmp_path / "moe-seed1", moe=True, collapse=True, seed=1),
    ]
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
    assert console == [], console  # plotly logs nothing: any console line is an error
    found = re.search(r'<pre id="moectl-check">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stdout[-2000:]
    checks = json.loads(html.unescape(found.group(1)))
    for name, page in checks.items():
        assert page["errors"] == [], (name, page["errors"])
        assert page["images"] == 10 and page["decoded"] == page["images"], (name, page)
        assert page["fontSize"] >= 14, (name, page)
    phone, laptop = checks["phone"], checks["laptop"]
    assert phone["frameWidth"] == 390 and phone["scrollWidth"] <= phone["width"], str(phone)
    assert phone["findingsCells"] == 4 * 5 and phone["innerScroll"] == [], phone["innerScroll"]
    log = [json.loads(line) for line in (runs[1] / "routing.jsonl").read_text().splitlines()]
    first, last = log[0]["layers"], log[-1]["layers"]
    metrics = [(run / "metrics.jsonl").read_text().splitlines() for run in runs[1:]]
    first_eval = np.mean([next(r["loss"] for r in map(json.loads, rows) if r["kind"] == "eval")
                          for rows in metrics])  # fmt: skip

    def shares(layers: dict) -> list:
        return [list(layers[k]["domain_fractions"].values()) for k in ("2", "3")]

    for name, page in checks.items():
        slider = page["slider"]
        assert slider is not None, name
        assert slider["plots"] == [
            "routing-steps-moe", "routing-steps-moe-seed1", "seed-bands", "routing-heatmap-moe"
        ], (name, slider["plots"])  # fmt: skip
        before, after = slider["before"], slider["after"]
        # pressing the rail's left end moves the slider from the last step to step 0 ...
        assert before["active"] == 10 and after["active"] == 0, (name, slider)
        assert slider["events"] == ["0"], (name, slider["events"])
        # ... and the plotted heatmaps change from the last step's shares to step 0's, as the
        # routing log has them (tolerance 1e-9: the numbers go through JSON twice)
        assert np.allclose(before["z"], shares(last), atol=1e-9), (name, before["z"])
        assert np.allclose(after["z"], shares(first), atol=1e-9), (name, after["z"])
        assert not np.allclose(after["z"], before["z"], atol=0.1), name
        assert len(after["drawn"]) == 2 and after["drawn"] != before["drawn"], name  # redrawn
        assert [[c[0][0] for c in layer] for layer in after["counts"]] == [
            [r[0] for r in first[k]["counts"]] for k in ("2", "3")
        ], (name, after["counts"])  # fmt: skip
        assert after["titles"][0] == f"layer 2: NMI {first['2']['nmi']:.3f}", after["titles"]
        assert before["titles"][0] == f"layer 2: NMI {last['2']['nmi']:.3f}", before["titles"]
        # hover values: share and count of the cell under the pointer
        assert "share 0.2500" in slider["hover"], (name, slider["hover"])
        assert "100 of the domain's 130 assignments" in slider["hover"], slider["hover"]
        assert "expert e0" in slider["heatmapHover"] and "assignments" in slider["heatmapHover"]
        # the seed bands: per arm a band (upper edge, lower edge filled to it) and a mean line
        assert slider["bandTraces"][:3] == ["lines", "tonexty", "lines+markers"], slider
        assert "moe (2 seeds)" in slider["bandHover"], (name, slider["bandHover"])
        assert f"mean {first_eval:.4f}" in slider["bandHover"], (name, slider["bandHover"])
    assert laptop["findingsBottom"] is not None and laptop["findingsBottom"] <= 800, laptop


def test_chip_text_contrast_is_at_least_4_5() -> None:
    for color in EXPERT_COLORS:
        assert contrast_ratio(text_color_on(color), color) >= 4.5, color
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
