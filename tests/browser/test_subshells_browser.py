"""Kernel subshells (JEP 91) in a real JupyterLab 4.6 with wrapperkernel.

What a user does and sees, in order:

1. A notebook cell runs a loop that reads a variable (``speed``); its prompt shows ``[*]``.
2. The notebook's context menu has "New Subshell Console for Notebook"
   (``notebook:create-subshell-console``); it opens a console on the notebook's kernel,
   which asks that kernel for a subshell (``create_subshell_request`` on control) and
   sends its requests with that ``subshell_id``. The console's code runs on another
   thread than the main shell's.
3. While the loop runs, the console prints the loop's counter (it grows) and sets
   ``speed = 0``.
4. The loop sees the change: the cell prints that the console stopped it, and gets its
   execution count.
5. ipywidgets work with JupyterLab's "Kernel Comms over subshells" setting
   (``commsOverSubshells`` of ``@jupyterlab/apputils-extension:kernels-settings``) at
   ``perCommTarget`` (the default: widget comm messages go to a subshell) and at
   ``disabled`` (they go to the main shell): a slider moved with the keyboard while a
   loop runs fires its ``observe`` callback, which the loop sees; a slider dragged with
   the mouse is read by the next cell.

The page's kernel websockets are watched (Playwright's ``websocket`` events), to tell
which kernel the console talks to and whether a message went to a subshell.
Selectors were checked against JupyterLab 4.6.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Locator, Page, WebSocket, expect

from .jupyterlab import (
    CURRENT_NOTEBOOK_PANEL,
    INPUT_PROMPT,
    OUTPUT,
    PAGE_CONFIG,
    create_notebook,
    reload_page,
    run_cell,
    start_cell,
    wait_cell,
    wait_lab_ready,
)

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

# The loops end by themselves after this long, so a broken kernel cannot hang the test.
LOOP_S = 60
CELL_TIMEOUT_S = LOOP_S + 20
WAIT_MS = 30_000
WIRE_WAIT_S = 30.0
RUNNING_PROMPT = "[*]:"
FINISHED_PROMPT = re.compile(r"^\[\d+\]:$")

# --- JupyterLab 4.6 ---------------------------------------------------------------------
SUBSHELL_CONSOLE_COMMAND = "notebook:create-subshell-console"
CONTEXT_MENU_ITEM = f'.lm-Menu-item[data-command="{SUBSHELL_CONSOLE_COMMAND}"]'
CONSOLE_PANEL = "#jp-main-dock-panel .jp-ConsolePanel"
CONSOLE_PROMPT_EDITOR = f"{CONSOLE_PANEL} .jp-CodeConsole-promptCell .cm-content"
CONSOLE_CELLS = f"{CONSOLE_PANEL} .jp-CodeConsole-content .jp-Console-cell"
KERNELS_SETTINGS = "@jupyterlab/apputils-extension:kernels-settings"
KERNEL_CHANNELS_URL = re.compile(r"/api/kernels/([0-9a-f-]+)/channels")

# --- cell code --------------------------------------------------------------------------
SET_SPEED = "import time\nspeed = 1"
LOOP = f"""\
count = 0
deadline = time.monotonic() + {LOOP_S}
while speed != 0 and time.monotonic() < deadline:
    count += speed
    time.sleep(0.01)
print("stopped by the console" if speed == 0 else "timed out", "count", count)"""
ON_WHICH_THREAD = (
    "import threading\n"
    "print(threading.current_thread() is threading.main_thread(), flush=True)"
)

START_VALUE = 3
ARROW_PRESSES = 4
MOVED_VALUE = START_VALUE + ARROW_PRESSES
SLIDER_MAX = 20
SHOW_SLIDER = f"""\
import time
import ipywidgets as w
from IPython.display import display
slider = w.IntSlider(value={START_VALUE}, min=0, max={SLIDER_MAX}, description="Speed")
observed = []
slider.observe(lambda change: observed.append(change["new"]), names="value")
display(slider)"""
WIDGET_LOOP = f"""\
print("looping", flush=True)
deadline = time.monotonic() + {LOOP_S}
while {MOVED_VALUE} not in observed and time.monotonic() < deadline:
    time.sleep(0.02)
print("observed while running:", observed)"""


# --- the page's kernel websockets ---------------------------------------------------------


@dataclass(frozen=True)
class WireMessage:
    kernel_id: str
    url: str
    sent: bool  # page -> server
    channel: str
    header: dict[str, Any]
    content: dict[str, Any]

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))


def decode_frame(payload: str | bytes) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """(channel, header, content) of a kernel websocket frame; None if it is not one.

    Text frames are the JSON protocol; binary frames are ``v1.kernel.websocket.jupyter.org``
    (jupyter_server's ``serialize_msg_to_ws_v1``): a part count n, n offsets, then the
    parts channel, header, parent_header, metadata, content, buffers..."""
    try:
        if isinstance(payload, str):
            message = json.loads(payload)
            return message.get("channel", ""), message["header"], message.get("content", {})
        count = int.from_bytes(payload[:8], "little")
        offsets = [int.from_bytes(payload[8 * (i + 1) : 8 * (i + 2)], "little")
                   for i in range(count)]
        parts = [payload[offsets[i] : offsets[i + 1]] for i in range(count - 1)]
        return parts[0].decode(), json.loads(parts[1]), json.loads(parts[4])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


@dataclass
class Wire:
    """Every kernel message the page sends or receives on its kernel websockets."""

    messages: list[WireMessage] = field(default_factory=list)

    def watch(self, socket: WebSocket) -> None:
        match = KERNEL_CHANNELS_URL.search(socket.url)
        if match is None:
            return
        kernel_id, url = match.group(1), socket.url

        def keep(payload: str | bytes, sent: bool) -> None:
            decoded = decode_frame(payload)
            if decoded is not None:
                self.messages.append(WireMessage(kernel_id, url, sent, *decoded))

        socket.on("framesent", lambda payload: keep(payload, True))
        socket.on("framereceived", lambda payload: keep(payload, False))

    def find(self, msg_type: str, *, sent: bool | None = None) -> list[WireMessage]:
        return [m for m in self.messages
                if m.msg_type == msg_type and (sent is None or m.sent == sent)]

    def wait_for(self, page: Page, msg_type: str, *, sent: bool | None = None,
                 after: int = 0, timeout_s: float = WIRE_WAIT_S) -> WireMessage:
        """The first such message from index ``after`` on; Playwright delivers websocket
        events while the page waits."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [m for m in self.messages[after:]
                     if m.msg_type == msg_type and (sent is None or m.sent == sent)]
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                seen = sorted({m.msg_type for m in self.messages})
                raise TimeoutError(f"no {msg_type} on the kernel websockets within "
                                   f"{timeout_s:.0f} s (seen: {seen})")
            page.wait_for_timeout(100)


@pytest.fixture
def wire(lab: Page) -> Wire:
    """Watches the websockets the page opens from now on (the notebooks' and consoles')."""
    recorded = Wire()
    lab.on("websocket", recorded.watch)
    return recorded


# --- helpers ------------------------------------------------------------------------------


def notebook_cells(page: Page) -> Locator:
    return page.locator(f"{CURRENT_NOTEBOOK_PANEL} .jp-Notebook .jp-Cell")


def open_subshell_console(page: Page) -> Locator:
    """Right-click the notebook, choose "New Subshell Console for Notebook"; the console
    opens below the notebook."""
    page.locator(f"{CURRENT_NOTEBOOK_PANEL} .jp-Notebook").click(button="right")
    item = page.locator(CONTEXT_MENU_ITEM)
    expect(item).to_be_visible(timeout=WAIT_MS)
    expect(item).to_have_text(re.compile("New Subshell Console for Notebook"))
    item.click()
    console = page.locator(CONSOLE_PANEL)
    expect(console).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(CONSOLE_PROMPT_EDITOR)).to_be_visible(timeout=WAIT_MS)
    return console


def run_in_console(page: Page, code: str, timeout_ms: float = WAIT_MS) -> str:
    """Type ``code`` into the console's prompt, run it (Shift+Enter), wait for its
    execution count and return its output text."""
    cells = page.locator(CONSOLE_CELLS)
    before = cells.count()
    page.locator(CONSOLE_PROMPT_EDITOR).click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    expect(cells).to_have_count(before + 1, timeout=timeout_ms)
    cell = cells.nth(before)
    expect(cell.locator(INPUT_PROMPT)).to_have_text(FINISHED_PROMPT, timeout=timeout_ms)
    return "\n".join(t.strip() for t in cell.locator(OUTPUT).all_inner_texts())


def close_console(page: Page) -> None:
    """Close the console's tab (the notebook and its kernel stay)."""
    tab_id = page.locator(CONSOLE_PANEL).get_attribute("id")
    page.locator(f'#jp-main-dock-panel .lm-TabBar-tab[data-id="{tab_id}"] '
                 ".lm-TabBar-tabCloseIcon").click()
    expect(page.locator(CONSOLE_PANEL)).to_have_count(0, timeout=WAIT_MS)


def settings_url(page: Page) -> tuple[str, dict[str, str]]:
    config = json.loads(page.locator(PAGE_CONFIG).text_content() or "{}")
    origin = re.match(r"^https?://[^/]+", page.url)
    assert origin is not None, page.url
    return (f"{origin.group(0)}{config['baseUrl']}lab/api/settings/{KERNELS_SETTINGS}",
            {"Authorization": f"token {config['token']}"})


def put_kernels_settings(page: Page, raw: str) -> None:
    """Save the Kernels settings as the Settings Editor does (the server checks them
    against the schema)."""
    url, headers = settings_url(page)
    response = page.request.put(url, headers=headers, data=json.dumps({"raw": raw}))
    assert response.ok, f"PUT {url}: HTTP {response.status} {response.text()}"


@pytest.fixture
def comms_over_subshells(lab: Page, request: pytest.FixtureRequest) -> Iterator[str]:
    """Set ``commsOverSubshells`` to the test's parameter and reload JupyterLab, which reads
    it once it started; afterwards the server's settings are what they were."""
    value = request.param
    url, headers = settings_url(lab)
    previous = lab.request.get(url, headers=headers).json().get("raw", "{}")
    put_kernels_settings(lab, json.dumps({"commsOverSubshells": value}))
    reload_page(lab)
    wait_lab_ready(lab)
    saved = lab.request.get(url, headers=headers).json()
    assert saved["settings"]["commsOverSubshells"] == value, saved
    try:
        yield value
    finally:
        put_kernels_settings(lab, previous)


# --- the tests ----------------------------------------------------------------------------


def test_subshell_console_reads_and_stops_a_running_loop(
    lab: Page, wire: Wire, kernel_under_test: KernelUnderTest
) -> None:
    page = lab
    create_notebook(page, kernel_under_test.display_name)
    notebook_kernel = wire.wait_for(page, "kernel_info_reply").kernel_id

    # 1. The loop runs: its prompt shows [*].
    run_cell(page, SET_SPEED)
    loop = start_cell(page, LOOP)
    expect(loop.cell.locator(INPUT_PROMPT)).to_have_text(RUNNING_PROMPT, timeout=WAIT_MS)

    # 2. A subshell console on the notebook's kernel.
    mark = len(wire.messages)
    open_subshell_console(page)
    request = wire.wait_for(page, "create_subshell_request", sent=True, after=mark)
    reply = wire.wait_for(page, "create_subshell_reply", sent=False, after=mark)
    assert request.channel == "control", request
    assert request.kernel_id == notebook_kernel, (request.url, notebook_kernel)
    subshell_id = reply.content.get("subshell_id")
    assert reply.content.get("status") == "ok" and subshell_id, reply.content
    # The console's connection is its own websocket, to the notebook's kernel.
    console_url = request.url
    notebook_urls = {m.url for m in wire.messages[:mark] if m.kernel_id == notebook_kernel}
    assert console_url not in notebook_urls, (console_url, notebook_urls)

    mark = len(wire.messages)
    assert run_in_console(page, ON_WHICH_THREAD) == "False"
    execute = wire.wait_for(page, "execute_request", sent=True, after=mark)
    assert execute.url == console_url, execute
    assert execute.header.get("subshell_id") == subshell_id, execute.header

    # 3. The console sees the running loop's counter grow; the cell still runs.
    first = int(run_in_console(page, "print(count)"))
    assert first > 0
    page.wait_for_timeout(300)
    second = int(run_in_console(page, "print(count)"))
    assert second > first, (first, second)
    expect(loop.cell.locator(INPUT_PROMPT)).to_have_text(RUNNING_PROMPT)
    assert run_in_console(page, "speed = 0\nprint('speed', speed)") == "speed 0"

    # 4. The loop sees the change: it stops, prints why, and gets its execution count.
    result = wait_cell(page, loop, timeout_s=CELL_TIMEOUT_S)
    match = re.fullmatch(r"stopped by the console count (\d+)", result.text.strip())
    assert match is not None, result.text
    assert int(match.group(1)) >= second
    assert result.execution_count > 0
    expect(loop.cell.locator(INPUT_PROMPT)).to_have_text(f"[{result.execution_count}]:")

    close_console(page)


def drag_slider_to_the_end(page: Page, slider: Locator) -> None:
    """Press the mouse on the slider's handle and drag it past the right end."""
    handle = slider.locator(".noUi-handle").bounding_box()
    track = slider.locator(".noUi-target").bounding_box()
    assert handle is not None and track is not None
    middle = handle["y"] + handle["height"] / 2
    page.mouse.move(handle["x"] + handle["width"] / 2, middle)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] + 40, middle, steps=8)
    page.mouse.up()


@pytest.mark.parametrize("comms_over_subshells", ["perCommTarget", "disabled"], indirect=True)
def test_ipywidgets_with_comms_over_subshells(
    lab: Page, comms_over_subshells: str, wire: Wire, kernel_under_test: KernelUnderTest
) -> None:
    page = lab
    create_notebook(page, kernel_under_test.display_name)
    shown = run_cell(page, SHOW_SLIDER)
    slider = shown.cell.locator(".widget-slider")
    readout = shown.cell.locator(".widget-slider .widget-readout")
    expect(readout).to_have_text(str(START_VALUE), timeout=WAIT_MS)

    # 5a. The page runs the loop and moves the slider with the keyboard: the observe
    # callback fires while the loop runs, and the loop sees what it recorded.
    loop = start_cell(page, WIDGET_LOOP)
    expect(loop.cell.locator(OUTPUT)).to_contain_text("looping", timeout=WAIT_MS)
    expect(loop.cell.locator(INPUT_PROMPT)).to_have_text(RUNNING_PROMPT)
    shown.cell.locator(".noUi-handle").focus()
    for _ in range(ARROW_PRESSES):
        page.keyboard.press("ArrowRight")
    expect(readout).to_have_text(str(MOVED_VALUE))
    result = wait_cell(page, loop, timeout_s=CELL_TIMEOUT_S)
    lines = result.text.splitlines()
    assert lines[0] == "looping", result.text
    assert lines[-1].startswith("observed while running: ["), result.text
    assert lines[-1].endswith(f"{MOVED_VALUE}]"), result.text

    # 5b. Dragged with the mouse, then read by a cell.
    drag_slider_to_the_end(page, slider)
    expect(readout).to_have_text(str(SLIDER_MAX))
    read = run_cell(page, "print(slider.value, observed[-1])")
    assert read.text.strip() == f"{SLIDER_MAX} {SLIDER_MAX}", read.text

    # The setting decided where the widget messages went.
    updates = [m for m in wire.find("comm_msg", sent=True)
               if m.content.get("data", {}).get("method") == "update"]
    assert updates, sorted({m.msg_type for m in wire.messages})
    created = wire.find("create_subshell_reply", sent=False)
    if comms_over_subshells == "perCommTarget":
        # One subshell per comm target (ipywidgets' page opens more than one target,
        # e.g. its control comm), and one of them carries every slider update.
        assert created, "JupyterLab created no subshell for the widget comms"
        subshell_ids = {m.content["subshell_id"] for m in created}
        used = {m.header.get("subshell_id") or None for m in updates}
        assert len(used) == 1 and used <= subshell_ids, (used, subshell_ids)
    else:
        assert not created, [m.content for m in created]
        assert {m.header.get("subshell_id") or None for m in updates} == {None}
    assert not notebook_cells(page).locator(OUTPUT).filter(
        has_text=re.compile(r"Error displaying widget|model not found|Traceback")).count()
