"""The asyncio adapter around the address channel's core (``wrapperkernel.comm.core``).

It translates: Jupyter comm messages from the page and comm frames from the worker into
core events; core actions into IOPub messages, worker frames and event-loop timers. It
decides nothing: every protocol decision is the core's, batching and pacing included
(the core's ``Outbox``). Each entry point (a page message, a worker frame, a timer) is
one turn of a loop of the kernel's; a timer callback has this module's one broad catch,
since nobody else would see its exception.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from wrapperkernel.channel import frames
from wrapperkernel.comm import core as c
from wrapperkernel.comm.page_script import render_install_html
from wrapperkernel.wire import messages as m
from wrapperkernel.wire.transport import Incoming, Transport

log = logging.getLogger("wrapperkernel.comms")

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class CommRelay:
    def __init__(
        self,
        transport: Transport,
        worker: Any,
        kernel_id: str,
        current_parent: Callable[[], dict[str, Any]] = dict,
        timings: c.CommTimings | None = None,
        debug: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.worker = worker
        self.kernel_id = kernel_id
        self.current_parent = current_parent
        self.debug = debug
        self.clock = clock
        self.timings = timings if timings is not None else c.CommTimings()
        self.core = c.CommCore(kernel_id, new_id=lambda: f"wrapperkernel-comm-{uuid.uuid4().hex}",
                               timings=self.timings)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._install_parents: dict[str, dict[str, Any]] = {}
        # Comms of the standard comm package (ipywidgets...), relayed to the worker.
        self.relayed: dict[str, str] = {}

    # ------------------------------------------------------------------ queries

    def open_comms(self) -> dict[str, dict[str, str]]:
        comms = {cid: {"target_name": target} for cid, target in self.relayed.items()}
        comm_id = self.core.comm_id
        if comm_id:
            comms[comm_id] = {"target_name": c.COMM_TARGET_NAME}
        return comms

    def is_quiet(self, request: Incoming) -> bool:
        """Traffic on our own comm gets no busy/idle: it is not a request and would make
        JupyterLab's busy indicator flicker at the page's send rate."""
        if request.msg_type not in ("comm_msg", "comm_close"):
            return False
        content = request.content
        return isinstance(content, dict) and content.get("comm_id") == self.core.comm_id \
            and self.core.comm_id is not None

    # ------------------------------------------------------------------ events in

    def on_page_message(self, request: Incoming, kind: str) -> None:
        now = self.clock()
        if kind == "open":
            opened = m.parse(m.CommOpen, request.content)
            if opened.target_name != c.COMM_TARGET_NAME:
                # Any other target belongs to the comm package in the worker, which
                # answers a target nobody registered with comm_close.
                self.relayed[opened.comm_id] = opened.target_name
                self._relay_to_worker(request, "comm_open", opened.comm_id, opened.data,
                                      opened.target_name, opened.target_module)
                return
            self._handle(c.PageCommOpened(now, opened.comm_id, opened.target_name, opened.data))
        elif kind == "msg":
            msg = m.parse(m.CommMsg, request.content)
            if msg.comm_id in self.relayed:
                self._relay_to_worker(request, "comm_msg", msg.comm_id, msg.data)
                return
            self._handle(c.PageCommMsg(now, msg.comm_id, msg.data))
        else:
            closed = m.parse(m.CommClose, request.content)
            if self.relayed.pop(closed.comm_id, None) is not None:
                self._relay_to_worker(request, "comm_close", closed.comm_id, closed.data)
                return
            self._handle(c.PageCommClosed(now, closed.comm_id))

    def _relay_to_worker(self, request: Incoming, msg_type: str, comm_id: str, data: Any,
                         target_name: str | None = None, target_module: str | None = None) -> None:
        buffers = [base64.b64encode(bytes(b)).decode("ascii")
                   for b in request.msg.get("buffers") or []]
        metadata = request.msg.get("metadata")
        self.worker.send(frames.RelayCommFrame(
            msg_type=msg_type,  # type: ignore[arg-type]
            comm_id=comm_id,
            data={} if data is None else data,
            metadata=metadata if isinstance(metadata, dict) else {},
            buffers=buffers,
            target_name=target_name,
            target_module=target_module,
        ))

    def on_worker_frame(self, frame: frames.WorkerToKernel) -> None:
        now = self.clock()
        if isinstance(frame, frames.CommRequestFrame):
            self._handle(c.ProgramRequested(now, frame.request_id, frame.op, frame.address,
                                            frame.value))
        elif isinstance(frame, frames.CommSendManyFrame):
            self._handle(c.ProgramRequested(now, frame.request_id, "send_many", None,
                                            frame.items))
        elif isinstance(frame, frames.CommSubscriptionFrame):
            event = c.ProgramSubscribed if frame.subscribed else c.ProgramUnsubscribed
            self._handle(event(now, frame.address))
        elif isinstance(frame, frames.RelayCommFrame):
            self._relay_to_page(frame)
        else:
            log.warning("unexpected comm frame %s", frame.type)

    def _relay_to_page(self, frame: frames.RelayCommFrame) -> None:
        content: dict[str, Any] = {"comm_id": frame.comm_id, "data": frame.data}
        if frame.msg_type == "comm_open":
            self.relayed[frame.comm_id] = frame.target_name or ""
            content["target_name"] = frame.target_name or ""
            if frame.target_module:
                content["target_module"] = frame.target_module
        elif frame.msg_type == "comm_close":
            self.relayed.pop(frame.comm_id, None)
        buffers = [base64.b64decode(b) for b in frame.buffers]
        self.transport.publish(frame.msg_type, content, parent=self.current_parent(),
                               metadata=frame.metadata, buffers=buffers)

    def on_worker_restarted(self) -> None:
        # The new worker has none of the old comms; the page learns they are closed.
        for comm_id in list(self.relayed):
            self.transport.publish("comm_close", {"comm_id": comm_id, "data": {}}, parent=None)
        self.relayed.clear()
        self._handle(c.WorkerRestarted(self.clock()))

    def _fire(self, timer: str) -> None:
        self._timers.pop(timer, None)
        try:
            self._handle(c.TimerFired(self.clock(), timer))
        except Exception:  # noqa: BLE001 - the one catch-all of a timer callback
            # asyncio would log it and carry on too, but without saying what was lost:
            # the timer is gone, so the core's state may wait for an event that never comes.
            log.exception("the comm core failed on timer %r; the address channel may "
                          "need a comms.start() or a kernel restart", timer)

    # ------------------------------------------------------------------ actions out

    def _handle(self, event: c.Event) -> None:
        for action in self.core.handle(event):
            self._perform(action)

    def _perform(self, action: c.Action) -> None:
        if isinstance(action, c.SendCommMsg):
            self.transport.publish("comm_msg", {"comm_id": action.comm_id, "data": action.data},
                                   parent=None, metadata={"seq": action.seq})
        elif isinstance(action, c.DeliverToProgram):
            self.worker.send(frames.CommValueFrame(address=action.address, value=action.value))
        elif isinstance(action, c.ReplyToProgram):
            self.worker.send(frames.CommReplyFrame(request_id=action.request_id, ok=action.ok,
                                                   value=action.value, error=action.error))
        elif isinstance(action, c.StartTimer):
            old = self._timers.pop(action.timer, None)
            if old is not None:
                old.cancel()
            loop = asyncio.get_running_loop()
            self._timers[action.timer] = loop.call_later(action.delay_s, self._fire, action.timer)
        elif isinstance(action, c.CancelTimer):
            handle = self._timers.pop(action.timer, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(action, c.RelayReadRequest):
            self.worker.send(frames.CommReadRequestFrame(address=action.address))
        elif isinstance(action, c.PublishInstallScript):
            parent = self.current_parent()
            self._install_parents[action.display_id] = parent
            html = render_install_html(self.kernel_id, debug=self.debug,
                                       heartbeat_timeout_s=self.timings.heartbeat_timeout_s)
            self.transport.publish("display_data", {
                "data": {"text/html": html,
                         "text/plain": "(wrapperkernel: connecting the page to the kernel)"},
                "metadata": {},
                "transient": {"display_id": action.display_id},
            }, parent=parent)
        elif isinstance(action, c.EraseInstallScript):
            parent = self._install_parents.pop(action.display_id, None) or self.current_parent()
            self.transport.publish("update_display_data", {
                "data": {}, "metadata": {}, "transient": {"display_id": action.display_id},
            }, parent=parent)
        elif isinstance(action, c.SendCommClose):
            self.transport.publish("comm_close", {"comm_id": action.comm_id, "data": {}},
                                   parent=None)
        elif isinstance(action, c.Log):
            log.log(LOG_LEVELS.get(action.level, logging.INFO), "%s", action.text)
        else:
            log.error("the comm core asked for an unknown action %r", action)
