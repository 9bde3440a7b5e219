"""Binary values on the address channel, program and page (docs/comms-api.md, "Binary
values"): bytes-like values travel as the comm message's buffers, with their
``buffer_paths``, never inside the JSON; the program gets ``memoryview``.

The page here is ``HeadlessPage`` (the websocket transport as the kernel sees it); the
widget transport carries the same payloads (tests/test_widget_transport.py).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest
from comms_fixtures import WAIT_S, PageKernel, connected_page_kernel

ONE_MB_FLOATS = 131072  # 1 MiB of float64


@pytest.fixture
def connected() -> Iterator[PageKernel]:
    with connected_page_kernel() as kernel:
        yield kernel


def raw_comm_msgs(kernel: PageKernel, since: int) -> list[dict]:
    return [m for m in kernel.iopub_since(since)
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == kernel.page.comm_id]


def test_a_numpy_array_reaches_the_page_as_one_binary_buffer(connected: PageKernel) -> None:
    log_start = len(connected.page.iopub_log)
    since = connected.mark()
    result = connected.run_ok(
        "import numpy as np\n"
        f"a = np.arange({ONE_MB_FLOATS}, dtype=np.float64)\n"
        "comms.send('/array', {'name': 'ramp', 'data': a, 'shape': list(a.shape)})\n"
        "a[:] = -1  # after send(): what was sent does not change\n"
        "comms.sync()")
    assert result.status == "ok"
    (value,) = connected.wait_values("/array", 1, since)
    assert value["name"] == "ramp" and value["shape"] == [ONE_MB_FLOATS]
    assert value["data"] == np.arange(ONE_MB_FLOATS, dtype=np.float64).tobytes()
    (msg,) = [m for m in raw_comm_msgs(connected, log_start)
              if m["content"]["data"].get("address") == "/array"]
    data = msg["content"]["data"]
    # On the way: null in the JSON, the bytes as the message's one buffer, no base64.
    assert data["value"] == {"name": "ramp", "data": None, "shape": [ONE_MB_FLOATS]}
    assert data["buffer_paths"] == [["value", "data"]]
    assert [len(b) for b in msg["buffers"]] == [ONE_MB_FLOATS * 8]
    assert base64.b64encode(b"\x00" * 8).decode()[:8] not in str(data)


def test_binary_values_in_a_burst_keep_their_order_and_places(connected: PageKernel) -> None:
    since = connected.mark()
    connected.run_ok(
        "for i in range(200):\n"
        "    comms.send('/burst', [i, bytes([i % 256]) * (i % 5), {'n': i}])\n"
        "    comms.send('/burst', i)\n"
        "comms.sync()")
    values = connected.wait_values("/burst", 400, since)
    expected = []
    for i in range(200):
        expected += [[i, bytes([i % 256]) * (i % 5), {"n": i}], i]
    assert values == expected


def test_page_buffers_reach_the_program_as_memoryview(connected: PageKernel) -> None:
    msg_id = connected.conn.execute(
        "got = comms.listen('/from-page')\n"
        "comms.send('/listening', True)\ncomms.sync()\n"
        "v = got.get(timeout=10)\n"
        "print(type(v['raw']).__name__, bytes(v['raw']).hex(), v['n'], "
        "type(v['more'][1]).__name__, bytes(v['more'][1]))")
    connected.wait_values("/listening", 1)
    connected.page.send("/from-page", {"raw": b"\x00\xff\x10", "n": 0,
                                       "more": [None, bytearray(b"ok")]})
    result = connected.conn.result(msg_id, timeout=WAIT_S)
    assert result.status == "ok", result.content
    assert result.stdout == "memoryview 00ff10 0 memoryview b'ok'\n"


def test_read_value_gets_the_pages_binary_answer(connected: PageKernel) -> None:
    connected.page.synced["/blob"] = {"bytes": b"\x01\x02\x03"}
    result = connected.run_ok("v = comms.read_value('/blob', timeout=5)\n"
                              "print(bytes(v['bytes']))")
    assert result.stdout == "b'\\x01\\x02\\x03'\n"


def test_the_page_reads_the_programs_latest_binary_value(connected: PageKernel) -> None:
    # The kernel passes a page's read on to the program for addresses it subscribed to.
    connected.run_ok("sub = comms.subscribe('/latest', lambda address, value: None)\n"
                     "buf = bytearray(b'first')\ncomms.send('/latest', buf)\n"
                     "buf[:] = b'later'\ncomms.sync()")
    since = connected.mark()
    connected.page._comm_msg({"address": "/latest", "read_request": True})
    assert connected.wait_values("/latest", 1, since) == [b"first"]


def test_buffers_that_do_not_fit_their_paths_are_dropped_and_the_channel_serves_on(
        connected: PageKernel) -> None:
    msg_id = connected.conn.execute(
        "got = comms.listen('/after')\ncomms.send('/listening2', True)\ncomms.sync()\n"
        "print(got.get(timeout=10))")
    connected.wait_values("/listening2", 1)
    page = connected.page
    bad = page.client.session.msg("comm_msg", {"comm_id": page.comm_id, "data": {
        "address": "/after", "value": None, "buffer_paths": [["value", "nowhere"]]}})
    bad["buffers"] = [b"x"]
    page._send(bad)
    page.send("/after", "still here")
    result = connected.conn.result(msg_id, timeout=WAIT_S)
    assert result.stdout == "still here\n", result.content
