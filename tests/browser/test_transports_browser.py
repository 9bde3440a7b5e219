"""The address channel's widget transport in a real browser (docs/comms-api.md, "Transports").

- **JupyterLab with the widget transport forced** (``WRAPPERKERNEL_PAGE_TRANSPORT=widget``
  in the kernelspec's env): the kernel publishes no install script, only its widget
  model; the page client runs from the model's ES module and talks over the page's own
  kernel connection. A widget steers a running loop, and after a reload the page restores
  the model from the kernel and steers the program again.
- **Voila**: a notebook whose widgets are steered by a program thread, served by Voila,
  which executes the notebook before any page connects and refuses ``files/`` paths
  outside its allowlist. Moving the slider reaches the program, the program's text shows
  in the page, and no request of the page is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest
from playwright.sync_api import Page, Response, expect

from . import jupyterlab
from .conftest import shut_down_sessions
from .jupyterlab import (
    HOST,
    LabServer,
    append_cell,
    create_notebook,
    open_lab,
    reload_page,
    run_cell,
    save_notebook,
    wait_kernel_idle,
    wait_notebook_shown,
)
from .test_deploy_browser import steer_a_running_loop

if TYPE_CHECKING:
    from .conftest import KernelUnderTest

pytestmark = pytest.mark.browser

WAIT_MS = 20_000
WIDGET_KERNEL = "wrapperkernel-widget"
WIDGET_DISPLAY_NAME = "Python (wrapperkernel, widget transport)"
VOILA_START_TIMEOUT_S = 60.0
VOILA_STOP_TIMEOUT_S = 10.0
POLL_S = 0.2

VOILA_NOTEBOOK = """\
import threading
import time
from wrapperkernel import widgets
speed = widgets.Slider(0, 10, value=2, label="Speed")
seen = widgets.Text("nothing yet", label="Program saw")
speed.display()
seen.display()

def follow():
    last = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        value = speed.value
        if value != last:
            last = value
            seen.value = f"program saw {value}"
        time.sleep(0.05)

threading.Thread(target=follow, daemon=True).start()"""


@pytest.fixture(autouse=True)
def _wrapperkernel_only(kernel_under_test: KernelUnderTest) -> None:
    if kernel_under_test.name != "wrapperkernel":
        pytest.skip("the widget transport is wrapperkernel's")


@pytest.fixture(scope="module")
def widget_kernel_dir(
    tmp_path_factory: pytest.TempPathFactory, kernel_under_test: KernelUnderTest
) -> Path:
    """A data directory with the kernel under test as ``wrapperkernel-widget``, whose
    environment forces the widget transport."""
    data_dir = tmp_path_factory.mktemp("widget-kernel")
    spec_dir = data_dir / "kernels" / WIDGET_KERNEL
    shutil.copytree(kernel_under_test.spec_dir, spec_dir)
    spec_file = spec_dir / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["display_name"] = WIDGET_DISPLAY_NAME
    spec["env"] = {**spec.get("env", {}), "WRAPPERKERNEL_PAGE_TRANSPORT": "widget"}
    spec_file.write_text(json.dumps(spec, indent=1))
    return data_dir


@pytest.fixture(scope="module")
def widget_lab(
    tmp_path_factory: pytest.TempPathFactory, widget_kernel_dir: Path,
    kernel_under_test: KernelUnderTest,
) -> Iterator[LabServer]:
    server = jupyterlab.start_lab_server(
        work_dir=tmp_path_factory.mktemp("widget-lab"),
        jupyter_path=[widget_kernel_dir, kernel_under_test.data_dir],
    )
    try:
        yield server
    finally:
        server.stop()


def page_client(page: Page) -> dict:
    page.wait_for_function(
        "globalThis.wrapperkernel_comm !== undefined"
        " && globalThis.wrapperkernel_comm.state === 'open'",
        timeout=WAIT_MS,
    )
    return page.evaluate("({transport: wrapperkernel_comm.transport,"
                         " url: wrapperkernel_comm.url ?? null})")


def test_jupyterlab_with_the_widget_transport_forced(page: Page, widget_lab: LabServer) -> None:
    try:
        open_lab(page, widget_lab, "lab/workspaces/widget-transport")
        create_notebook(page, WIDGET_DISPLAY_NAME)
        # No page client's websocket may open: count the websockets the page opens.
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        shown = steer_a_running_loop(page)
        assert page_client(page) == {"transport": "widget", "url": None}
        assert [url for url in sockets if "/channels" in url] == [], sockets
        # No install script was published: nothing in any output holds the installer.
        assert page.locator("script", has_text="wrapperkernel_comm_install(").count() == 0

        # A reloaded page restores the kernel's model with the other widgets, and its
        # client steers the program again.
        save_notebook(page)
        reload_page(page)
        wait_notebook_shown(page)
        wait_kernel_idle(page)
        assert page_client(page) == {"transport": "widget", "url": None}
        slider = shown.locator(".wk-slider input[type=range]")
        expect(slider).to_have_value("7", timeout=WAIT_MS)
        slider.fill("4")
        append_cell(page)
        # The move travels while the cell is typed; the cell waits for it (bounded), as a
        # rendering that had not bound yet sends it when it binds.
        after = run_cell(page, "import time\ndeadline = time.monotonic() + 10\n"
                               "while speed.value != 4 and time.monotonic() < deadline:\n"
                               "    time.sleep(0.05)\n"
                               "print('seen after reload', speed.value)\n"
                               "seen_text.value = 'bye'")
        assert after.text == "seen after reload 4"
        expect(shown.locator(".wk-text input")).to_have_value("bye", timeout=WAIT_MS)
    finally:
        shut_down_sessions(widget_lab)


# --- Voila -------------------------------------------------------------------------------


@pytest.fixture
def voila(tmp_path: Path, kernel_under_test: KernelUnderTest) -> Iterator[LabServer]:
    """Voila on 127.0.0.1 serving one notebook with the kernel under test."""
    if shutil.which("voila", path=str(Path(sys.executable).parent)) is None:
        message = "voila is not installed (pip install voila, or the test extras)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path / "root"
    root.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(VOILA_NOTEBOOK)]
    notebook.metadata["kernelspec"] = {"name": kernel_under_test.name,
                                       "display_name": kernel_under_test.display_name,
                                       "language": "python"}
    nbformat.write(notebook, root / "steer.ipynb")
    env = jupyterlab.isolated_jupyter_env(tmp_path, [kernel_under_test.data_dir])
    env["WRAPPERKERNEL_LOG_LEVEL"] = "INFO"  # the kernel's log lands in Voila's
    port = jupyterlab.free_port()
    token = secrets.token_hex(16)
    log_path = tmp_path / "voila.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "voila", "--no-browser", f"--Voila.ip={HOST}",
             f"--port={port}", "--Voila.port_retries=0", f"--token={token}",
             "--show_tracebacks=True", "steer.ipynb"],
            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    server = LabServer(process, port, token, "/", root, log_path, env)
    try:
        deadline = time.monotonic() + VOILA_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"voila exited ({process.returncode}):\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.url}voila/static/", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"voila did not answer within {VOILA_START_TIMEOUT_S} s:\n"
                                f"{server.log_tail()}")
                time.sleep(POLL_S)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(VOILA_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(VOILA_STOP_TIMEOUT_S)


def test_voila_slider_steers_a_program_and_a_text_shows_what_it_saw(
    page: Page, voila: LabServer
) -> None:
    refused: list[str] = []

    def check(response: Response) -> None:
        if response.status >= 400:
            refused.append(f"{response.status} {response.request.method} {response.url}")

    page.on("response", check)
    try:
        page.goto(f"{voila.url}?token={voila.token}", timeout=60_000)
        slider = page.locator(".wk-slider input[type=range]")
        seen = page.locator(".wk-text input")
        expect(slider).to_have_value("2", timeout=WAIT_MS)
        client = page_client(page)
        # At once: the slider's rendering may not have bound to the client yet (it looks
        # for it every 500 ms), and a move made before it binds must reach the program too.
        slider.fill("8")
        expect(seen).to_have_value("program saw 8", timeout=WAIT_MS)
        slider.fill("3")
        expect(seen).to_have_value("program saw 3", timeout=WAIT_MS)
        assert client["transport"] in ("websocket", "widget")
        assert refused == [], refused
    except BaseException:
        print(f"voila log {voila.log_path}:\n{voila.log_tail(12000)}")
        raise


# --- binary values -----------------------------------------------------------------------

ARRAY_FLOATS = 131072  # 1 MiB of float64
PAGE_SUBSCRIBES = """
globalThis.wkBinary = null;
wrapperkernel_comm.subscribe('/array', (address, value) => {
  let sum = 0;
  for (let i = 0; i < value.byteLength / 8; i++) sum += value.getFloat64(i * 8, true);
  globalThis.wkBinary = {dataView: value instanceof DataView, bytes: value.byteLength,
                          first: value.getFloat64(8, true),
                          last: value.getFloat64(value.byteLength - 8, true), sum: sum};
  const reply = new Uint8Array(4096);
  for (let i = 0; i < reply.length; i++) reply[i] = i % 256;
  wrapperkernel_comm.send('/page-bytes', {raw: reply.buffer, view: reply.subarray(1, 3)});
});
"""
BINARY_CELL = f"""\
import numpy as np
got = comms.listen('/page-bytes')
comms.send('/array', np.arange({ARRAY_FLOATS}, dtype=np.float64))
v = got.get(timeout=30)
print(type(v['raw']).__name__, bytes(v['raw']) == bytes(range(256)) * 16, bytes(v['view']))"""


def exchange_binary_values(page: Page) -> dict:
    run_cell(page, "from wrapperkernel import comms\ncomms.start()")
    client = page_client(page)
    page.evaluate(PAGE_SUBSCRIBES)
    append_cell(page)
    result = run_cell(page, BINARY_CELL, timeout_s=60)
    assert result.text == "memoryview True b'\\x01\\x02'", result.text
    arrived = page.evaluate("globalThis.wkBinary")
    n = ARRAY_FLOATS
    assert arrived == {"dataView": True, "bytes": n * 8, "first": 1, "last": n - 1,
                       "sum": n * (n - 1) / 2}
    return {**client, "protocol": page.evaluate("wrapperkernel_comm.protocol ?? null")}


def test_a_numpy_array_arrives_as_a_dataview_and_page_bytes_in_python(
    page: Page, lab_server: LabServer, kernel_under_test: KernelUnderTest
) -> None:
    try:
        open_lab(page, lab_server, "lab/workspaces/binary-websocket")
        create_notebook(page, kernel_under_test.display_name)
        client = exchange_binary_values(page)
        # JupyterLab's server offers the v1 websocket protocol, and the client takes it.
        assert client["transport"] == "websocket"
        assert client["protocol"] == "v1.kernel.websocket.jupyter.org"
    finally:
        shut_down_sessions(lab_server)


def test_binary_values_on_the_widget_transport(page: Page, widget_lab: LabServer) -> None:
    try:
        open_lab(page, widget_lab, "lab/workspaces/binary-widget")
        create_notebook(page, WIDGET_DISPLAY_NAME)
        assert exchange_binary_values(page)["transport"] == "widget"
    finally:
        shut_down_sessions(widget_lab)
