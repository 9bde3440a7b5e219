"""The worker's side of the visual debugger: debugpy's pydevd in the user's process.

It owns three things:
- starting pydevd, once per worker, on a thread of its own: pydevd connects out to the
  kernel's listener on 127.0.0.1 (the kernel speaks DAP to it, kernel/debugger.py) and
  from then on traces the user's threads. Starting never waits for the main thread, so
  the debugger can be switched on while a cell runs;
- the debug mode of cells: while a session is on, IPython keeps a cell's leading empty
  lines (its line numbers then match the cell file the frontend sets breakpoints in),
  and each cell makes sure its thread is traced (a KeyboardInterrupt raised through
  pydevd's trace function makes Python drop it for that thread); both are done on the
  main thread between cells (``before_cell``);
- answers about the namespace while no thread is stopped (then pydevd has no frame to
  ask): the variables view, a variable's rich display, the loaded modules. They are
  answered on this module's own thread, also while a cell runs.

It must never run user code on its threads other than reading the namespace, and never
block the reader thread that hands it frames.
"""

from __future__ import annotations

import queue
import reprlib
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

from wrapperkernel.debugview import hidden
from wrapperkernel.threads import internal_thread
from wrapperkernel.workerlink import frames

# Children listed for one container at most: the panel pages no further.
MAX_CHILDREN = 300
_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 20


class WorkerDebugger:
    def __init__(self, send: Callable[[frames.Frame], None], shell: Any,
                 log: Callable[[str], None]) -> None:
        self._send = send
        self._shell = shell
        self._log = log
        self._connected = False
        self.active = False
        self._removed_transforms: list[tuple[int, Any]] = []
        self._queries: queue.SimpleQueue[frames.Frame] = queue.SimpleQueue()
        self._thread = internal_thread(self._serve, "debugger")
        self._thread.start()
        # Variables of the last namespace view, by the reference handed out for them.
        self._references: dict[int, Any] = {}

    # ------------------------------------------------------------------ from the reader thread

    def on_frame(self, frame: frames.Frame) -> None:
        self._queries.put(frame)

    # ------------------------------------------------------------------ from the main thread

    def before_cell(self) -> None:
        """Between two cells, on the main thread: bring the cells' compilation in line
        with the debug mode, and trace this thread again if an interrupt made Python
        drop pydevd's tracer. Never raises: a cell must not fail for the debugger."""
        try:
            self._apply_debug_mode()
            if self.active and sys.gettrace() is None and "debugpy" in sys.modules:
                import debugpy

                # Connected is enough: debugpy.connect itself returns only later, once
                # the frontend has configured the session.
                if debugpy.is_client_connected():
                    debugpy.trace_this_thread(True)
        except Exception:  # noqa: BLE001 - the cell runs anyway, without the debugger's help
            self._log("preparing a cell for the debugger failed:\n" + traceback.format_exc())

    def _apply_debug_mode(self) -> None:
        # Changed here, on the main thread: IPython reads the list while it compiles a cell.
        if self.active == bool(self._removed_transforms):
            return  # already in line (nothing to change for almost every cell)
        from IPython.core.inputtransformer2 import leading_empty_lines

        cleanup = self._shell.input_transformer_manager.cleanup_transforms
        if self.active and not self._removed_transforms:
            self._removed_transforms = [(i, t) for i, t in enumerate(cleanup)
                                        if t is leading_empty_lines]
            for index, _ in reversed(self._removed_transforms):
                del cleanup[index]
        elif not self.active and self._removed_transforms:
            for index, transform in self._removed_transforms:
                cleanup.insert(index, transform)
            self._removed_transforms = []

    def release_for_interrupt(self, stack: types.FrameType | None) -> None:
        """Called by the SIGINT handler, in the thread pydevd may hold at a breakpoint.

        The KeyboardInterrupt about to be raised there ends the cell, but pydevd would
        still count its threads as suspended and hold the next cell at its first line
        (without a stopped event: the frontend would wait for ever). They are resumed
        first, as a frontend's ``continue`` would, and pydevd says so (``continued``).
        """
        if not _pydevd_waits_in(stack):
            return
        from _pydevd_bundle.pydevd_thread_lifecycle import resume_threads

        resume_threads("*")

    # ------------------------------------------------------------------ the debugger thread

    def _serve(self) -> None:
        while True:
            frame = self._queries.get()
            try:
                if isinstance(frame, frames.DebuggerStartFrame):
                    self._start(frame)
                elif isinstance(frame, frames.DebuggerStopFrame):
                    self._leave_debug_mode()
                elif isinstance(frame, frames.DebugQueryFrame):
                    self._answer(frame)
            except Exception:  # noqa: BLE001 - the one catch-all of this loop: report, serve on
                self._log("debugger thread: handling a frame failed:\n" + traceback.format_exc())
                if isinstance(frame, frames.DebugQueryFrame):
                    self._send(frames.DebugQueryReplyFrame(
                        req=frame.req, success=False,
                        message=f"the worker failed to answer {frame.command}; see the kernel log"))

    def _start(self, frame: frames.DebuggerStartFrame) -> None:
        # Before connecting: debugpy.connect returns only once the frontend has
        # configured the session, and a cell may run as soon as it has.
        self._enter_debug_mode()
        if not self._connected:
            self._hide_ipython_threads()  # before pydevd starts tracing threads
            try:
                import debugpy

                # Child processes must not try to reach a debug adapter: there is none.
                debugpy.configure(subProcess=False)
                debugpy.connect(("127.0.0.1", frame.port), access_token=frame.client_token)
            except Exception as error:  # noqa: BLE001 - any failure is the frontend's answer
                self._log("starting debugpy failed:\n" + traceback.format_exc())
                self._leave_debug_mode()
                self._send(frames.DebuggerStartedFrame(
                    error=f"debugpy could not start in the worker: {type(error).__name__}: {error}"))
                return
            self._connected = True
        self._send(frames.DebuggerStartedFrame())

    def _hide_ipython_threads(self) -> None:
        # IPython's history saver is machinery too; ipykernel leaves it out of the
        # threads it counts as stopped for the same reason.
        saver = getattr(getattr(self._shell, "history_manager", None), "save_thread", None)
        if saver is not None:
            saver.pydev_do_not_trace = True
            saver.is_pydev_daemon_thread = True

    def _enter_debug_mode(self) -> None:
        self.active = True  # takes effect before the next cell (before_cell)

    def _leave_debug_mode(self) -> None:
        self.active = False

    # ------------------------------------------------------------------ the namespace view

    def _answer(self, frame: frames.DebugQueryFrame) -> None:
        handler = {
            "inspectVariables": self._inspect_variables,
            "variables": self._variables,
            "richInspectVariables": self._rich_inspect,
            "modules": self._modules,
        }[frame.command]
        success, body, message = handler(frame.arguments)
        self._send(frames.DebugQueryReplyFrame(req=frame.req, success=success, body=body,
                                               message=message))

    def _inspect_variables(self, arguments: dict[str, Any]) -> tuple[bool, dict[str, Any], str]:
        self._references = {}
        namespace = self._shell.user_ns
        items = [(name, namespace[name]) for name in list(namespace)
                 if isinstance(name, str) and not hidden(name) and name in namespace]
        return True, {"variables": [self._variable(name, value, name) for name, value in items]}, ""

    def _variables(self, arguments: dict[str, Any]) -> tuple[bool, dict[str, Any], str]:
        reference = arguments.get("variablesReference")
        if not isinstance(reference, int) or reference not in self._references:
            return False, {"variables": []}, (
                f"no variable has the reference {reference!r} (it is from an older view: "
                "open the variables panel again)")
        parent, parent_name = self._references[reference]
        children = [self._variable(name, value, evaluate)
                    for name, value, evaluate in _children(parent, parent_name)]
        return True, {"variables": children}, ""

    def _variable(self, name: str, value: Any, evaluate_name: str) -> dict[str, Any]:
        reference = 0
        if _has_children(value):
            reference = len(self._references) + 1
            self._references[reference] = (value, evaluate_name)
        try:
            shown = _repr.repr(value)
        except Exception as error:  # noqa: BLE001 - a broken __repr__ is shown, not raised
            shown = f"<repr failed: {type(error).__name__}: {error}>"
        return {"name": name, "value": shown, "type": type(value).__name__,
                "evaluateName": evaluate_name, "variablesReference": reference}

    def _rich_inspect(self, arguments: dict[str, Any]) -> tuple[bool, dict[str, Any], str]:
        name = arguments.get("variableName")
        if not isinstance(name, str) or not name.isidentifier():
            return True, {"data": {}, "metadata": {}}, ""
        result = self._shell.user_expressions({name: name})[name]
        if result.get("status") != "ok":
            return True, {"data": {}, "metadata": {}}, ""
        data = result.get("data", {})
        metadata = {key: value for key, value in result.get("metadata", {}).items() if key in data}
        return True, {"data": data, "metadata": metadata}, ""

    def _modules(self, arguments: dict[str, Any]) -> tuple[bool, dict[str, Any], str]:
        start = arguments.get("startModule", 0)
        count = arguments.get("moduleCount", 0)
        loaded = list(sys.modules.items())
        modules = []
        for index, (name, module) in enumerate(loaded):
            path = getattr(getattr(module, "__spec__", None), "origin", None)
            if isinstance(path, str) and path.endswith(".py"):
                modules.append({"id": index, "name": name, "path": path})
        if isinstance(start, int) and isinstance(count, int) and count > 0:
            modules = modules[start:start + count]
        return True, {"modules": modules, "totalModules": len(loaded)}, ""


def _pydevd_waits_in(frame: types.FrameType | None) -> bool:
    """Whether pydevd's wait loop of a suspended thread is on this stack."""
    while frame is not None:
        if frame.f_code.co_name == "_do_wait_suspend" and frame.f_globals.get("__name__") == "pydevd":
            return True
        frame = frame.f_back
    return False


def _has_children(value: Any) -> bool:
    if isinstance(value, (str, bytes, bytearray, int, float, complex, bool, type(None))):
        return False
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return len(value) > 0
    return bool(_attributes(value))


def _attributes(value: Any) -> dict[str, Any]:
    if isinstance(value, types.ModuleType):
        return {}  # a module's namespace is another program's: not expanded
    try:
        found = vars(value)
    except TypeError:
        return {}
    return {name: item for name, item in found.items()
            if isinstance(name, str) and not name.startswith("__")}


def _children(value: Any, name: str) -> list[tuple[str, Any, str]]:
    if isinstance(value, dict):
        return [(repr(key), item, f"{name}[{key!r}]")
                for key, item in list(value.items())[:MAX_CHILDREN]]
    if isinstance(value, (list, tuple)):
        return [(str(index), item, f"{name}[{index}]")
                for index, item in enumerate(value[:MAX_CHILDREN])]
    if isinstance(value, (set, frozenset)):
        return [(str(index), item, "") for index, item in enumerate(list(value)[:MAX_CHILDREN])]
    return [(key, item, f"{name}.{key}") for key, item in list(_attributes(value).items())[:MAX_CHILDREN]]

