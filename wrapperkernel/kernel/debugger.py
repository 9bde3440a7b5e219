"""The visual debugger, kernel side: ``debug_request`` relayed to debugpy's pydevd in the worker.

What the frontend sees (messaging spec, "Debug request" and "Debug event"; the Jupyter
additions are JupyterLab's debugger's): each ``debug_request`` carries one Debug Adapter
Protocol request and gets one ``debug_reply`` with its DAP response, whose
``request_seq`` is the request's ``seq``; pydevd's DAP events are published as
``debug_event`` on IOPub.

How it reaches the program:
- pydevd runs in the worker (``worker/debugger.py``) and connects out to a listener that
  this module opens on 127.0.0.1 for that one connection and closes once it is taken.
  pydevd's first answer (to ``pydevdAuthorize``) must carry the token the kernel handed
  that worker over the private link; any other connection is closed. So a local
  process that races to the port cannot pose as the program, and nothing listens on
  the worker's side at all.
- The Jupyter additions are answered here (``dumpCell``, ``debugInfo``, ``source``,
  ``copyToGlobals``, ``configurationDone``) or by the worker's debugger thread when no
  thread is stopped (``inspectVariables``, ``variables``, ``richInspectVariables``,
  ``modules``); everything else is pydevd's.
- The event loop never waits for the worker's main thread: pydevd and the worker's
  debugger thread answer on threads of their own, so requests are answered while a
  cell runs and while it is stopped at a breakpoint. Requests are served one after
  another, in arrival order (the kernel holds them in line, ``Kernel``).
- The session outlives its worker: the kernel keeps what the frontend configured
  (``initialize``, ``attach``, the breakpoints of each cell file, the exception
  filters) and replays it to the next worker's pydevd. The cell files belong to the
  kernel (``cellfiles.py``), so their names stay valid.

It never touches a Jupyter socket: replies go back to the caller, events to ``publish``.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import secrets
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wrapperkernel import cellfiles
from wrapperkernel.debugview import hidden
from wrapperkernel.kernel.dap import DapDecoder, DapFramingError, encode
from wrapperkernel.workerlink import frames

log = logging.getLogger("wrapperkernel.debugger")

# Importing debugpy and connecting takes about 0.2 s; a loaded two-core machine, more.
START_TIMEOUT_S = 30.0
# pydevd answers on its own threads; one that is silent this long is not answering.
REQUEST_TIMEOUT_S = 30.0
AUTHORIZE_TIMEOUT_S = 5.0
HOST = "127.0.0.1"
# Commands answered without a started session (they read state, or the namespace).
STATIC_COMMANDS = frozenset({"debugInfo", "inspectVariables", "richInspectVariables",
                             "modules", "copyToGlobals", "dumpCell", "source"})
# The package's own code is not the user's: never stepped into, never shown in a stack.
OWN_CODE = str(Path(__file__).resolve().parent.parent)


class DebuggerUnavailable(Exception):
    """The worker's pydevd cannot be reached; the sentence says why."""


class PydevdConnection:
    """One DAP connection to a worker's pydevd: requests by our own ``seq``, events out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_event: Callable[[dict[str, Any]], None],
                 on_closed: Callable[[PydevdConnection], None]) -> None:
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._on_closed = on_closed
        self._seq = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False
        self._task = asyncio.create_task(self._read())

    async def request(self, command: str, arguments: dict[str, Any] | None = None,
                      timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        if self.closed:
            raise DebuggerUnavailable("the debugger's connection to the worker is closed")
        self._seq += 1
        seq = self._seq
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        message: dict[str, Any] = {"type": "request", "seq": seq, "command": command}
        if arguments is not None:
            message["arguments"] = arguments
        self._writer.write(encode(message))
        try:
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            raise DebuggerUnavailable(
                f"debugpy in the worker did not answer {command!r} within {timeout_s:g} s") from None
        finally:
            self._pending.pop(seq, None)

    def close(self) -> None:
        if not self.closed:
            self._writer.close()
            self._task.cancel()
            self._lost("the debugger's connection was closed")

    async def _read(self) -> None:
        decoder = DapDecoder()
        sock = self._writer.get_extra_info("socket")
        try:
            while True:
                _acknowledge_at_once(sock)
                data = await self._reader.read(65536)
                if not data:
                    break
                for message in decoder.feed(data):
                    self._on_message(message)
        except (ConnectionError, DapFramingError) as error:
            log.warning("the debugger's connection to the worker failed: %s", error)
        finally:
            self._lost("the worker's debugger closed its connection")

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "response":
            future = self._pending.get(message.get("request_seq"))  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "event":
            self._on_event(message)
        else:
            log.info("ignored a DAP message of type %r from the worker", kind)

    def _lost(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(DebuggerUnavailable(why))
        self._on_closed(self)


class Debugger:
    def __init__(self, send_to_worker: Callable[[frames.Frame], None],
                 publish: Callable[[dict[str, Any], dict[str, Any]], None],
                 cell_directory: str, on_settled: Callable[[], None] = lambda: None) -> None:
        self._send_to_worker = send_to_worker
        self._publish = publish
        # Called when cells may run again after a new worker got the session back.
        self._on_settled = on_settled
        self.cell_directory = cell_directory
        self.started = False  # the frontend initialized a session and has not disconnected
        self._connection: PydevdConnection | None = None
        self._worker_debugging = False  # this worker was told to debug (and said yes)
        self._starting: asyncio.Task[None] | None = None
        self._restoring: asyncio.Task[None] | None = None
        self._waiting_for_worker: asyncio.TimerHandle | None = None
        self._worker_answer: asyncio.Future[frames.DebuggerStartedFrame] | None = None
        self._queries: dict[str, asyncio.Future[frames.DebugQueryReplyFrame]] = {}
        self._initialize_arguments: dict[str, Any] = {}
        self._attach_arguments: dict[str, Any] | None = None
        self._breakpoint_requests: dict[str, dict[str, Any]] = {}
        self._breakpoints: dict[str, list[dict[str, Any]]] = {}
        self._exception_breakpoints: dict[str, Any] | None = None
        self.stopped_threads: set[int] = set()
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._event_task: asyncio.Task[None] | None = None
        self._event_parent: dict[str, Any] = {}

    # ------------------------------------------------------------------ requests

    async def handle(self, request: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
        """The DAP response to one frontend request (already validated: type, seq, command)."""
        self._event_parent = parent
        command = request["command"]
        if self._restoring is not None and command not in ("dumpCell", "debugInfo"):
            await asyncio.shield(self._restoring)
        local = self._local_handlers().get(command)
        try:
            if local is not None:
                return await local(request)
            if not self.started and command != "initialize":
                return _response(request, success=False, message=(
                    f"the debugger is not started, so {command!r} cannot be served: send "
                    "'initialize' and 'attach' first"))
            if command == "initialize":
                return await self._initialize(request)
            if command == "attach":
                return await self._attach(request)
            if command == "disconnect":
                return await self._disconnect(request)
            response = await self._forward(request)
            if command == "setBreakpoints" and response.get("success"):
                self._record_breakpoints(request["arguments"], response)
            elif command == "setExceptionBreakpoints" and response.get("success"):
                self._exception_breakpoints = request["arguments"]
            return response
        except DebuggerUnavailable as error:
            return _response(request, success=False, message=str(error))

    def _local_handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "dumpCell": self._dump_cell,
            "debugInfo": self._debug_info,
            "source": self._source,
            "configurationDone": self._configuration_done,
            "inspectVariables": self._inspect_variables,
            "variables": self._variables,
            "richInspectVariables": self._rich_inspect_variables,
            "copyToGlobals": self._copy_to_globals,
            "modules": self._modules,
        }

    async def _forward(self, request: dict[str, Any]) -> dict[str, Any]:
        connection = await self._ready_connection()
        response = await connection.request(request["command"], request.get("arguments", {}))
        return {**response, "request_seq": request["seq"]}

    async def _initialize(self, request: dict[str, Any]) -> dict[str, Any]:
        await self._start_worker_debugging()
        response = await self._forward(request)
        if response.get("success"):
            self.started = True
            self._initialize_arguments = request.get("arguments", {})
        return response

    async def _attach(self, request: dict[str, Any]) -> dict[str, Any]:
        arguments = _attach_arguments(request.get("arguments", {}))
        connection = await self._ready_connection()
        response = await connection.request("attach", arguments)
        if response.get("success"):
            self._attach_arguments = arguments
            # pydevd answers attach at once and waits for configurationDone to start
            # reporting; JupyterLab sends configurationDone only after its breakpoints,
            # or never for a notebook it only inspects: it is sent here, and the
            # frontend's own is answered locally.
            await connection.request("configurationDone")
        return {**response, "request_seq": request["seq"]}

    async def _disconnect(self, request: dict[str, Any]) -> dict[str, Any]:
        response = _response(request)
        if self._connection is not None and not self._connection.closed:
            response = await self._forward(request)  # pydevd resumes every thread
        self._send_to_worker(frames.DebuggerStopFrame())
        self._worker_debugging = False
        self.started = False
        self._attach_arguments = None
        self._breakpoint_requests.clear()
        self._breakpoints.clear()
        self._exception_breakpoints = None
        self.stopped_threads.clear()
        return response

    def _record_breakpoints(self, arguments: dict[str, Any], response: dict[str, Any]) -> None:
        path = arguments.get("source", {}).get("path")
        if not isinstance(path, str):
            return
        # pydevd may move a breakpoint to another line: debugInfo tells the lines it took.
        placed = [{"line": point["line"]} for point in response.get("body", {}).get("breakpoints", [])
                  if isinstance(point, dict) and "line" in point]
        if placed:
            self._breakpoint_requests[path] = arguments
            self._breakpoints[path] = placed
        else:
            self._breakpoint_requests.pop(path, None)
            self._breakpoints.pop(path, None)

    # ------------------------------------------------------------------ the Jupyter additions

    async def _dump_cell(self, request: dict[str, Any]) -> dict[str, Any]:
        code = request.get("arguments", {}).get("code")
        if not isinstance(code, str):
            return _response(request, success=False,
                             message="dumpCell needs arguments.code, the cell's code as a string")
        path = cellfiles.file_name(code, self.cell_directory)
        os.makedirs(self.cell_directory, mode=0o700, exist_ok=True)
        Path(path).write_text(code, encoding="utf-8")
        return _response(request, body={"sourcePath": path})

    async def _debug_info(self, request: dict[str, Any]) -> dict[str, Any]:
        return _response(request, body={
            "isStarted": self.started,
            "hashMethod": "Murmur2",
            "hashSeed": cellfiles.HASH_SEED,
            "tmpFilePrefix": self.cell_directory + os.sep,
            "tmpFileSuffix": cellfiles.SUFFIX,
            "breakpoints": [{"source": path, "breakpoints": points}
                            for path, points in self._breakpoints.items()],
            "stoppedThreads": sorted(self.stopped_threads),
            "richRendering": True,
            "exceptionPaths": ["Python Exceptions"],
            "copyToGlobals": True,
        })

    async def _source(self, request: dict[str, Any]) -> dict[str, Any]:
        path = request.get("arguments", {}).get("source", {}).get("path")
        if isinstance(path, str) and os.path.isfile(path):
            return _response(request, body={"content": Path(path).read_text(encoding="utf-8")})
        if self.started:
            return await self._forward(request)
        return _response(request, success=False, message=f"no source for {path!r}")

    async def _configuration_done(self, request: dict[str, Any]) -> dict[str, Any]:
        return _response(request)  # sent at attach (see _attach)

    async def _inspect_variables(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._query(request)

    async def _variables(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self.stopped_threads:
            return await self._query(request)
        response = await self._forward(request)
        body = response.get("body")
        if isinstance(body, dict) and isinstance(body.get("variables"), list):
            body["variables"] = [variable for variable in body["variables"]
                                 if not hidden(str(variable.get("name", "")))]
        return response

    async def _rich_inspect_variables(self, request: dict[str, Any]) -> dict[str, Any]:
        arguments = request.get("arguments", {})
        name = arguments.get("variableName")
        if not isinstance(name, str) or not name.isidentifier():
            # pydevd's groups ("special variables", ...) are names, not values: nothing to show.
            return _response(request, success=name in ("special variables", "function variables"),
                             body={"data": {}, "metadata": {}})
        if not self.stopped_threads or "frameId" not in arguments:
            return await self._query(request)
        connection = await self._ready_connection()
        answer = await connection.request("evaluate", {
            "expression": f"get_ipython().display_formatter.format({name})",
            "frameId": arguments["frameId"], "context": "clipboard"})
        data: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        if answer.get("success"):
            try:
                data, metadata = ast.literal_eval(answer["body"]["result"])
            except (ValueError, SyntaxError, TypeError, KeyError) as error:
                log.info("richInspectVariables: pydevd's answer is not a bundle: %s", error)
        return _response(request, body={
            "data": data, "metadata": {key: value for key, value in metadata.items() if key in data}})

    async def _copy_to_globals(self, request: dict[str, Any]) -> dict[str, Any]:
        arguments = request.get("arguments", {})
        source, target = arguments.get("srcVariableName"), arguments.get("dstVariableName")
        if not (isinstance(source, str) and source.isidentifier()
                and isinstance(target, str) and target.isidentifier()):
            return _response(request, success=False, message=(
                "copyToGlobals needs srcVariableName and dstVariableName that are Python "
                "identifiers"))
        if not self.started:
            return _response(request, success=False, message="the debugger is not started")
        connection = await self._ready_connection()
        answer = await connection.request("setExpression", {
            "expression": f"globals()['{target}']", "value": source,
            "frameId": arguments.get("srcFrameId")})
        return {**answer, "request_seq": request["seq"], "command": request["command"]}

    async def _modules(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self._query(request)

    async def _query(self, request: dict[str, Any]) -> dict[str, Any]:
        """Ask the worker's debugger thread, which reads the namespace also while a cell runs."""
        req = uuid.uuid4().hex
        future: asyncio.Future[frames.DebugQueryReplyFrame] = asyncio.get_running_loop().create_future()
        self._queries[req] = future
        self._send_to_worker(frames.DebugQueryFrame(req=req, command=request["command"],
                                                    arguments=request.get("arguments", {})))
        try:
            answer = await asyncio.wait_for(future, REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            return _response(request, success=False, message=(
                f"the worker did not answer {request['command']!r} within {REQUEST_TIMEOUT_S:g} s"))
        except DebuggerUnavailable as error:
            return _response(request, success=False, message=str(error))
        finally:
            self._queries.pop(req, None)
        return _response(request, success=answer.success, body=answer.body,
                         message=answer.message or None)

    # ------------------------------------------------------------------ the worker's pydevd

    async def _ready_connection(self) -> PydevdConnection:
        if self._connection is None or self._connection.closed:
            await self._start_worker_debugging()
        assert self._connection is not None
        return self._connection

    async def _start_worker_debugging(self) -> None:
        if self._worker_debugging and self._connection is not None and not self._connection.closed:
            return
        if self._starting is None:
            self._starting = asyncio.create_task(self._start())
        try:
            await asyncio.shield(self._starting)
        finally:
            if self._starting is not None and self._starting.done():
                self._starting = None

    async def _start(self) -> None:
        """Tell the worker to debug; the first time in a worker, wait for its pydevd to
        connect and prove it is that worker's."""
        loop = asyncio.get_running_loop()
        need_connection = self._connection is None or self._connection.closed
        if not need_connection:
            # pydevd is connected already (a new session after a disconnect): the worker
            # only switches its cells to debug mode, which cannot fail; its answer is
            # not waited for (its debugger thread may still be in debugpy.connect).
            self._send_to_worker(frames.DebuggerStartFrame(port=0, client_token=""))
            self._worker_debugging = True
            return
        answer: asyncio.Future[frames.DebuggerStartedFrame] = loop.create_future()
        self._worker_answer = answer
        accepted: asyncio.Future[PydevdConnection] = loop.create_future()
        token = secrets.token_hex(32)

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._authorize(reader, writer, token, accepted)

        server = await asyncio.start_server(on_client, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            self._send_to_worker(frames.DebuggerStartFrame(port=port, client_token=token))
            # A worker that connects answers only once the session is configured
            # (debugpy.connect returns after configurationDone): the connection is what
            # says it started; an answer before it can only be a failure.
            done, _ = await asyncio.wait({answer, accepted}, timeout=START_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if answer in done and answer.result().error is not None:
                raise DebuggerUnavailable(answer.result().error)
            if accepted not in done:
                await asyncio.wait_for(asyncio.shield(accepted), AUTHORIZE_TIMEOUT_S)
            self._connection = accepted.result()
            self._ensure_event_task()
            self._worker_debugging = True
        except asyncio.TimeoutError:
            raise DebuggerUnavailable(
                f"the worker's debugger did not start within {START_TIMEOUT_S:g} s") from None
        finally:
            server.close()
            if answer.done():
                self._worker_answer = None

    async def _authorize(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         token: str, accepted: asyncio.Future[PydevdConnection]) -> None:
        connection = PydevdConnection(reader, writer, self._on_event, self._on_connection_closed)
        try:
            answer = await connection.request("pydevdAuthorize", {"debugServerAccessToken": None},
                                              timeout_s=AUTHORIZE_TIMEOUT_S)
            proof = answer.get("body", {}).get("clientAccessToken")
            genuine = isinstance(proof, str) and secrets.compare_digest(proof, token)
        except DebuggerUnavailable as error:
            log.warning("a connection to the debugger's port did not authorize: %s", error)
            genuine = False
        if not genuine or accepted.done():
            log.warning("closed a connection to the debugger's port that is not the worker's")
            connection.close()
            return
        accepted.set_result(connection)

    def _on_connection_closed(self, connection: PydevdConnection) -> None:
        if connection is not self._connection:
            return
        self._connection = None
        self._worker_debugging = False
        if self.stopped_threads:
            # The program that was stopped is gone: the frontend must not wait for it.
            for thread_id in sorted(self.stopped_threads):
                self._publish_event({"type": "event", "seq": 0, "event": "thread",
                                     "body": {"reason": "exited", "threadId": thread_id}})
            self._publish_event({"type": "event", "seq": 0, "event": "continued",
                                 "body": {"threadId": min(self.stopped_threads),
                                          "allThreadsContinued": True}})
            self.stopped_threads.clear()

    # ------------------------------------------------------------------ worker frames and life

    def on_worker_frame(self, frame: frames.Frame) -> None:
        if isinstance(frame, frames.DebuggerStartedFrame):
            if self._worker_answer is not None and not self._worker_answer.done():
                self._worker_answer.set_result(frame)
            elif frame.error is not None:
                log.error("the worker's debugger stopped: %s", frame.error)
        elif isinstance(frame, frames.DebugQueryReplyFrame):
            future = self._queries.get(frame.req)
            if future is not None and not future.done():
                future.set_result(frame)

    def on_worker_exit(self) -> None:
        self._worker_debugging = False
        if self.started and self._waiting_for_worker is None:
            # Cells wait from now on: the next one may reach the next worker before it
            # has the breakpoints. Bounded, should no worker come.
            self._waiting_for_worker = asyncio.get_running_loop().call_later(
                START_TIMEOUT_S, self._give_up_waiting)
        for future in self._queries.values():
            if not future.done():
                future.set_exception(DebuggerUnavailable("the worker exited"))
        if self._worker_answer is not None and not self._worker_answer.done():
            self._worker_answer.set_result(frames.DebuggerStartedFrame(error="the worker exited"))
        if self._connection is not None:
            self._connection.close()

    @property
    def holds_cells(self) -> bool:
        """A new worker is getting the session back: a cell run now would miss its
        breakpoints, so the kernel's queue waits (``on_settled`` ends the wait)."""
        return self._waiting_for_worker is not None or self._restoring is not None

    def on_worker_ready(self) -> None:
        """A new worker: give it the session the frontend had with the previous one."""
        if self._waiting_for_worker is not None:
            self._waiting_for_worker.cancel()
            self._waiting_for_worker = None
        if self.started and self._restoring is None:
            self._restoring = asyncio.create_task(self._restore())

    def _give_up_waiting(self) -> None:
        log.error("no new worker within %g s: cells run without the debug session", START_TIMEOUT_S)
        self._waiting_for_worker = None
        self._on_settled()

    async def _restore(self) -> None:
        try:
            await self._start_worker_debugging()
            connection = await self._ready_connection()
            await connection.request("initialize", self._initialize_arguments)
            if self._attach_arguments is not None:
                await connection.request("attach", self._attach_arguments)
                await connection.request("configurationDone")
            for arguments in self._breakpoint_requests.values():
                await connection.request("setBreakpoints", arguments)
            if self._exception_breakpoints is not None:
                await connection.request("setExceptionBreakpoints", self._exception_breakpoints)
            log.info("the debug session goes on in the new worker (%d cell files with breakpoints)",
                     len(self._breakpoint_requests))
        except DebuggerUnavailable as error:
            log.error("the debug session could not be restored in the new worker: %s", error)
        finally:
            self._restoring = None
            self._on_settled()

    # ------------------------------------------------------------------ events

    def _on_event(self, event: dict[str, Any]) -> None:
        self._events.put_nowait(event)

    def _ensure_event_task(self) -> None:
        if self._event_task is None or self._event_task.done():
            self._event_task = asyncio.create_task(self._serve_events())

    async def _serve_events(self) -> None:
        """Events in pydevd's order. A stop of all threads names one thread: the others
        are asked for before the event is published, so that debugInfo lists them."""
        while True:
            event = await self._events.get()
            try:
                await self._track(event)
            except DebuggerUnavailable as error:
                log.info("while handling a %s event: %s", event.get("event"), error)
            except Exception:  # noqa: BLE001 - the one catch-all of this loop: log, serve on
                log.exception("handling the debug event %r failed; serving on", event.get("event"))
            self._publish_event(event)

    async def _track(self, event: dict[str, Any]) -> None:
        name, body = event.get("event"), event.get("body") or {}
        thread_id = body.get("threadId")
        if name == "stopped":
            if isinstance(thread_id, int):
                self.stopped_threads.add(thread_id)
            if body.get("allThreadsStopped") and self._connection is not None:
                threads = await self._connection.request("threads")
                for thread in threads.get("body", {}).get("threads", []):
                    if isinstance(thread.get("id"), int):
                        self.stopped_threads.add(thread["id"])
        elif name == "continued":
            if body.get("allThreadsContinued"):
                self.stopped_threads.clear()
            else:
                self.stopped_threads.discard(thread_id)  # type: ignore[arg-type]
        elif name == "thread" and body.get("reason") == "exited":
            self.stopped_threads.discard(thread_id)  # type: ignore[arg-type]

    def _publish_event(self, event: dict[str, Any]) -> None:
        self._publish(event, self._event_parent)


def _acknowledge_at_once(sock: Any) -> None:
    """pydevd writes each DAP message as two sends, header then body, without
    TCP_NODELAY: Nagle holds the body back until the header is acknowledged, and
    Linux delays that acknowledgement by up to 40 ms. Every answer of pydevd took
    44 ms here (bench/debugger_bench.py). Quick acknowledgements end the wait; Linux
    turns them off again by itself, so they are asked for before every read."""
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError as error:  # the connection is closing: the read will say so
            log.debug("TCP_QUICKACK: %s", error)


def _attach_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The frontend's attach, plus the rule that hides wrapperkernel's own frames."""
    rules = list(arguments.get("rules") or [])
    rules.append({"path": OWN_CODE, "include": False})
    return {**arguments, "rules": rules}


def _response(request: dict[str, Any], success: bool = True, body: dict[str, Any] | None = None,
              message: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"type": "response", "seq": 0, "request_seq": request["seq"],
                                "success": success, "command": request["command"],
                                "body": body if body is not None else {}}
    if message is not None:
        response["message"] = message
    return response
