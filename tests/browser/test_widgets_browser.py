"""wrapperkernel.widgets in a real JupyterLab: live values while a cell runs, persistence.

The user's view: a cell loops, reading a slider and a button shown by an earlier cell;
the test moves the slider with the mouse API and the keyboard and clicks the button; the
loop sees every value and ends on the click. The saved notebook, reloaded, still shows
the slider where it was left: the program re-rendered the EARLIER cell's output with
``update_display_data`` (JupyterLab routes an update by its display_id to the output of
the request that displayed it, across cells) and JupyterLab saved that output model.

The screenshot test shows every widget in the light and the dark theme and checks that
the colours come from the theme. To refresh the pictures in the docs run it with
``WRAPPERKERNEL_WIDGET_SCREENSHOTS=docs/screenshots``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Locator, Page, expect

from .jupyterlab import (
    CELL,
    CELL_EDITOR,
    CURRENT_NOTEBOOK_PANEL,
    INPUT_PROMPT,
    OUTPUT,
    LabServer,
    create_notebook,
    current_notebook_path,
    reload_page,
    run_cell,
    save_notebook,
    screenshot,
    set_cell_text,
)

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

SCREENSHOTS_ENV = "WRAPPERKERNEL_WIDGET_SCREENSHOTS"
LOOP_S = 30
WAIT_MS = 20_000
FINISHED_PROMPT = re.compile(r"^\[\d+\]:$")

SHOW_WIDGETS = """\
from wrapperkernel import widgets
slider = widgets.Slider(0, 10, value=2, label="Speed")
button = widgets.Button("Stop")
from_page = []
slider.observe(from_page.append)
slider.display()
button.display()"""

LOOP = f"""\
import time
seen = None
deadline = time.monotonic() + {LOOP_S}
while button.clicks == 0 and time.monotonic() < deadline:
    if slider.value != seen:
        seen = slider.value
        print("slider", seen, flush=True)
    time.sleep(0.02)
print(f"done clicks={{button.clicks}} slider={{slider.value}}")"""

ALL_WIDGETS = """\
from wrapperkernel import widgets
widgets.Slider(0, 10, value=7, label="Speed").display()
widgets.Slider(0.0, 1.0, value=0.35, step=0.05, label="Opacity").display()
widgets.Select(["linear", "log", "symlog"], value="log", label="Scale").display()
widgets.Checkbox(True, label="Show grid").display()
widgets.Text("sin(x) / x", label="Formula", placeholder="an expression").display()
widgets.Progress(65, max=100, label="Rendering").display()
widgets.Button("Run").display()"""


@pytest.fixture(autouse=True)
def _wrapperkernel_only(kernel_under_test: KernelUnderTest) -> None:
    if kernel_under_test.name != "wrapperkernel":
        pytest.skip("wrapperkernel.widgets needs the wrapperkernel kernel")


def cells(page: Page) -> Locator:
    return page.locator(f"{CURRENT_NOTEBOOK_PANEL} {CELL}")


def start_cell(page: Page, code: str) -> Locator:
    """Type ``code`` into the last cell and run it without waiting for it to finish."""
    # Pinned by index: Shift+Enter adds a cell, which then is the last one.
    cell = cells(page).nth(cells(page).count() - 1)
    cell.locator(CELL_EDITOR).click()
    set_cell_text(page, cell, code)
    page.keyboard.press("Shift+Enter")
    expect(cell.locator(INPUT_PROMPT)).not_to_have_text("[ ]:", timeout=WAIT_MS)
    return cell


def wait_page_client(page: Page) -> None:
    page.wait_for_function(
        "globalThis.wrapperkernel_comm !== undefined && globalThis.wrapperkernel_comm.state === 'open'",
        timeout=WAIT_MS,
    )


def saved_widget_outputs(server: LabServer, path: str) -> dict[str, Any]:
    """kind -> the value persisted in the saved notebook's widget output (first cell)."""
    notebook = json.loads((server.root_dir / path).read_text())
    found: dict[str, Any] = {}
    for output in notebook["cells"][0]["outputs"]:
        html = "".join(output.get("data", {}).get("text/html", ""))
        kind = re.search(r'data-wk-kind="(\w+)"', html)
        value = re.search(r'data-wk-value="([^"]*)"', html)
        if kind and value:
            found[kind.group(1)] = json.loads(value.group(1).replace("&quot;", '"'))
    return found


def test_running_loop_sees_slider_and_button_and_reload_shows_the_saved_slider(
    lab: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest
) -> None:
    page = lab
    create_notebook(page, kernel_under_test.display_name)
    shown = run_cell(page, SHOW_WIDGETS)
    wait_page_client(page)
    slider = shown.cell.locator(".wk-slider input[type=range]")
    readout = shown.cell.locator(".wk-slider output")
    stop = shown.cell.locator(".wk-button button")
    expect(slider).to_have_value("2")
    # <label for> names the control: the accessible name is the label's text.
    expect(shown.cell.get_by_label("Speed")).to_have_count(1)

    loop = start_cell(page, LOOP)
    loop_output = loop.locator(OUTPUT)
    expect(loop_output).to_contain_text("slider 2", timeout=WAIT_MS)

    # The mouse API: set the range input and dispatch its input event.
    slider.fill("7")
    expect(loop_output).to_contain_text("slider 7", timeout=WAIT_MS)
    expect(readout).to_have_text("7")

    # The keyboard: arrow keys move the focused slider (JupyterLab's own shortcuts do
    # not take them).
    slider.focus()
    page.keyboard.press("ArrowRight")
    expect(loop_output).to_contain_text("slider 8", timeout=WAIT_MS)
    # The program re-renders the output about 0.5 s after the last change; the new
    # slider takes over the focus, so the next key press moves it on.
    slider.evaluate("element => { element.dataset.testOld = 'yes'; }")
    page.wait_for_function(
        "() => { const s = document.querySelector('.wk-slider input[type=range]');"
        " return s !== null && s.dataset.testOld === undefined; }",
        timeout=WAIT_MS,
    )
    expect(shown.cell.locator(".wk-slider")).to_have_attribute("data-wk-value", "8")
    expect(slider).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(loop_output).to_contain_text("slider 9", timeout=WAIT_MS)

    stop.click()
    expect(loop.locator(INPUT_PROMPT)).to_have_text(FINISHED_PROMPT, timeout=WAIT_MS)
    lines = [line for line in loop_output.all_inner_texts()[0].splitlines() if line]
    assert lines == ["slider 2", "slider 7", "slider 8", "slider 9", "done clicks=1 slider=9"]

    # The earlier cell's output MODEL now holds the last state (a re-render of the DOM
    # alone would not be saved).
    expect(shown.cell.locator(".wk-slider")).to_have_attribute("data-wk-value", "9")
    expect(shown.cell.locator(".wk-button")).to_have_attribute("data-wk-value", "1")
    save_notebook(page)
    path = current_notebook_path(page)
    assert saved_widget_outputs(lab_server, path) == {"slider": 9, "button": 1}

    reload_page(page)
    first = cells(page).first
    expect(first.locator(".wk-slider input[type=range]")).to_have_value("9", timeout=WAIT_MS)
    expect(first.locator(".wk-slider output")).to_have_text("9")
    expect(first.locator(".wk-slider")).to_have_attribute("data-wk-value", "9")
    expect(first.locator(".wk-button button")).to_have_attribute("data-wk-clicks", "1")

    # The kernel kept running. Without any cell, the reloaded widgets install the page
    # client themselves (from the kernelspec folder the server serves), so the program
    # follows the page between cells too: the slider's observer runs.
    wait_page_client(page)
    first.locator(".wk-slider input[type=range]").fill("5")
    run_cell_at_end(page, "print('seen after reload', slider.value, from_page[-1:])")
    expect(cells(page).nth(cells(page).count() - 2).locator(OUTPUT)).to_have_text(
        "seen after reload 5 [5]", timeout=WAIT_MS)

    # And the program drives the reloaded widget.
    run_cell_at_end(page, "slider.value = 4")
    expect(first.locator(".wk-slider output")).to_have_text("4", timeout=WAIT_MS)
    expect(first.locator(".wk-slider input[type=range]")).to_have_value("4")


def run_cell_at_end(page: Page, code: str) -> None:
    cell = start_cell(page, code)
    expect(cell.locator(INPUT_PROMPT)).to_have_text(FINISHED_PROMPT, timeout=WAIT_MS)


def test_all_widgets_in_light_and_dark_theme(
    lab: Page, kernel_under_test: KernelUnderTest, tmp_path: Path
) -> None:
    page = lab
    create_notebook(page, kernel_under_test.display_name)
    shown = run_cell(page, ALL_WIDGETS)
    wait_page_client(page)
    expect(shown.cell.locator(".wk-widget")).to_have_count(7)
    page.mouse.click(1, 1)  # no focus ring or hover state in the pictures
    folders = [tmp_path]
    if os.environ.get(SCREENSHOTS_ENV):
        folders.append(Path(os.environ[SCREENSHOTS_ENV]))
    try:
        for theme, name in (("JupyterLab Light", "light"), ("JupyterLab Dark", "dark")):
            use_theme(page, theme)
            assert_theme_colours(page, shown.cell)
            page.wait_for_timeout(300)  # let the theme's transitions settle
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
                shown.cell.screenshot(path=str(folder / f"widgets-{name}.png"))
    except Exception:
        screenshot(page, tmp_path / "theme-failure.png")
        raise
    finally:
        use_theme(page, "JupyterLab Light")  # the theme is a server-side setting: put it back


def use_theme(page: Page, theme: str) -> None:
    if page.evaluate("document.body.dataset.jpThemeName") == theme:
        return
    page.locator(".lm-MenuBar-item", has_text="Settings").click()
    page.locator(".lm-Menu-item", has_text="Theme").first.hover()
    page.locator(".lm-Menu-item").filter(has=page.get_by_text(theme, exact=True)).click()
    page.wait_for_function(
        "theme => document.body.dataset.jpThemeName === theme", arg=theme, timeout=WAIT_MS
    )


def assert_theme_colours(page: Page, cell: Locator) -> None:
    """The widgets' text, fields and accent follow the theme's CSS variables."""
    colours = cell.evaluate(
        """cell => {
            const theme = getComputedStyle(document.body);
            const resolve = (property, value) => {
                const probe = document.createElement('div');
                probe.style[property] = value;
                document.body.appendChild(probe);
                const resolved = getComputedStyle(probe)[property];
                probe.remove();
                return resolved;
            };
            const style = (selector) => getComputedStyle(cell.querySelector(selector));
            return {
                label: style('.wk-slider .wk-label').color,
                font1: resolve('color', theme.getPropertyValue('--jp-ui-font-color1')),
                field: style('.wk-text input').backgroundColor,
                layout1: resolve('backgroundColor', theme.getPropertyValue('--jp-layout-color1')),
                accent: style('.wk-slider input').accentColor,
                brand1: resolve('color', theme.getPropertyValue('--jp-brand-color1')),
            };
        }"""
    )
    assert colours["label"] == colours["font1"], colours
    assert colours["field"] == colours["layout1"], colours
    assert colours["accent"] == colours["brand1"], colours
