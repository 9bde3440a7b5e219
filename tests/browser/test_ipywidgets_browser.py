"""ipywidgets in a real JupyterLab with wrapperkernel: a running cell sees the slider the
user moves and stops on the button the user clicks; after save and reload, JupyterLab
restores the widget views from the kernel and they show the current value.

The widgets are JupyterLab's own (jupyterlab_widgets); the kernel relays the standard
``comm`` package between the page's kernel connection and the worker.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Locator, Page, expect

from .jupyterlab import (
    CELL,
    CURRENT_NOTEBOOK_PANEL,
    EXECUTION_INDICATOR,
    OUTPUT,
    LabServer,
    append_cell,
    create_notebook,
    current_notebook,
    current_notebook_path,
    record_kernel_statuses,
    recorded_kernel_statuses,
    reload_page,
    run_cell,
    save_notebook,
    start_cell,
    wait_cell,
    wait_notebook_shown,
)

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

LOOP_S = 30
CELL_TIMEOUT_S = LOOP_S + 15
WAIT_MS = 20_000
START_VALUE = 3
ARROW_PRESSES = 4
TYPED_VALUE = 11

SHOW_WIDGETS = f"""\
import ipywidgets as w
from IPython.display import display
slider = w.IntSlider(value={START_VALUE}, min=0, max=20, description="Speed")
button = w.Button(description="Stop")
clicks = 0
def on_click(_button):
    global clicks
    clicks += 1
button.on_click(on_click)
display(slider, button)"""

LOOP = f"""\
import time
seen = None
print("looping", flush=True)
deadline = time.monotonic() + {LOOP_S}
while clicks == 0 and time.monotonic() < deadline:
    if slider.value != seen:
        seen = slider.value
        print("slider", seen, flush=True)
    time.sleep(0.02)
print(f"clicks={{clicks}} last={{seen}}")"""


def cells(page: Page) -> Locator:
    return page.locator(f"{CURRENT_NOTEBOOK_PANEL} {CELL}")


def slider_of(cell: Locator) -> Locator:
    return cell.locator(".widget-slider")


def readout_of(cell: Locator) -> Locator:
    return cell.locator(".widget-slider .widget-readout")


def button_of(cell: Locator) -> Locator:
    return cell.locator("button.jupyter-button", has_text="Stop")


def test_running_loop_sees_ipywidgets_and_reload_restores_them(
    lab: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest
) -> None:
    page = lab
    create_notebook(page, kernel_under_test.display_name)
    shown = run_cell(page, SHOW_WIDGETS)
    expect(readout_of(shown.cell)).to_have_text(str(START_VALUE), timeout=WAIT_MS)
    expect(button_of(shown.cell)).to_be_visible()

    record_kernel_statuses(page)
    loop = start_cell(page, LOOP)
    loop_output = loop.cell.locator(OUTPUT)
    expect(loop_output).to_contain_text(f"slider {START_VALUE}", timeout=WAIT_MS)

    # The keyboard: noUiSlider's handle takes arrow keys, one step each.
    moved = START_VALUE + ARROW_PRESSES
    shown.cell.locator(".noUi-handle").focus()
    for _ in range(ARROW_PRESSES):
        page.keyboard.press("ArrowRight")
    expect(readout_of(shown.cell)).to_have_text(str(moved))
    expect(loop_output).to_contain_text(f"slider {moved}", timeout=WAIT_MS)

    # The readout is editable: type a value and Enter.
    readout = readout_of(shown.cell)
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(TYPED_VALUE))
    page.keyboard.press("Enter")
    expect(readout).to_have_text(str(TYPED_VALUE))
    expect(loop_output).to_contain_text(f"slider {TYPED_VALUE}", timeout=WAIT_MS)
    # Widget traffic while the cell runs must not show the notebook as idle.
    assert current_notebook(page).locator(EXECUTION_INDICATOR).get_attribute(
        "data-status") == "busy"
    statuses_while_running = recorded_kernel_statuses(page)

    button_of(shown.cell).click()
    result = wait_cell(page, loop, timeout_s=CELL_TIMEOUT_S)
    lines = [line for line in result.text.splitlines() if line]
    assert lines[-1] == f"clicks=1 last={TYPED_VALUE}", result.text
    assert lines[0] == "looping"
    assert f"slider {moved}" in lines
    assert statuses_while_running[-1] == "busy", statuses_while_running
    # A relayed widget message gets its own busy/idle (ipywidgets throttles its updates
    # on that idle), and the kernel re-publishes busy for the running cell right after
    # it. JupyterLab's status signal can record that idle for an instant; it must never
    # stay: every idle while the cell runs is followed at once by busy.
    after_start = statuses_while_running[1:]
    lingering = [i for i, state in enumerate(after_start)
                 if state == "idle" and after_start[i + 1:i + 2] != ["busy"]]
    assert not lingering, f"the toolbar stayed idle while the cell ran: {statuses_while_running}"

    save_notebook(page)
    path = current_notebook_path(page)

    reload_page(page)
    wait_notebook_shown(page, path)
    first = cells(page).first
    # JupyterLab asks the kernel for the widgets (comm_info / control comm + request_state)
    # and renders the views with the current value.
    expect(readout_of(first)).to_have_text(str(TYPED_VALUE), timeout=WAIT_MS)
    expect(slider_of(first)).to_be_visible()
    expect(button_of(first)).to_be_visible()
    assert not first.locator(OUTPUT).filter(
        has_text=re.compile(r"Error displaying widget|model not found")).count()

    # The restored views are live: the program moves the slider, the page shows it.
    append_cell(page)
    run_cell(page, "slider.value = 6")
    expect(readout_of(first)).to_have_text("6", timeout=WAIT_MS)
