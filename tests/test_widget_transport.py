"""The widget transport end to end: a frontend with only its kernel connection and a widget
manager (the stand-in for VS Code, ``tests/widget_frontend.py``) runs the address channel.

The page client runs in Node from the ES module the kernel put in its widget model, with
no page config and no websocket, so it must pick the widget transport by itself. Each
test asserts on what the program or the page received.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.kernel_helpers import KernelConnection, running_kernel
from tests.widget_frontend import WidgetFrontend

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="the stand-in page runs in Node")

WAIT_S = 15.0
# Short channel timings, so that a page that went away is noticed quickly.
FAST = {"WRAPPERKERNEL_HEARTBEAT_REQUEST_THRESHOLD_S": "0.3",
        "WRAPPERKERNEL_HEARTBEAT_TIMEOUT_S": "0.5",
        "WRAPPERKERNEL_WAIT_FOR_CONNECTION_S": "2"}


@contextlib.contextmanager
def kernel_and_frontend(env: dict[str, str] | None = None
                        ) -> Iterator[tuple[KernelConnection, WidgetFrontend]]:
    with running_kernel(env=env) as conn:
        frontend = WidgetFrontend(conn.km.connection_file, conn.km.session.key)
        try:
            yield conn, frontend
        finally:
            frontend.close()


def wait_page_state(frontend: WidgetFrontend, state: str, timeout: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = frontend.eval("const c = globalThis.wrapperkernel_comm;\n"
                             "return c === undefined ? null : "
                             "{state: c.state, transport: c.transport, url: c.url ?? null};")
        if last is not None and last["state"] == state:
            return last
        time.sleep(0.05)
    raise AssertionError(f"the page client is {last}, not {state!r}, after {timeout} s")


def start_connected(conn: KernelConnection, frontend: WidgetFrontend) -> None:
    result = conn.run("from wrapperkernel import comms\ncomms.start()")
    assert result.status == "ok", result.content
    info = wait_page_state(frontend, "open")
    assert info == {"state": "open", "transport": "widget", "url": None}


def test_a_frontend_without_a_server_runs_the_channel_while_a_cell_runs() -> None:
    with kernel_and_frontend() as (conn, frontend):
        start_connected(conn, frontend)
        frontend.eval("globalThis.seen = [];\n"
                      "wrapperkernel_comm.subscribe('/to-page', (a, v) => globalThis.seen.push(v));\n"
                      "globalThis.ready = false;\n"
                      "wrapperkernel_comm.subscribe('/ready', () => { globalThis.ready = true; });")
        # The cell waits for the page's values while it runs: they travel on the widget
        # model's comm, which the kernel answers while the worker is busy. It says when it
        # listens: the kernel passes on only values of addresses the program subscribed to.
        msg_id = conn.execute(
            "got = []\n"
            "values = comms.listen('/to-program')\n"
            "comms.send('/ready', True)\n"
            "for value in values:\n"
            "    got.append(value)\n"
            "    comms.send('/to-page', value * 10)\n"
            "    if value == 4:\n"
            "        break\n"
            "print(got)")
        deadline = time.monotonic() + WAIT_S
        while not frontend.eval("return globalThis.ready;"):
            assert time.monotonic() < deadline, "the cell never said it listens"
            time.sleep(0.05)
        for value in range(5):
            frontend.eval(f"wrapperkernel_comm.send('/to-program', {value});")
        result = conn.result(msg_id, timeout=WAIT_S)
        assert result.status == "ok", result.content
        assert result.stdout == "[0, 1, 2, 3, 4]\n"
        deadline = time.monotonic() + WAIT_S
        while frontend.eval("return globalThis.seen.length;") < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert frontend.eval("return globalThis.seen;") == [0, 10, 20, 30, 40]
        # Every message the kernel sent for the page named it, as a custom message of the
        # model: none went to a comm of its own.
        page = frontend.eval("return wrapperkernel_comm.commId;")
        assert {c.get("page") for c in frontend.received_by_page if "page" in c} == {page}


def test_read_value_is_answered_by_the_page_on_the_widget_transport() -> None:
    with kernel_and_frontend() as (conn, frontend):
        start_connected(conn, frontend)
        frontend.eval("wrapperkernel_comm.newSyncedVariable('/slider', 7);")
        result = conn.run("print(comms.read_value('/slider', timeout=5))")
        assert result.stdout == "7\n", result.content


def test_a_reloaded_page_restores_the_model_and_the_stale_one_is_dropped() -> None:
    with kernel_and_frontend(env=FAST) as (conn, first):
        start_connected(conn, first)
        first_page = first.eval("return wrapperkernel_comm.commId;")
        # A page that loads later restores widgets from the kernel: the control comm's
        # answer carries the kernel's model, and creating it installs the client.
        second = WidgetFrontend(conn.km.connection_file, conn.km.session.key)
        try:
            states = second.restore()
            assert [entry["state"]["_anywidget_id"] for entry in states.values()] == [
                "wrapperkernel.address_channel"]
            assert wait_page_state(second, "open")["transport"] == "widget"
            second.eval("globalThis.seen = [];\n"
                        "wrapperkernel_comm.subscribe('/v', (a, v) => globalThis.seen.push(v));")
            first.close()  # the first page goes away without a word, as a closed tab does
            time.sleep(0.5)  # longer than the silence after which the kernel pings
            result = conn.run("for i in range(3):\n    comms.send('/v', i)\ncomms.sync()")
            assert result.status == "ok", result.content
            assert second.eval("return globalThis.seen;") == [0, 1, 2]
            # The kernel pinged the silent first page and then closed it.
            closes = [c for c in second.received_by_page if c.get("close") is True]
            assert [c["page"] for c in closes] == [first_page]
        finally:
            second.close()


def test_with_no_page_left_the_program_gets_the_no_page_error() -> None:
    with kernel_and_frontend(env=FAST) as (conn, frontend):
        start_connected(conn, frontend)
        frontend.close()
        time.sleep(0.5)
        result = conn.run("comms.send('/x', 1)\ncomms.sync()", timeout=30)
        assert result.status == "error"
        assert result.content["ename"] == "CommsError"
        assert "No page connected" in result.content["evalue"] or \
            "not delivered" in result.content["evalue"], result.content["evalue"]


def test_forced_widget_transport_publishes_no_install_script() -> None:
    with kernel_and_frontend(env={"WRAPPERKERNEL_PAGE_TRANSPORT": "widget"}) as (conn, frontend):
        msg_id = conn.execute("from wrapperkernel import comms\ncomms.start()")
        result = conn.result(msg_id, timeout=WAIT_S)
        assert result.status == "ok", result.content
        assert wait_page_state(frontend, "open")["transport"] == "widget"
        assert "display_data" not in result.output_types


def test_forced_websocket_transport_opens_no_widget_model() -> None:
    with running_kernel(env={"WRAPPERKERNEL_PAGE_TRANSPORT": "websocket",
                             **FAST}) as conn:
        msg_id = conn.execute("from wrapperkernel import comms\ncomms.start()")
        result = conn.result(msg_id, timeout=WAIT_S)
        # No page answers the install script: the start fails after the wait, and no
        # widget model was ever opened.
        assert result.status == "error", result.content
        opened = [m for m in conn.iopub(msg_id) if m["msg_type"] == "comm_open"]
        assert opened == []
        assert "display_data" in result.output_types
