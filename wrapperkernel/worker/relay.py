"""Backs the standard ``comm`` package with the kernel, so ipywidgets, anywidget and any
other comm user work in this kernel — with their events handled while a cell runs.

``comm.create_comm`` and ``comm.get_comm_manager`` are replaced (the package documents
them as the hooks a kernel provides). Comms created by the program publish through
``RelayCommFrame``s, which the kernel turns into comm messages on IOPub. Comm messages
from the page's own kernel connection arrive as ``RelayCommFrame``s on the reader thread
and are handled on the callback dispatcher thread (``worker.callbacks``), in arrival
order, never concurrently with each other or with address-channel callbacks; the cell's
main thread keeps running.

Two more rules about how those messages are handled live here:

- Until the program imports ipywidgets, the relay answers ``jupyter.widget.control``
  itself (``_open_control_comm``), as ipywidgets would with no widget: a page's widget
  manager opens that comm whenever the page loads. Importing ipywidgets just to say
  "no widgets" would cost the worker 0.15 s of CPU (measured here, IPython already
  loaded) the first time a page loads, and load ipywidgets into programs that never
  use it. Once the program imports it, its own target takes every new control comm.
- A page's message is never handled while the program saves a matplotlib figure
  (``_guard_figure_saving``): matplotlib puts the figure in a temporary state for that.

This module owns the worker's half of the relay only; it never talks to sockets itself. Its diagnostics,
and the comm package's, go to the kernel's log (``worker.main`` routes the loggers),
never into a cell's output.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import comm
from comm.base_comm import BaseComm, CommManager

from wrapperkernel.worker.callbacks import ErrorReporter, Job
from wrapperkernel.workerlink import frames
from wrapperkernel.workerlink.framing import encode_body

log = logging.getLogger("wrapperkernel.worker.relay")

# ipywidgets' control comm ("Control Widget messaging protocol, version 1.0" in
# ipywidgets' packages/schema/messages.md). ipywidgets refuses another major version.
CONTROL_TARGET = "jupyter.widget.control"
CONTROL_PROTOCOL_MAJOR = "1"

Message = dict[str, Any]
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class SubmitJob(Protocol):
    """``CallbackDispatcher.submit``: run a job on the dispatcher thread."""

    def __call__(self, job: Job, on_error: ErrorReporter | None = None) -> None: ...


def _encode_buffers(buffers: Any) -> list[str]:
    return [base64.b64encode(bytes(buffer)).decode("ascii") for buffer in buffers or []]


class WorkerRelay:
    def __init__(
        self,
        send: Callable[[frames.WorkerToKernel], None],
        run_on_dispatcher: SubmitJob,
        send_encoded: Callable[[bytes], None],
    ) -> None:
        self._run_on_dispatcher = run_on_dispatcher
        self.manager = CommManager()
        # ipywidgets' import registers its own target under this name, replacing ours.
        self.manager.register_target(CONTROL_TARGET, self._open_control_comm)
        # Held while the comm package handles a page's message, and by the program while
        # matplotlib saves a figure. Reentrant: a handler may save a figure (ipympl's
        # download button does).
        self._handling = threading.RLock()
        self._saving_guarded = False
        self._guard_lock = threading.Lock()

        class RelayedComm(BaseComm):
            """A comm whose messages go to the page through the kernel."""

            def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                            buffers: Any = None, **keys: Any) -> None:
                fields = {
                    "msg_type": msg_type,
                    "comm_id": self.comm_id,
                    "data": {} if data is None else data,
                    "metadata": metadata or {},
                    "buffers": _encode_buffers(buffers),
                    "target_name": keys.get("target_name"),
                    "target_module": keys.get("target_module"),
                }
                try:
                    # Plain JSON (ipywidgets' states are) is written directly; the
                    # kernel validates the frame as it validates every frame.
                    body = _dumps({"type": "relay_comm", **fields})
                except (TypeError, ValueError):
                    # numpy numbers, NaN...: the model converts what JSON cannot hold.
                    send(frames.RelayCommFrame(**fields))
                    return
                send_encoded(encode_body(body.encode("utf-8", errors="surrogateescape"),
                                         "relay_comm"))

        self.comm_class = RelayedComm

    def install(self) -> None:
        comm.create_comm = self.create_comm
        comm.get_comm_manager = self.get_comm_manager

    def create_comm(self, *args: Any, **kwargs: Any) -> BaseComm:
        # An ipympl figure creates its comm before it is first drawn or saved, and a page
        # can only talk to a figure through that comm: the guard is in place in time.
        self._guard_figure_saving()
        return self.comm_class(*args, **kwargs)

    def get_comm_manager(self) -> CommManager:
        return self.manager

    def on_frame(self, frame: frames.RelayCommFrame) -> None:
        """Reader thread: queue the page's message for the dispatcher thread."""
        msg = {
            "header": {"msg_id": uuid.uuid4().hex, "msg_type": frame.msg_type},
            "parent_header": {},
            "metadata": frame.metadata,
            "content": {
                "comm_id": frame.comm_id,
                "data": frame.data,
                "target_name": frame.target_name,
                "target_module": frame.target_module,
            },
            "buffers": [memoryview(base64.b64decode(b)) for b in frame.buffers],
        }

        def handle() -> None:
            with self._handling:
                getattr(self.manager, frame.msg_type)(None, None, msg)

        def report(error: BaseException) -> None:
            # The comm package catches what a comm's own callbacks raise and logs it; this
            # is a failure of the handling itself. ipykernel logs it and goes on, too.
            log.error("handling the page's %s for comm %s failed", frame.msg_type,
                      frame.comm_id, exc_info=error)

        self._run_on_dispatcher(handle, report)

    # ------------------------------------------------------------ jupyter.widget.control

    def _open_control_comm(self, control: BaseComm, open_msg: Message) -> None:
        """The ``jupyter.widget.control`` target while ipywidgets is not imported.

        A page's widget manager (ipywidgets' ``ManagerBase._loadFromKernel``) opens this
        comm when the page loads, sends ``request_states`` and waits for
        ``update_states``; then it closes the comm itself. Without a target the comm
        package would close it at once, and log "No such comm target registered".
        """
        version = str((open_msg.get("metadata") or {}).get("version", ""))
        if version.split(".")[0] != CONTROL_PROTOCOL_MAJOR:
            # What ipywidgets raises: the comm package logs it and closes the comm.
            raise ValueError(f"incompatible widget control protocol version {version!r}; "
                             f"this kernel speaks {CONTROL_PROTOCOL_MAJOR}.x")
        control.on_msg(lambda msg: self._on_control_msg(control, open_msg, msg))

    def _on_control_msg(self, control: BaseComm, open_msg: Message, msg: Message) -> None:
        target = self.manager.targets.get(CONTROL_TARGET)
        if target is not None and target != self._open_control_comm:
            # ipywidgets was imported after this comm opened: its target takes the comm
            # over (it sets the comm's message callback) and answers with real widgets.
            target(control, open_msg)
            control.handle_msg(msg)
            return
        if "ipywidgets" in sys.modules:
            # An ipywidgets that has no control target (7.6 and older): widgets may exist
            # that only it can describe. Closed, the comm makes the page ask comm_info
            # for the widget comms instead, as it does with such a kernel.
            log.info("ipywidgets registered no %s target; closing the page's control comm",
                     CONTROL_TARGET)
            control.close()
            return
        method = msg["content"]["data"].get("method")
        if method != "request_states":
            # As ipywidgets does: the comm package logs it, and the page gets no answer.
            raise RuntimeError(f"unknown method {method!r} on {CONTROL_TARGET}")
        # No ipywidgets, no widget: the answer is that there are none.
        control.send({"method": "update_states", "states": {}, "buffer_paths": []})

    # ------------------------------------------------------------ matplotlib figures

    def _guard_figure_saving(self) -> None:
        """Hold ``_handling`` while matplotlib saves a figure, once matplotlib is loaded.

        ``FigureCanvasBase.print_figure`` (savefig, and ipympl's own display, which saves
        a PNG in ``Canvas._repr_mimebundle_``) sets the canvas's ``manager`` to None and
        the figure's dpi to the file's until it returns. ipympl's ``Canvas`` handles the
        page's "refresh", "send_image_mode", "resize" and other messages through
        ``canvas.manager``: handled in that window, they fail with "'NoneType' object has
        no attribute 'handle_json'" and are lost. A page answers a new figure with those
        messages at once, so a page that already has ipympl loaded (after a reload) does
        so while the cell is still showing the figure. ipykernel never handles a message
        while a cell runs; here the message waits until the figure is saved.
        """
        if self._saving_guarded:
            return
        backend_bases = sys.modules.get("matplotlib.backend_bases")
        if backend_bases is None:
            return  # no matplotlib, no figure to guard; the next comm looks again
        with self._guard_lock:
            if self._saving_guarded:
                return
            canvas_class = backend_bases.FigureCanvasBase
            save = canvas_class.print_figure
            handling = self._handling

            @functools.wraps(save)
            def print_figure(canvas: Any, *args: Any, **kwargs: Any) -> Any:
                with handling:
                    return save(canvas, *args, **kwargs)

            canvas_class.print_figure = print_figure
            self._saving_guarded = True
