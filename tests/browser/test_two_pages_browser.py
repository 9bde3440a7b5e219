"""Two pages on one kernel in a real JupyterLab (issue 10, "Several pages at once").

Page A shows a slider, a text and a button, and saves the notebook. Page B is a second
browser window (its own browser context and JupyterLab workspace) opened on the same
notebook: it shows the saved widgets, whose outputs install the page client by
themselves, and joins the kernel beside A. A cell in A then loops, writing what it saw of
the slider into the text. The user's view is checked in both pages: each page's slider
steers the loop, both texts show what the program saw, a slider moved in one page moves
in the other, and B's button stops the loop.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from .jupyterlab import (
    CELL,
    CURRENT_NOTEBOOK_PANEL,
    INPUT_PROMPT,
    LabServer,
    create_notebook,
    current_notebook_path,
    run_cell,
    save_notebook,
    wait_lab_ready,
    wait_notebook_shown,
)
from .test_widgets_browser import start_cell, wait_page_client

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

WAIT_MS = 20_000
LOOP_S = 60
FINISHED_PROMPT = re.compile(r"^\[\d+\]:$")
VIEWPORT = {"width": 1280, "height": 900}

SHOW_WIDGETS = """\
from wrapperkernel import widgets
slider = widgets.Slider(0, 10, value=2, label="Speed")
saw = widgets.Text("", label="Program saw")
stop = widgets.Button("Stop")
slider.display()
saw.display()
stop.display()"""

LOOP = f"""\
import time
deadline = time.monotonic() + {LOOP_S}
seen = None
while stop.clicks == 0 and time.monotonic() < deadline:
    if slider.value != seen:
        seen = slider.value
        saw.value = f"saw {{seen}}"
    time.sleep(0.02)
print(f"done clicks={{stop.clicks}} slider={{slider.value}}")"""


@pytest.fixture(autouse=True)
def _wrapperkernel_only(kernel_under_test: KernelUnderTest) -> None:
    if kernel_under_test.name != "wrapperkernel":
        pytest.skip("two pages on the address channel need the wrapperkernel kernel")


def widget_cell(page: Page) -> Locator:
    """The notebook's first cell: the one that shows the widgets."""
    return page.locator(f"{CURRENT_NOTEBOOK_PANEL} {CELL}").first


def test_two_pages_on_one_kernel_both_show_the_programs_values_and_both_steer_it(
    lab: Page, lab_server: LabServer, browser: Browser, kernel_under_test: KernelUnderTest
) -> None:
    page_a = lab
    create_notebook(page_a, kernel_under_test.display_name)
    run_cell(page_a, SHOW_WIDGETS)
    wait_page_client(page_a)
    save_notebook(page_a)
    path = current_notebook_path(page_a)

    context_b = browser.new_context(viewport=VIEWPORT)
    try:
        page_b = context_b.new_page()
        # Its own workspace, so that JupyterLab's layout of page A is not shared.
        page_b.goto(lab_server.lab_url(f"lab/workspaces/second-page/tree/{path}"))
        wait_lab_ready(page_b)
        wait_notebook_shown(page_b, path)
        # B shows the saved widgets; their outputs install the page client and join.
        wait_page_client(page_b)

        cell_a, cell_b = widget_cell(page_a), widget_cell(page_b)
        slider_a = cell_a.locator(".wk-slider input[type=range]")
        slider_b = cell_b.locator(".wk-slider input[type=range]")
        saw_a = cell_a.locator(".wk-text input")
        saw_b = cell_b.locator(".wk-text input")

        loop = start_cell(page_a, LOOP)
        expect(saw_a).to_have_value("saw 2", timeout=WAIT_MS)
        expect(saw_b).to_have_value("saw 2", timeout=WAIT_MS)

        # Page B steers the program; both pages show what it saw, and A's slider moves.
        slider_b.fill("7")
        expect(saw_a).to_have_value("saw 7", timeout=WAIT_MS)
        expect(saw_b).to_have_value("saw 7", timeout=WAIT_MS)
        expect(slider_a).to_have_value("7", timeout=WAIT_MS)

        # And page A does too, moving B's slider.
        slider_a.fill("3")
        expect(saw_b).to_have_value("saw 3", timeout=WAIT_MS)
        expect(saw_a).to_have_value("saw 3", timeout=WAIT_MS)
        expect(slider_b).to_have_value("3", timeout=WAIT_MS)

        # B's button stops the loop that runs in A's cell.
        cell_b.locator(".wk-button button").click()
        expect(loop.locator(INPUT_PROMPT)).to_have_text(FINISHED_PROMPT, timeout=WAIT_MS)
        expect(loop).to_contain_text("done clicks=1 slider=3")
    finally:
        context_b.close()
