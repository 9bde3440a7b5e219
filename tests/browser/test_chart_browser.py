"""widgets.Chart in a real JupyterLab: drawn live while a loop appends, steered, saved.

The user's view: a cell loops, appending a point a few hundred times a second at the
level a slider says; the chart shown by an earlier cell changes from one screenshot to
the next; moving the slider moves the drawn line (read from the canvas's pixels, in the
series' colour, at its right end); the dark theme repaints the canvas in the theme's
colours; the saved notebook carries the points, and after a reload, without a cell, the
canvas draws the last picture again.

Measured and printed (not asserted as speed): appends made, messages the page got for
the chart, frames drawn.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Locator, Page, expect

from .jupyterlab import (
    INPUT_PROMPT,
    OUTPUT,
    LabServer,
    create_notebook,
    current_notebook_path,
    reload_page,
    run_cell,
    save_notebook,
)
from .test_widgets_browser import (
    FINISHED_PROMPT,
    WAIT_MS,
    cells,
    start_cell,
    use_theme,
    wait_page_client,
)

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

LOOP_S = 60
SHOW_CHART = """\
from wrapperkernel import widgets
chart = widgets.Chart("level", window=400, title="Level", y_range=(0, 10))
slider = widgets.Slider(0, 10, value=2, label="Level")
button = widgets.Button("Stop")
for w in (chart, slider, button):
    w.display()"""

LOOP = f"""\
import math, time
appends, deadline = 0, time.monotonic() + {LOOP_S}
while button.clicks == 0 and time.monotonic() < deadline:
    chart.append(slider.value + 0.3 * math.sin(appends / 5))
    appends += 1
    time.sleep(0.002)
print(f"done appends={{appends}}")"""

# Where the series with colour slot `index` is drawn in the right part of the canvas
# (the newest points), as a fraction of the canvas height from the top; null if absent.
SERIES_ROW = """(canvas, index) => {
    const root = canvas.closest('.wk-widget');
    const probe = document.createElement('span');
    probe.style.color = `var(--wk-chart-series-${index})`;
    root.appendChild(probe);
    const rgb = getComputedStyle(probe).color.match(/\\d+/g).map(Number);
    probe.remove();
    const width = canvas.width, height = canvas.height;
    const x0 = Math.floor(width * 0.88), x1 = Math.floor(width * 0.97);
    const data = canvas.getContext('2d').getImageData(x0, 0, x1 - x0, height).data;
    let sum = 0, count = 0;
    for (let y = 0; y < height; y++) {
        for (let x = 0; x < x1 - x0; x++) {
            const i = (y * (x1 - x0) + x) * 4;
            const distance = Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1])
                + Math.abs(data[i + 2] - rgb[2]);
            if (distance < 60) { sum += y; count += 1; }
        }
    }
    return count === 0 ? null : sum / count / height;
}"""

# Counts the page client's messages for the chart's address (the page's own view of the
# batching): subscribes beside the chart's binding.
COUNT_MESSAGES = """canvas => {
    const id = canvas.closest('[data-wk-widget]').dataset.wkWidget;
    const counter = {messages: 0, points: 0};
    globalThis.wrapperkernel_comm.subscribe(`/wrapperkernel/widgets/${id}/value`, (address, value) => {
        counter.messages += 1;
        for (const series of value.series) counter.points += series.x.length;
    });
    globalThis.__wk_chart_counter = counter;
}"""


@pytest.fixture(autouse=True)
def _wrapperkernel_only(kernel_under_test: KernelUnderTest) -> None:
    if kernel_under_test.name != "wrapperkernel":
        pytest.skip("wrapperkernel.widgets needs the wrapperkernel kernel")


def series_row(canvas: Locator, index: int) -> float | None:
    return canvas.evaluate(SERIES_ROW, index)


def frames(canvas: Locator) -> int:
    return int(canvas.get_attribute("data-wk-frames") or "0")


def drawn_last(canvas: Locator) -> dict[str, Any]:
    return json.loads(canvas.get_attribute("data-wk-last") or "{}")


def wait_drawn(page: Page, canvas: Locator, series: str, predicate: str) -> None:
    """Wait until the last y drawn of ``series`` satisfies the JS expression ``predicate``
    (of ``y``)."""
    canvas.evaluate(
        f"""(canvas) => new Promise((resolve, reject) => {{
            const deadline = Date.now() + {WAIT_MS};
            const check = () => {{
                const last = JSON.parse(canvas.dataset.wkLast || "{{}}");
                const y = last[{json.dumps(series)}];
                if (typeof y === "number" && ({predicate})) return resolve(y);
                if (Date.now() > deadline) return reject(new Error("drawn: " + canvas.dataset.wkLast));
                setTimeout(check, 50);
            }};
            check();
        }})"""
    )


def assert_canvas_changes(page: Page, canvas: Locator) -> None:
    """Two screenshots of the canvas a few hundred ms apart differ while the loop runs."""
    first = canvas.screenshot()
    page.wait_for_timeout(400)
    second = canvas.screenshot()
    assert first != second, "the chart did not change while the loop appended"


def assert_slider_moves_the_line(page: Page, slider: Locator, canvas: Locator, series: str,
                                 index: int, low: str, high: str) -> None:
    """Moving ``slider`` from ``low`` to ``high`` moves the line of ``series`` up: in the
    values drawn and in the pixels of its colour at the chart's right end."""
    slider.fill(low)
    wait_drawn(page, canvas, series, f"Math.abs(y - {low}) < 1")
    page.wait_for_timeout(500)
    before = series_row(canvas, index)
    slider.fill(high)
    wait_drawn(page, canvas, series, f"Math.abs(y - {high}) < 1")
    page.wait_for_timeout(500)  # the newest part of the line is all at the new level
    after = series_row(canvas, index)
    assert before is not None and after is not None, (before, after)
    assert after < before - 0.3, f"the line did not move up: row {before:.2f} -> {after:.2f}"


def saved_chart_config(server: LabServer, path: str) -> dict[str, Any]:
    notebook = json.loads((server.root_dir / path).read_text())
    for output in notebook["cells"][0]["outputs"]:
        html = "".join(output.get("data", {}).get("text/html", ""))
        found = re.search(r"wrapperkernel_widgets\.bind\(document\.currentScript, (\{.*\})\);", html)
        if found and '"kind": "chart"' in found.group(1):
            return json.loads(found.group(1))
    raise AssertionError("no chart output in the saved notebook")


def test_live_chart_redraws_follows_the_slider_and_the_theme_and_is_saved(
    lab: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest, tmp_path: Path
) -> None:
    page = lab
    create_notebook(page, kernel_under_test.display_name)
    shown = run_cell(page, SHOW_CHART)
    wait_page_client(page)
    canvas = shown.cell.locator(".wk-chart canvas")
    slider = shown.cell.locator(".wk-slider input[type=range]")
    expect(canvas).to_have_attribute("data-wk-frames", re.compile(r"^[1-9]"), timeout=WAIT_MS)
    canvas.evaluate(COUNT_MESSAGES)

    loop = start_cell(page, LOOP)
    wait_drawn(page, canvas, "level", "Math.abs(y - 2) < 1")
    counted_from = page.evaluate("({...globalThis.__wk_chart_counter})")
    frames_from, started = frames(canvas), time.monotonic()
    assert_canvas_changes(page, canvas)
    assert_slider_moves_the_line(page, slider, canvas, "level", 0, "2", "8")
    expect(shown.cell.locator(".wk-chart-key[data-wk-series=level] .wk-chart-last")).to_have_text(
        re.compile(r"^(7\.[7-9]|8\.[0-3]|8)"), timeout=WAIT_MS)
    counted = page.evaluate("({...globalThis.__wk_chart_counter})")
    elapsed = time.monotonic() - started
    messages = counted["messages"] - counted_from["messages"]
    drawn = frames(canvas) - frames_from

    shown.cell.locator(".wk-button button").click()
    expect(loop.locator(INPUT_PROMPT)).to_have_text(FINISHED_PROMPT, timeout=WAIT_MS)
    appends = int(re.search(r"appends=(\d+)", loop.locator(OUTPUT).inner_text()).group(1))
    print(f"\nchart: {appends} appends in the loop; in {elapsed:.1f} s the page got {messages}"
          f" messages ({counted['points'] - counted_from['points']} points) and drew {drawn} frames")
    # The program sends at most 30 messages a second (one per 1/30 s, plus the first),
    # and the page draws only when something new came (plus resize and theme redraws).
    assert 1 <= messages <= 30 * elapsed + 5, (messages, elapsed)
    assert 1 <= drawn <= messages + 3, (drawn, messages)

    # The dark theme repaints the canvas in its own background colour.
    try:
        for theme in ("JupyterLab Dark", "JupyterLab Light"):
            use_theme(page, theme)
            page.wait_for_timeout(600)
            shown.cell.screenshot(path=str(tmp_path / f"chart-{theme.split()[-1].lower()}.png"))
            colours = canvas.evaluate("""canvas => {
                const probe = document.createElement('div');
                probe.style.color = getComputedStyle(document.body).getPropertyValue('--jp-layout-color0');
                document.body.appendChild(probe);
                const want = getComputedStyle(probe).color.match(/\\d+/g).slice(0, 3).map(Number);
                probe.remove();
                const got = Array.from(canvas.getContext('2d').getImageData(3, 3, 1, 1).data).slice(0, 3);
                return {want, got};
            }""")
            assert colours["got"] == colours["want"], (theme, colours)
    finally:
        use_theme(page, "JupyterLab Light")

    # Saved: the chart's output in the file carries its window of points.
    save_notebook(page)
    path = current_notebook_path(page)
    config = saved_chart_config(lab_server, path)
    [level] = config["value"]["series"]
    assert len(level["y"]) == 400 and abs(level["y"][-1] - 8) < 1, level["y"][-5:]

    # Reloaded, with no cell run: the canvas draws the saved last picture.
    reload_page(page)
    canvas = cells(page).first.locator(".wk-chart canvas")
    expect(canvas).to_have_attribute("data-wk-frames", re.compile(r"^[1-9]"), timeout=WAIT_MS)
    assert abs(drawn_last(canvas)["level"] - 8) < 1, drawn_last(canvas)
    row = series_row(canvas, 0)
    assert row is not None and row < 0.45, row  # the line at level 8 of 10 is drawn high
