"""The address channel in a real JupyterLab: program and page exchange values while cells run.

What only a browser shows (DESIGN.md, "The address channel"): the install script runs in
a trusted output and connects its own websocket, built from the page config (also under a
JupyterHub-style base URL); values flow both ways while a cell is running; a reloaded page
is detected as stale and gets the client again; the install script never reaches the
saved notebook; comm traffic never flips the notebook's busy indicator to idle.

Page scripts here subscribe before they announce themselves on a ``.../ready`` address,
and the program waits for that announcement before it sends: the page client delivers a
value only to the subscribers it has when the value arrives.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import nbformat
import pytest
from playwright.sync_api import Page, expect

from .conftest import shut_down_sessions
from .jupyterlab import (
    EXECUTION_INDICATOR,
    LabServer,
    append_cell,
    create_notebook,
    current_notebook,
    current_notebook_path,
    kernel_status,
    open_lab,
    record_kernel_statuses,
    recorded_kernel_statuses,
    reload_page,
    run_cell,
    save_notebook,
    start_cell,
    wait_cell,
    wait_kernel_idle,
    wait_notebook_shown,
)

if TYPE_CHECKING:
    from .conftest import KernelUnderTest, LabServerFactory

pytestmark = pytest.mark.browser

INSTALLER_NAME = "wrapperkernel_comm_install"  # wrapperkernel.address.page_script.INSTALLER_NAME
COUNTER_LIMIT = 20
CLICKS = 3
# Cells that exchange values: start-up (up to 3 s without a page) plus the exchange.
COMM_CELL_TIMEOUT_S = 45.0
RENDER_TIMEOUT_MS = 10_000
CLICK_PAUSE_S = 0.3  # between clicks, so the status samples span the running cell
BUSY_AND_BACK = ["idle", "busy", "idle"]
HUB_BASE_URL = "/user/tester/"  # JupyterHub-style


# --- cell code ---------------------------------------------------------------------------


def echo_html(element_id: str, inbox: str, outbox: str) -> str:
    """A page script that sends back every value of ``inbox`` to ``outbox``, shows it in
    the element ``element_id``, and then announces itself on ``outbox + "/ready"``.

    It does nothing when the page has no client: JupyterLab runs the scripts of a saved
    (hence signed and trusted) notebook again when the page is reloaded, before any
    program has made the kernel install the client again."""
    return f"""<div id="{element_id}">waiting</div>
<script>
(async () => {{
  const comm = globalThis.wrapperkernel_comm;
  if (comm === undefined) {{
    console.warn("wk-test: no wrapperkernel_comm for {element_id}");
    return;
  }}
  await comm.ready;
  comm.subscribe("{inbox}", (address, value) => {{
    document.getElementById("{element_id}").textContent = JSON.stringify(value);
    globalThis.wrapperkernel_comm.send("{outbox}", value);
  }});
  comm.send("{outbox}/ready", true);
}})();
</script>"""


def echo_cell(*, start: str, element_id: str, inbox: str, outbox: str, value: Any) -> str:
    """Cell code: ``start`` connects the channel, then the echo script is shown and one
    value goes to the page and back."""
    html = echo_html(element_id, inbox, outbox)
    return f"""from IPython.display import HTML, display
from wrapperkernel import comms
echo = comms.listen({outbox!r})
echo_ready = comms.listen({outbox + "/ready"!r})
{start}
display(HTML(r'''{html}'''))
echo_ready.get(timeout=15)
comms.send({inbox!r}, {value!r})
print("echo", repr(echo.get(timeout=15)))"""


COUNTER_HTML = """<div id="wk-counter">none</div>
<script>
(async () => {
  const comm = globalThis.wrapperkernel_comm;
  await comm.ready;
  comm.subscribe("/counter/to_page", (address, value) => {
    document.getElementById("wk-counter").textContent = String(value);
    globalThis.wrapperkernel_comm.send("/counter/to_kernel", value + 1);
  });
  comm.send("/counter/ready", true);
})();
</script>"""

# One cell: the script is displayed (and runs) while the same cell goes on looping.
COUNTER_CELL = f"""from IPython.display import HTML, display
from wrapperkernel import comms
comms.start()
replies = comms.listen("/counter/to_kernel")
page_ready = comms.listen("/counter/ready")
display(HTML(r'''{COUNTER_HTML}'''))
page_ready.get(timeout=10)
value = round_trips = 0
while value < {COUNTER_LIMIT}:
    comms.send("/counter/to_page", value)
    reply = replies.get(timeout=10)
    assert reply == value + 1, f"sent {{value}}, got back {{reply!r}}"
    value = reply + 1
    round_trips += 1
print(f"final count {{value}} after {{round_trips}} round trips")"""

# The button counts its own clicks in data-n; no script needed, only the installed client.
BUTTON_CELL = """from IPython.display import HTML, display
from wrapperkernel import comms
comms.start()
display(HTML('''<button id="wk-click" data-n="0" onclick="this.dataset.n = Number(this.dataset.n) + 1; wrapperkernel_comm.send('/clicks', Number(this.dataset.n))">click</button>'''))"""

LISTENING = "listening for clicks"
CLICKS_CELL = f"""from wrapperkernel import comms
with comms.listen("/clicks") as clicks:
    print({LISTENING!r}, flush=True)
    got = [clicks.get(timeout=20) for _ in range({CLICKS})]
print("clicks", got)"""


# --- helpers -----------------------------------------------------------------------------


def open_fresh_lab(page: Page, server: LabServer, name: str) -> None:
    """Open JupyterLab in a workspace of its own, so no notebook of an earlier test is
    restored into this page (and no kernel is started for it)."""
    workspace = urllib.parse.quote(name.replace("[", "-").replace("]", ""), safe="")
    open_lab(page, server, f"lab/workspaces/{workspace}")


def saved_notebook(server: LabServer, path: str) -> dict[str, Any]:
    """The notebook as the server has it on disk (contents API)."""
    model = server.api(f"api/contents/{urllib.parse.quote(path)}?content=1&type=notebook")
    assert model is not None, f"no contents model for {path!r}"
    return model["content"]


def outputs_of(notebook: dict[str, Any]) -> list[dict[str, Any]]:
    return [output for cell in notebook["cells"] for output in cell.get("outputs", [])]


def assert_install_script_not_saved(server: LabServer, path: str, *markers: str) -> None:
    """The saved notebook is valid and its outputs hold the test's own page scripts
    (``markers``) but no installer (the erased install output stays as an empty one)."""
    notebook = saved_notebook(server, path)
    nbformat.validate(nbformat.from_dict(notebook))
    outputs = json.dumps(outputs_of(notebook))
    assert INSTALLER_NAME not in outputs, f"the install script was saved in {path}"
    for marker in markers:
        assert marker in outputs, f"{marker!r} missing from the saved outputs of {path}"


def wait_indicator_idle(page: Page) -> None:
    """Wait for the toolbar to show idle: the execute_reply that ends a cell (and
    ``run_cell``) can arrive before the idle status does."""
    expect(current_notebook(page).locator(EXECUTION_INDICATOR)).to_have_attribute(
        "data-status", "idle", timeout=RENDER_TIMEOUT_MS
    )


def statuses_until_idle(page: Page) -> list[str]:
    """The kernel statuses recorded so far, once the indicator is back to idle."""
    wait_indicator_idle(page)
    return recorded_kernel_statuses(page)


@pytest.fixture(autouse=True)
def _wrapperkernel_only(kernel_under_test: KernelUnderTest) -> None:
    if kernel_under_test.name != "wrapperkernel":
        pytest.skip(
            f"the address channel is wrapperkernel's; the kernel is {kernel_under_test.name}"
        )


@pytest.fixture
def comms_page(
    page: Page,
    lab_server: LabServer,
    lab_server_factory: LabServerFactory,  # requested so a failure report shows its logs
    request: pytest.FixtureRequest,
) -> Iterator[Page]:
    open_fresh_lab(page, lab_server, request.node.name)
    yield page
    shut_down_sessions(lab_server)


# --- tests -------------------------------------------------------------------------------


def test_counter_round_trips_while_one_cell_runs(
    comms_page: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest
) -> None:
    page = comms_page
    create_notebook(page, kernel_under_test.display_name)
    record_kernel_statuses(page)

    result = run_cell(page, COUNTER_CELL, timeout_s=COMM_CELL_TIMEOUT_S)

    expected_rounds = COUNTER_LIMIT // 2
    assert f"final count {COUNTER_LIMIT} after {expected_rounds} round trips" in result.text
    assert "Error" not in result.text, result.text
    # The page saw every even value, the first being 0 (a value GoNB's client dropped).
    expect(result.cell.locator("#wk-counter")).to_have_text(
        str(COUNTER_LIMIT - 2), timeout=RENDER_TIMEOUT_MS
    )
    assert statuses_until_idle(page) == BUSY_AND_BACK

    save_notebook(page)
    assert_install_script_not_saved(lab_server, current_notebook_path(page), "/counter/to_page")


def test_page_clicks_reach_a_running_cell_which_stays_busy(
    comms_page: Page, kernel_under_test: KernelUnderTest
) -> None:
    page = comms_page
    create_notebook(page, kernel_under_test.display_name)
    button = run_cell(page, BUTTON_CELL, timeout_s=COMM_CELL_TIMEOUT_S).cell.locator("#wk-click")
    expect(button).to_be_visible(timeout=RENDER_TIMEOUT_MS)

    wait_indicator_idle(page)
    record_kernel_statuses(page)
    running = start_cell(page, CLICKS_CELL)
    expect(running.cell.locator(".jp-OutputArea-output")).to_contain_text(
        LISTENING, timeout=RENDER_TIMEOUT_MS
    )
    sampled = []
    for _ in range(CLICKS):
        time.sleep(CLICK_PAUSE_S)
        sampled.append(kernel_status(page))  # the cell still waits for this click
        button.click()
    result = wait_cell(page, running, timeout_s=COMM_CELL_TIMEOUT_S)

    assert result.text.splitlines()[-1] == f"clicks {list(range(1, CLICKS + 1))}", result.text
    assert button.get_attribute("data-n") == str(CLICKS)
    assert sampled == ["busy"] * CLICKS, f"kernel status sampled during the clicks: {sampled}"
    assert statuses_until_idle(page) == BUSY_AND_BACK


def test_reloaded_page_gets_the_client_again(
    comms_page: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest
) -> None:
    page = comms_page
    create_notebook(page, kernel_under_test.display_name)
    before = run_cell(
        page,
        echo_cell(
            start="comms.start()",
            element_id="wk-echo-before",
            inbox="/before_reload",
            outbox="/echo_before",
            value=[0, False, "", None],
        ),
        timeout_s=COMM_CELL_TIMEOUT_S,
    )
    assert "echo [0, False, '', None]" in before.text
    path = current_notebook_path(page)
    save_notebook(page)
    assert_install_script_not_saved(lab_server, path, "wk-echo-before")

    reload_page(page)
    wait_notebook_shown(page, path)
    wait_kernel_idle(page)
    # The reloaded page restores the kernel's widgets, the address channel's widget model
    # among them, whose module installs the client again by itself (docs/comms-api.md,
    # "Transports"); it connects by websocket, as this page has a Jupyter Server.
    page.wait_for_function("globalThis.wrapperkernel_comm?.state === 'open'",
                           timeout=RENDER_TIMEOUT_MS)
    assert page.evaluate("globalThis.wrapperkernel_comm.transport") == "websocket"

    append_cell(page)
    # The kernel still has the old page's connection too; its first use after the reload
    # (the send) finds that page silent, pings it, gets no pong and drops it, while the new
    # client has the value. sync() returns once that send was delivered.
    after = run_cell(
        page,
        echo_cell(
            start='comms.send("/after_reload/hello", 1)\ncomms.sync()',
            element_id="wk-echo-after",
            inbox="/after_reload",
            outbox="/echo",
            value=42,
        ),
        timeout_s=COMM_CELL_TIMEOUT_S,
    )
    assert "echo 42" in after.text, after.text
    expect(after.cell.locator("#wk-echo-after")).to_have_text("42")
    assert page.evaluate("globalThis.wrapperkernel_comm?.state") == "open"

    save_notebook(page)
    assert_install_script_not_saved(lab_server, path, "wk-echo-before", "wk-echo-after")


def test_exchange_under_a_base_url(
    page: Page, lab_server_factory: LabServerFactory, kernel_under_test: KernelUnderTest
) -> None:
    # The smoke test may have started one already: a server per base URL is enough.
    server = next(
        (s for s in lab_server_factory.started if s.base_url == HUB_BASE_URL), None
    ) or lab_server_factory(base_url=HUB_BASE_URL)
    try:
        open_fresh_lab(page, server, "base-url")
        create_notebook(page, kernel_under_test.display_name)
        result = run_cell(
            page,
            echo_cell(
                start="comms.start()",
                element_id="wk-echo-base",
                inbox="/base",
                outbox="/base_echo",
                value={"under": HUB_BASE_URL},
            ),
            timeout_s=COMM_CELL_TIMEOUT_S,
        )
        assert f"echo {{'under': {HUB_BASE_URL!r}}}" in result.text, result.text
        client_url = page.evaluate("globalThis.wrapperkernel_comm.url")
        assert client_url.startswith(f"ws://127.0.0.1:{server.port}{HUB_BASE_URL}api/kernels/")
    finally:
        shut_down_sessions(server)
