"""Two users on one notebook and one kernel under jupyter-collaboration (real-time
collaboration in JupyterLab), while a widget loop runs.

User A shows wrapperkernel widgets (a slider, a text, a stop button) and an ipywidgets
slider and label, and runs a loop that writes what it saw of both sliders into the text
and the label. User B (a second browser context: another cookie, so another user of the
server) opens the same notebook while the loop runs; B's widget manager then opens its
``jupyter.widget.control`` comm, which once put "No such comm target registered" in red
into A's running cell. Checked in both pages: each user's sliders steer the loop, both
pages show what the program saw, B's button stops A's loop, and no cell shows
diagnostic text or stderr.

jupyter-collaboration is not installed in the project's ``.venv``: there it would turn on
real-time collaboration for every browser test. The server here runs from a virtualenv
of its own (``make collab-venv``; ``WRAPPERKERNEL_BROWSER_COLLAB_VENV`` names another);
the kernel is still wrapperkernel from this checkout, found through ``JUPYTER_PATH``.
With ``CI=true`` a missing collaboration venv is a failure, elsewhere a skip.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from .conftest import REPO_ROOT, VIEWPORT, LabServerFactory, shut_down_sessions
from .jupyterlab import (
    CELL,
    CURRENT_NOTEBOOK_PANEL,
    INPUT_PROMPT,
    OUTPUT,
    PAGE_CONFIG,
    LabServer,
    create_notebook,
    current_notebook_path,
    open_lab,
    page_api,
    run_cell,
    start_cell,
    wait_cell,
    wait_lab_ready,
    wait_notebook_shown,
)

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

COLLAB_VENV_ENV = "WRAPPERKERNEL_BROWSER_COLLAB_VENV"
DEFAULT_COLLAB_VENV = REPO_ROOT / ".venv-collab"
LOOP_S = 90
CELL_TIMEOUT_S = LOOP_S + 15
WAIT_MS = 20_000
RUNNING_PROMPT = "[*]:"
COLLABORATION_EXTENSION = "@jupyter/docprovider-extension"

# What must never show in a cell: the relay's and the comm package's diagnostics, a
# traceback from a handler.
DIAGNOSTICS = re.compile(r"No such comm|comm target|Traceback|Error", re.IGNORECASE)
STDERR_OUTPUT = '[data-mime-type="application/vnd.jupyter.stderr"]'

# Each wrapperkernel widget in a cell of its own: they keep their saved state up to date
# with update_display_data, and JupyterLab 4.6 with jupyter-collaboration 5.0 applies an
# update of one of several outputs of a cell wrongly in the other user's page (see
# test_other_user_sees_every_widget_of_a_cell_with_several below).
SHOW_SPEED = """\
from wrapperkernel import widgets
speed = widgets.Slider(0, 10, value=2, label="Speed")
speed.display()"""
SHOW_SAW = """\
saw = widgets.Text("", label="Program saw")
saw.display()"""
SHOW_STOP = """\
stop = widgets.Button("Stop")
stop.display()"""
SHOW_IPYWIDGETS = """\
import ipywidgets as w
from IPython.display import display
level = w.IntSlider(value=5, min=0, max=20, description="Level")
label = w.Label("")
display(level, label)"""
WIDGET_CELLS = (SHOW_SPEED, SHOW_SAW, SHOW_STOP, SHOW_IPYWIDGETS)

LOOP = f"""\
import time
deadline = time.monotonic() + {LOOP_S}
seen = None
while stop.clicks == 0 and time.monotonic() < deadline:
    now = (speed.value, level.value)
    if now != seen:
        seen = now
        saw.value = label.value = f"speed {{now[0]}} level {{now[1]}}"
    time.sleep(0.05)
print(f"done clicks={{stop.clicks}} speed={{speed.value}} level={{level.value}}")"""


@pytest.fixture(scope="module")
def collab_server(
    lab_server_factory: LabServerFactory, kernel_under_test: KernelUnderTest
) -> Iterator[LabServer]:
    """A JupyterLab with jupyter-collaboration, from its own virtualenv."""
    if kernel_under_test.name != "wrapperkernel":
        pytest.skip("the page client and wrapperkernel.widgets need the wrapperkernel kernel")
    venv = Path(os.environ.get(COLLAB_VENV_ENV) or DEFAULT_COLLAB_VENV)
    python = venv / "bin" / "python"
    if not python.is_file():
        message = (
            f"no virtualenv with jupyter-collaboration at {venv} (`make collab-venv` "
            f"creates it; {COLLAB_VENV_ENV} names another)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = lab_server_factory(python=str(python))
    try:
        yield server
    finally:
        lab_server_factory.stop(server)


def federated_extensions(page: Page) -> list[str]:
    """The names of the prebuilt extensions the page loaded, from its page config."""
    config = json.loads(page.locator(PAGE_CONFIG).text_content() or "{}")
    return [extension["name"] for extension in config.get("federated_extensions", [])]


def cell(page: Page, index: int) -> Locator:
    return page.locator(f"{CURRENT_NOTEBOOK_PANEL} {CELL}").nth(index)


@dataclass(frozen=True)
class Controls:
    """What one user sees of the widgets, by the cells of ``WIDGET_CELLS``."""

    speed: Locator
    saw: Locator
    stop: Locator
    level: Locator
    label: Locator

    @classmethod
    def of(cls, page: Page) -> Controls:
        return cls(
            speed=cell(page, 0).locator(".wk-slider input[type=range]"),
            saw=cell(page, 1).locator(".wk-text input"),
            stop=cell(page, 2).locator(".wk-button button"),
            level=cell(page, 3).locator(".noUi-handle"),
            label=cell(page, 3).locator("div.widget-label"),
        )

    def expect_program_saw(self, text: str) -> None:
        expect(self.saw).to_have_value(text, timeout=WAIT_MS)
        expect(self.label).to_have_text(text, timeout=WAIT_MS)


def wait_page_client(page: Page) -> None:
    page.wait_for_function(
        "globalThis.wrapperkernel_comm !== undefined"
        " && globalThis.wrapperkernel_comm.state === 'open'",
        timeout=WAIT_MS,
    )


def assert_no_diagnostics(page: Page, who: str) -> None:
    outputs = page.locator(f"{CURRENT_NOTEBOOK_PANEL} {OUTPUT}")
    texts = outputs.all_inner_texts()
    shown = [text for text in texts if DIAGNOSTICS.search(text)]
    assert not shown, f"{who}'s page shows diagnostic text in a cell: {shown}"
    stderr = page.locator(f"{CURRENT_NOTEBOOK_PANEL} {STDERR_OUTPUT}").all_inner_texts()
    assert not stderr, f"{who}'s page shows stderr in a cell: {stderr}"


@dataclass(frozen=True)
class TwoUsers:
    """Two browser contexts (two cookies, so two users of the server); A's page is open
    on a new notebook, B opens it later with ``open_as_b``."""

    page_a: Page
    context_b: BrowserContext
    server: LabServer

    def open_as_b(self, path: str) -> Page:
        """User B opens the notebook at ``path`` in a workspace of its own."""
        page_b = self.context_b.new_page()
        page_b.goto(self.server.lab_url(f"lab/workspaces/user-b/tree/{path}"))
        wait_lab_ready(page_b)
        wait_notebook_shown(page_b, path)
        # B shows the widgets; their outputs install the page client, which joins.
        wait_page_client(page_b)
        return page_b


@contextmanager
def two_users(browser: Browser, server: LabServer, kernel: KernelUnderTest) -> Iterator[TwoUsers]:
    context_a = browser.new_context(viewport=VIEWPORT)
    context_b = browser.new_context(viewport=VIEWPORT)
    try:
        page_a = context_a.new_page()
        open_lab(page_a, server)
        # The shared document comes from jupyter-collaboration's document provider.
        assert COLLABORATION_EXTENSION in federated_extensions(page_a)
        create_notebook(page_a, kernel.display_name)
        yield TwoUsers(page_a, context_b, server)
    finally:
        context_b.close()
        context_a.close()
        shut_down_sessions(server)


def test_two_users_collaborating_both_steer_a_running_loop_and_see_no_diagnostics(
    browser: Browser, collab_server: LabServer, kernel_under_test: KernelUnderTest
) -> None:
    with two_users(browser, collab_server, kernel_under_test) as users:
        page_a = users.page_a
        for code in WIDGET_CELLS:
            run_cell(page_a, code)
        wait_page_client(page_a)
        path = current_notebook_path(page_a)
        loop = start_cell(page_a, LOOP)
        seen_a = Controls.of(page_a)
        seen_a.expect_program_saw("speed 2 level 5")

        # User B opens the notebook while A's loop runs.
        page_b = users.open_as_b(path)
        user_a = page_api(page_a, "api/me")["identity"]["username"]
        user_b = page_api(page_b, "api/me")["identity"]["username"]
        assert user_a != user_b, "both pages are the same user of the server"
        seen_b = Controls.of(page_b)
        seen_b.expect_program_saw("speed 2 level 5")
        expect(loop.cell.locator(INPUT_PROMPT)).to_have_text(RUNNING_PROMPT)

        # B steers the program with both sliders; both pages show what it saw.
        seen_b.speed.fill("7")
        seen_b.level.focus()
        page_b.keyboard.press("ArrowRight")
        for seen in (seen_a, seen_b):
            seen.expect_program_saw("speed 7 level 6")
        expect(seen_a.speed).to_have_value("7")

        # So does A.
        seen_a.speed.fill("3")
        seen_a.level.focus()
        page_a.keyboard.press("ArrowLeft")
        page_a.keyboard.press("ArrowLeft")
        for seen in (seen_a, seen_b):
            seen.expect_program_saw("speed 3 level 4")
        expect(seen_b.speed).to_have_value("3")
        expect(loop.cell.locator(INPUT_PROMPT)).to_have_text(RUNNING_PROMPT)

        # B's button stops the loop that runs in A's cell.
        seen_b.stop.click()
        result = wait_cell(page_a, loop, timeout_s=CELL_TIMEOUT_S)
        assert result.text.strip() == "done clicks=1 speed=3 level=4", result.text
        # B sees the loop's end too: the shared notebook carries the outputs.
        expect(cell(page_b, len(WIDGET_CELLS)).locator(OUTPUT)).to_have_text(
            "done clicks=1 speed=3 level=4", timeout=WAIT_MS
        )
        assert_no_diagnostics(page_a, "user A")
        assert_no_diagnostics(page_b, "user B")


SHOW_IN_ONE_CELL = """\
from wrapperkernel import widgets
speed = widgets.Slider(0, 10, value=2, label="Speed")
saw = widgets.Text("", label="Program saw")
stop = widgets.Button("Stop")
speed.display()
saw.display()
stop.display()"""

# Each frame changes the slider and the text, then waits past the re-render's debounce:
# both outputs are re-rendered with update_display_data, one right after the other,
# every frame (as when a user moves the slider and the program answers in the text).
FRAMES_LOOP = f"""\
import time
deadline = time.monotonic() + {LOOP_S}
frame = 0
while stop.clicks == 0 and time.monotonic() < deadline:
    frame += 1
    speed.value = frame % 10
    saw.value = f"frame {{frame}} speed {{speed.value}}"
    time.sleep(2 * widgets.RERENDER_DEBOUNCE_S)
print(f"done clicks={{stop.clicks}}")"""
FRAMES_AFTER_B_JOINED = 6


def frame_number(saw: Locator) -> int:
    match = re.match(r"frame (\d+)", saw.input_value())
    assert match is not None, f"the text shows {saw.input_value()!r}"
    return int(match.group(1))


@pytest.mark.xfail(
    strict=True,
    reason="JupyterLab 4.6 with jupyter-collaboration 5.0.4 applies update_display_data "
    "of one of several outputs of a cell wrongly in the other user's page: that output "
    "overwrites its neighbours (seen with ipykernel and IPython's display handles too); "
    "wrapperkernel.widgets re-render their output on every value change",
)
def test_other_user_sees_every_widget_of_a_cell_with_several(
    browser: Browser, collab_server: LabServer, kernel_under_test: KernelUnderTest
) -> None:
    with two_users(browser, collab_server, kernel_under_test) as users:
        page_a = users.page_a
        run_cell(page_a, SHOW_IN_ONE_CELL)
        wait_page_client(page_a)
        path = current_notebook_path(page_a)
        loop = start_cell(page_a, FRAMES_LOOP)
        saw_a = cell(page_a, 0).locator(".wk-text input")
        expect(saw_a).to_have_value(re.compile(r"^frame \d+ speed \d$"), timeout=WAIT_MS)

        page_b = users.open_as_b(path)
        joined_at = frame_number(saw_a)
        # By selector: each re-render replaces the input element.
        page_a.wait_for_function(
            """([cells, frame]) => {
                const input = document.querySelector(cells)?.querySelector('.wk-text input');
                return Number(/frame (\\d+)/.exec(input?.value ?? '')?.[1]) >= frame;
            }""",
            arg=[f"{CURRENT_NOTEBOOK_PANEL} {CELL}", joined_at + FRAMES_AFTER_B_JOINED],
            timeout=WAIT_MS,
        )
        cell(page_a, 0).locator(".wk-button button").click()
        wait_cell(page_a, loop, timeout_s=CELL_TIMEOUT_S)

        # A sees each widget once; so must B.
        for who, page in (("user A", page_a), ("user B", page_b)):
            shown = cell(page, 0)
            for widget in (".wk-slider", ".wk-text", ".wk-button"):
                expect(
                    shown.locator(widget), f"{who}'s page shows {widget} once"
                ).to_have_count(1, timeout=WAIT_MS)
