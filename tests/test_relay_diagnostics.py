"""What the relay of the ``comm`` package says, and where: its diagnostics go to the
kernel's log, never into the output of a user's cell (issue 10).

The kernels here are started with their stderr in a file, which is the kernel's log: the
kernel logs there, and the worker writes its diagnostics to the same stream. A
``PageClient`` plays the page's kernel connection, as in test_relay.py. The tests send
what a page sends while a cell runs, and then look at three things a user would see: what
the page got back, the cell's output, and the kernel's log.

Also here: the answer to ``jupyter.widget.control`` before ipywidgets is imported, and
ipympl's messages while the program saves a figure, which wrapperkernel handles as
ipykernel does (the same script runs against ipykernel, kernelspec ``python3``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager
from kernel_helpers import KERNEL_NAME, STARTUP_TIMEOUT_S, KernelConnection, Result
from relay_client import POLL_S, WAIT_S, Message, PageClient, describe, last_line, run_ok

from wrapperkernel.worker.callbacks import CallbackDispatcher

IPYKERNEL_NAME = "python3"  # ipykernel's kernelspec in this environment
CONTROL_VERSION = {"version": "1.0.0"}  # what ipywidgets 8's widget manager sends
# A cell that announces it runs, then stays busy for a while.
SLEEPING_CELL = "import time\nprint('sleeping', flush=True)\ntime.sleep(3)\nprint('woke')"


@dataclass
class LoggedKernel:
    """A kernel, a page on it, and the kernel's log."""

    kernel: KernelConnection
    page: PageClient
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            assert time.monotonic() < deadline, \
                f"{text!r} not in the kernel's log within {timeout} s; it holds:\n{log[-3000:]}"
            time.sleep(POLL_S)
        return log


@contextmanager
def logged_kernel(log_path: Path, kernel_name: str = KERNEL_NAME) -> Iterator[LoggedKernel]:
    """Like ``kernel_helpers.running_kernel``, with the kernel's stderr in ``log_path``."""
    km = KernelManager(kernel_name=kernel_name, ip="127.0.0.1")
    with log_path.open("w") as log:  # the kernel has its own copy of the descriptor
        km.start_kernel(stderr=log)
    try:
        kc = km.client()
        kc.start_channels()
        page = None
        try:
            kc.wait_for_ready(timeout=STARTUP_TIMEOUT_S)
            page = PageClient(km.connection_file)
            page.wait_joined()
            yield LoggedKernel(KernelConnection(km, kc), page, log_path)
        finally:
            if page is not None:
                page.close()
            kc.stop_channels()
    finally:
        km.shutdown_kernel(now=False)


@pytest.fixture(scope="module")
def logged(kernel_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedKernel]:
    with logged_kernel(tmp_path_factory.mktemp("relay-log") / "kernel.log") as connection:
        yield connection


@pytest.fixture
def fresh(kernel_env: Path, tmp_path: Path) -> Iterator[LoggedKernel]:
    """A kernel of its own: nothing (ipywidgets above all) imported in its worker yet."""
    with logged_kernel(tmp_path / "kernel.log") as connection:
        yield connection


def assert_clean(result: Result) -> None:
    """The cell shows its own output and nothing else: no stderr, no error."""
    assert result.status == "ok", describe(result)
    assert result.stderr == "", describe(result)
    assert "error" not in result.output_types, describe(result)


def run_while_the_page_talks(logged: LoggedKernel, talk: Callable[[], None],
                             code: str = SLEEPING_CELL) -> Result:
    """Run ``code``; once it printed "sleeping", ``talk`` sends what a page sends."""
    cell = logged.kernel.execute(code)
    logged.kernel.wait_for_output(cell, "sleeping", timeout=WAIT_S)
    talk()
    return logged.kernel.result(cell, timeout=60)


def open_refused_while_a_cell_runs(logged: LoggedKernel, target_name: str,
                                   metadata: dict[str, str] | None = None) -> Result:
    """The page opens a comm while a cell runs; the kernel closes it again."""
    page = logged.page
    mark = page.mark()
    opened: list[str] = []
    result = run_while_the_page_talks(
        logged, lambda: opened.append(page.comm_open(target_name, {}, metadata=metadata)))
    page.find_comm("comm_close", opened[0], mark)
    return result


# ---------------------------------------------------------------- the comm package's lines


def test_a_comm_to_an_unknown_target_is_closed_and_logged_not_shown_in_the_cell(
    logged: LoggedKernel,
) -> None:
    result = open_refused_while_a_cell_runs(logged, "nobody-registered-this")

    assert_clean(result)
    assert result.stdout == "sleeping\nwoke\n"
    logged.wait_for_log("No such comm target registered: nobody-registered-this")


def test_a_message_for_a_comm_the_worker_does_not_know_is_logged_not_shown_in_the_cell(
    logged: LoggedKernel,
) -> None:
    # The kernel still counts the comm as open, the worker's comm package does not: what
    # happens when a page's message crosses the worker's comm_close.
    forgotten = last_line(run_ok(logged.kernel, (
        "import comm, json\n"
        "forgotten = comm.create_comm(target_name='forgotten')\n"
        "comm.get_comm_manager().unregister_comm(forgotten)\n"
        "print(json.dumps(forgotten.comm_id))"
    )))

    result = run_while_the_page_talks(
        logged, lambda: logged.page.comm_msg(forgotten, {"late": True}))

    assert_clean(result)
    logged.wait_for_log(f"No such comm: {forgotten}")


FAILING_TARGET = """\
import comm
def failing_target(c, open_msg):
    def on_msg(msg):
        raise ValueError("raised by the program's comm callback")
    c.on_msg(on_msg)
comm.get_comm_manager().register_target("failing", failing_target)
"""


def test_a_comm_callback_that_raises_is_logged_with_its_traceback_not_shown_in_the_cell(
    logged: LoggedKernel,
) -> None:
    run_ok(logged.kernel, FAILING_TARGET)
    page = logged.page
    comm_id = page.comm_open("failing", {})

    result = run_while_the_page_talks(logged, lambda: page.comm_msg(comm_id, {"go": 1}))

    assert_clean(result)
    log = logged.wait_for_log("raised by the program's comm callback")
    assert f"Exception in comm_msg for {comm_id}" in log
    assert "Traceback (most recent call last)" in log
    page.comm_close(comm_id)


def test_a_failure_of_the_relay_itself_is_logged_and_the_relay_keeps_serving(
    logged: LoggedKernel,
) -> None:
    # Injected: the comm manager's own handler raises, past the comm package's catches.
    comm_id = last_line(run_ok(logged.kernel, (
        "import comm, json, time\n"
        "relay_manager = comm.get_comm_manager()\n"
        "def broken_comm_msg(stream, ident, msg):\n"
        "    raise RuntimeError('injected failure of the comm manager')\n"
        "relay_manager.comm_msg = broken_comm_msg\n"
        "unbroken = comm.create_comm(target_name='unbroken')\n"
        "received = []\n"
        "unbroken.on_msg(lambda msg: received.append(msg['content']['data']))\n"
        "print(json.dumps(unbroken.comm_id))"
    )))

    result = run_while_the_page_talks(logged, lambda: logged.page.comm_msg(comm_id, {"n": 1}))

    assert_clean(result)
    log = logged.wait_for_log("injected failure of the comm manager")
    assert f"handling the page's comm_msg for comm {comm_id} failed" in log

    run_ok(logged.kernel, "del relay_manager.comm_msg  # the class's handler again")
    logged.page.comm_msg(comm_id, {"n": 2})
    after = run_ok(logged.kernel, (
        "deadline = time.monotonic() + 10\n"
        "while not received and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        "print(json.dumps(received))"
    ))
    assert last_line(after) == [{"n": 2}]


def test_a_job_reports_its_failure_to_its_on_error_and_the_next_job_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dispatcher = CallbackDispatcher(lambda subscription_id: None)
    reported: list[BaseException] = []
    done = threading.Event()
    dispatcher.submit(lambda: 1 / 0, reported.append)
    dispatcher.submit(done.set)
    assert done.wait(WAIT_S)
    assert [type(error) for error in reported] == [ZeroDivisionError]
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- jupyter.widget.control


def control_reply(page: PageClient, comm_id: str, since: int) -> Message:
    return page.find_comm("comm_msg", comm_id, since,
                          lambda content: content["data"].get("method") == "update_states")


def ask_for_states(page: PageClient, comm_id: str | None = None) -> dict[str, object]:
    """What a loading page's widget manager does: open the control comm (unless given
    one), ask for every widget's state, take the answer, close the comm."""
    mark = page.mark()
    if comm_id is None:
        comm_id = page.comm_open("jupyter.widget.control", {}, metadata=CONTROL_VERSION)
    page.comm_msg(comm_id, {"method": "request_states"})
    data = control_reply(page, comm_id, mark)["content"]["data"]
    # The manager rejects the answer if the kernel closed the comm first.
    assert not [m for m in page.since(mark) if m["msg_type"] == "comm_close"
                and m["content"]["comm_id"] == comm_id]
    page.comm_close(comm_id)
    assert data["buffer_paths"] == []
    return data["states"]


def test_the_control_comm_is_answered_before_ipywidgets_is_imported_and_not_by_importing_it(
    fresh: LoggedKernel,
) -> None:
    mark = fresh.page.mark()
    states: list[dict[str, object]] = []
    result = run_while_the_page_talks(
        fresh, lambda: states.append(ask_for_states(fresh.page)))  # while a cell runs, too

    assert states == [{}]
    assert_clean(result)
    answered = run_ok(fresh.kernel, "import sys\nprint('ipywidgets' in sys.modules)")
    assert answered.stdout == "False\n"
    assert ask_for_states(fresh.page) == {}  # between cells
    assert "No such comm" not in fresh.log()
    assert not [m for m in fresh.page.since(mark) if m["msg_type"] == "error"]

    # Once the program imports ipywidgets, its own target answers, with its widgets.
    model_id = last_line(run_ok(fresh.kernel, (
        "import ipywidgets, json\n"
        "slider = ipywidgets.IntSlider(value=7, description='After import')\n"
        "print(json.dumps(slider.model_id))"
    )))
    states_now = ask_for_states(fresh.page)  # the slider, its layout and its style
    assert {state["model_name"] for state in states_now.values()} == {  # type: ignore[index]
        "IntSliderModel", "LayoutModel", "SliderStyleModel"}
    assert states_now[model_id]["state"]["value"] == 7  # type: ignore[index]


def test_a_control_comm_opened_before_the_import_is_answered_by_ipywidgets_after_it(
    fresh: LoggedKernel,
) -> None:
    page = fresh.page
    comm_id = page.comm_open("jupyter.widget.control", {}, metadata=CONTROL_VERSION)
    # The comm_open is handled before this cell starts (the worker's barrier).
    model_id = last_line(run_ok(fresh.kernel, (
        "import ipywidgets, json\n"
        "early = ipywidgets.Checkbox(value=True)\n"
        "print(json.dumps(early.model_id))"
    )))
    states = ask_for_states(page, comm_id)
    assert states[model_id]["model_name"] == "CheckboxModel"  # type: ignore[index]
    assert states[model_id]["state"]["value"] is True  # type: ignore[index]


def test_a_control_comm_of_another_protocol_version_is_closed_and_logged(
    fresh: LoggedKernel,
) -> None:
    result = open_refused_while_a_cell_runs(fresh, "jupyter.widget.control",
                                            metadata={"version": "2.0.0"})

    assert_clean(result)
    fresh.wait_for_log("incompatible widget control protocol version '2.0.0'")


# ---------------------------------------------------------------- ipympl

FIGURE_CELL = """\
%matplotlib widget
import io, json, time
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([i % 97 for i in range(20000)])
plt.show()
"""
REFRESHES = 20
REFRESH_GAP_S = 0.02
# Saves the figure again and again, well past the last refresh the page sends.
SAVING_CELL = """\
print('sleeping', flush=True)
started = time.monotonic()
while time.monotonic() - started < 2:
    fig.savefig(io.BytesIO(), format='png')
print('saved')
"""


def canvas_events(page: PageClient, comm_id: str, since: int, event: str) -> list[Message]:
    """The canvas's messages to the page of type ``event`` (ipympl sends them as JSON
    text in a custom message)."""
    found = []
    for msg in page.since(since):
        content = msg["content"]
        if msg["msg_type"] != "comm_msg" or content.get("comm_id") != comm_id:
            continue
        text = (content["data"].get("content") or {}).get("data")
        if isinstance(text, str) and json.loads(text).get("type") == event:
            found.append(msg)
    return found


@pytest.mark.parametrize("kernel_name", [KERNEL_NAME, IPYKERNEL_NAME])
def test_ipympl_messages_while_the_figure_is_saved_are_handled_as_in_ipykernel(
    kernel_env: Path, tmp_path: Path, kernel_name: str,
) -> None:
    """A page that has ipympl loaded (after a reload) answers a figure at once with
    "refresh", "send_image_mode" and "initialized", often while the cell is still saving
    the figure's PNG for its display. Every message must get its answer, with no
    traceback anywhere (the bug: AttributeError, 'NoneType' object has no attribute
    'handle_json', in the cell)."""
    with logged_kernel(tmp_path / "kernel.log", kernel_name) as logged:
        page = logged.page
        mark = page.mark()
        shown = run_ok(logged.kernel, FIGURE_CELL)
        assert "error" not in shown.output_types, describe(shown)
        [canvas] = [m["content"]["comm_id"] for m in page.since(mark)
                    if m["msg_type"] == "comm_open"
                    and m["content"]["data"].get("state", {}).get("_model_name")
                    == "MPLCanvasModel"]

        def refresh_repeatedly() -> None:
            for _ in range(REFRESHES):
                page.comm_msg(canvas, {"method": "custom", "content": {"type": "refresh"}})
                time.sleep(REFRESH_GAP_S)

        mark = page.mark()
        result = run_while_the_page_talks(logged, refresh_repeatedly, SAVING_CELL)

        assert_clean(result)
        # ipympl answers each refresh with a "capture_scroll" event.
        deadline = time.monotonic() + WAIT_S
        while len(canvas_events(page, canvas, mark, "capture_scroll")) < REFRESHES:
            assert time.monotonic() < deadline, (
                f"{len(canvas_events(page, canvas, mark, 'capture_scroll'))} of {REFRESHES} "
                "refreshes answered")
            time.sleep(POLL_S)
        errors = [m["content"] for m in page.since(mark) if m["msg_type"] == "error"]
        assert errors == []
        assert "AttributeError" not in logged.log()
