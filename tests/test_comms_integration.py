"""The address channel end to end over real ZMQ: a real kernel and worker, and a
``HeadlessPage`` playing the browser page's part (DESIGN.md, "The address channel").

Every test starts its own kernel, except those sharing the module's ``connected`` kernel,
whose channel stays open (a test that leaves it otherwise uses its own kernel). Assertions
are on what a user sees: values at the page, cell output, reply status. The only clock in
an assertion is the protocol's "no page within 3 s" timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from comms_fixtures import (
    WAIT_S,
    PageKernel,
    connected_page_kernel,
    describe,
    page_kernel,
    parent_id,
    strict_json,
    wait_page_hears_kernel,
)
from headless_page import HeadlessPage, wait_until
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kernel_helpers import running_kernel

pytestmark = pytest.mark.usefixtures("kernel_env")


@pytest.fixture(scope="module")
def connected(kernel_env: Path) -> Iterator[PageKernel]:
    """The module's shared kernel; its channel is open and every test leaves it open."""
    with connected_page_kernel() as kernel:
        yield kernel


TARGET = "wrapperkernel_comm"
INSTALL_MARK = "wrapperkernel_comm_install({"  # the kernel's call, with its literal config
NO_PAGE = "No page connected to the wrapperkernel comm channel"
NO_PAGE_TIMEOUT_S = 3.0  # WAIT_FOR_CONNECTION_S, DESIGN.md lifecycle step 4


def installs_of(messages: list[dict[str, Any]]) -> list[str]:
    """display_ids of the install-script display_data among ``messages``."""
    return [
        m["content"]["transient"]["display_id"]
        for m in messages
        if m["msg_type"] == "display_data"
        and INSTALL_MARK in m["content"]["data"].get("text/html", "")
    ]


def erases_of(messages: list[dict[str, Any]]) -> list[str]:
    """display_ids emptied by update_display_data among ``messages``."""
    return [
        m["content"]["transient"]["display_id"]
        for m in messages
        if m["msg_type"] == "update_display_data" and m["content"]["data"] == {}
    ]


# ---------------------------------------------------------------- program -> page


def test_sent_values_arrive_in_order_with_falsy_values_intact(connected: PageKernel) -> None:
    since = connected.mark()
    connected.run_ok(
        "for v in [0, False, '', None, {'nested': [1, 2.5, 'é✓']}, [], {}]:\n"
        "    comms.send('/order/a', v)\n"
        "    comms.send('/order/b', repr(v))\n"
        "comms.sync()"
    )
    connected.wait_values("/order/b", 7, since)
    a = connected.values("/order/a", since)
    assert [strict_json(v) for v in a] == [
        strict_json(v) for v in [0, False, "", None, {"nested": [1, 2.5, "é✓"]}, [], {}]
    ]
    # Across addresses too, the page sees the program's order.
    both = [(addr, v) for _, addr, v in connected.page.history[since:]
            if addr in ("/order/a", "/order/b")]
    assert [addr for addr, _ in both] == ["/order/a", "/order/b"] * 7


def test_ten_thousand_values_arrive_in_order_batched(connected: PageKernel) -> None:
    count = 10_000
    since = connected.mark()
    seen_before = len(connected.page.iopub_log)
    connected.run_ok(f"for i in range({count}):\n    comms.send('/many', i)\ncomms.sync()")
    assert connected.wait_values("/many", count, since, timeout=60) == list(range(count))
    carriers = [
        m for m in connected.iopub_since(seen_before)
        if m["msg_type"] == "comm_msg" and any(
            item.get("address") == "/many"
            for item in m["content"]["data"].get("batch", [m["content"]["data"]])
        )
    ]
    # Jupyter Server drops IOPub beyond 1000 msg/s per connection: one comm_msg per value
    # would lose most of them behind a real server. Batching keeps the count far lower.
    assert 0 < len(carriers) < count / 10, f"{len(carriers)} comm_msgs for {count} values"


# ---------------------------------------------------------------- page -> program, in a cell


def test_subscribed_callback_gets_page_values_while_cell_runs(connected: PageKernel) -> None:
    msg_id = connected.conn.execute(
        "import threading\n"
        "got = []\n"
        "done = threading.Event()\n"
        "def on_value(address, value):\n"
        "    got.append((address, value))\n"
        "    if len(got) == 6:\n"
        "        done.set()\n"
        "sub = comms.subscribe('/cb', on_value)\n"
        "print('ready', flush=True)\n"
        "arrived = done.wait(20)\n"
        "comms.unsubscribe(sub)\n"
        "print(arrived, repr(got))"
    )
    connected.conn.wait_for_output(msg_id, "ready", timeout=WAIT_S)
    connected.page.send("/cb", 0)
    connected.page.send("/not-subscribed", "dropped")
    connected.page.send_batch([("/cb", False), ("/cb", ""), ("/cb", None)])
    connected.page.send("/cb", {"k": [1]})
    connected.page.send("/cb", "last")
    result = connected.conn.result(msg_id, timeout=30)
    assert result.status == "ok", describe(result)
    assert result.stdout.splitlines()[-1] == (
        "True [('/cb', 0), ('/cb', False), ('/cb', ''), ('/cb', None), "
        "('/cb', {'k': [1]}), ('/cb', 'last')]"
    )


def test_listen_iterates_page_values_while_cell_runs(connected: PageKernel) -> None:
    msg_id = connected.conn.execute(
        "got = []\n"
        "with comms.listen('/iter') as values:\n"
        "    print('ready', flush=True)\n"
        "    for v in values:\n"
        "        if v == 'stop':\n"
        "            break\n"
        "        got.append(v)\n"
        "print(repr(got))"
    )
    connected.conn.wait_for_output(msg_id, "ready", timeout=WAIT_S)
    for value in (0, False, ""):
        connected.page.send("/iter", value)
    connected.page.send_batch([("/iter", None), ("/iter", [1, "two"]), ("/iter", "stop")])
    result = connected.conn.result(msg_id, timeout=30)
    assert result.status == "ok", describe(result)
    assert result.stdout.splitlines()[-1] == "[0, False, '', None, [1, 'two']]"


def test_listen_latest_only_keeps_the_newest_unread_value(connected: PageKernel) -> None:
    msg_id = connected.conn.execute(
        "with comms.listen('/done') as done, comms.listen('/slider', latest_only=True) as s:\n"
        "    print('ready', flush=True)\n"
        "    done.get(timeout=20)\n"
        "    print('latest', s.get(timeout=0))\n"
        "    try:\n"
        "        s.get(timeout=0)\n"
        "    except TimeoutError:\n"
        "        print('nothing more')"
    )
    connected.conn.wait_for_output(msg_id, "ready", timeout=WAIT_S)
    connected.page.send_batch([("/slider", n) for n in range(1, 6)] + [("/done", True)])
    result = connected.conn.result(msg_id, timeout=30)
    assert result.status == "ok", describe(result)
    assert result.stdout == "ready\nlatest 5\nnothing more\n"


def test_read_value_is_answered_from_the_pages_synced_values(connected: PageKernel) -> None:
    connected.page.synced.update({"/slider": 7, "/zero": 0, "/false": False, "/empty": "",
                                  "/none": None})
    result = connected.run_ok(
        "for a in ['/slider', '/zero', '/false', '/empty', '/none']:\n"
        "    print(a, repr(comms.read_value(a, timeout=5)))"
    )
    assert result.stdout == "/slider 7\n/zero 0\n/false False\n/empty ''\n/none None\n"


def test_read_of_an_address_the_page_does_not_have_is_a_comms_error(
    connected: PageKernel,
) -> None:
    result = connected.conn.run("comms.read_value('/nowhere', timeout=5)")
    assert result.status == "error", describe(result)
    assert result.content["ename"] == "CommsError"
    errors = [m["content"] for m in result.outputs if m["msg_type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["ename"] == "CommsError"
    assert "'/nowhere'" in errors[0]["evalue"]
    assert "could not read" in errors[0]["evalue"]


def test_the_read_timeout_setting_bounds_a_read_given_no_timeout(kernel_env: Path) -> None:
    """WRAPPERKERNEL_READ_TIMEOUT_S, set for the kernel, is inherited by the worker and is
    the timeout of every read_value given none. The page here is slow: it spends 2 s on
    the value sent first, so the read behind it is answered after the 0.5 s setting (and
    before the built-in 3 s). The heartbeat timeout is raised so that a ping answered as
    slowly does not count as a stale page."""
    env = {"WRAPPERKERNEL_READ_TIMEOUT_S": "0.5", "WRAPPERKERNEL_HEARTBEAT_TIMEOUT_S": "10"}
    with running_kernel(env=env) as conn:
        page = HeadlessPage(conn.km.connection_file)
        try:
            wait_page_hears_kernel(conn, page)
            k = PageKernel(conn, page)
            k.run_ok("from wrapperkernel import comms\ncomms.start()")
            page.synced["/slow"] = 1
            page.seconds_per_value = 2.0
            result = conn.run("comms.send('/x', 0)\ncomms.read_value('/slow')", timeout=30)
            assert result.status == "error", describe(result)
            assert result.content["ename"] == "CommsError"
            assert "did not answer the read of '/slow' within 0.5 s" in result.content["evalue"]
        finally:
            page.close()


# ---------------------------------------------------------------- page -> program, between cells


def test_page_value_between_cells_reaches_a_subscribed_callback(connected: PageKernel) -> None:
    connected.run_ok(
        "between = []\n"
        "def on_between(address, value):\n"
        "    between.append(value)\n"
        "    comms.send('/between/echo', value)\n"  # the page sees the callback ran
        "between_sub = comms.subscribe('/between', on_between)"
    )
    since = connected.mark()
    connected.page.send("/between", 0)
    connected.page.send("/between", {"x": False})
    # The echo arrives while no cell runs: the callback ran between cells.
    echoed = connected.wait_values("/between/echo", 2, since)
    assert [strict_json(v) for v in echoed] == [strict_json(0), strict_json({"x": False})]
    result = connected.run_ok("comms.unsubscribe(between_sub)\nprint(repr(between))")
    assert result.stdout == "[0, {'x': False}]\n"


# ---------------------------------------------------------------- JSON round trip

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)  # exact in a browser's JS too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # no lone surrogates
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
                      children, max_size=5),
    max_leaves=20,
)


def test_json_values_round_trip_exactly_page_to_program_to_page(connected: PageKernel) -> None:
    connected.run_ok(
        "echo = comms.subscribe('/hyp/in', lambda address, value: comms.send('/hyp/out', value))"
    )

    @settings(max_examples=30, deadline=None, database=None)
    @given(JSON_VALUES)
    @example(0)
    @example(False)
    @example("")
    @example(None)
    @example({"": [0, False, "", None, {}, []], "ünï": "✓ 日本 \x00 \U0001f600"})
    def round_trip(value: Any) -> None:
        since = connected.mark()
        connected.page.send("/hyp/in", value)
        [echoed] = connected.wait_values("/hyp/out", 1, since)
        assert strict_json(echoed) == strict_json(value)

    round_trip()
    connected.run_ok("comms.unsubscribe(echo)")


# ---------------------------------------------------------------- busy indicator


def test_page_values_during_a_cell_do_not_flip_the_busy_indicator(
    connected: PageKernel,
) -> None:
    page = connected.page
    log_start = len(page.iopub_log)
    sent_start = len(page.sent_msg_ids)
    count = 40
    msg_id = connected.conn.execute(
        "with comms.listen('/busy') as values:\n"
        "    print('ready', flush=True)\n"
        f"    got = [values.get(timeout=20) for _ in range({count})]\n"
        "print(got == list(range(" + str(count) + ")))"
    )
    connected.conn.wait_for_output(msg_id, "ready", timeout=WAIT_S)
    for n in range(count // 2):
        page.send("/busy", n)
    # A request that is not on our comm does get busy/idle, while the cell runs.
    connected.conn.send("comm_msg", {"comm_id": "no-such-comm", "data": {}})
    connected.conn.send("kernel_info_request", {})
    for n in range(count // 2, count):
        page.send("/busy", n)
    result = connected.conn.result(msg_id, timeout=30)
    assert result.status == "ok", describe(result)
    assert result.stdout.splitlines()[-1] == "True"

    def is_cell_idle(m: dict[str, Any]) -> bool:
        return m["msg_type"] == "status" and parent_id(m) == msg_id \
            and m["content"]["execution_state"] == "idle"

    # The page has its own IOPub subscription: wait until it has seen the cell end too.
    wait_until(lambda: any(is_cell_idle(m) for m in connected.iopub_since(log_start)),
               WAIT_S, "the cell's idle status at the page")
    page_msg_ids = set(page.sent_msg_ids[sent_start:])
    log = connected.iopub_since(log_start)
    start = next(i for i, m in enumerate(log)
                 if m["msg_type"] == "status" and parent_id(m) == msg_id)
    end = next(i for i, m in enumerate(log) if is_cell_idle(m))
    during = log[start:end]
    statuses = [(parent_id(m), m["content"]["execution_state"])
                for m in during if m["msg_type"] == "status"]
    assert not [s for s in statuses if s[0] in page_msg_ids], \
        "the page's comm_msgs on the open comm got busy/idle"
    foreign_idles = 0
    for i, m in enumerate(during):
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            foreign_idles += 1
            following = during[i + 1] if i + 1 < len(during) else None
            assert following is not None and following["msg_type"] == "status", \
                f"idle for {parent_id(m)} not followed by busy: {statuses}"
            assert following["content"]["execution_state"] == "busy"
            assert parent_id(following) == msg_id
    assert foreign_idles >= 2  # the stray comm_msg and the kernel_info_request


# ---------------------------------------------------------------- comm bookkeeping


def test_comm_info_lists_the_open_channel_comm(connected: PageKernel) -> None:
    comm_id = connected.page.comm_id
    expected = {comm_id: {"target_name": TARGET}}
    assert connected.conn.request("comm_info_request", {"target_name": TARGET}).content == {
        "status": "ok", "comms": expected}
    # Old clients send "target" instead of "target_name".
    assert connected.conn.request("comm_info_request", {"target": TARGET}).content["comms"] \
        == expected
    # The kernel's widget model (the widget transport) is open beside the page's comm:
    # a page restoring widgets from the kernel through comm_info finds it.
    everything = connected.conn.request("comm_info_request", {}).content["comms"]
    models = {cid: info for cid, info in everything.items() if cid != comm_id}
    assert everything[comm_id] == {"target_name": TARGET}
    assert list(models.values()) == [{"target_name": "jupyter.widget"}]
    assert connected.conn.request("comm_info_request",
                                  {"target_name": "jupyter.widget"}).content["comms"] == models


def test_comm_open_for_an_unknown_target_gets_comm_close(connected: PageKernel) -> None:
    connected.conn.send("comm_open", {"comm_id": "unknown-target-comm",
                                      "target_name": "no.such.target", "data": {}})
    closed = connected.conn.find(
        "iopub",
        lambda m: m["msg_type"] == "comm_close"
        and m["content"].get("comm_id") == "unknown-target-comm",
        timeout=WAIT_S, what="comm_close for the unknown target",
    )
    assert closed["content"]["comm_id"] == "unknown-target-comm"


def test_comm_open_for_another_kernel_is_ignored(connected: PageKernel) -> None:
    page = connected.page
    comm_before = page.comm_id
    log_start = len(page.iopub_log)
    connected.conn.send("comm_open", {"comm_id": "other-kernel-comm", "target_name": TARGET,
                                      "data": {"kernel_id": "some-other-kernel"}})
    # Barrier: a value sent after the comm_open was handled has reached the page.
    since = connected.mark()
    connected.run_ok("comms.send('/barrier', 1)\ncomms.sync()")
    assert connected.wait_values("/barrier", 1, since) == [1]
    about_other = [m for m in connected.iopub_since(log_start)
                   if m["content"].get("comm_id") == "other-kernel-comm"]
    assert about_other == [], "the kernel answered a comm_open meant for another kernel"
    assert page.comm_id == comm_before
    assert connected.conn.request("comm_info_request", {"target_name": TARGET}).content[
        "comms"] == {comm_before: {"target_name": TARGET}}


# ---------------------------------------------------------------- install script


def test_install_script_is_erased_once_the_page_connects() -> None:
    with page_kernel() as k:
        result = k.run_ok("from wrapperkernel import comms\ncomms.start()\nprint('connected')")
        assert result.stdout == "connected\n"
        k.page.wait_connected(WAIT_S)  # the page thread handles the ack on its own time
        assert k.page.installs == 1
        outputs = result.outputs
        [display_id] = installs_of(outputs)
        assert display_id, "the install script has no transient display_id"
        shown = next(i for i, m in enumerate(outputs) if m["msg_type"] == "display_data")
        erased = [i for i, m in enumerate(outputs)
                  if m["msg_type"] == "update_display_data"
                  and m["content"]["transient"]["display_id"] == display_id]
        assert len(erased) == 1 and erased[0] > shown
        assert outputs[erased[0]]["content"]["data"] == {}


# ---------------------------------------------------------------- stale connections


def test_page_reload_mid_stream_reinstalls_and_loses_nothing_after_reconnect() -> None:
    with page_kernel() as k:
        k.run_ok("from wrapperkernel import comms\ncomms.start()")
        k.page.wait_connected(WAIT_S)
        first_comm = k.page.comm_id
        msg_id = k.conn.execute(
            "import threading, time\n"
            "stop = threading.Event()\n"
            "comms.subscribe('/stop', lambda address, value: stop.set())\n"
            "i = 0\n"
            "deadline = time.monotonic() + 40\n"
            "while not stop.is_set() and time.monotonic() < deadline:\n"
            "    comms.send('/stream', i)\n"
            "    i += 1\n"
            "    time.sleep(0.002)\n"
            "comms.send('/stream', 'end')\n"
            "comms.sync()\n"
            "print('sent', i)"
        )
        before = k.wait_values("/stream", 50, comm_id=first_comm)
        k.page.reload()
        k.wait_installs(2)
        second_comm = k.page.comm_id
        assert k.page.comm_ids == [first_comm, second_comm]
        k.wait_values("/stream", 50, comm_id=second_comm)
        k.page.send("/stop", True)
        result = k.conn.result(msg_id, timeout=60)
        assert result.status == "ok", describe(result)
        sent = int(result.stdout.split()[-1])

        wait_until(lambda: "end" in k.values("/stream", comm_id=second_comm), WAIT_S,
                   "the 'end' marker at the page")
        after = k.values("/stream", comm_id=second_comm)
        before = k.values("/stream", comm_id=first_comm)
        assert before == list(range(len(before)))
        # Everything from the first value on the new comm to the last one sent arrived.
        numbers = after[:-1]
        assert numbers == list(range(numbers[0], sent))
        assert numbers[0] >= len(before)
        # The kernel pinged the stale comm before it reinstalled.
        assert any(item.get("address") == "#heartbeat/ping" for item in k.comm_items(first_comm))
        assert erases_of(k.page.iopub_log) == installs_of(k.page.iopub_log)


def test_page_that_does_not_answer_pings_gets_the_script_again() -> None:
    # A stale page: it answers neither pings nor, by acknowledging, anything else (an
    # advancing #ack answers a ping as well as a pong does).
    with page_kernel(answer_pings=False, acknowledge=False) as k:
        k.run_ok("from wrapperkernel import comms\ncomms.start()")
        first_comm = k.page.comm_id
        time.sleep(1.5)  # silence longer than HEARTBEAT_REQUEST_THRESHOLD_S (a precondition)
        since = k.mark()
        k.run_ok("comms.send('/after-ping', 'hello')\ncomms.sync()")
        k.wait_installs(2)
        assert k.page.comm_id != first_comm
        assert k.wait_values("/after-ping", 1, since, comm_id=k.page.comm_id) == ["hello"]
        assert k.values("/after-ping", since, comm_id=first_comm) == []
        assert any(item.get("address") == "#heartbeat/ping" for item in k.comm_items(first_comm))
        assert erases_of(k.page.iopub_log) == installs_of(k.page.iopub_log)


# ---------------------------------------------------------------- kernel restart


def test_after_kernel_restart_the_channel_starts_again() -> None:
    with page_kernel() as k:
        k.run_ok("from wrapperkernel import comms\ncomms.start()")
        k.page.wait_connected(WAIT_S)
        k.conn.km.restart_kernel(now=False)
        k.conn.kc.wait_for_ready(timeout=60)
        wait_page_hears_kernel(k.conn, k.page)
        msg_id = k.conn.execute(
            "from wrapperkernel import comms\n"
            "with comms.listen('/ping-pong') as values:\n"
            "    print('ready', flush=True)\n"
            "    value = values.get(timeout=20)\n"
            "comms.send('/ping-pong/back', value + 1)\n"
            "comms.sync()"
        )
        k.conn.wait_for_output(msg_id, "ready", timeout=WAIT_S)
        k.wait_installs(2)
        since = k.mark()
        k.page.send("/ping-pong", 41)
        result = k.conn.result(msg_id, timeout=30)
        assert result.status == "ok", describe(result)
        assert k.wait_values("/ping-pong/back", 1, since) == [42]


# ---------------------------------------------------------------- no page


def test_without_a_page_send_fails_with_an_explanation_until_a_page_connects() -> None:
    with page_kernel(connect=False) as k:
        started = time.monotonic()
        first = k.conn.run("from wrapperkernel import comms\ncomms.send('/x', 1)", timeout=30)
        elapsed = time.monotonic() - started
        assert first.status == "error", describe(first)
        assert first.content["ename"] == "CommsError"
        assert NO_PAGE in first.content["evalue"]
        assert "comms.start()" in first.content["evalue"]  # says what to do next
        [error] = [m["content"] for m in first.outputs if m["msg_type"] == "error"]
        assert NO_PAGE in error["evalue"]
        # The protocol's connection timeout, not a speed measurement: never before it,
        # and never a hang.
        assert NO_PAGE_TIMEOUT_S - 0.5 <= elapsed <= 15

        second = k.conn.run("comms.send('/x', 2)", timeout=30)
        assert second.status == "error", describe(second)
        assert second.content["evalue"] == first.content["evalue"]
        assert installs_of(second.outputs) == [], "an implicit start after a failure retried"

        k.page.connect = True
        since = k.mark()
        k.run_ok("comms.start()\ncomms.send('/x', 3)\ncomms.sync()", timeout=30)
        assert k.page.installs == 1
        assert k.wait_values("/x", 1, since) == [3]
