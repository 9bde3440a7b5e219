"""JupyterLab's visual debugger in a real Chromium, against wrapperkernel.

The user's view, in the order a user goes: the notebook toolbar's bug icon is enabled for
"Python (wrapperkernel)" (the kernel advertises ``debugger`` in kernel_info); a click
switches the debugger on and the Debugger panel shows in the right sidebar. A click in
the editor's breakpoint gutter sets a breakpoint inside a function; running the cell
stops there: the line is highlighted and the Variables panel shows the function's
locals. While the cell is stopped, the user drags a ``wrapperkernel.widgets.Slider`` an
earlier cell showed, and the slider's ``observe`` callback prints what arrived into the
stopped cell's output (DESIGN.md: the kernel process never runs user code, and the
worker's callback dispatcher is hidden from pydevd, so a breakpoint does not stop it).
"Next" moves the highlight to the next line and a new local shows; "Continue" lets the
cell finish.

A screenshot of the stopped state is saved as an artifact; with
``WRAPPERKERNEL_DEBUGGER_SCREENSHOTS=docs/screenshots`` it refreshes the docs' copy.
Selectors were checked against JupyterLab 4.6.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Locator, Page, expect

from .jupyterlab import (
    CURRENT_NOTEBOOK_PANEL,
    INPUT_PROMPT,
    OUTPUT,
    create_notebook,
    run_cell,
    set_cell_text,
)
from .test_widgets_browser import cells, wait_page_client

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

SCREENSHOTS_ENV = "WRAPPERKERNEL_DEBUGGER_SCREENSHOTS"
# Starting debugpy in the worker and the first stop take a few seconds on a busy machine.
WAIT_MS = 30_000
RUNNING_PROMPT = "[*]:"
FINISHED_PROMPT = re.compile(r"^\[\d+\]:$")

# --- JupyterLab 4.6's debugger DOM ------------------------------------------------------
BUG_BUTTON = f"{CURRENT_NOTEBOOK_PANEL} .jp-NotebookPanel-toolbar jp-button.jp-DebuggerBugButton"
SIDEBAR = "#jp-debugger-sidebar"
SIDEBAR_TAB = f'.jp-SideBar.jp-mod-right .lm-TabBar-tab[data-id="{SIDEBAR[1:]}"]'
NEXT_BUTTON = f'{SIDEBAR} jp-button[data-command="debugger:next"]'
CONTINUE_BUTTON = f'{SIDEBAR} jp-button[data-command="debugger:continue"]'
# Top-level entries of the Variables panel's tree view: a name span and a detail span.
VARIABLE_ITEMS = f"{SIDEBAR} .jp-DebuggerVariables jp-tree-view > jp-tree-item"
CURRENT_FRAME = f"{SIDEBAR} .jp-DebuggerCallstack .jp-DebuggerCallstackFrame.selected"
BREAKPOINT_LINES = f"{SIDEBAR} .jp-DebuggerBreakpoint .jp-DebuggerBreakpoint-line"
PAUSED_OVERLAY = ".jp-DebuggerPausedOverlay"
# In a cell's CodeMirror 6 editor.
BREAKPOINT_GUTTER = ".cm-gutter.cm-breakpoint-gutter"
BREAKPOINT_MARKER = 'span.cm-breakpoint-gutter[aria-label="Breakpoint"]'
LINE_NUMBERS = ".cm-lineNumbers .cm-gutterElement"
HIGHLIGHTED_LINE = ".cm-line.jp-DebuggerEditor-highlight"

# --- cell code --------------------------------------------------------------------------
SHOW_SLIDER = """\
from wrapperkernel import widgets
slider = widgets.Slider(0, 10, value=2, label="Speed")
slider.observe(lambda value: print("got", value, flush=True))
slider.display()"""

SCALE = """\
def scale(values, factor):
    doubled = [v * factor for v in values]
    total = sum(doubled)
    return total

print("total", scale([1, 2, 3], 10))"""
BREAKPOINT_LINE = 3  # total = sum(doubled): doubled and factor are locals there
NEXT_LINE = 4  # return total


@pytest.fixture(autouse=True)
def _wrapperkernel_only(kernel_under_test: KernelUnderTest) -> None:
    if kernel_under_test.name != "wrapperkernel":
        pytest.skip("the slider step needs wrapperkernel.widgets")


def source_line(code: str, line: int) -> str:
    return code.splitlines()[line - 1]


def variable_detail(page: Page, name: str) -> Locator:
    """The value text the Variables panel shows next to the top-level variable ``name``."""
    item = page.locator(VARIABLE_ITEMS).filter(
        has=page.locator(":scope > .jp-DebuggerVariables-name", has_text=re.compile(f"^{name}$"))
    )
    return item.locator(":scope > .jp-DebuggerVariables-detail")


def click_breakpoint_gutter(page: Page, cell: Locator, line: int) -> None:
    """Click the breakpoint gutter beside line ``line`` of the cell, as a user does: at the
    height of that line's number (the gutter's first element is CodeMirror's hidden
    spacer, so counting gutter elements would be off by one)."""
    number = cell.locator(LINE_NUMBERS).filter(visible=True).filter(
        has_text=re.compile(f"^{line}$")
    )
    expect(number).to_have_count(1)
    number_box = number.bounding_box()
    gutter_box = cell.locator(BREAKPOINT_GUTTER).bounding_box()
    assert number_box is not None and gutter_box is not None
    page.mouse.click(
        gutter_box["x"] + gutter_box["width"] / 2, number_box["y"] + number_box["height"] / 2
    )
    # The red dot shows in the gutter, at that line.
    marker = cell.locator(f"{BREAKPOINT_GUTTER} {BREAKPOINT_MARKER}").filter(visible=True)
    expect(marker).to_have_count(1, timeout=WAIT_MS)
    marker_box = marker.bounding_box()
    assert marker_box is not None
    marker_middle = marker_box["y"] + marker_box["height"] / 2
    assert number_box["y"] <= marker_middle <= number_box["y"] + number_box["height"]


def drag_slider_to_the_end(page: Page, slider: Locator) -> None:
    """Press the mouse on the slider near its thumb and drag it past the right end."""
    box = slider.bounding_box()
    assert box is not None
    middle = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.2, middle)  # value 2 of 0..10
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] + 30, middle, steps=5)
    page.mouse.up()


def assert_stopped_at(page: Page, cell: Locator, line: int) -> None:
    """The cell is paused at ``line``: that line alone is highlighted, the overlay says so,
    the cell has no execution count, and the call stack's current frame is ``scale``."""
    highlighted = cell.locator(HIGHLIGHTED_LINE)
    expect(highlighted).to_have_count(1, timeout=WAIT_MS)
    expect(highlighted).to_have_text(source_line(SCALE, line), timeout=WAIT_MS)
    expect(page.locator(PAUSED_OVERLAY)).to_contain_text("Paused in Debugger")
    expect(cell.locator(INPUT_PROMPT)).to_have_text(RUNNING_PROMPT)
    expect(page.locator(CURRENT_FRAME).locator(".jp-DebuggerCallstackFrame-name")).to_have_text(
        "scale"
    )
    expect(page.locator(CURRENT_FRAME).locator(".jp-DebuggerCallstackFrame-location")).to_have_text(
        re.compile(rf":{line}$")
    )


def save_stopped_screenshot(page: Page, folder: Path) -> None:
    """The notebook and the Debugger panel, without the file browser."""
    main = page.locator("#jp-main-dock-panel").bounding_box()
    viewport = page.viewport_size
    assert main is not None and viewport is not None
    clip = {
        "x": main["x"],
        "y": main["y"],
        "width": viewport["width"] - main["x"],
        "height": min(viewport["height"] - main["y"], 450),
    }
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "debugger.png"), clip=clip)


def test_breakpoint_stop_slider_while_paused_next_and_continue(
    lab: Page, kernel_under_test: KernelUnderTest, tmp_path: Path
) -> None:
    page = lab
    create_notebook(page, kernel_under_test.display_name)
    shown = run_cell(page, SHOW_SLIDER)
    slider = shown.cell.locator(".wk-slider input[type=range]")
    readout = shown.cell.locator(".wk-slider output")
    expect(slider).to_have_value("2")
    # The widget subscribes once the page client is open: only then can it follow the page.
    wait_page_client(page)

    # 1. Open the Debugger panel from the right sidebar (collapsed in a fresh workspace).
    #    The bug icon is enabled for this kernel (not the grey "Select a kernel that
    #    supports debugging" state); a click switches the debugger on, and the panel then
    #    shows the notebook's globals. (JupyterLab would also open the panel by itself
    #    once the debugger is initialized, with activateById: it stays open.)
    tab = page.locator(SIDEBAR_TAB)
    expect(tab).to_have_attribute("aria-selected", "false")
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")
    expect(page.locator(SIDEBAR)).to_be_visible(timeout=WAIT_MS)
    bug = page.locator(BUG_BUTTON)
    expect(bug).to_have_attribute("aria-disabled", "false")
    expect(bug).to_have_attribute("title", "Enable Debugger")
    expect(bug).to_have_attribute("aria-pressed", "false")
    bug.click()
    expect(bug).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    expect(bug).to_have_attribute("title", "Disable Debugger")
    expect(tab).to_have_attribute("aria-selected", "true")
    expect(page.locator(f"{SIDEBAR} .jp-DebuggerVariables")).to_be_visible()
    expect(variable_detail(page, "slider")).to_have_text("Slider", timeout=WAIT_MS)

    # 2. A breakpoint by a click in the gutter, on a line inside the function.
    # Pinned by index: Shift+Enter added this empty cell below the slider's.
    code_cell = cells(page).nth(cells(page).count() - 1)
    set_cell_text(page, code_cell, SCALE)
    click_breakpoint_gutter(page, code_cell, BREAKPOINT_LINE)
    expect(page.locator(BREAKPOINT_LINES)).to_have_text([str(BREAKPOINT_LINE)], timeout=WAIT_MS)

    # 3. Run it: it stops at the breakpoint, with the function's locals in the panel.
    code_cell.locator(INPUT_PROMPT).click()
    page.locator(
        f'{CURRENT_NOTEBOOK_PANEL} [data-command="notebook:run-cell-and-select-next"]'
    ).click()
    assert_stopped_at(page, code_cell, BREAKPOINT_LINE)
    expect(variable_detail(page, "factor")).to_have_text("10", timeout=WAIT_MS)
    expect(variable_detail(page, "doubled")).to_have_text("list")
    expect(variable_detail(page, "total")).to_have_count(0)  # not assigned yet

    # 4. While it is stopped, the slider moves and its callback runs: it prints into the
    #    output of the cell that is running, the stopped one.
    drag_slider_to_the_end(page, slider)
    expect(readout).to_have_text("10")
    output = code_cell.locator(OUTPUT)
    expect(output.last).to_have_text(re.compile(r"(^|\n)got 10\s*$"), timeout=WAIT_MS)
    got = code_cell.locator(OUTPUT).all_inner_texts()
    assert all(line.startswith("got ") for text in got for line in text.splitlines()), got
    assert_stopped_at(page, code_cell, BREAKPOINT_LINE)  # still paused, no count
    folders = [tmp_path]
    if os.environ.get(SCREENSHOTS_ENV):
        folders.append(Path(os.environ[SCREENSHOTS_ENV]))
    for folder in folders:
        save_stopped_screenshot(page, folder)

    # 5. Next: the highlight moves to the next line, where the new local shows.
    page.locator(NEXT_BUTTON).click()
    assert_stopped_at(page, code_cell, NEXT_LINE)
    expect(variable_detail(page, "total")).to_have_text("60", timeout=WAIT_MS)
    expect(variable_detail(page, "factor")).to_have_text("10")

    # Continue: the cell finishes with its output and an execution count.
    page.locator(CONTINUE_BUTTON).click()
    expect(code_cell.locator(INPUT_PROMPT)).to_have_text(FINISHED_PROMPT, timeout=WAIT_MS)
    expect(output.last).to_have_text(re.compile(r"(^|\n)total 60\s*$"), timeout=WAIT_MS)
    expect(code_cell.locator(".jp-OutputArea")).to_contain_text("got 10")
    expect(code_cell.locator(HIGHLIGHTED_LINE)).to_have_count(0)
    expect(page.locator(PAUSED_OVERLAY)).to_have_count(0)
