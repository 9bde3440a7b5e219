"""The visual debugger: debug_request relayed to debugpy's pydevd in the worker.

What a frontend's debugger sees: DAP responses in debug_reply, DAP events in
debug_event, a cell stopped at a breakpoint set in its cell file, its locals, and a
kernel that keeps serving meanwhile. ipykernel's own test_debugger.py runs against this
kernel too (tests/ipykernel_peer); these tests cover what it does not: the page and
the program talking while the cell is paused, the worker's threads hidden, an
interrupt at a breakpoint, a worker replaced in the middle of a session, and a
connection to the debugger's port that is not the worker's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import own_loop
import psutil
import pytest
from comms_fixtures import connected_page_kernel, describe
from hypothesis import given
from hypothesis import strategies as st
from kernel_helpers import KernelConnection, running_kernel

from wrapperkernel import cellfiles
from wrapperkernel.kernel import dap
from wrapperkernel.kernel.debugger import Debugger
from wrapperkernel.workerlink import frames

DAP_TIMEOUT_S = 30.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
INITIALIZE = {"clientID": "test", "clientName": "test", "adapterID": "", "pathFormat": "path",
              "linesStartAt1": True, "columnsStartAt1": True, "supportsVariableType": True,
              "supportsVariablePaging": True, "supportsRunInTerminalRequest": True,
              "locale": "en"}

LOOP_CELL = textwrap.dedent("""\
    def step(n):
        doubled = n * 2
        return doubled

    total = 0
    for n in range(3):
        total += step(n)
    print("total", total)""")
BREAK_LINE = 2  # doubled = n * 2


class Dap:
    """A frontend's debugger: DAP requests as debug_request on control."""

    def __init__(self, conn: KernelConnection) -> None:
        self.conn = conn
        self.seq = 0
        self.seen: set[str] = set()

    def request(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float = DAP_TIMEOUT_S) -> dict[str, Any]:
        self.seq += 1
        msg_id = self.conn.send("debug_request", {"type": "request", "seq": self.seq,
                                                  "command": command,
                                                  "arguments": arguments or {}}, channel="control")
        reply = self.conn.reply(msg_id, channel="control", timeout=timeout)
        assert reply["msg_type"] == "debug_reply"
        assert reply["content"]["request_seq"] == self.seq, reply["content"]
        return reply["content"]

    def ok(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.request(command, arguments)
        assert response["success"], response
        return response

    def start(self) -> None:
        self.ok("initialize", INITIALIZE)
        self.ok("attach")

    def break_in(self, code: str, line: int) -> str:
        path = self.ok("dumpCell", {"code": code})["body"]["sourcePath"]
        placed = self.ok("setBreakpoints", {"source": {"path": path},
                                            "breakpoints": [{"line": line}]})
        assert placed["body"]["breakpoints"][0]["verified"], placed
        self.ok("configurationDone")
        return path

    def next_event(self, name: str, timeout: float = DAP_TIMEOUT_S) -> dict[str, Any]:
        """The first debug_event ``name`` not returned before."""
        def match(msg: dict[str, Any]) -> bool:
            return (msg["msg_type"] == "debug_event" and msg["content"].get("event") == name
                    and msg["header"]["msg_id"] not in self.seen)

        msg = self.conn.find("iopub", match, timeout=timeout, what=f"debug_event {name!r}")
        self.seen.add(msg["header"]["msg_id"])
        return msg["content"]

    def top_frame(self, thread_id: int) -> dict[str, Any]:
        return self.ok("stackTrace", {"threadId": thread_id})["body"]["stackFrames"][0]

    def locals_of(self, frame_id: int) -> dict[str, str]:
        scopes = self.ok("scopes", {"frameId": frame_id})["body"]["scopes"]
        reference = next(s["variablesReference"] for s in scopes if s["name"] == "Locals")
        variables = self.ok("variables", {"variablesReference": reference})["body"]["variables"]
        return {v["name"]: v["value"] for v in variables}


@pytest.fixture
def debugged(kernel_env: Path) -> Iterator[tuple[KernelConnection, Dap]]:
    with running_kernel() as conn:
        yield conn, Dap(conn)


def plain(traceback: list[str]) -> str:
    return ANSI.sub("", "\n".join(traceback))


def worker_of(conn: KernelConnection) -> psutil.Process:
    kernel = psutil.Process(conn.km.provisioner.process.pid)  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = kernel.children()
        if children:
            return children[0]
        time.sleep(0.1)
    raise AssertionError("the kernel has no worker process")


# ---------------------------------------------------------------- advertised


def test_kernel_info_and_the_kernelspec_advertise_the_debugger(kernel_env: Path) -> None:
    spec = json.loads((kernel_env / "share/jupyter/kernels/wrapperkernel/kernel.json").read_text())
    assert spec["metadata"]["debugger"] is True  # JupyterLab enables its bug icon from this
    with running_kernel() as conn:
        content = conn.request("kernel_info_request", {}).content
        assert "debugger" in content["supported_features"]
        assert content["debugger"] is True


def test_a_request_before_initialize_gets_a_reason_and_the_kernel_serves_on(
        debugged: tuple[KernelConnection, Dap]) -> None:
    conn, debugger = debugged
    response = debugger.request("stackTrace", {"threadId": 1})
    assert response["success"] is False
    assert "send 'initialize' and 'attach' first" in response["message"]
    # Not a DAP request at all: an error reply naming the field, and the kernel goes on.
    msg_id = conn.send("debug_request", {"type": "request", "command": "initialize"},
                       channel="control")
    reply = conn.reply(msg_id, channel="control")
    assert reply["content"]["status"] == "error"
    assert "seq" in reply["content"]["evalue"]
    assert conn.run("1 + 1").status == "ok"


# ---------------------------------------------------------------- stopped at a breakpoint


def test_a_stopped_cell_shows_its_locals_while_the_page_and_the_program_keep_talking() -> None:
    with connected_page_kernel() as k:
        debugger = Dap(k.conn)
        k.run_ok(
            "heard = []\n"
            "def on_knob(address, value):\n"
            "    heard.append(value)\n"
            "    comms.send('/knob/echo', value)\n"
            "knob = comms.subscribe('/knob', on_knob)")
        debugger.start()
        debugger.break_in(LOOP_CELL, BREAK_LINE)
        cell = k.conn.execute(LOOP_CELL)
        stopped = debugger.next_event("stopped")["body"]
        assert stopped["reason"] == "breakpoint"
        frame = debugger.top_frame(stopped["threadId"])
        assert frame["line"] == BREAK_LINE
        assert frame["source"]["path"] == cellfiles.file_name(LOOP_CELL, _cell_directory(debugger))
        assert debugger.locals_of(frame["id"]) == {"n": "0"}

        # Paused, the program still hears the page: the callback runs and answers.
        since = k.mark()
        k.page.send("/knob", 7)
        assert k.wait_values("/knob/echo", 1, since) == [7]
        assert k.conn.replies(cell) == []  # the cell is still stopped

        # Only the user's thread: the reader, dispatcher, flushers are hidden.
        threads = debugger.ok("threads")["body"]["threads"]
        assert [t["name"] for t in threads] == ["MainThread"]
        info = debugger.ok("debugInfo")["body"]
        assert info["stoppedThreads"] == [stopped["threadId"]]

        debugger.ok("next", {"threadId": stopped["threadId"]})
        assert debugger.next_event("stopped")["body"]["reason"] == "step"
        assert debugger.top_frame(stopped["threadId"])["line"] == BREAK_LINE + 1
        debugger.ok("setBreakpoints", {"source": {"path": frame["source"]["path"]},
                                       "breakpoints": []})
        debugger.ok("continue", {"threadId": stopped["threadId"]})
        result = k.conn.result(cell, timeout=DAP_TIMEOUT_S)
        assert result.status == "ok", describe(result)
        assert result.stdout == "total 6\n"
        assert debugger.ok("debugInfo")["body"]["stoppedThreads"] == []


def _cell_directory(debugger: Dap) -> str:
    return debugger.ok("debugInfo")["body"]["tmpFilePrefix"].rstrip(os.sep)


def test_debug_requests_are_answered_while_a_cell_runs(
        debugged: tuple[KernelConnection, Dap]) -> None:
    conn, debugger = debugged
    assert conn.run("greeting = 'hello'\nnumbers = [1, 2]").status == "ok"
    running = conn.execute("import time\nprint('running', flush=True)\ntime.sleep(60)")
    conn.wait_for_output(running, "running")
    debugger.start()  # debugpy starts in the worker while its main thread is busy
    variables = {v["name"]: v for v in debugger.ok("inspectVariables")["body"]["variables"]}
    assert variables["greeting"]["value"] == "'hello'"
    assert "In" not in variables and "_ih" not in variables  # IPython's bookkeeping hidden
    children = debugger.ok("variables", {
        "variablesReference": variables["numbers"]["variablesReference"]})["body"]["variables"]
    assert [(c["name"], c["value"]) for c in children] == [("0", "1"), ("1", "2")]
    rich = debugger.ok("richInspectVariables", {"variableName": "greeting"})
    assert rich["body"]["data"] == {"text/plain": "'hello'"}
    assert conn.replies(running) == []
    conn.request("interrupt_request", {}, channel="control")
    assert conn.result(running).content["ename"] == "KeyboardInterrupt"


def test_an_interrupt_at_a_breakpoint_ends_the_cell_and_the_session_goes_on(
        debugged: tuple[KernelConnection, Dap]) -> None:
    conn, debugger = debugged
    debugger.start()
    debugger.break_in(LOOP_CELL, BREAK_LINE)
    cell = conn.execute(LOOP_CELL)
    thread = debugger.next_event("stopped")["body"]["threadId"]
    conn.request("interrupt_request", {}, channel="control")
    result = conn.result(cell, timeout=DAP_TIMEOUT_S)
    assert result.content["ename"] == "KeyboardInterrupt"
    shown = plain(result.content["traceback"])
    assert "doubled = n * 2" in shown  # the traceback ends at the user's line ...
    assert "pydevd" not in shown  # ... not in the debugger's wait loop
    assert debugger.next_event("continued")["body"]["allThreadsContinued"] is True
    assert debugger.ok("debugInfo")["body"]["stoppedThreads"] == []

    # The session survives: the same breakpoint stops the next run of the cell.
    again = conn.execute(LOOP_CELL)
    stopped = debugger.next_event("stopped")["body"]
    assert stopped["reason"] == "breakpoint" and stopped["threadId"] == thread
    debugger.ok("disconnect", {"restart": False, "terminateDebuggee": False})
    assert conn.result(again, timeout=DAP_TIMEOUT_S).stdout == "total 6\n"


def test_a_new_worker_gets_the_session_back(debugged: tuple[KernelConnection, Dap]) -> None:
    conn, debugger = debugged
    debugger.start()
    path = debugger.break_in(LOOP_CELL, BREAK_LINE)
    cell = conn.execute(LOOP_CELL)
    debugger.next_event("stopped")
    # The worker dies while its cell is stopped: the frontend must not wait for it.
    worker_of(conn).send_signal(signal.SIGKILL)
    assert conn.result(cell, timeout=DAP_TIMEOUT_S).content["ename"] == "WorkerDied"
    assert debugger.next_event("continued")["body"]["allThreadsContinued"] is True
    info = debugger.ok("debugInfo")["body"]
    assert info["isStarted"] is True and info["stoppedThreads"] == []
    assert info["breakpoints"] == [{"source": path, "breakpoints": [{"line": BREAK_LINE}]}]

    # The new worker has the breakpoints of the cell files: the cell stops again.
    again = conn.execute(LOOP_CELL)
    stopped = debugger.next_event("stopped")["body"]
    assert stopped["reason"] == "breakpoint"
    assert debugger.top_frame(stopped["threadId"])["source"]["path"] == path
    debugger.ok("continue", {"threadId": stopped["threadId"]})
    debugger.next_event("stopped")  # the loop's second turn
    debugger.ok("disconnect", {"restart": False, "terminateDebuggee": False})
    assert conn.result(again, timeout=DAP_TIMEOUT_S).stdout == "total 6\n"


def test_cells_are_compiled_as_their_cell_files_and_tracebacks_still_name_the_cell(
        debugged: tuple[KernelConnection, Dap]) -> None:
    conn, debugger = debugged
    code = "import inspect\nprint(inspect.currentframe().f_code.co_filename)"
    printed = conn.run(code).stdout.strip()
    assert printed == cellfiles.file_name(code, _cell_directory(debugger))
    failed = conn.run("1 / 0")
    assert "Cell In[" in plain(failed.content["traceback"])
    assert printed not in plain(failed.content["traceback"])


def test_the_cell_files_go_with_the_kernel(kernel_env: Path) -> None:
    with running_kernel() as conn:
        debugger = Dap(conn)
        path = Path(debugger.ok("dumpCell", {"code": "x = 1\n"})["body"]["sourcePath"])
        assert path.read_text() == "x = 1\n"
    assert not path.parent.exists()  # a clean shutdown leaves nothing in $TMPDIR


# ---------------------------------------------------------------- the debugger's port


class FakePydevd:
    """A process that connects to the debugger's port and answers DAP like pydevd."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.writer: asyncio.StreamWriter | None = None
        self.closed_by_kernel = asyncio.Event()

    async def connect(self, port: int) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        asyncio.create_task(self._serve(reader))

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        decoder = dap.DapDecoder()
        while data := await reader.read(65536):
            for message in decoder.feed(data):
                body: dict[str, Any] = {}
                if message["command"] == "pydevdAuthorize":
                    body = {"clientAccessToken": self.token}
                assert self.writer is not None
                self.writer.write(dap.encode({"type": "response", "seq": 1, "success": True,
                                              "request_seq": message["seq"],
                                              "command": message["command"], "body": body}))
        self.closed_by_kernel.set()


def test_a_connection_to_the_debuggers_port_that_is_not_the_worker_is_closed() -> None:
    async def scenario() -> None:
        impostor: FakePydevd | None = None
        worker: FakePydevd | None = None

        def send_to_worker(frame: frames.Frame) -> None:
            if isinstance(frame, frames.DebuggerStartFrame):
                async def race() -> None:
                    nonlocal impostor, worker
                    # Another local process reaches the port first; it cannot know the token.
                    impostor = FakePydevd("a guess")
                    await impostor.connect(frame.port)
                    await asyncio.sleep(0.2)
                    worker = FakePydevd(frame.client_token)
                    await worker.connect(frame.port)
                asyncio.create_task(race())

        debugger = Debugger(send_to_worker, lambda event, parent: None, "/nonexistent")
        response = await asyncio.wait_for(debugger.handle(
            {"type": "request", "seq": 1, "command": "initialize", "arguments": {}}, {}), 10)
        assert response["success"] is True and response["request_seq"] == 1
        assert impostor is not None and worker is not None
        await asyncio.wait_for(impostor.closed_by_kernel.wait(), 5)
        assert not worker.closed_by_kernel.is_set()

    own_loop.run(scenario())


def test_a_worker_that_cannot_start_debugpy_makes_initialize_fail_with_its_reason() -> None:
    async def scenario() -> None:
        debugger: Debugger

        def send_to_worker(frame: frames.Frame) -> None:
            if isinstance(frame, frames.DebuggerStartFrame):
                asyncio.get_running_loop().call_soon(debugger.on_worker_frame, frames.DebuggerStartedFrame(
                    error="debugpy could not start in the worker: ModuleNotFoundError: no debugpy"))

        debugger = Debugger(send_to_worker, lambda event, parent: None, "/nonexistent")
        response = await asyncio.wait_for(debugger.handle(
            {"type": "request", "seq": 4, "command": "initialize", "arguments": {}}, {}), 10)
        assert response["success"] is False
        assert "ModuleNotFoundError: no debugpy" in response["message"]
        assert debugger.started is False

    own_loop.run(scenario())


# ---------------------------------------------------------------- pure parts


@given(st.text())
def test_cell_file_names_use_the_hash_ipykernel_and_jupyterlab_use(code: str) -> None:
    from ipykernel.compiler import murmur2_x86

    name = cellfiles.file_name(code, "/cells")
    assert name == f"/cells/{murmur2_x86(code, cellfiles.HASH_SEED)}.py"


@pytest.mark.parametrize("setting", ["writable", "missing", "read-only", "unset"])
def test_the_cell_folder_is_under_the_folder_tempfile_would_choose(
        setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    writable = tmp_path / "writable"
    writable.mkdir()
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)  # (root may write there anyway: so may tempfile)
    chosen = {"writable": writable, "missing": tmp_path / "missing", "read-only": read_only}
    if setting in chosen:
        monkeypatch.setenv("TMPDIR", str(chosen[setting]))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches its choice
    expected = tempfile.gettempdir()
    assert cellfiles.temporary_root() == expected
    assert cellfiles.directory_for(123) == os.path.join(expected, "wrapperkernel_123")
    if setting == "writable":
        assert expected == str(writable)


@given(st.lists(st.dictionaries(st.text(), st.integers() | st.text()), min_size=1, max_size=5),
       st.integers(min_value=1, max_value=50))
def test_dap_framing_decodes_messages_in_any_chunking(messages: list[dict[str, Any]],
                                                      chunk: int) -> None:
    data = b"".join(dap.encode(message) for message in messages)
    decoder = dap.DapDecoder()
    decoded = []
    for start in range(0, len(data), chunk):
        decoded += decoder.feed(data[start:start + chunk])
    assert decoded == messages


@pytest.mark.parametrize("data", [b"Content-Length: x\r\n\r\n{}", b"Nonsense: 2\r\n\r\n{}",
                                  b"Content-Length: 2\r\n\r\n[]", b"x" * 2000])
def test_dap_framing_refuses_what_is_not_dap(data: bytes) -> None:
    with pytest.raises(dap.DapFramingError):
        dap.DapDecoder().feed(data)


