"""Real widget libraries in a real JupyterLab with wrapperkernel, live while a cell runs.

Each test shows a widget library's widget in one cell and runs a synchronous loop in
the next, and acts as the user: it watches what the page shows and moves, clicks or
drags the widget while the loop cell is still running (its prompt is ``[*]:``). The
loop reports what it saw itself, so a test passes only if the page's event reached the
program while the loop ran:

- plotly ``FigureWidget``: the loop redraws the line from a slider's value; the drawn
  line moves, follows the slider, and a box zoom dragged in the plot reaches the loop.
- an anywidget counter (``_esm`` with a button, a synced ``count``): clicks reach the
  loop, and the loop's own ``count`` shows on the button.
- ipywidgets ``interact``: moving its slider calls the function, whose output shows in
  the page, while another cell's loop runs.

With ipykernel (``WRAPPERKERNEL_BROWSER_KERNEL=python3``) the page's events wait until
the loop ends, so each test fails at its first "while running" step.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Locator, Page, expect

from .jupyterlab import (
    INPUT_PROMPT,
    OUTPUT,
    CellResult,
    create_notebook,
    run_cell,
    start_cell,
    wait_cell,
)

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

# A loop ends on the user's last action; its deadline only bounds a failing test.
LOOP_S = 60
CELL_TIMEOUT_S = LOOP_S + 15
WAIT_MS = 20_000
RUNNING_PROMPT = "[*]:"


def show_in_new_notebook(page: Page, kernel: KernelUnderTest, code: str) -> CellResult:
    """Open a notebook on the kernel under test and run the cell that shows the widget."""
    create_notebook(page, kernel.display_name)
    return run_cell(page, code)


def expect_running(cell: Locator) -> None:
    """The loop cell has not finished: its prompt still shows ``[*]:``."""
    expect(cell.locator(INPUT_PROMPT)).to_have_text(RUNNING_PROMPT, timeout=1)


# --- plotly FigureWidget -----------------------------------------------------------------

PLOTLY_START_LEVEL = 3
PLOTLY_LEVEL = 8
X_RANGE = (0, 19)

SHOW_PLOTLY = f"""\
import ipywidgets as w
import plotly.graph_objects as go
from IPython.display import display
xs = list(range(20))
fig = go.FigureWidget(go.Scatter(x=xs, y=[{PLOTLY_START_LEVEL}] * len(xs), mode="lines"))
fig.update_layout(width=600, height=400, xaxis_range=list({X_RANGE}), yaxis_range=[-1, 11],
                  margin=dict(l=40, r=10, t=10, b=30))
level = w.IntSlider(value={PLOTLY_START_LEVEL}, min=0, max=10, description="Level")
display(level, fig)"""

# The line wiggles around the slider's level by at most 0.4, so two levels 1 apart or
# more draw lines that do not overlap.
PLOTLY_LOOP = f"""\
import math, time
frames = 0
zoom = None
deadline = time.monotonic() + {LOOP_S}
while zoom is None and time.monotonic() < deadline:
    frames += 1
    fig.data[0].y = [level.value + 0.4 * math.sin(x / 2 + frames / 5) for x in xs]
    if tuple(fig.layout.xaxis.range) != {X_RANGE}:
        zoom = fig.layout.xaxis.range
    time.sleep(0.05)
print(f"zoom seen while looping: {{zoom is not None}}; last level {{level.value}}")"""

LINE = ".js-plotly-plot .scatterlayer .trace path.js-line"
# The pixel y coordinates of the points of a plotly line path ("M0,12L31.6,14...").
LINE_PIXEL_YS = """line => [...(line.getAttribute('d') ?? '').matchAll(
    /[ML]\\s*(-?[\\d.]+(?:e-?\\d+)?)[ ,](-?[\\d.]+(?:e-?\\d+)?)/g)].map(m => Number(m[2]))"""


def test_plotly_figure_widget_redrawn_by_a_running_loop_that_follows_slider_and_zoom(
    lab: Page, kernel_under_test: KernelUnderTest
) -> None:
    page = lab
    shown = show_in_new_notebook(page, kernel_under_test, SHOW_PLOTLY)
    line = shown.cell.locator(LINE)
    # A flat line has no height, which Playwright counts as hidden: wait for it drawn.
    expect(line).to_have_attribute("d", re.compile(r"^M"), timeout=WAIT_MS)
    drawn_first = line.get_attribute("d")

    loop = start_cell(page, PLOTLY_LOOP)
    # The program redraws the figure: the drawn line changes while the loop runs.
    page.wait_for_function(
        "([line, first]) => line.getAttribute('d') !== first",
        arg=[line.element_handle(), drawn_first],
        timeout=WAIT_MS,
    )
    expect_running(loop.cell)

    # The user moves the slider beside the figure; the loop draws the line at its level.
    low = line.evaluate(LINE_PIXEL_YS)
    assert low, f"no points in the drawn line {line.get_attribute('d')!r}"
    shown.cell.locator(".noUi-handle").focus()
    for _ in range(PLOTLY_LEVEL - PLOTLY_START_LEVEL):
        page.keyboard.press("ArrowRight")
    expect(shown.cell.locator(".widget-readout")).to_have_text(str(PLOTLY_LEVEL))
    # Screen y grows downwards: every point of the new line is above every old one.
    page.wait_for_function(
        f"""([line, lowest]) => {{
            const ys = ({LINE_PIXEL_YS})(line);
            return ys.length > 0 && Math.max(...ys) < lowest;
        }}""",
        arg=[line.element_handle(), min(low)],
        timeout=WAIT_MS,
    )
    expect_running(loop.cell)

    # A box zoom dragged in the plot changes the x range; the loop sees it and stops.
    drag = shown.cell.locator(".js-plotly-plot .nsewdrag").first
    box = drag.bounding_box()
    assert box is not None, "the plot's drag area is not shown"
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.7, steps=8)
    page.mouse.up()
    result = wait_cell(page, loop, timeout_s=CELL_TIMEOUT_S)
    assert f"zoom seen while looping: True; last level {PLOTLY_LEVEL}" in result.text, (
        result.text
    )


# --- an anywidget counter ----------------------------------------------------------------

CLICKS = 3
PROGRAM_COUNT = 100

SHOW_COUNTER = '''\
import anywidget
import traitlets

class Counter(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const button = document.createElement("button");
      button.className = "test-counter";
      const show = () => { button.textContent = `count is ${model.get("count")}`; };
      button.addEventListener("click", () => {
        model.set("count", model.get("count") + 1);
        model.save_changes();
      });
      model.on("change:count", show);
      show();
      el.appendChild(button);
    }
    export default { render };
    """
    count = traitlets.Int(0).tag(sync=True)

counter = Counter()
counter'''

# The loop prints each count it sees; after the user's clicks it sets its own count and
# waits for one more click.
COUNTER_LOOP = f"""\
import time
seen = counter.count
deadline = time.monotonic() + {LOOP_S}
while counter.count <= {PROGRAM_COUNT} and time.monotonic() < deadline:
    if counter.count != seen:
        seen = counter.count
        print("loop saw count", seen, flush=True)
        if seen == {CLICKS}:
            counter.count = {PROGRAM_COUNT}
            seen = {PROGRAM_COUNT}
    time.sleep(0.05)
print("loop ended at count", counter.count)"""


def test_anywidget_counter_clicks_reach_a_running_loop_and_its_count_shows(
    lab: Page, kernel_under_test: KernelUnderTest
) -> None:
    page = lab
    shown = show_in_new_notebook(page, kernel_under_test, SHOW_COUNTER)
    button = shown.cell.locator("button.test-counter")
    expect(button).to_have_text("count is 0", timeout=WAIT_MS)

    loop = start_cell(page, COUNTER_LOOP)
    loop_output = loop.cell.locator(OUTPUT)
    for clicks in range(1, CLICKS + 1):
        button.click()
        if clicks < CLICKS:  # after the last click the loop sets its own count at once
            expect(button).to_have_text(f"count is {clicks}")
        # The running loop saw the click.
        expect(loop_output).to_contain_text(f"loop saw count {clicks}", timeout=WAIT_MS)
        expect_running(loop.cell)

    # The loop set the count itself: the button shows it while the loop still runs.
    expect(button).to_have_text(f"count is {PROGRAM_COUNT}", timeout=WAIT_MS)
    expect_running(loop.cell)

    button.click()
    result = wait_cell(page, loop, timeout_s=CELL_TIMEOUT_S)
    lines = [line for line in result.text.splitlines() if line]
    assert lines == [
        *(f"loop saw count {n}" for n in range(1, CLICKS + 1)),
        f"loop ended at count {PROGRAM_COUNT + 1}",
    ], result.text


# --- ipywidgets interact -----------------------------------------------------------------

INTERACT_START = 5
INTERACT_LAST = 8

SHOW_INTERACT = """\
from ipywidgets import interact
looping = False
calls = []
def f(x):
    calls.append((x, looping))
    print(f"f called with x={x}")
interact(f, x=(0, 10));"""

# The loop ends on the call with the last value; it prints nothing while looping, so
# none of its own output can land in interact's output area.
INTERACT_LOOP = f"""\
import time
looping = True
deadline = time.monotonic() + {LOOP_S}
while calls[-1][0] != {INTERACT_LAST} and time.monotonic() < deadline:
    time.sleep(0.05)
looping = False
print("calls while looping:", [x for x, during_loop in calls if during_loop])"""


def test_interact_calls_its_function_while_another_cell_loops(
    lab: Page, kernel_under_test: KernelUnderTest
) -> None:
    page = lab
    shown = show_in_new_notebook(page, kernel_under_test, SHOW_INTERACT)
    interact_output = shown.cell.locator(".widget-output")
    expect(interact_output).to_have_text(
        re.compile(rf"^\s*f called with x={INTERACT_START}\s*$"), timeout=WAIT_MS
    )

    loop = start_cell(page, INTERACT_LOOP)
    expect_running(loop.cell)
    shown.cell.locator(".noUi-handle").focus()
    for x in range(INTERACT_START + 1, INTERACT_LAST + 1):
        page.keyboard.press("ArrowRight")
        # interact clears its output and shows the new call's, while the loop runs.
        expect(interact_output).to_have_text(
            re.compile(rf"^\s*f called with x={x}\s*$"), timeout=WAIT_MS
        )
        if x < INTERACT_LAST:
            expect_running(loop.cell)

    result = wait_cell(page, loop, timeout_s=CELL_TIMEOUT_S)
    expected = list(range(INTERACT_START + 1, INTERACT_LAST + 1))
    assert result.text.strip() == f"calls while looping: {expected}", result.text
