"""The demo notebook (``examples/demo.ipynb``) in a real JupyterLab.

Opens the file ``make run`` opens, runs every cell in order the way a reader would
(Shift+Enter), stops each loop with its Stop button while the loop runs, and checks
what the reader sees. The live chart, first in the demo: while its loop runs, the canvas
changes from one screenshot to the next, and moving the setpoint slider moves the
setpoint's line (in the values drawn and in the canvas's pixels). Screenshots in the light and dark theme are saved as artifacts;
with ``WRAPPERKERNEL_DEMO_SCREENSHOTS=docs/screenshots`` they refresh the docs' copies.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect

from .jupyterlab import LabServer, screenshot, wait_kernel_idle, wait_notebook_shown
from .test_chart_browser import assert_canvas_changes, assert_slider_moves_the_line
from .test_widgets_browser import use_theme

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.ipynb"
SCREENSHOTS_ENV = "WRAPPERKERNEL_DEMO_SCREENSHOTS"
CELL = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"
WAIT_MS = 30_000


def code_cells(page: Page):
    return page.locator(f"{CELL}.jp-CodeCell")


def run_next(page: Page) -> None:
    page.keyboard.press("Shift+Enter")


def wait_done(page: Page, index: int) -> None:
    prompt = code_cells(page).nth(index).locator(".jp-InputArea-prompt")
    expect(prompt).not_to_have_text("[*]:", timeout=WAIT_MS)
    expect(prompt).not_to_have_text("[ ]:", timeout=WAIT_MS)


def test_demo_notebook_runs_and_looks_right_in_both_themes(
    lab_page: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest, tmp_path: Path
) -> None:
    if kernel_under_test.name != "wrapperkernel":
        pytest.skip("the demo uses wrapperkernel's widgets")
    page = lab_page
    shutil.copy(DEMO, lab_server.root_dir / "demo.ipynb")
    page.goto(lab_server.lab_url("lab/tree/demo.ipynb", reset=""))
    wait_notebook_shown(page, "demo.ipynb")
    wait_kernel_idle(page)

    # Cells are run from the top with Shift+Enter; markdown cells just advance.
    code_seen = 0
    loops_stopped = 0
    charts_checked = 0
    cells = page.locator(CELL)
    for index in range(cells.count()):
        cell = cells.nth(index)
        is_code = "jp-CodeCell" in (cell.get_attribute("class") or "")
        # Select this cell first: a click inside an earlier output made that cell active.
        cell.locator(".jp-InputPrompt").first.click()
        run_next(page)
        if not is_code:
            continue
        source = cell.locator(".jp-InputArea-editor").inner_text()
        if "while " in source:  # a loop: let it run, then press the Stop button it watches
            expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[*]:", timeout=WAIT_MS)
            page.wait_for_timeout(1500)
            previous = code_cells(page).nth(code_seen - 1)
            if "chart.append" in source:  # the live chart, steered by the slider beside it
                canvas = previous.locator(".wk-chart canvas")
                assert_canvas_changes(page, canvas)
                assert_slider_moves_the_line(
                    page, previous.locator(".wk-slider input[type=range]"), canvas,
                    "setpoint", 1, "20", "80")
                charts_checked += 1
            stop = previous.get_by_role("button", name="Stop")
            stop.click()
            loops_stopped += 1
            expect(cell.locator(".jp-OutputArea-output")).to_contain_text(
                "stopped after", timeout=WAIT_MS)
        elif "comms.listen" in source:  # the click demo: click three times while it waits
            button = code_cells(page).nth(code_seen - 1).locator("#wk-demo-click")
            expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[*]:", timeout=WAIT_MS)
            for _ in range(3):
                button.click()
                page.wait_for_timeout(300)
            expect(code_cells(page).nth(code_seen - 1).locator("#wk-demo-echo")).to_have_text(
                " kernel says: got click 3", timeout=WAIT_MS)
        wait_done(page, code_seen)
        code_seen += 1

    assert (loops_stopped, charts_checked) == (3, 1)
    # text_content, not inner_text: JupyterLab hides off-screen cells from rendering.
    text = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").text_content() or ""
    assert "hello from wrapperkernel" in text
    assert "click 3" in text
    assert "Error" not in text and "Traceback" not in text, text[-2000:]

    folders = [tmp_path]
    if os.environ.get(SCREENSHOTS_ENV):
        folders.append(Path(os.environ[SCREENSHOTS_ENV]))
    try:
        for theme, name in (("JupyterLab Light", "light"), ("JupyterLab Dark", "dark")):
            use_theme(page, theme)
            # The picture shows the widgets the first loop was steered by.
            code_cells(page).nth(1).evaluate("cell => cell.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
                screenshot(page, folder / f"demo-{name}.png")
    finally:
        use_theme(page, "JupyterLab Light")
