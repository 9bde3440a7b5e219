"""Several pages on one kernel (issue 10, "Several pages at once"), end to end over real
ZMQ: two ``HeadlessPage`` clients, as two tabs or two collaborators whose page clients
each opened their own comm (docs/comms-api.md, "Several pages").

Page A connects through the install script; page B joins later, as a page whose client
installed itself (restored widgets do that). Every test asserts on what a user sees: the
values each page gets, what the program gets, the cell's output.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from comms_fixtures import WAIT_S, PageKernel, describe, page_kernel, wait_page_hears_kernel
from headless_page import HeadlessPage, wait_until

pytestmark = pytest.mark.usefixtures("kernel_env")

TARGET = "wrapperkernel_comm"


def values_at(page: HeadlessPage, address: str, since: int = 0) -> list[object]:
    """The values ``page`` received for ``address`` on its current comm."""
    return [value for comm_id, addr, value in page.history[since:]
            if addr == address and comm_id == page.comm_id]


def wait_values_at(page: HeadlessPage, address: str, count: int, since: int = 0,
                   what: str = "page") -> list[object]:
    try:
        wait_until(lambda: len(values_at(page, address, since)) >= count, WAIT_S,
                   f"{count} values for {address!r} at {what}")
    except TimeoutError as error:
        got = values_at(page, address, since)
        raise AssertionError(f"{error}; got {len(got)}: {got[:20]!r}") from None
    return values_at(page, address, since)


@contextmanager
def two_pages() -> Iterator[tuple[PageKernel, HeadlessPage]]:
    """A kernel whose channel page A opened, and page B joined after it."""
    with page_kernel() as k:
        k.run_ok("from wrapperkernel import comms\ncomms.start()")
        k.page.wait_connected(WAIT_S)
        assert k.page.kernel_id is not None
        b = HeadlessPage(k.conn.km.connection_file, connect=False)
        try:
            wait_page_hears_kernel(k.conn, b)
            b.join(k.page.kernel_id)
            b.wait_connected(WAIT_S)
            yield k, b
        finally:
            b.close()


def test_page_a_keeps_receiving_after_page_b_opens_and_both_pages_steer_the_program() -> None:
    # The measurement: on the one-page kernel, page A got nothing once page B
    # opened, and only B's values reached the program.
    with two_pages() as (k, b):
        a = k.page
        since_a, since_b = len(a.history), len(b.history)
        k.run_ok("for i in range(100):\n    comms.send('/out', i)\ncomms.sync()")
        assert wait_values_at(a, "/out", 100, since_a, "page A") == list(range(100))
        assert wait_values_at(b, "/out", 100, since_b, "page B") == list(range(100))

        msg_id = k.conn.execute(
            "import threading\n"
            "got = []\n"
            "both = threading.Event()\n"
            "def on_value(address, value):\n"
            "    got.append(value)\n"
            "    if len(got) == 2:\n"
            "        both.set()\n"
            "sub = comms.subscribe('/steer', on_value)\n"
            "print('ready', flush=True)\n"
            "print(both.wait(20), sorted(got))"
        )
        k.conn.wait_for_output(msg_id, "ready", timeout=WAIT_S)
        a.send("/steer", "from A")
        b.send("/steer", "from B")
        result = k.conn.result(msg_id, timeout=30)
        assert result.status == "ok", describe(result)
        assert result.stdout.splitlines()[-1] == "True ['from A', 'from B']"


def test_a_read_is_answered_by_a_page_that_has_the_value() -> None:
    # Each page has a value for one address only; the other page answers the read with
    # a read_error, which does not end the read while a page may still answer it.
    with two_pages() as (k, b):
        k.page.synced["/only-a"] = "from A"
        b.synced["/only-b"] = "from B"
        result = k.run_ok("print(comms.read_value('/only-a', timeout=5))\n"
                          "print(comms.read_value('/only-b', timeout=5))")
        assert result.stdout == "from A\nfrom B\n"
        failed = k.conn.run("comms.read_value('/neither', timeout=5)")
        assert failed.status == "error" and failed.content["ename"] == "CommsError"
        assert "could not read '/neither'" in failed.content["evalue"]


def test_comm_info_lists_every_page_connection() -> None:
    with two_pages() as (k, b):
        expected = {k.page.comm_id: {"target_name": TARGET}, b.comm_id: {"target_name": TARGET}}
        assert len(expected) == 2
        assert k.conn.request("comm_info_request", {"target_name": TARGET}).content == {
            "status": "ok", "comms": expected}


def test_a_stale_page_is_dropped_and_closed_while_the_other_keeps_working() -> None:
    with two_pages() as (k, b):
        a = k.page
        installs_before = a.installs
        # Page A goes quiet: it neither answers pings nor acknowledges anything.
        a.answer_pings = False
        a.acknowledge = False
        time.sleep(1.5)  # silence longer than HEARTBEAT_REQUEST_THRESHOLD_S (a precondition)
        since_b = len(b.history)
        k.run_ok("for i in range(50):\n    comms.send('/after', i)\ncomms.sync()")
        assert wait_values_at(b, "/after", 50, since_b, "page B") == list(range(50))
        # The kernel pinged A, heard nothing, and closed A's comm.
        if not a.closed_by_kernel.wait(WAIT_S):
            raise AssertionError("the kernel did not close the stale page's comm")
        assert any(item.get("address") == "#heartbeat/ping" for item in k.comm_items(a.comm_id))
        # B was never disturbed: no reinstall, and comm_info lists B alone.
        assert a.installs == installs_before
        assert k.conn.request("comm_info_request", {"target_name": TARGET}).content[
            "comms"] == {b.comm_id: {"target_name": TARGET}}
        b.synced["/b-value"] = 42
        assert k.run_ok("print(comms.read_value('/b-value', timeout=5))").stdout == "42\n"
        since_b = len(b.history)
        k.run_ok("comms.send('/later', 'still here')\ncomms.sync()")
        assert wait_values_at(b, "/later", 1, since_b, "page B") == ["still here"]


def test_a_widget_value_set_in_page_a_shows_in_page_b(kernel_env: Path) -> None:
    with two_pages() as (k, b):
        a = k.page
        shown = k.run_ok("from wrapperkernel import widgets\n"
                         "s = widgets.Slider(0, 10, value=5)\n"
                         "s.display()\n"
                         "print(s.address)")
        address = shown.stdout.strip()
        since_a, since_b = len(a.history), len(b.history)
        a.send(address, 7)
        assert wait_values_at(b, address, 1, since_b, "page B") == [7]
        wait_until(lambda: k.conn.run("print(s.value)").stdout == "7\n", WAIT_S,
                   "the program's slider to follow page A")
        # A set the value itself: it gets no echo of it. (A barrier: the program sends
        # it after it got A's value, so an echo would have reached A before it.)
        k.run_ok("comms.send('/barrier', 1)\ncomms.sync()")
        wait_values_at(a, "/barrier", 1, since_a, "page A")
        assert values_at(a, address, since_a) == []
        # And the other way round.
        b.send(address, 3)
        assert wait_values_at(a, address, 1, since_a, "page A") == [3]


def test_a_page_that_joins_later_gets_only_what_is_sent_after() -> None:
    with page_kernel() as k:
        a = k.page
        k.run_ok("from wrapperkernel import comms\ncomms.start()\n"
                 "for i in range(10):\n    comms.send('/early', i)\ncomms.sync()")
        assert wait_values_at(a, "/early", 10, 0, "page A") == list(range(10))
        b = HeadlessPage(k.conn.km.connection_file, connect=False)
        try:
            wait_page_hears_kernel(k.conn, b)
            assert a.kernel_id is not None
            b.join(a.kernel_id)
            b.wait_connected(WAIT_S)
            k.run_ok("comms.send('/late', 'after B')\ncomms.sync()")
            assert wait_values_at(b, "/late", 1, 0, "page B") == ["after B"]
            assert wait_values_at(a, "/late", 1, 0, "page A") == ["after B"]
            assert values_at(b, "/early") == []
        finally:
            b.close()
