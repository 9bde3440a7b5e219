"""The standard ``comm`` package relayed between the page's own kernel connection and the
worker: ipywidgets, anywidget and any other comm user, also while a cell runs.

A real kernel is driven through jupyter_client. The ``KernelConnection`` runs the cells;
a second client (``PageClient``, its own session) plays the page's kernel connection: it
sees IOPub and sends comm_open / comm_msg / comm_close on the shell channel, as
JupyterLab's widget manager does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kernel_helpers import KernelConnection, running_kernel
from relay_client import (
    BINARY,
    POLL_S,
    WAIT_S,
    Message,
    PageClient,
    buffers_of,
    comm_info,
    describe,
    last_line,
    run_ok,
)


@pytest.fixture(scope="module")
def page(kernel: KernelConnection) -> Iterator[PageClient]:
    client = PageClient(kernel.km.connection_file)
    try:
        client.wait_joined()
        yield client
    finally:
        client.close()


ECHO_TARGET = """\
import comm, json, threading
echo_log = []
echo_closed = []
def echo_target(c, open_msg):
    echo_log.append(("open", open_msg["content"]["data"]))
    def on_msg(msg):
        me = threading.current_thread()
        echo_log.append(("msg", msg["content"]["data"]))
        c.send({"echo": msg["content"]["data"], "thread": me.name,
                "main_thread": me is threading.main_thread()},
               buffers=[bytes(b) for b in msg["buffers"]])
    c.on_msg(on_msg)
    c.on_close(lambda msg: echo_closed.append(c.comm_id))
    c.send({"opened": open_msg["content"]["data"]})
comm.get_comm_manager().register_target("echo", echo_target)
"""


# ---------------------------------------------------------------- program -> page


def test_program_comm_open_and_binary_message_reach_the_page(
    kernel: KernelConnection, page: PageClient
) -> None:
    mark = page.mark()
    result = run_ok(kernel, (
        "import comm, json\n"
        "c = comm.create_comm(target_name='t', data={'hello': [1, 'é', None]})\n"
        "c.send({'n': 0, 'falsy': [0, False, '']}, buffers=[b'\\x00\\x01binary'])\n"
        "print(json.dumps(c.comm_id))"
    ))
    comm_id = last_line(result)

    opened = page.find_comm("comm_open", comm_id, mark)
    assert opened["content"]["target_name"] == "t"
    assert opened["content"]["data"] == {"hello": [1, "é", None]}

    sent = page.find_comm("comm_msg", comm_id, mark)
    assert sent["content"]["data"] == {"n": 0, "falsy": [0, False, ""]}
    assert buffers_of(sent) == [BINARY]
    assert [m["msg_type"] for m in page.since(mark) if m["content"].get("comm_id") == comm_id] \
        == ["comm_open", "comm_msg"]


def test_comm_info_lists_relayed_comms_and_filters_by_target(
    kernel: KernelConnection, page: PageClient
) -> None:
    result = run_ok(kernel, (
        "import comm, json\n"
        "a = comm.create_comm(target_name='info-a')\n"
        "b = comm.create_comm(target_name='info-b')\n"
        "print(json.dumps([a.comm_id, b.comm_id]))"
    ))
    a_id, b_id = last_line(result)

    everything = comm_info(kernel)
    assert everything[a_id] == {"target_name": "info-a"}
    assert everything[b_id] == {"target_name": "info-b"}
    assert comm_info(kernel, "info-a") == {a_id: {"target_name": "info-a"}}
    assert comm_info(kernel, "info-b") == {b_id: {"target_name": "info-b"}}
    assert comm_info(kernel, "no-such-target") == {}

    run_ok(kernel, "a.close(); b.close()")
    assert a_id not in comm_info(kernel)
    assert b_id not in comm_info(kernel)


def test_program_closes_its_comm(kernel: KernelConnection, page: PageClient) -> None:
    mark = page.mark()
    result = run_ok(kernel, (
        "import comm, json\n"
        "closing = comm.create_comm(target_name='closing')\n"
        "print(json.dumps(closing.comm_id))"
    ))
    comm_id = last_line(result)
    assert comm_id in comm_info(kernel, "closing")

    run_ok(kernel, "closing.close(data={'bye': True})")

    closed = page.find_comm("comm_close", comm_id, mark)
    assert closed["content"]["data"] == {"bye": True}
    assert comm_info(kernel, "closing") == {}


# ---------------------------------------------------------------- page -> program


def test_page_opens_a_registered_target_and_gets_echoes_with_buffers(
    kernel: KernelConnection, page: PageClient
) -> None:
    run_ok(kernel, ECHO_TARGET)
    mark = page.mark()
    comm_id = page.comm_open("echo", {"from": "page"})
    opened = page.find_comm("comm_msg", comm_id, mark)
    assert opened["content"]["data"] == {"opened": {"from": "page"}}
    assert comm_info(kernel, "echo") == {comm_id: {"target_name": "echo"}}

    mark = page.mark()
    page.comm_msg(comm_id, {"ping": 1, "zero": 0}, buffers=[BINARY, b""])
    echo = page.find_comm("comm_msg", comm_id, mark, lambda c: "echo" in c["data"])
    assert echo["content"]["data"]["echo"] == {"ping": 1, "zero": 0}
    assert buffers_of(echo) == [BINARY, b""]
    # Between cells too, handlers run on a thread of their own.
    assert echo["content"]["data"]["main_thread"] is False

    result = run_ok(kernel, "print(json.dumps(echo_log))")
    assert last_line(result) == [["open", {"from": "page"}], ["msg", {"ping": 1, "zero": 0}]]
    page.comm_close(comm_id)


def test_echo_arrives_while_a_cell_sleeps(kernel: KernelConnection, page: PageClient) -> None:
    run_ok(kernel, ECHO_TARGET)
    mark = page.mark()
    comm_id = page.comm_open("echo", {})
    page.find_comm("comm_msg", comm_id, mark)

    cell = kernel.execute(
        "import time, threading\n"
        "print('sleeping', threading.current_thread() is threading.main_thread(), flush=True)\n"
        "time.sleep(8)\n"
        "print('woke')"
    )
    kernel.wait_for_output(cell, "sleeping", timeout=WAIT_S)
    mark = page.mark()
    sent_at = time.monotonic()
    page.comm_msg(comm_id, {"during": "sleep"}, buffers=[BINARY])
    echo = page.find_comm("comm_msg", comm_id, mark, lambda c: "echo" in c["data"], timeout=6)

    # The cell is still sleeping: no execute_reply yet.
    assert kernel.replies(cell) == []
    assert echo["arrived_at"] - sent_at < 6
    assert echo["content"]["data"]["echo"] == {"during": "sleep"}
    assert buffers_of(echo) == [BINARY]
    # Handled on the comms dispatcher thread while the main thread sleeps.
    assert echo["content"]["data"]["main_thread"] is False

    result = kernel.result(cell, timeout=30)
    assert result.status == "ok", describe(result)
    assert result.stdout == "sleeping True\nwoke\n"
    page.comm_close(comm_id)


def test_page_open_to_an_unknown_target_is_closed(
    kernel: KernelConnection, page: PageClient
) -> None:
    mark = page.mark()
    comm_id = page.comm_open("nobody-registered-this", {"x": 1})
    page.find_comm("comm_close", comm_id, mark)
    assert comm_id not in comm_info(kernel)


def test_page_closes_an_echo_comm(kernel: KernelConnection, page: PageClient) -> None:
    run_ok(kernel, ECHO_TARGET)
    mark = page.mark()
    comm_id = page.comm_open("echo", {})
    page.find_comm("comm_msg", comm_id, mark)
    assert comm_id in comm_info(kernel, "echo")

    page.comm_close(comm_id)

    deadline = time.monotonic() + WAIT_S
    while comm_id in comm_info(kernel, "echo"):
        assert time.monotonic() < deadline, "comm_info still lists the closed comm"
        time.sleep(POLL_S)
    # The program's on_close callback ran, and the comm is gone from the worker's manager.
    result = run_ok(kernel, (
        "import time\n"
        "deadline = time.monotonic() + 10\n"
        "while not echo_closed and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        f"print(json.dumps([echo_closed, {comm_id!r} in comm.get_comm_manager().comms]))"
    ))
    assert last_line(result) == [[comm_id], False]


# ---------------------------------------------------------------- worker crash


def test_worker_crash_closes_the_relayed_comms(kernel_env: object) -> None:
    with running_kernel() as own:
        crash_page = PageClient(own.km.connection_file)
        try:
            crash_page.wait_joined()
            result = run_ok(own, ECHO_TARGET + (
                "doomed = comm.create_comm(target_name='doomed')\n"
                "print(json.dumps(doomed.comm_id))"
            ))
            program_id = last_line(result)
            mark = crash_page.mark()
            page_id = crash_page.comm_open("echo", {})
            crash_page.find_comm("comm_msg", page_id, mark)
            assert set(comm_info(own)) >= {program_id, page_id}

            crash = own.run("import os; os._exit(1)")
            assert crash.status == "error"
            assert crash.content["ename"] == "WorkerDied"

            crash_page.find_comm("comm_close", program_id, mark)
            crash_page.find_comm("comm_close", page_id, mark)
            remaining = comm_info(own)
            assert program_id not in remaining
            assert page_id not in remaining
            assert comm_info(own, "echo") == {}
            assert comm_info(own, "doomed") == {}

            # A late message from the page to a comm of the dead worker harms nothing, and
            # the new worker has no "echo" target: a fresh open is refused with comm_close.
            mark = crash_page.mark()
            crash_page.comm_msg(page_id, {"late": True})
            again = crash_page.comm_open("echo", {})
            crash_page.find_comm("comm_close", again, mark)
            after = run_ok(own, "print('alive')")
            assert after.stdout == "alive\n"
        finally:
            crash_page.close()


# ---------------------------------------------------------------- ipywidgets


def widget_comm(page: PageClient, model_name: str, since: int) -> Message:
    return page.find_comm(
        "comm_open", None, since,
        lambda c: c.get("target_name") == "jupyter.widget"
        and c["data"].get("state", {}).get("_model_name") == model_name,
    )


def test_int_slider_moved_by_the_page_is_seen_by_a_running_loop(
    kernel: KernelConnection, page: PageClient
) -> None:
    mark = page.mark()
    run_ok(kernel, (
        "import ipywidgets as w, threading\n"
        "slider = w.IntSlider(value=3, min=0, max=100)\n"
        "observed = []\n"
        "slider.observe(lambda change: observed.append(\n"
        "    (change['new'], threading.current_thread() is threading.main_thread())), 'value')\n"
        "slider"
    ))
    opened = widget_comm(page, "IntSliderModel", mark)
    assert opened["content"]["data"]["state"]["value"] == 3
    slider_id = opened["content"]["comm_id"]

    cell = kernel.execute(
        "import time, json\n"
        "print('looping', flush=True)\n"
        "deadline = time.monotonic() + 20\n"
        "while slider.value != 42 and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "while not observed and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print(json.dumps({'seen': slider.value, 'observed': observed}))"
    )
    kernel.wait_for_output(cell, "looping", timeout=WAIT_S)
    page.comm_msg(slider_id, {"method": "update", "state": {"value": 42}, "buffer_paths": []})

    result = kernel.result(cell, timeout=30)
    assert result.status == "ok", describe(result)
    # The observe callback ran off the main thread (which was busy in the loop).
    assert last_line(result) == {"seen": 42, "observed": [[42, False]]}


def test_request_state_gets_the_full_state(kernel: KernelConnection, page: PageClient) -> None:
    mark = page.mark()
    result = run_ok(kernel, (
        "import ipywidgets as w, json\n"
        "restored = w.IntSlider(value=17, min=5, max=50, description='Speed')\n"
        "display(restored)\n"
        "print(json.dumps(sorted(restored.keys)))"
    ))
    keys = last_line(result)
    opened = widget_comm(page, "IntSliderModel", mark)
    comm_id = opened["content"]["comm_id"]
    run_ok(kernel, "restored.value = 23")

    mark = page.mark()
    page.comm_msg(comm_id, {"method": "request_state"})
    # The answer, not the echo of `restored.value = 23` (which the page may read late).
    update = page.find_comm("comm_msg", comm_id, mark,
                            lambda c: c["data"].get("method") == "update"
                            and "_model_name" in c["data"].get("state", {}))
    state = update["content"]["data"]["state"]
    assert sorted(state) == keys
    assert (state["value"], state["min"], state["max"], state["description"]) == \
        (23, 5, 50, "Speed")
    assert state["_model_name"] == "IntSliderModel"
    assert state["_view_name"] == "IntSliderView"


def test_control_comm_request_states_returns_every_widget(
    kernel: KernelConnection, page: PageClient
) -> None:
    """What JupyterLab's widget manager does first after a page reload."""
    result = run_ok(kernel, (
        "import ipywidgets as w, json\n"
        "ctl_slider = w.IntSlider(value=9, description='Restored')\n"
        "ctl_slider.value = 10\n"
        "print(json.dumps(ctl_slider.model_id))"
    ))
    model_id = last_line(result)

    mark = page.mark()
    comm_id = page.comm_open("jupyter.widget.control", {}, metadata={"version": "1.0.0"})
    page.comm_msg(comm_id, {"method": "request_states"})
    reply = page.find_comm("comm_msg", comm_id, mark,
                           lambda c: c["data"].get("method") == "update_states")
    states = reply["content"]["data"]["states"]
    assert states[model_id]["model_name"] == "IntSliderModel"
    assert (states[model_id]["state"]["value"], states[model_id]["state"]["description"]) == \
        (10, "Restored")
    page.comm_close(comm_id)


def test_button_click_from_the_page_runs_on_click_while_a_cell_loops(
    kernel: KernelConnection, page: PageClient
) -> None:
    mark = page.mark()
    run_ok(kernel, (
        "import ipywidgets as w, threading\n"
        "button = w.Button(description='Stop')\n"
        "clicks = []\n"
        "button.on_click(lambda b: clicks.append(\n"
        "    (b.description, threading.current_thread() is threading.main_thread())))\n"
        "button"
    ))
    button_id = widget_comm(page, "ButtonModel", mark)["content"]["comm_id"]

    cell = kernel.execute(
        "import time, json\n"
        "print('looping', flush=True)\n"
        "deadline = time.monotonic() + 20\n"
        "while not clicks and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print(json.dumps(clicks))"
    )
    kernel.wait_for_output(cell, "looping", timeout=WAIT_S)
    page.comm_msg(button_id, {"method": "custom", "content": {"event": "click"}})

    result = kernel.result(cell, timeout=30)
    assert result.status == "ok", describe(result)
    assert last_line(result) == [["Stop", False]]


# ---------------------------------------------------------------- anywidget


ANYWIDGET = """\
import anywidget, traitlets, json
class Counter(anywidget.AnyWidget):
    _esm = "export default { render({ model, el }) { el.textContent = model.get('count'); } }"
    count = traitlets.Int(0).tag(sync=True)
counter = Counter(count=1)
counter
"""


def test_anywidget_traitlet_syncs_both_ways(kernel: KernelConnection, page: PageClient) -> None:
    mark = page.mark()
    run_ok(kernel, ANYWIDGET)
    opened = page.find_comm(
        "comm_open", None, mark,
        lambda c: c.get("target_name") == "jupyter.widget"
        and c["data"].get("state", {}).get("count") == 1
        and "_esm" in c["data"].get("state", {}),
    )
    comm_id = opened["content"]["comm_id"]

    # Page -> program, seen by a running cell.
    cell = kernel.execute(
        "import time\n"
        "print('waiting', flush=True)\n"
        "deadline = time.monotonic() + 20\n"
        "while counter.count != 5 and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print(json.dumps(counter.count))"
    )
    kernel.wait_for_output(cell, "waiting", timeout=WAIT_S)
    page.comm_msg(comm_id, {"method": "update", "state": {"count": 5}, "buffer_paths": []})
    result = kernel.result(cell, timeout=30)
    assert result.status == "ok", describe(result)
    assert last_line(result) == 5

    # Program -> page.
    mark = page.mark()
    run_ok(kernel, "counter.count = 7")
    update = page.find_comm("comm_msg", comm_id, mark,
                            lambda c: c["data"].get("method") == "update")
    assert update["content"]["data"]["state"] == {"count": 7}


def test_output_widget_captures_prints_of_the_cell(
    kernel: KernelConnection, page: PageClient
) -> None:
    mark = page.mark()
    cell = kernel.execute(
        "import ipywidgets as w\n"
        "out = w.Output()\n"
        "display(out)\n"
        "with out:\n"
        "    print('inside the output widget')\n"
    )
    result = kernel.result(cell, timeout=30)
    assert result.status == "ok", describe(result)
    opened = page.find_comm(
        "comm_open", None, mark,
        lambda c: c["data"].get("state", {}).get("_model_name") == "OutputModel")
    # The front end routes the request's outputs into the widget once its msg_id is the
    # request's msg_id (as with ipykernel).
    page.find_comm("comm_msg", opened["content"]["comm_id"], mark,
                   lambda c: c["data"].get("state", {}).get("msg_id") == cell, timeout=5)
