"""Faults on the request path (issue 8): every request the kernel can address gets its
reply, a bad answer to ``input()`` ends the prompt with an error instead of a hang, a
crashed worker reader says so in its exit status, an interrupt ends a cell that sits at
any prompt (``input``, ``getpass``, ``pdb``, ``breakpoint``, ``%debug``), and a failure
inside one of the transport's receive loops does not stop that loop.

Kernel-level tests drive a real kernel through jupyter_client. Messages whose content is
not a JSON object are sent through the client's own channels with the content already
serialised (``Session.serialize`` passes bytes through as they are), so their replies are
filed under their msg_id like any other.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from typing import Any

import own_loop
import pytest
import zmq
import zmq.asyncio
from kernel_helpers import REPLY_TIMEOUT_S, KernelConnection, Message, running_kernel

from wrapperkernel.kernel.kernel import Kernel
from wrapperkernel.kernel.supervisor import describe_exit
from wrapperkernel.wire.codec import Codec
from wrapperkernel.wire.connection import ConnectionInfo
from wrapperkernel.wire.transport import Incoming, Transport
from wrapperkernel.workerlink import frames
from wrapperkernel.workerlink.exits import READER_CRASHED_EXIT

# Content that is valid JSON but not an object, as the bytes that go on the wire.
NOT_OBJECTS = {"list": b"[]", "string": b'"x"', "number": b"3"}


@pytest.fixture
def own_kernel(kernel_env: object) -> Iterator[KernelConnection]:
    """A kernel for one test: a test that fails by leaving a cell stuck must not take the
    other tests with it."""
    with running_kernel() as connection:
        yield connection


def send_raw_content(kernel: KernelConnection, msg_type: str, content: bytes,
                     channel: str = "shell") -> str:
    """Send a signed, well-headed message whose content is ``content`` as it is."""
    msg = kernel.kc.session.msg(msg_type, {})
    msg["content"] = content
    getattr(kernel.kc, f"{channel}_channel").send(msg)
    return msg["header"]["msg_id"]


def statuses(kernel: KernelConnection, msg_id: str) -> list[str]:
    return [m["content"]["execution_state"] for m in kernel.iopub(msg_id)
            if m["msg_type"] == "status"]


def shown_errors(messages: list[Message]) -> list[dict[str, Any]]:
    return [m["content"] for m in messages if m["msg_type"] == "error"]


# ---------------------------------------------------------------------- item 5: requests

NON_OBJECT_REQUESTS = [
    pytest.param("execute_request", "shell", "execute_reply", id="execute"),
    pytest.param("kernel_info_request", "shell", "kernel_info_reply", id="kernel-info"),
    pytest.param("complete_request", "shell", "complete_reply", id="complete"),
    pytest.param("shutdown_request", "control", "shutdown_reply", id="shutdown-on-control"),
]


@pytest.mark.parametrize("content", NOT_OBJECTS.values(), ids=NOT_OBJECTS.keys())
@pytest.mark.parametrize(("msg_type", "channel", "reply_type"), NON_OBJECT_REQUESTS)
def test_request_whose_content_is_not_an_object_gets_a_bad_request_reply(
    kernel: KernelConnection, msg_type: str, channel: str, reply_type: str, content: bytes
) -> None:
    msg_id = send_raw_content(kernel, msg_type, content, channel)

    reply = kernel.reply(msg_id, channel)
    assert reply["msg_type"] == reply_type
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "BadRequest"
    assert "must be a JSON object" in reply["content"]["evalue"]
    assert statuses(kernel, msg_id) == ["busy", "idle"]
    # Nothing ran, and a shutdown_request with bad content did not stop the kernel.
    assert kernel.run("print('still serving')").stdout == "still serving\n"


def test_comm_msg_whose_content_is_not_an_object_is_not_answered(
    kernel: KernelConnection,
) -> None:
    bad = send_raw_content(kernel, "comm_msg", b"[]")
    # Handled in order: once the next request is answered, a reply to bad would be in.
    after = kernel.request("kernel_info_request", {})

    assert after.status == "ok"
    assert kernel.messages("shell", bad) == []


REQUIRED_FIELDS = {
    "execute-code-number": ("execute_request", {"code": 5}, "shell"),
    "execute-without-code": ("execute_request", {}, "shell"),
    "complete-without-code": ("complete_request", {"cursor_pos": 0}, "shell"),
    "complete-cursor-text": ("complete_request", {"code": "zi", "cursor_pos": "two"}, "shell"),
    "inspect-without-code": ("inspect_request", {}, "shell"),
    "history-n-text": ("history_request", {"hist_access_type": "tail", "n": "ten"}, "shell"),
    "is-complete-code-list": ("is_complete_request", {"code": ["x = 1"]}, "shell"),
    "comm-info-target-list": ("comm_info_request", {"target_name": ["x"]}, "shell"),
    "shutdown-restart-text": ("shutdown_request", {"restart": "maybe"}, "control"),
}


@pytest.mark.parametrize(("msg_type", "content", "channel"), REQUIRED_FIELDS.values(),
                         ids=REQUIRED_FIELDS.keys())
def test_missing_or_mistyped_fields_get_an_error_reply_parented_to_the_request(
    kernel: KernelConnection, msg_type: str, content: dict[str, Any], channel: str
) -> None:
    msg_id = kernel.send(msg_type, content, channel)

    reply = kernel.reply(msg_id, channel)
    assert reply["msg_type"] == msg_type.replace("_request", "_reply")
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "BadRequest"
    assert "content." in reply["content"]["evalue"]  # names the field
    assert statuses(kernel, msg_id) == ["busy", "idle"]
    assert kernel.run("print('still serving')").stdout == "still serving\n"


class FakeTransport:
    """Records what the kernel sends and publishes."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []

    def send(self, channel: str, msg_type: str, content: dict[str, Any],
             parent: dict[str, Any] | None, idents: list[bytes] | None = None,
             **_: Any) -> None:
        self.sent.append((channel, msg_type, content, parent or {}))

    def publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None,
                **_: Any) -> None:
        self.send("iopub", msg_type, content, parent)


def incoming(channel: str, msg_type: str, content: Any, msg_id: str = "bad-1") -> Incoming:
    header = {"msg_id": msg_id, "msg_type": msg_type}
    return Incoming(channel, [b"client"], {"header": header, "parent_header": {},
                                          "metadata": {}, "content": content})


@pytest.mark.parametrize("msg_type", ["execute_request", "kernel_info_request",
                                      "interrupt_request"])
def test_non_object_content_request_is_logged_once_by_msg_id(
    caplog: pytest.LogCaptureFixture, msg_type: str
) -> None:
    transport = FakeTransport()
    kernel = Kernel(transport, worker=None)  # type: ignore[arg-type]

    with caplog.at_level(logging.INFO, logger="wrapperkernel"):
        own_loop.run(kernel._dispatch(incoming("shell", msg_type, ["x"])))

    replies = [s for s in transport.sent if s[0] == "shell"]
    assert [(r[1], r[2]["ename"], r[3]["msg_id"]) for r in replies] == [
        (msg_type.replace("_request", "_reply"), "BadRequest", "bad-1")]
    assert [s[2]["execution_state"] for s in transport.sent if s[1] == "status"] == [
        "busy", "idle"]
    assert [r.getMessage() for r in caplog.records if "bad-1" in r.getMessage()] == [
        r.getMessage() for r in caplog.records]
    assert len(caplog.records) == 1


def test_non_object_content_on_a_comm_msg_is_logged_not_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = FakeTransport()
    kernel = Kernel(transport, worker=None)  # type: ignore[arg-type]

    with caplog.at_level(logging.INFO, logger="wrapperkernel"):
        own_loop.run(kernel._dispatch(incoming("shell", "comm_msg", 3, msg_id="comm-1")))

    assert [s for s in transport.sent if s[0] == "shell"] == []
    assert len(caplog.records) == 1
    assert "comm-1" in caplog.records[0].getMessage()


# ---------------------------------------------------------------------- item 6: input_reply

BAD_INPUT_REPLIES = {
    "value-number": (b'{"value": 5}', "content.value"),
    "content-list": (b"[]", "JSON object"),
    "content-string": (b'"abc"', "JSON object"),
}


@pytest.mark.parametrize(("content", "what"), BAD_INPUT_REPLIES.values(),
                         ids=BAD_INPUT_REPLIES.keys())
def test_malformed_input_reply_ends_input_with_an_error_saying_why(
    kernel: KernelConnection, content: bytes, what: str
) -> None:
    assert kernel.run("kept = 'before the prompt'").status == "ok"
    cell = kernel.execute("value = input('name? ')", allow_stdin=True)
    kernel.wait_for("stdin", cell, lambda msgs: len(msgs) > 0, what="input_request")

    send_raw_content(kernel, "input_reply", content, channel="stdin")

    result = kernel.result(cell)
    assert result.status == "error"
    assert result.content["ename"] == "InputReplyError"
    assert "malformed" in result.content["evalue"]
    assert what in result.content["evalue"]
    shown = shown_errors(result.outputs)
    assert [s["ename"] for s in shown] == ["InputReplyError"]
    # The next prompt works, and the namespace is intact.
    again = kernel.execute("value = input('again? ')\nprint(kept, value)", allow_stdin=True)
    kernel.wait_for("stdin", again, lambda msgs: len(msgs) > 0, what="input_request")
    kernel.kc.input("fine")
    assert kernel.result(again).stdout == "before the prompt fine\n"


def test_input_reply_frame_without_error_field_still_decodes() -> None:
    """Frames written before the ``error`` field existed are still valid."""
    frame = frames.KERNEL_TO_WORKER.validate_json(
        b'{"type": "input_reply", "req": "r1", "value": "abc"}')

    assert isinstance(frame, frames.InputReplyFrame)
    assert (frame.value, frame.error) == ("abc", None)


# ---------------------------------------------------------------------- item 7: reader crash

CRASH_THE_READER = """
import wrapperkernel.worker.main as worker_main

def _broken_route(self, frame):
    raise RuntimeError("injected reader failure")

worker_main.Worker._route = _broken_route
"""


def test_reader_crash_exits_with_its_own_status_and_the_reply_names_it(
    own_kernel: KernelConnection,
) -> None:
    assert own_kernel.run(CRASH_THE_READER).status == "ok"

    # The next frame the reader gets (this cell's request) makes it crash.
    crash = own_kernel.run("print('never runs')")

    assert crash.status == "error"
    assert crash.content["ename"] == "WorkerDied"
    evalue = crash.content["evalue"]
    assert f"exited with code {READER_CRASHED_EXIT}" in evalue
    assert "reader thread crashed" in evalue
    assert [s["ename"] for s in shown_errors(crash.outputs)] == ["WorkerDied"]
    after = own_kernel.run("print('fresh worker')")
    assert after.stdout == "fresh worker\n"


def test_describe_exit_explains_the_reader_crash_status() -> None:
    assert READER_CRASHED_EXIT not in (0, 1, 2)
    text = describe_exit(READER_CRASHED_EXIT)
    assert f"exited with code {READER_CRASHED_EXIT}" in text
    assert "reader thread crashed" in text
    assert describe_exit(3) == "the worker process exited with code 3"


# ---------------------------------------------------------------------- item 8: interrupts

PROMPTS = {
    "input": "value = input('name? ')\nafter = 1",
    "getpass": "import getpass\nvalue = getpass.getpass('secret? ')\nafter = 1",
    "pdb-set-trace": "import pdb\npdb.set_trace()\nafter = 1",
    "breakpoint": "breakpoint()\nafter = 1",
    "post-mortem-debug": "%debug",
}


def interrupt(kernel: KernelConnection, mode: str) -> None:
    if mode == "signal":
        kernel.km.interrupt_kernel()  # interrupt_mode "signal": SIGINT to the kernel
    else:
        reply = kernel.request("interrupt_request", {}, channel="control").reply
        assert reply["content"]["status"] == "ok"


# The prompts that are a debugger's: IPython's, whichever way the cell entered it.
DEBUGGER_PROMPTS = {"pdb-set-trace", "breakpoint", "post-mortem-debug"}


def wait_for_prompt(kernel: KernelConnection, cell: str) -> str:
    """Wait for the cell's first input_request; returns its prompt."""
    asked = kernel.wait_for("stdin", cell, lambda msgs: len(msgs) > 0, what="input_request")
    return asked[0]["content"]["prompt"]


@pytest.mark.parametrize("mode", ["signal", "message"])
@pytest.mark.parametrize("prompt", PROMPTS.keys())
def test_interrupt_at_a_prompt_ends_the_cell_and_keeps_the_namespace(
    own_kernel: KernelConnection, prompt: str, mode: str
) -> None:
    assert own_kernel.run("survivor = 'set before the cell'").status == "ok"
    if prompt == "post-mortem-debug":
        assert own_kernel.run("1 / 0").content["ename"] == "ZeroDivisionError"
    cell = own_kernel.execute(PROMPTS[prompt], allow_stdin=True)
    asked = wait_for_prompt(own_kernel, cell)
    if prompt in DEBUGGER_PROMPTS:
        assert asked == "ipdb> "

    interrupt(own_kernel, mode)

    result = own_kernel.result(cell, timeout=REPLY_TIMEOUT_S)
    assert result.status == "error"
    assert result.content["ename"] == "KeyboardInterrupt"
    shown = shown_errors(result.outputs)
    assert [s["ename"] for s in shown] == ["KeyboardInterrupt"]
    assert "KeyboardInterrupt" in "".join(shown[0]["traceback"])
    after = own_kernel.run("print(survivor, 'after' in dir())")
    assert after.status == "ok"
    assert after.stdout == "set before the cell False\n"


def test_interrupt_after_continuing_from_pdb_still_ends_later_cells(
    own_kernel: KernelConnection,
) -> None:
    """pdb's ``continue`` installs pdb's own SIGINT handler; it must not outlive the cell
    and turn the next interrupt into a debugger prompt."""
    cell = own_kernel.execute("import pdb\npdb.set_trace()\nafter = 1", allow_stdin=True)
    wait_for_prompt(own_kernel, cell)
    own_kernel.kc.input("c")
    assert own_kernel.result(cell).status == "ok"

    sleeper = own_kernel.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(30)",
                                 allow_stdin=True)
    own_kernel.wait_for_output(sleeper, "sleeping")
    interrupt(own_kernel, "signal")

    result = own_kernel.result(sleeper)
    assert result.content["ename"] == "KeyboardInterrupt"
    assert own_kernel.messages("stdin", sleeper) == []


def test_interrupt_at_ipdbs_prompt_ends_the_cell_and_the_next_breakpoint_prompts_again(
    own_kernel: KernelConnection,
) -> None:
    cell = own_kernel.execute("def stop_here():\n    breakpoint()\n    return 1\nstop_here()",
                              allow_stdin=True)
    assert wait_for_prompt(own_kernel, cell) == "ipdb> "

    interrupt(own_kernel, "message")

    result = own_kernel.result(cell)
    assert result.content["ename"] == "KeyboardInterrupt"
    normal = own_kernel.run("print('an ordinary cell')", allow_stdin=True)
    assert normal.status == "ok"
    assert normal.stdout == "an ordinary cell\n"
    assert own_kernel.messages("stdin", normal.reply["parent_header"]["msg_id"]) == []
    again = own_kernel.execute("breakpoint()\nafter = 'continued'", allow_stdin=True)
    assert wait_for_prompt(own_kernel, again) == "ipdb> "
    own_kernel.kc.input("c")
    assert own_kernel.result(again).status == "ok"
    assert own_kernel.run("print(after)").stdout == "continued\n"


# ---------------------------------------------------------------------- transport loops


def free_ports(count: int) -> list[int]:
    holders = [socket.socket() for _ in range(count)]
    try:
        for holder in holders:
            holder.bind(("127.0.0.1", 0))
        return [holder.getsockname()[1] for holder in holders]
    finally:
        for holder in holders:
            holder.close()


def bound_transport() -> Transport:
    shell, iopub, stdin, control, hb = free_ports(5)
    info = ConnectionInfo(shell_port=shell, iopub_port=iopub, stdin_port=stdin,
                          control_port=control, hb_port=hb, key="secret")
    transport = Transport(info, Codec(key=b"secret"))
    transport.bind()
    return transport


def fail_once(real: Any) -> Any:
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    return wrapper


async def _serve_survives_a_failed_message() -> list[str]:
    transport = bound_transport()
    handled: list[str] = []
    handled_one = asyncio.Event()

    async def handler(request: Incoming) -> None:
        handled.append(request.msg_type)
        handled_one.set()

    transport.codec.parse = fail_once(transport.codec.parse)  # type: ignore[method-assign]
    task = asyncio.create_task(transport.serve("shell", handler))
    client = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    client.linger = 0
    client.connect(transport.info.address(transport.info.shell_port))
    session = transport.codec.session  # a client signing with the same key
    try:
        for msg_type in ("first_request", "second_request"):
            await client.send_multipart(session.serialize(session.msg(msg_type, {})))
        await asyncio.wait_for(handled_one.wait(), REPLY_TIMEOUT_S)
    except asyncio.TimeoutError:
        pass  # the assertion on what was handled says what went wrong
    finally:
        task.cancel()
        client.close()
        transport.close()
    return handled


def test_serve_loop_keeps_serving_after_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="wrapperkernel.wire"):
        handled = own_loop.run(_serve_survives_a_failed_message())

    assert handled == ["second_request"]
    logged = [r for r in caplog.records if "injected failure" in r.getMessage()
              or (r.exc_info and "injected failure" in str(r.exc_info[1]))]
    assert len(logged) == 1
    assert logged[0].exc_info is not None  # with the traceback


async def _subscriptions_survive_a_failed_welcome() -> list[str]:
    transport = bound_transport()
    transport.publish = fail_once(transport.publish)  # type: ignore[method-assign]
    task = asyncio.create_task(transport.serve_subscriptions())
    context = zmq.asyncio.Context.instance()
    welcomes: list[str] = []
    subscribers = []
    try:
        for _ in range(2):
            sub = context.socket(zmq.SUB)
            sub.linger = 0
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(transport.info.address(transport.info.iopub_port))
            subscribers.append(sub)
        # The first subscription's welcome fails; the second subscriber gets its welcome.
        try:
            parts = await asyncio.wait_for(subscribers[-1].recv_multipart(), REPLY_TIMEOUT_S)
        except asyncio.TimeoutError:
            return welcomes
        _, parts = transport.codec.session.feed_identities(parts)
        welcomes.append(transport.codec.session.deserialize(parts)["header"]["msg_type"])
    finally:
        task.cancel()
        for sub in subscribers:
            sub.close()
        transport.close()
    return welcomes


def test_subscription_loop_keeps_serving_after_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="wrapperkernel.wire"):
        welcomes = own_loop.run(_subscriptions_survive_a_failed_welcome())

    assert welcomes == ["iopub_welcome"]
    assert any(r.exc_info is not None for r in caplog.records)
