"""Kernel subshells (JEP 91): code that runs in the same program while a cell runs.

ipykernel's own test_subshells.py runs against this kernel too (tests/ipykernel_peer);
these tests cover what it does not: output, displays and input() of a subshell go to
its own request while the main shell's cell runs, an interrupt stops only the main
shell, a worker crash fails every shell's request and leaves no subshells, a deleted
subshell finishes what it runs, and the address channel works from a subshell.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import own_loop
import pytest
from comms_fixtures import connected_page_kernel, describe
from kernel_helpers import KernelConnection, Result, running_kernel
from test_debugger import worker_of

from wrapperkernel.kernel.supervisor import WorkerSupervisor
from wrapperkernel.workerlink import frames

WAIT_S = 30.0


class Shells:
    """A client that speaks to the main shell and to subshells."""

    def __init__(self, conn: KernelConnection) -> None:
        self.conn = conn

    def control(self, msg_type: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.conn.request(msg_type, content or {}, channel="control").content

    def create(self) -> str:
        content = self.control("create_subshell_request")
        assert content["status"] == "ok", content
        return content["subshell_id"]

    def send(self, code: str, subshell_id: str | None = None, **content: Any) -> str:
        msg = self.conn.kc.session.msg("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": True, "stop_on_error": True, **content})
        msg["header"]["subshell_id"] = subshell_id
        self.conn.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def run(self, code: str, subshell_id: str | None = None) -> Result:
        return self.conn.result(self.send(code, subshell_id), timeout=WAIT_S)


@pytest.fixture
def shells(kernel_env: Path) -> Iterator[Shells]:
    with running_kernel() as conn:
        yield Shells(conn)


def test_a_subshell_runs_while_the_main_cell_runs_and_its_output_is_its_own(
        shells: Shells) -> None:
    sub = shells.create()
    main = shells.send("import time\nprint('main started', flush=True)\n"
                       "while not globals().get('stop'):\n    time.sleep(0.01)\n"
                       "print('main saw', stop)")
    shells.conn.wait_for_output(main, "main started")
    result = shells.run("print('from the subshell')\nfrom IPython.display import display\n"
                        "display({'text/plain': 'shown'}, raw=True)\nstop = 'go'\n21 * 2", sub)
    assert result.status == "ok", describe(result)
    assert result.stdout == "from the subshell\n"
    assert [m["content"]["data"]["text/plain"] for m in result.outputs
            if m["msg_type"] in ("display_data", "execute_result")] == ["shown", "42"]
    assert all(m["parent_header"].get("subshell_id") == sub for m in result.iopub)
    finished = shells.conn.result(main, timeout=WAIT_S)
    assert finished.status == "ok"
    # The main cell's output has nothing of the subshell's, and the loop saw its change.
    assert finished.stdout == "main started\nmain saw go\n"


def test_input_in_a_subshell_asks_for_its_own_request(shells: Shells) -> None:
    sub = shells.create()
    main = shells.send("import time\ntime.sleep(3)")
    asking = shells.send("name = input('who? ')\nprint('hello', name)", sub)
    request = shells.conn.kc.get_stdin_msg(timeout=WAIT_S)
    assert request["msg_type"] == "input_request"
    assert request["parent_header"]["msg_id"] == asking
    assert request["content"]["prompt"] == "who? "
    reply = shells.conn.kc.session.msg("input_reply", {"value": "Ada"})
    reply["header"]["subshell_id"] = sub
    shells.conn.kc.stdin_channel.send(reply)
    assert shells.conn.result(asking, timeout=WAIT_S).stdout == "hello Ada\n"
    assert shells.conn.replies(main) == []  # the main cell still sleeps
    assert shells.conn.result(main, timeout=WAIT_S).status == "ok"


def test_an_interrupt_stops_the_main_shell_and_not_a_subshell(shells: Shells) -> None:
    sub = shells.create()
    main = shells.send("import time\nprint('main', flush=True)\ntime.sleep(60)")
    side = shells.send("import time\nprint('side', flush=True)\ntime.sleep(1.5)\nprint('side done')",
                       sub)
    shells.conn.wait_for_output(main, "main")
    shells.conn.wait_for_output(side, "side")
    shells.control("interrupt_request")
    assert shells.conn.result(main, timeout=WAIT_S).content["ename"] == "KeyboardInterrupt"
    side_result = shells.conn.result(side, timeout=WAIT_S)
    assert side_result.status == "ok", describe(side_result)
    assert side_result.stdout == "side\nside done\n"


def test_stop_on_error_aborts_only_the_failing_shells_queue(shells: Shells) -> None:
    sub = shells.create()
    failing = shells.send("import time\ntime.sleep(0.5)\n1 / 0", sub)
    behind = shells.send("print('never')", sub)
    main = shells.send("import time\ntime.sleep(1)\nprint('main ok')")
    assert shells.conn.result(failing, timeout=WAIT_S).content["ename"] == "ZeroDivisionError"
    assert shells.conn.reply(behind, timeout=WAIT_S)["content"]["status"] == "aborted"
    assert shells.conn.result(main, timeout=WAIT_S).stdout == "main ok\n"
    assert shells.run("print('again')", sub).stdout == "again\n"  # the abort is over


def test_a_deleted_subshell_finishes_its_request_and_refuses_the_queued_ones(
        shells: Shells) -> None:
    sub = shells.create()
    running = shells.send("import time\nprint('running', flush=True)\ntime.sleep(1)\nprint('done')",
                          sub)
    queued = shells.send("print('queued')", sub)
    shells.conn.wait_for_output(running, "running")
    assert shells.control("delete_subshell_request", {"subshell_id": sub})["status"] == "ok"
    assert shells.control("list_subshell_request")["subshell_id"] == []
    refused = shells.conn.reply(queued, timeout=WAIT_S)["content"]
    assert refused["status"] == "error" and "was deleted" in refused["evalue"]
    assert shells.conn.result(running, timeout=WAIT_S).stdout == "running\ndone\n"
    # Its thread is gone once its request is.
    deadline = time.monotonic() + 10
    while "subshell-" in shells.run("import threading\nprint([t.name for t in threading.enumerate()])").stdout:
        assert time.monotonic() < deadline, "the deleted subshell's thread did not end"
        time.sleep(0.2)


def test_a_worker_crash_fails_every_shells_request_and_leaves_no_subshells(
        shells: Shells) -> None:
    sub = shells.create()
    main = shells.send("import time\nprint('main', flush=True)\ntime.sleep(60)")
    side = shells.send("import time\nprint('side', flush=True)\ntime.sleep(60)", sub)
    queued = shells.send("print('queued')", sub)
    shells.conn.wait_for_output(main, "main")
    shells.conn.wait_for_output(side, "side")
    worker_of(shells.conn).send_signal(signal.SIGKILL)
    for msg_id in (main, side, queued):
        content = shells.conn.reply(msg_id, timeout=WAIT_S)["content"]
        assert content["status"] == "error" and content["ename"] == "WorkerDied", content
    assert shells.control("list_subshell_request")["subshell_id"] == []
    gone = shells.conn.reply(shells.send("1", sub), timeout=WAIT_S)["content"]
    assert gone["ename"] == "UnknownSubshellError"
    assert gone["evalue"] == f"Unknown subshell_id {sub!r}"
    assert shells.run("print('fresh')").stdout == "fresh\n"


def test_a_malformed_delete_gets_an_error_naming_the_field(shells: Shells) -> None:
    content = shells.control("delete_subshell_request", {})
    assert content["status"] == "error" and "subshell_id" in content["evalue"]
    assert shells.run("print(1)").stdout == "1\n"


def test_the_address_channel_works_from_a_subshell_while_the_main_cell_runs() -> None:
    with connected_page_kernel() as k:
        shells = Shells(k.conn)
        sub = shells.create()
        main = shells.send("import time\nprint('busy', flush=True)\n"
                           "while not globals().get('heard'):\n    time.sleep(0.01)\n"
                           "print('main saw', heard)")
        k.conn.wait_for_output(main, "busy")
        since = k.mark()
        subscribed = shells.run(
            "heard = []\n"
            "def on_knob(address, value):\n"
            "    heard.append(value)\n"
            "knob = comms.subscribe('/knob', on_knob)\n"
            "comms.send('/from/subshell', 5)\n"
            "comms.sync()", sub)
        assert subscribed.status == "ok", describe(subscribed)
        assert k.wait_values("/from/subshell", 1, since) == [5]
        k.page.send("/knob", 8)
        assert k.conn.result(main, timeout=WAIT_S).stdout == "busy\nmain saw [8]\n"


def test_a_widget_made_in_a_subshell_follows_the_page_while_the_main_cell_runs() -> None:
    with connected_page_kernel() as k:
        shells = Shells(k.conn)
        sub = shells.create()
        main = shells.send("import time\nprint('busy', flush=True)\n"
                           "while not globals().get('done'):\n    time.sleep(0.01)")
        k.conn.wait_for_output(main, "busy")
        shown = shells.run("from wrapperkernel import widgets\n"
                           "knob = widgets.Slider(0, 10, value=2, label='Knob')\nknob.display()\n"
                           "print(knob.address)", sub)
        assert shown.status == "ok", describe(shown)
        assert any(m["msg_type"] == "display_data" for m in shown.outputs)  # in the subshell's output
        k.page.send(shown.stdout.strip(), 7)
        deadline = time.monotonic() + WAIT_S
        while shells.run("print(knob.value)", sub).stdout != "7\n":
            assert time.monotonic() < deadline, "the subshell's slider never got the page's 7"
            time.sleep(0.1)
        assert shells.conn.replies(main) == []  # all of it while the main cell ran
        shells.run("done = True", sub)
        assert shells.conn.result(main, timeout=WAIT_S).status == "ok"


def test_execution_counts_and_history_are_shared_as_in_ipykernel(shells: Shells) -> None:
    sub = shells.create()
    counts = [shells.run(code, shell).content["execution_count"]
              for code, shell in (("a = 1", None), ("b = 2", sub), ("c = 3", None))]
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2]
    history = shells.conn.request("history_request", {"hist_access_type": "tail", "n": 3,
                                                       "output": False, "raw": True}).content
    assert [entry[2] for entry in history["history"]] == ["a = 1", "b = 2", "c = 3"]


def test_a_worker_answers_a_request_for_a_subshell_it_does_not_have() -> None:
    """The kernel never sends one (it forgets its subshells with their worker), but a
    request that finds no subshell must still be answered: its queue would wait for ever."""
    async def scenario() -> Any:
        replies: asyncio.Queue[Any] = asyncio.Queue()
        ready = asyncio.Event()

        def on_frame(frame: Any) -> None:
            if frame.type == "ready":
                ready.set()
            elif frame.type == "execute_reply":
                replies.put_nowait(frame)

        supervisor = WorkerSupervisor(on_frame=on_frame, on_exit=lambda reason: None)
        await supervisor.start()
        try:
            await asyncio.wait_for(ready.wait(), 60)
            supervisor.send(frames.ExecuteFrame(req="r1", subshell="nobody", code="1"))
            return await asyncio.wait_for(replies.get(), 30)
        finally:
            await supervisor.stop()

    reply = own_loop.run(scenario())
    assert reply.req == "r1" and reply.status == "error"
    assert reply.ename == "LookupError" and "no subshell 'nobody'" in reply.evalue
