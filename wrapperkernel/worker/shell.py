"""IPython's InteractiveShell, wired so that everything a cell shows becomes a frame.

The shell keeps IPython's behaviour (magics, ``!shell``, display, rich reprs,
tracebacks, completion, inspection, history); this module only replaces where output
goes: display publisher, display hook, traceback display, pager, and the requests a cell
makes to the frontend (the ``set_next_input`` and ``ask_exit`` payloads of the execute
reply). It makes ``pdb.set_trace()``, ``breakpoint()`` and ``pdb.Pdb`` IPython's debugger,
as ``%debug`` already is, and shows an interrupt at a debugger's prompt
(``DebuggerInterrupted``) as the ``KeyboardInterrupt`` it is.
It must never talk to sockets directly: frames leave through ``CellContext.send``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from IPython.core.autocall import ExitAutocall
from IPython.core.compilerop import CachingCompiler
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.history import HistoryManager
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Any as AnyTrait
from traitlets import Type, default

from wrapperkernel import cellfiles
from wrapperkernel.worker.output import OutputBuffer
from wrapperkernel.workerlink import frames

# Where debuggers live: their frames are cut from the traceback of an interrupt at their
# prompt, which then ends at the user's line the debugger stopped on.
DEBUGGER_MODULES = frozenset({"bdb", "pdb", "cmd", "IPython.core.debugger",
                              "IPython.terminal.debugger"})
# debugpy's pydevd: an interrupt while the visual debugger holds a thread at a
# breakpoint is raised in pydevd's wait loop.
PYDEVD_MODULE_PREFIXES = ("pydevd", "_pydevd_bundle", "_pydev_bundle", "debugpy")


def in_debugger_code(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__") or ""
    return name in DEBUGGER_MODULES or name.startswith(PYDEVD_MODULE_PREFIXES)


def without_debugger_frames(error: BaseException) -> BaseException:
    """``error`` with a traceback that ends where a debugger took over: the debugger's
    own frames say nothing to the user."""
    kept = []
    tb = error.__traceback__
    while tb is not None and not in_debugger_code(tb.tb_frame):
        kept.append(tb)
        tb = tb.tb_next
    if kept and tb is not None:
        kept[-1].tb_next = None
    return error.with_traceback(kept[0]) if kept else error


class DebuggerInterrupted(BaseException):
    """An interrupt at a debugger's prompt (pdb, ``breakpoint()``, ``%debug``).

    Debuggers catch ``KeyboardInterrupt`` at their prompt and prompt again (pdb's
    ``_cmdloop``; IPython's ``Pdb.interaction`` and ``%debug``), so an interrupt there
    could never end the cell. This exception is not a ``KeyboardInterrupt`` and passes
    them all; the shell shows it as the ``KeyboardInterrupt`` it stands for
    (``WorkerShell.showtraceback``). Raised from a trace function (pdb.set_trace), it
    also ends the tracing: Python drops a trace function that raises.
    """

    def as_keyboard_interrupt(self) -> BaseException:
        """The interrupt, with a traceback that ends where the debugger stopped."""
        interrupt = KeyboardInterrupt(str(self)).with_traceback(self.__traceback__)
        return without_debugger_frames(interrupt)


def debugger_on_stack(frame: FrameType | None) -> bool:
    """Whether a debugger (a ``bdb.Bdb``: pdb, IPython's, ``breakpoint()``) runs its
    prompt or a command in ``frame`` or in a frame that called it. Code the user steps
    through runs after the debugger has returned, so it does not count."""
    bdb = sys.modules.get("bdb")
    if bdb is None:
        return False  # never imported: no debugger can be running
    while frame is not None:
        # f_locals is read only in debugger frames: in others it could replace the locals
        # a tracer is about to write back.
        if (frame.f_globals.get("__name__") in DEBUGGER_MODULES
                and isinstance(frame.f_locals.get("self"), bdb.Bdb)):
            return True
        frame = frame.f_back
    return False


@dataclass
class RequestState:
    """The request one shell is serving: the main shell's, or a subshell's."""

    req: str = ""
    executing: bool = False
    allow_stdin: bool = False
    last_error: tuple[str, str, list[str]] | None = None
    # True while the display hook formats the cell's value: a traceback shown meanwhile
    # comes from a formatter (IPython's catch_format_error shows it and returns).
    formatting_value: bool = False
    # A formatter raised while the display hook showed the cell's value (``T()`` with a
    # failing ``__repr__``): IPython calls the cell a success, but the user saw an
    # error, so the reply says error, as ipykernel's does.
    display_hook_failed: bool = False


def _state_field(name: str) -> property:
    def get(self: CellContext) -> Any:
        return getattr(self.state, name)

    def put(self: CellContext, value: Any) -> None:
        setattr(self.state, name, value)

    return property(get, put)


@dataclass
class CellContext:
    """What the shell's output hooks need to know about the request being served.

    With subshells (JEP 91) several requests run at once, one per shell thread; each
    shell thread has its own ``RequestState`` (``serve_on_this_thread``). Every other
    thread (one the user's code started, the comm dispatcher, the fd pumps) sees the
    main shell's, as before subshells: its output goes to the main shell's cell.
    """

    send: Callable[[frames.Frame], None]
    output: OutputBuffer
    drains: list[Callable[[], None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    main: RequestState = field(default_factory=RequestState)
    _local: threading.local = field(default_factory=threading.local)

    req = _state_field("req")
    executing = _state_field("executing")
    allow_stdin = _state_field("allow_stdin")
    last_error = _state_field("last_error")
    formatting_value = _state_field("formatting_value")
    display_hook_failed = _state_field("display_hook_failed")

    @property
    def state(self) -> RequestState:
        return getattr(self._local, "state", self.main)

    def serve_on_this_thread(self) -> None:
        """This thread is a subshell's: it serves requests of its own."""
        self._local.state = RequestState()

    def flush_output(self) -> None:
        for drain in self.drains:
            drain()
        self.output.flush()

    def emit(self, frame: frames.Frame) -> None:
        """Send ``frame`` after every byte of text written before it."""
        with self.output.lock:
            self.output.flush_locked()
            self.send(frame)


class FrameDisplayPublisher(DisplayPublisher):
    context: CellContext | None = AnyTrait(None)  # type: ignore[assignment]

    def publish(  # type: ignore[override]
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: str | None = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        assert self.context is not None
        self.context.emit(
            frames.DisplayDataFrame(
                req=self.context.req,
                data=data,
                metadata=metadata or {},
                transient=transient or {},
                update=update,
            )
        )

    def clear_output(self, wait: bool = False) -> None:
        assert self.context is not None
        self.context.emit(frames.ClearOutputFrame(req=self.context.req, wait=wait))


class FrameDisplayHook(DisplayHook):
    """Turns a cell's last expression value into an ``execute_result`` frame.

    The value being shown is kept per thread: a subshell and the main shell may show
    their cells' values at the same moment."""

    context: CellContext | None = AnyTrait(None)  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown = threading.local()

    def start_displayhook(self) -> None:
        assert self.context is not None
        self.context.formatting_value = True
        self._shown.data, self._shown.metadata = {}, {}

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict, md_dict: dict | None = None) -> None:
        self._shown.data = format_dict
        self._shown.metadata = md_dict or {}

    def finish_displayhook(self) -> None:
        assert self.context is not None
        self.context.formatting_value = False
        data, metadata = self._shown.data, self._shown.metadata
        if data:
            self.context.emit(
                frames.ExecuteResultFrame(
                    req=self.context.req,
                    execution_count=self.prompt_count,
                    data=data,
                    metadata=metadata,
                )
            )
        self._shown.data = {}


class ParentOfRequests:
    """What ``get_ipython().kernel`` offers in the worker: only the request being served.

    ipywidgets' ``Output`` widget asks ``kernel.get_parent()`` for the running request's
    msg_id, so that the frontend captures that request's output into the widget (and
    ``interact`` shows its results there). Nothing else of ipykernel's Kernel exists here.
    """

    def __init__(self, context: CellContext) -> None:
        self._context = context

    def get_parent(self, channel: str = "shell") -> dict[str, Any]:
        req = self._context.req
        return {"header": {"msg_id": req, "msg_type": "execute_request"}} if req else {}


class WorkerHistory(HistoryManager):
    """IPython's history database, written without waiting for the disk on every cell.

    IPython commits each cell's input to ``history.sqlite`` with SQLite's default
    ``synchronous=FULL``: an fsync per cell, about 0.4 ms of CPU here on the history
    thread, beside the cell. With ``synchronous=OFF`` a crash of the worker still loses
    nothing SQLite was handed; only an operating-system crash or power loss can lose the
    last entries (IPython then moves a damaged file aside and starts a new one).
    ``WRAPPERKERNEL_HISTORY_SYNC=full`` restores IPython's setting.
    """

    def _writeout_input_cache(self, conn: sqlite3.Connection) -> None:
        _without_fsync(conn)
        super()._writeout_input_cache(conn)

    def _writeout_output_cache(self, conn: sqlite3.Connection) -> None:
        _without_fsync(conn)
        super()._writeout_output_cache(conn)


def _without_fsync(conn: sqlite3.Connection) -> None:
    # Per connection, outside a transaction; the saving thread has a connection of its own.
    if os.environ.get("WRAPPERKERNEL_HISTORY_SYNC", "").lower() != "full" and not conn.in_transaction:
        conn.execute("PRAGMA synchronous = OFF")


class CellFileCompiler(CachingCompiler):
    """Compiles each cell under the name of its cell file (``wrapperkernel/cellfiles.py``),
    the path a frontend's debugger sets the cell's breakpoints on. Tracebacks still say
    ``Cell In[n]``: IPython maps the name back to the cell's number. Every cell is named
    so, not only while debugging, so that a function defined before the debugger was
    switched on still stops at a breakpoint in its cell."""

    directory = os.environ.get(cellfiles.DIRECTORY_ENV) or cellfiles.directory_for(os.getppid())

    def get_code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
        return cellfiles.file_name(raw_code, self.directory)


class FrontendExit(ExitAutocall):
    """``exit`` and ``quit`` in a cell: the frontend is asked to close, with
    ``keep_kernel=True`` asking it to leave the kernel running (as in ipykernel)."""

    def __call__(self, keep_kernel: bool = False) -> None:  # type: ignore[override]
        self._ip.ask_exit(keep_kernel=keep_kernel)


class WorkerShell(InteractiveShell):
    displayhook_class = Type(FrameDisplayHook)
    display_pub_class = Type(FrameDisplayPublisher)
    compiler_class = Type(CellFileCompiler)

    @default("exiter")
    def _exiter_default(self) -> ExitAutocall:
        return FrontendExit(self)

    def should_run_async(self, raw_cell: str, *, transformed_cell: str | None = None,
                         preprocessing_exc_tuple: Any = None) -> bool:
        """IPython compiles every cell a second time to look for a top-level ``await``,
        ``async for`` or ``async with``; a cell without either word has none."""
        text = raw_cell if transformed_cell is None else transformed_cell
        if "await" not in text and "async" not in text:
            return False
        return super().should_run_async(raw_cell, transformed_cell=transformed_cell,
                                        preprocessing_exc_tuple=preprocessing_exc_tuple)

    def init_history(self) -> None:
        self.history_manager = WorkerHistory(shell=self, parent=self)
        self.configurables.append(self.history_manager)

    def init_context(self, context: CellContext) -> None:
        self.cell_context = context
        self.kernel = ParentOfRequests(context)
        self.displayhook.context = context
        self.display_pub.context = context
        from IPython.core import page, payloadpage

        # zip? and %page go to the client as a payload, the way notebook frontends expect.
        self.set_hook("show_in_pager", page.as_hook(payloadpage.page), 99)
        self.init_debugger()

    def init_debugger(self) -> None:
        """Make ``pdb`` start IPython's debugger, the one ``%debug`` uses.

        ``breakpoint()`` calls ``pdb.set_trace`` through ``sys.breakpointhook`` (unless
        ``PYTHONBREAKPOINT`` names another hook), and ``pdb.post_mortem`` builds a
        ``pdb.Pdb``: with both replaced, every way into a debugger prompts ``ipdb>`` and
        shows the cell's source in colour, as in ipykernel. Its prompt reads through
        ``input()``, which the worker turns into an input_request.

        Done at start (about 5 ms of imports) rather than when a cell first imports
        ``pdb``: IPython's debugger subclasses ``pdb.Pdb``, so its module must have taken
        the original class before ``pdb.Pdb`` is replaced, whichever is imported first.
        """
        import pdb

        debugger_cls = self.debugger_cls
        pdb.Pdb = debugger_cls  # type: ignore[misc]

        def set_trace(frame: FrameType | None = None, *, header: str | None = None) -> None:
            """Stop in IPython's debugger at ``frame`` (by default: the caller's line)."""
            session = debugger_cls()
            if header is not None:
                session.message(header)
            session.set_trace(frame if frame is not None else sys._getframe().f_back)

        pdb.set_trace = set_trace

    def showtraceback(self, exc_tuple: Any = None, *args: Any, **kwargs: Any) -> None:
        shown = sys.exc_info() if exc_tuple is None else exc_tuple
        if isinstance(shown[1], DebuggerInterrupted):
            interrupt = shown[1].as_keyboard_interrupt()
            exc_tuple = (KeyboardInterrupt, interrupt, interrupt.__traceback__)
        elif isinstance(shown[1], KeyboardInterrupt):
            # Interrupted while the visual debugger held the cell at a breakpoint.
            interrupt = without_debugger_frames(shown[1])
            exc_tuple = (KeyboardInterrupt, interrupt, interrupt.__traceback__)
        super().showtraceback(exc_tuple, *args, **kwargs)

    def _showtraceback(self, etype: type, evalue: BaseException, stb: list[str]) -> None:
        context = self.cell_context
        ename = getattr(etype, "__name__", str(etype))
        context.last_error = (ename, str(evalue), list(stb))
        if context.formatting_value:
            context.display_hook_failed = True
        context.emit(
            frames.ErrorFrame(req=context.req, ename=ename, evalue=str(evalue), traceback=list(stb))
        )

    def ask_exit(self, keep_kernel: bool = False) -> None:
        # exit()/quit() in a notebook: ask the frontend, as the spec's ask_exit payload
        # says. The worker and its namespace stay: closing is the frontend's decision
        # (jupyter console shuts the kernel down unless keepkernel is true).
        self.payload_manager.write_payload({"source": "ask_exit", "keepkernel": keep_kernel})

    def set_next_input(self, s: str, replace: bool = False) -> None:
        # %load, %recall and get_ipython().set_next_input put text into the next cell
        # (the spec's set_next_input payload); calls in one cell leave one payload, the
        # last (PayloadManager.write_payload keeps one per source).
        self.payload_manager.write_payload({"source": "set_next_input", "text": s,
                                            "replace": replace})

    def enable_gui(self, gui: str | None = None) -> None:
        if gui not in (None, "inline"):
            raise NotImplementedError(
                f"GUI event loop {gui!r} is not supported in wrapperkernel; use inline output."
            )
