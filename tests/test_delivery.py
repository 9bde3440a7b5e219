"""The delivery contract of the address channel, end to end over real ZMQ (issue 8,
items 2 and 3; docs/comms-api.md, "Delivery"): every value the program sends is handed
to a live page connection, in order, or the program is told it was not; nothing goes to
a comm the kernel knows is gone; the kernel's queue to the page is bounded, and past the
bound ``comms.send`` blocks (Ctrl-C ends the wait) instead of dropping or growing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from comms_fixtures import WAIT_S, PageKernel, describe, page_kernel, wait_page_hears_kernel
from headless_page import HeadlessPage, wait_until
from kernel_helpers import running_kernel

pytestmark = pytest.mark.usefixtures("kernel_env")

FLOOD = 300_000


def published(k: PageKernel, comm_id: str) -> list[tuple[int, dict[str, Any]]]:
    """(position in the page's IOPub log, item) of every item the kernel put on ``comm_id``."""
    out = []
    for index, msg in enumerate(k.page.iopub_log):
        content = msg["content"]
        if msg["msg_type"] == "comm_msg" and content.get("comm_id") == comm_id:
            data = content["data"]
            out.extend((index, item) for item in (data["batch"] if "batch" in data else [data]))
    return out


def test_a_page_reloaded_mid_flood_gets_every_value_the_old_connection_did_not() -> None:
    with page_kernel() as k:
        k.run_ok("from wrapperkernel import comms\ncomms.start()")
        k.page.wait_connected(WAIT_S)
        old_comm = k.page.comm_id
        msg_id = k.conn.execute(
            f"for i in range({FLOOD}):\n"
            "    comms.send('/flood', i)\n"
            "comms.sync()\n"
            "print('synced')"
        )
        # The page reloads 0.5 s into the flood, while the kernel holds a backlog of
        # values for it; the reloaded page's client opens a new comm, and the old comm
        # falls silent without a comm_close (a reload sends none).
        k.wait_values("/flood", 1, comm_id=old_comm)
        time.sleep(0.5)
        k.page.reopen()
        new_comm = k.page.comm_id
        result = k.conn.result(msg_id, timeout=120)
        assert result.status == "ok", describe(result)
        assert result.stdout == "synced\n"
        wait_until(lambda: FLOOD - 1 in k.values("/flood", comm_id=new_comm), WAIT_S,
                   "the last value at the new page")

        old_items = published(k, old_comm)
        new_items = published(k, new_comm)
        # The old comm, silent, was found stale and closed by the kernel; nothing was
        # published to it after that.
        closed_at = next(i for i, msg in enumerate(k.page.iopub_log)
                         if msg["msg_type"] == "comm_close"
                         and msg["content"].get("comm_id") == old_comm)
        assert all(index < closed_at for index, _ in old_items)
        # The new page got its ack first, then every value the old comm did not get, in
        # order: the values no page had been sent when it joined, and every one after.
        assert new_items[0][1] == {"address": "#comm_open_ack", "value": True}
        old_values = [item["value"] for _, item in old_items if item.get("address") == "/flood"]
        new_values = [item["value"] for _, item in new_items if item.get("address") == "/flood"]
        assert old_values == list(range(len(old_values)))
        assert new_values, "the page was replaced after the flood had ended: nothing tested"
        assert new_values == list(range(new_values[0], FLOOD))
        assert new_values[0] <= len(old_values)


PAUSED_CELL = """
import threading, time
from wrapperkernel import comms
comms.start()
sent = 0
def flood():
    global sent
    for i in range(200_000):
        comms.send('/bp', i)
        sent += 1
flooder = threading.Thread(target=flood, daemon=True)
flooder.start()
before = -1
while sent != before:      # until the sender stops making progress
    before = sent
    time.sleep(1.0)
print(sent, flooder.is_alive())
"""


def test_a_page_that_stops_reading_blocks_the_sender_at_the_bound_and_nothing_is_lost(
    kernel_env: Path,
) -> None:
    bound = 64 * 1024
    with running_kernel(env={"WRAPPERKERNEL_COMM_QUEUE_BYTES": str(bound)}) as conn:
        page = HeadlessPage(conn.km.connection_file, acknowledge=False)
        try:
            wait_page_hears_kernel(conn, page)
            k = PageKernel(conn, page)
            paused = k.run_ok(PAUSED_CELL, timeout=60)
            sent, alive = paused.stdout.split()
            # The sender is blocked, not finished: the kernel holds at most the bound
            # (plus one batch of values in the worker) of values the page has not taken.
            assert alive == "True"
            assert 0 < int(sent) < 200_000
            unacknowledged = len(k.values("/bp"))
            assert unacknowledged <= int(sent)
            assert int(sent) * len('{"address":"/bp","value":123456}') < 4 * bound

            # The page catches up: every value arrives, in order, and the sender ends.
            page.acknowledge = True
            done = k.run_ok("flooder.join(60); print(sent, flooder.is_alive())", timeout=90)
            assert done.stdout == "200000 False\n"
            values = k.wait_values("/bp", 200_000)
            assert values == list(range(200_000))
        finally:
            page.close()


def test_ctrl_c_ends_a_send_blocked_at_the_bound(kernel_env: Path) -> None:
    with running_kernel(env={"WRAPPERKERNEL_COMM_QUEUE_BYTES": "65536"}) as conn:
        page = HeadlessPage(conn.km.connection_file, acknowledge=False)
        try:
            wait_page_hears_kernel(conn, page)
            k = PageKernel(conn, page)
            k.run_ok("from wrapperkernel import comms\ncomms.start()\ncount = 0")
            msg_id = conn.execute(
                "for i in range(10**8):\n"
                "    comms.send('/bp', i)\n"
                "    count += 1\n"
            )
            k.wait_values("/bp", 100)
            # Blocked at the bound: the page gets nothing more while it acknowledges nothing.
            def settled() -> bool:
                now = len(k.values("/bp"))
                time.sleep(0.5)
                return len(k.values("/bp")) == now

            wait_until(settled, WAIT_S, "the flow to the page to stop")
            conn.km.interrupt_kernel()
            result = conn.result(msg_id, timeout=30)
            assert result.status == "error"
            assert result.content["ename"] == "KeyboardInterrupt", describe(result)
            count = int(k.run_ok("print(count)").stdout)
            assert 0 < count * len('{"address":"/bp","value":1234}') < 4 * 65536
        finally:
            page.close()
