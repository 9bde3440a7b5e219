"""Answers every Jupyter request: the kernel's request handlers.

Requests that need the user's namespace (execute, complete, inspect, history) go through
one queue per shell to the worker, one at a time per shell, in arrival order: the main
shell's, and one for each subshell (JEP 91: the header's ``subshell_id``; each subshell
is a thread of the worker, so shells run at once). Everything else is answered here at
once, also while a cell runs: kernel_info, connect, comm_info, is_complete, interrupt,
shutdown, the subshell requests. ``debug_request`` goes to the debugger (``kernel/debugger.py``), one after
another in a line of their own, so that a slow one never holds up an interrupt. Each
request gets exactly one reply, with ``busy`` / ``idle`` around it parented to it; a
malformed or unknown request gets an error reply and one log line.

JupyterLab shows the state of the last tracked status message as the notebook's busy
indicator. A request answered while a cell runs publishes its own busy/idle, then
``busy`` again on behalf of the running cell, so the indicator keeps saying busy. Not
after a ``debug_request``: Jupyter Server and JupyterLab do not track the status of
those (``untracked_message_types``), and a frontend stepping through a stopped cell
expects exactly one busy and one idle per request (ipykernel's test_debugger).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import traceback
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from wrapperkernel.kernel import iopub
from wrapperkernel.kernel.info import kernel_info_content
from wrapperkernel.wire import messages as m
from wrapperkernel.wire.transport import Incoming, Transport
from wrapperkernel.workerlink import frames

log = logging.getLogger("wrapperkernel.kernel")

# Output may arrive after the reply (threads the cell started); parents are kept for it.
PARENTS_KEPT = 256
QUEUED_TYPES = {"execute_request", "complete_request", "inspect_request", "history_request"}


@dataclass
class Job:
    request: Incoming
    frame: frames.Frame
    finished: bool = False
    line: Line | None = None  # the shell that serves it (set when queued)
    asked_input: bool = False  # it waits in input() for an input_reply


@dataclass
class Line:
    """The requests of one shell, run one at a time in arrival order: the main shell
    (``subshell_id`` None) or a subshell (JEP 91), each a thread of the worker."""

    subshell_id: str | None = None
    waiting: deque[Job] = field(default_factory=deque)
    current: Job | None = None


class UnknownSubshell(Exception):
    """A request names a subshell that does not exist (never created, or deleted)."""

    def __init__(self, subshell_id: object) -> None:
        super().__init__(f"Unknown subshell_id {subshell_id!r}")


class Kernel:
    def __init__(self, transport: Transport, worker: Any) -> None:
        self.transport = transport
        self.worker = worker
        self.main = Line()
        # The subshells by id, in creation order; the main shell is not among them.
        self.subshells: dict[str, Line] = {}
        # Every request the worker is serving, by msg_id (a deleted subshell's too).
        self.running: dict[str, Job] = {}
        self.parents: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.next_execution_count = 1
        self.shutdown_event = asyncio.Event()
        self.restart_requested = False
        self.comm_router: Any = None  # routes comm traffic; set by the composition root
        self.debugger: Any = None  # the visual debugger; set by the composition root
        self._debug_line = asyncio.Lock()
        self._debug_tasks: set[asyncio.Task[None]] = set()
        self.last_execute_header: dict[str, Any] = {}
        # The dispatch table: only these message types reach a handler.
        self.handlers = {
            "kernel_info_request": self.on_kernel_info_request,
            "connect_request": self.on_connect_request,
            "comm_info_request": self.on_comm_info_request,
            "is_complete_request": self.on_is_complete_request,
            "interrupt_request": self.on_interrupt_request,
            "shutdown_request": self.on_shutdown_request,
            "comm_open": self.on_comm_open,
            "comm_msg": self.on_comm_msg,
            "comm_close": self.on_comm_close,
            "debug_request": self.on_debug_request,
            "create_subshell_request": self.on_create_subshell_request,
            "delete_subshell_request": self.on_delete_subshell_request,
            "list_subshell_request": self.on_list_subshell_request,
        }
        self._is_complete_checker: Any = None
        self._checker_ready = threading.Event()

    @property
    def current(self) -> Job | None:
        """The main shell's running request (the one an interrupt stops)."""
        return self.main.current

    @current.setter
    def current(self, job: Job | None) -> None:
        self.main.current = job

    @property
    def waiting(self) -> deque[Job]:
        return self.main.waiting

    def line_of(self, request: Incoming) -> Line:
        """The shell a request's ``subshell_id`` names (JEP 91): none is the main shell."""
        subshell_id = request.header.get("subshell_id")
        if subshell_id is None:
            return self.main
        line = self.subshells.get(subshell_id) if isinstance(subshell_id, str) else None
        if line is None:
            raise UnknownSubshell(subshell_id)
        return line

    # ------------------------------------------------------------------ entry points

    async def on_shell(self, request: Incoming) -> None:
        await self._dispatch(request)

    async def on_control(self, request: Incoming) -> None:
        await self._dispatch(request)

    async def on_stdin(self, request: Incoming) -> None:
        if request.msg_type != "input_reply":
            log.warning("ignored %s on stdin (msg_id %s)", request.msg_type, request.msg_id)
            return
        job = self._asking_input(request)
        if job is None:
            log.warning("input_reply %s arrived when no cell asked for input", request.msg_id)
            return
        job.asked_input = False
        if not isinstance(request.content, dict):
            problem = f"its content is {_json_kind(request.content)}, not a JSON object"
        else:
            try:
                reply = m.parse(m.InputReply, request.content)
            except m.BadRequest as error:
                problem = str(error)
            else:
                self.worker.send(frames.InputReplyFrame(req=job.request.msg_id,
                                                        value=reply.value))
                return
        # The cell waits in input() for this answer: tell it the answer was unusable, or
        # it would wait for ever.
        log.warning("bad input_reply %s: %s", request.msg_id, problem)
        self.worker.send(frames.InputReplyFrame(req=job.request.msg_id, value="",
                                                error=problem))

    async def _dispatch(self, request: Incoming) -> None:
        msg_type = request.msg_type
        if not isinstance(request.content, dict):
            self._content_not_an_object(request)
            return
        if msg_type in QUEUED_TYPES and request.channel == "shell":
            try:
                line = self.line_of(request)
                job = Job(request, self._worker_frame(request, line.subshell_id), line=line)
            except UnknownSubshell as error:
                # Answered, not dropped: a client waits for this reply.
                self._reply_error_now(request, "UnknownSubshellError", str(error))
                return
            except m.BadRequest as error:
                self._reply_error_now(request, "BadRequest", str(error))
                return
            line.waiting.append(job)
            self._start_next(line)
            return
        if msg_type == "debug_request":
            # In a line of its own: the control channel goes on with other requests.
            task = asyncio.create_task(self._in_debug_line(request))
            self._debug_tasks.add(task)
            task.add_done_callback(self._debug_tasks.discard)
            return
        await self._handle(request)

    async def _in_debug_line(self, request: Incoming) -> None:
        async with self._debug_line:
            await self._handle(request)

    async def _handle(self, request: Incoming) -> None:
        msg_type = request.msg_type
        handler = self.handlers.get(msg_type)
        quiet = self.comm_router is not None and self.comm_router.is_quiet(request)
        if not quiet:
            self._status("busy", request)
        try:
            if handler is None:
                log.warning("unknown message type %r (msg_id %s)", msg_type, request.msg_id)
                self._reply(request, {
                    "status": "error",
                    "ename": "UnknownMessageType",
                    "evalue": f"wrapperkernel does not handle {msg_type!r} messages",
                    "traceback": [],
                })
            else:
                await handler(request)
        except m.BadRequest as error:
            log.warning("bad %s (msg_id %s): %s", msg_type, request.msg_id, error)
            if msg_type.endswith("_request"):
                self._reply(request, _error_content("BadRequest", str(error)))
        except Exception as error:  # noqa: BLE001 - the adapter's one catch-all: log, reply, serve on
            log.error("handling %s (msg_id %s) failed:\n%s", msg_type, request.msg_id,
                      traceback.format_exc())
            if msg_type.endswith("_request"):
                self._reply(request, _error_content(type(error).__name__, str(error)))
        finally:
            if not quiet:
                self._status("idle", request)

    # ------------------------------------------------------------------ status and replies

    def _status(self, state: str, request: Incoming) -> None:
        self.transport.publish("status", {"execution_state": state}, parent=request.header)
        running = self.current
        # Not after a subshell's request either: its frontend (a subshell console) tracks
        # its own status, and ipykernel sends exactly one busy and one idle per request.
        if (state == "idle" and running is not None and running.request is not request
                and request.msg_type != "debug_request"
                and request.header.get("subshell_id") is None):
            self.transport.publish("status", {"execution_state": "busy"},
                                   parent=running.request.header)

    def _reply(self, request: Incoming, content: dict[str, Any]) -> None:
        msg_type = request.msg_type
        base = msg_type[: -len("_request")] if msg_type.endswith("_request") else msg_type
        self.transport.send(request.channel, f"{base}_reply", content, parent=request.header,
                            idents=request.idents)

    def _reply_error_now(self, request: Incoming, ename: str, evalue: str) -> None:
        log.warning("bad %s (msg_id %s): %s", request.msg_type, request.msg_id, evalue)
        self._status("busy", request)
        self._reply(request, _error_content(ename, evalue))
        self._status("idle", request)

    def _content_not_an_object(self, request: Incoming) -> None:
        """The messaging spec makes every content a dict: a request gets an error reply
        (nothing of it is run), anything else has nobody waiting and is only logged."""
        kind = _json_kind(request.content)
        if request.msg_type.endswith("_request"):
            self._reply_error_now(request, "BadRequest", (
                f"the content of this {request.msg_type} is {kind}, but it must be a JSON "
                "object, so nothing was done. The frontend sent a malformed message: send "
                "the request again with an object as its content."))
        else:
            log.warning("ignored %s (msg_id %s): its content is %s, not a JSON object",
                        request.msg_type, request.msg_id, kind)

    # ------------------------------------------------------------------ immediate handlers

    async def on_kernel_info_request(self, request: Incoming) -> None:
        self._reply(request, kernel_info_content())

    async def on_connect_request(self, request: Incoming) -> None:
        # Deprecated in the messaging spec ("Connect") but still in it: the ports this
        # kernel listens on, as its connection file gave them.
        self._reply(request, {"status": "ok", **self.transport.info.ports()})

    async def on_comm_info_request(self, request: Incoming) -> None:
        query = m.parse(m.CommInfoRequest, request.content)
        target = query.target_name or query.target
        comms = self.comm_router.open_comms() if self.comm_router else {}
        if target:
            comms = {cid: info for cid, info in comms.items() if info["target_name"] == target}
        self._reply(request, {"status": "ok", "comms": comms})

    async def on_is_complete_request(self, request: Incoming) -> None:
        query = m.parse(m.IsCompleteRequest, request.content)
        checker = await self._checker()
        status, indent = checker.check_complete(query.code)
        content: dict[str, Any] = {"status": status}
        if status == "incomplete":
            content["indent"] = " " * (indent or 0)
        self._reply(request, content)

    async def on_debug_request(self, request: Incoming) -> None:
        query = m.parse(m.DebugRequest, request.content)
        if self.debugger is None:
            raise m.BadRequest("this kernel has no debugger")
        content = await self.debugger.handle(query.model_dump(), request.header)
        self._reply(request, content)

    async def on_create_subshell_request(self, request: Incoming) -> None:
        subshell_id = uuid.uuid4().hex
        self.subshells[subshell_id] = Line(subshell_id)
        self.worker.send(frames.SubshellCreateFrame(subshell=subshell_id))
        self._reply(request, {"status": "ok", "subshell_id": subshell_id})

    async def on_delete_subshell_request(self, request: Incoming) -> None:
        query = m.parse(m.DeleteSubshellRequest, request.content)
        line = self.subshells.pop(query.subshell_id, None)
        if line is None:
            self._reply(request, _error_content("UnknownSubshellError",
                                                str(UnknownSubshell(query.subshell_id))))
            return
        # Its running request finishes (its thread ends after it); queued ones never run.
        for job in line.waiting:
            self._status("busy", job.request)
            self._reply(job.request, _error_content(
                "UnknownSubshellError",
                f"subshell {line.subshell_id!r} was deleted before this request ran"))
            self._status("idle", job.request)
        line.waiting.clear()
        self.worker.send(frames.SubshellDeleteFrame(subshell=line.subshell_id))
        self._reply(request, {"status": "ok"})

    async def on_list_subshell_request(self, request: Incoming) -> None:
        self._reply(request, {"status": "ok", "subshell_id": list(self.subshells)})

    async def on_interrupt_request(self, request: Incoming) -> None:
        self.interrupt()
        self._reply(request, {"status": "ok"})

    async def on_shutdown_request(self, request: Incoming) -> None:
        query = m.parse(m.ShutdownRequest, request.content)
        content = {"status": "ok", "restart": query.restart}
        self._reply(request, content)
        # Other clients learn of the shutdown on IOPub, as ipykernel and the spec's 5.4 notes do.
        self.transport.publish("shutdown_reply", content, parent=request.header)
        self.restart_requested = query.restart
        self.shutdown_event.set()

    async def on_comm_open(self, request: Incoming) -> None:
        await self._comm(request, "open")

    async def on_comm_msg(self, request: Incoming) -> None:
        await self._comm(request, "msg")

    async def on_comm_close(self, request: Incoming) -> None:
        await self._comm(request, "close")

    async def _comm(self, request: Incoming, kind: str) -> None:
        if self.comm_router is not None:
            self.comm_router.on_page_message(request, kind)
            return
        if kind == "open":
            # No target is registered: tell the frontend the comm is closed (messaging spec, "Opening a Comm").
            opened = m.parse(m.CommOpen, request.content)
            log.info("comm_open for unknown target %r: closing it", opened.target_name)
            self.transport.publish("comm_close", {"comm_id": opened.comm_id, "data": {}},
                                   parent=request.header)

    def current_parent(self) -> dict[str, Any]:
        """Where program-initiated output goes: the running cell, else the last one."""
        return self.last_execute_header

    def interrupt(self) -> None:
        """Interrupt the running cell (an interrupt_request)."""
        self.interrupt_job(self.current)

    def interrupt_job(self, job: Job | None) -> None:
        """Interrupt ``job`` if it is still the running cell: a signal is for the cell that
        ran when it arrived, not for one whose request was read after it."""
        if job is not None and job is self.current and isinstance(job.frame, frames.ExecuteFrame):
            self.worker.interrupt()
        else:
            log.info("interrupt with no running cell: nothing to do")

    async def _checker(self) -> Any:
        if self._is_complete_checker is None:
            await asyncio.get_running_loop().run_in_executor(None, self.preload_checker)
        return self._is_complete_checker

    def preload_checker(self) -> None:
        from IPython.core.inputtransformer2 import TransformerManager

        if self._is_complete_checker is None:
            self._is_complete_checker = TransformerManager()

    # ------------------------------------------------------------------ the worker queue

    def _worker_frame(self, request: Incoming, subshell: str | None = None) -> frames.Frame:
        msg_type, req, content = request.msg_type, request.msg_id, request.content
        if msg_type == "execute_request":
            q = m.parse(m.ExecuteRequest, content)
            return frames.ExecuteFrame(req=req, subshell=subshell, code=q.code, silent=q.silent,
                                       store_history=q.store_history and not q.silent,
                                       user_expressions=q.user_expressions,
                                       allow_stdin=q.allow_stdin)
        if msg_type == "complete_request":
            q2 = m.parse(m.CompleteRequest, content)
            pos = len(q2.code) if q2.cursor_pos is None else q2.cursor_pos
            return frames.CompleteFrame(req=req, subshell=subshell, code=q2.code, cursor_pos=pos)
        if msg_type == "inspect_request":
            q3 = m.parse(m.InspectRequest, content)
            pos = len(q3.code) if q3.cursor_pos is None else q3.cursor_pos
            return frames.InspectFrame(req=req, subshell=subshell, code=q3.code, cursor_pos=pos,
                                       detail_level=q3.detail_level)
        q4 = m.parse(m.HistoryRequest, content)
        return frames.HistoryFrame(req=req, subshell=subshell, **q4.model_dump(
            include=set(frames.HistoryFrame.model_fields) - {"type", "req", "subshell"}))

    def start_next(self) -> None:
        """Let the queues move on (the debugger calls it once a new worker is ready)."""
        for line in (self.main, *self.subshells.values()):
            self._start_next(line)

    def _start_next(self, line: Line) -> None:
        """Hand the shell's oldest waiting request to the worker, unless one is running
        there (or a new worker is still getting the debug session back).

        Called straight from the message or frame that makes it possible, so a request
        reaches the worker without waiting for another turn of the event loop.
        """
        if line.current is None and line.waiting and not (
                self.debugger is not None and self.debugger.holds_cells):
            self._start(line.waiting.popleft())

    def _start(self, job: Job) -> None:
        assert job.line is not None
        job.line.current = job
        self.running[job.request.msg_id] = job
        request = job.request
        if request.msg_type == "execute_request":
            self.last_execute_header = request.header
        self._remember(request)
        # The worker starts on the request before busy is published: the two then
        # happen in parallel. Its output cannot overtake busy, since it arrives
        # through this same event loop later.
        self.worker.send(job.frame)
        self.worker.flush()
        self._status("busy", request)
        frame = job.frame
        if isinstance(frame, frames.ExecuteFrame) and not frame.silent:
            self.transport.publish(
                "execute_input",
                {"code": frame.code, "execution_count": self.next_execution_count},
                parent=request.header,
            )

    def _complete(self, job: Job, content: dict[str, Any]) -> None:
        """The running request is over: reply, idle, then let the queue move on.

        Called straight from the frame (or worker exit) that ends the request.
        """
        request = job.request
        line = job.line
        assert line is not None
        self._reply(request, content)
        line.current = None
        self.running.pop(request.msg_id, None)
        self._status("idle", request)
        if (
            isinstance(job.frame, frames.ExecuteFrame)
            and content.get("status") == "error"
            and request.content.get("stop_on_error", True)
        ):
            self._abort_queued_executions(line)
        job.finished = True
        self._start_next(line)

    def _abort_queued_executions(self, line: Line) -> None:
        """stop_on_error: cells queued behind a failed one in the same shell are
        answered ``aborted``; the other shells' queues go on."""
        keep: deque[Job] = deque()
        for job in line.waiting:
            if isinstance(job.frame, frames.ExecuteFrame):
                self._status("busy", job.request)
                self._reply(job.request, {"status": "aborted",
                                          "execution_count": self.next_execution_count})
                self._status("idle", job.request)
            else:
                keep.append(job)
        line.waiting = keep

    def _remember(self, request: Incoming) -> None:
        self.parents[request.msg_id] = request.header
        while len(self.parents) > PARENTS_KEPT:
            self.parents.popitem(last=False)

    # ------------------------------------------------------------------ frames from the worker

    def on_worker_frame(self, frame: frames.WorkerToKernel) -> None:
        kind = frame.type
        if kind == "ready":
            log.info("worker %s ready (IPython %s)", frame.pid, frame.ipython_version)
            if self.debugger is not None:
                self.debugger.on_worker_ready()
            return
        if kind in ("debugger_started", "debug_query_reply"):
            if self.debugger is not None:
                self.debugger.on_worker_frame(frame)
            return
        if kind.startswith("address_") or kind == "relay_comm":
            if self.comm_router is not None:
                self.comm_router.on_worker_frame(frame)
            else:
                log.warning("comm frame %s but no comm router", kind)
            return
        published = iopub.publication(frame)
        if published is not None:
            # A cell's output, parented to its request (also after the reply: PARENTS_KEPT).
            msg_type, content = published
            self.transport.publish(msg_type, content, self.parents.get(getattr(frame, "req", ""), {}))
            return
        if isinstance(frame, frames.InputRequestFrame):
            self._input_request(frame)
        elif isinstance(frame, frames.ExecuteReplyFrame):
            self.next_execution_count = frame.next_execution_count
            content = frame.model_dump(exclude={"type", "req", "next_execution_count"},
                                       exclude_none=True)
            self._finish(frame.req, content)
        elif isinstance(frame, frames.ReplyFrame):
            self._finish(frame.req, frame.content)

    def _finish(self, req: str, content: dict[str, Any]) -> None:
        job = self.running.get(req)
        if job is None or job.finished:
            log.warning("worker replied to %s, which is not a running request", req)
            return
        self._complete(job, content)

    def _asking_input(self, reply: Incoming) -> Job | None:
        """The request an input_reply answers: the one of its subshell, else the only
        one asking (a frontend may leave subshell_id out on stdin), else the main shell's."""
        asking = [job for job in self.running.values() if job.asked_input]
        subshell_id = reply.header.get("subshell_id")
        for job in asking:
            if job.line is not None and job.line.subshell_id == subshell_id:
                return job
        if len(asking) == 1:
            return asking[0]
        return self.current

    def _input_request(self, frame: frames.InputRequestFrame) -> None:
        job = self.running.get(frame.req)
        if job is None:
            log.warning("input_request for %s, which is not running", frame.req)
            return
        job.asked_input = True
        self.transport.send("stdin", "input_request",
                            {"prompt": frame.prompt, "password": frame.password},
                            parent=job.request.header, idents=job.request.idents)

    def on_worker_exit(self, reason: str) -> None:
        """The worker is gone; the running request fails with a sentence saying why."""
        log.error("%s; starting a new worker", reason)
        self.next_execution_count = 1
        if self.comm_router is not None:
            self.comm_router.on_worker_restarted()
        if self.debugger is not None:
            self.debugger.on_worker_exit()
        evalue = (f"{reason[0].upper()}{reason[1:]} while running this request. All variables "
                  "and imports are lost: a fresh worker has been started; re-run the cells you "
                  "need.")
        # The new worker starts with no subshells: their queued requests never run.
        subshells, self.subshells = self.subshells, {}
        for line in subshells.values():
            for job in line.waiting:
                self._status("busy", job.request)
                self._reply(job.request, _error_content("WorkerDied", (
                    f"{reason[0].upper()}{reason[1:]} before this request ran; its subshell "
                    "ended with the worker. Create a new subshell.")))
                self._status("idle", job.request)
            line.waiting.clear()
        for job in list(self.running.values()):
            if job.finished:
                continue
            if isinstance(job.frame, frames.ExecuteFrame):
                self.transport.publish("error", {"ename": "WorkerDied", "evalue": evalue,
                                                 "traceback": [f"WorkerDied: {evalue}"]},
                                       parent=job.request.header)
            content = _error_content("WorkerDied", evalue)
            content["execution_count"] = self.next_execution_count
            self._complete(job, content)


def _json_kind(value: Any) -> str:
    """What a JSON value is, in the words of the JSON spec (for error messages)."""
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, (int, float)):
        return "a JSON number"
    return "null" if value is None else f"a {type(value).__name__}"


def _error_content(ename: str, evalue: str) -> dict[str, Any]:
    return {"status": "error", "ename": ename, "evalue": evalue, "traceback": []}


def install_interrupt_handler(loop: asyncio.AbstractEventLoop, kernel: Kernel) -> None:
    """interrupt_mode "signal": the server sends SIGINT to us; the cell runs in the worker."""
    signal.signal(signal.SIGINT, sigint_handler(loop, kernel))


def sigint_handler(loop: asyncio.AbstractEventLoop, kernel: Kernel) -> Any:
    """The SIGINT handler. Python runs it in the loop's thread as the signal arrives,
    between two bytecodes, so it sees the cell that runs at that moment; the interrupt
    itself is a loop callback. (``loop.add_signal_handler`` would run the whole handler
    as a callback, possibly after an execute_request sent after the signal was read and
    started: a SIGINT sent while idle then interrupted the next cell.)"""
    def on_sigint(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(kernel.interrupt_job, kernel.current)

    return on_sigint

