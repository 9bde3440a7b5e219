"""The asyncio adapter around the address channel's core (``wrapperkernel.address.core``).

It translates: the address channel's Jupyter comm messages from the pages (routed here by
``comm_router``), on either transport, and address frames from the worker into core
events (one event per frame, ``address.events``); core actions into IOPub messages,
worker frames and event-loop timers. A page on the websocket transport is a comm of its
own; a page on the widget transport is a page of the kernel's widget model
(``widget_transport``), and the core sees both kinds the same way. Binary values are
taken out of payloads and put back here, at the edges (``wrapperkernel/buffers.py``).
It decides nothing: every protocol decision is the core's, batching and pacing included
(the core's ``Outbox``). Each entry point (a page message, a worker frame, a timer) is
one turn of a loop of the kernel's; a timer callback has this module's one broad catch,
since nobody else would see its exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from wrapperkernel.address import events as e
from wrapperkernel.address.core import AddressCore
from wrapperkernel.address.page_script import install_config, render_install_html
from wrapperkernel.address.payloads import with_buffers
from wrapperkernel.buffers import extract as extract_buffers
from wrapperkernel.buffers import insert as insert_buffers
from wrapperkernel.kernel import widget_transport as wt
from wrapperkernel.wire import messages as m
from wrapperkernel.wire.transport import Transport
from wrapperkernel.workerlink import frames

log = logging.getLogger("wrapperkernel.address")

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class AddressAdapter:
    def __init__(
        self,
        transport: Transport,
        worker: Any,
        kernel_id: str,
        current_parent: Callable[[], dict[str, Any]] = dict,
        timings: e.AddressTimings | None = None,
        debug: bool = False,
        clock: Callable[[], float] = time.monotonic,
        page_transport: str = "auto",
    ) -> None:
        if page_transport not in wt.TRANSPORTS:
            raise ValueError(f"page_transport is {page_transport!r}, not one of {wt.TRANSPORTS}")
        self.transport = transport
        self.worker = worker
        self.kernel_id = kernel_id
        self.current_parent = current_parent
        self.debug = debug
        self.clock = clock
        self.timings = timings if timings is not None else e.AddressTimings()
        self.core = AddressCore(kernel_id, new_id=lambda: f"wrapperkernel-comm-{uuid.uuid4().hex}",
                                timings=self.timings)
        self.page_transport = page_transport
        self.widget = wt.WidgetTransport(transport)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._install_parents: dict[str, dict[str, Any]] = {}

    @property
    def comm_ids(self) -> tuple[str, ...]:
        """The address channel's open comms, oldest first: one per page connected by
        websocket, and the widget model's (shared by the pages on the widget transport)."""
        own = tuple(cid for cid in self.core.comm_ids if not self.widget.carries(cid))
        return own + ((self.widget.model_id,) if self.widget.model_id is not None else ())

    # ------------------------------------------------------------------ events in

    def on_page_open(self, opened: m.CommOpen) -> None:
        self._handle(e.PageCommOpened(self.clock(), opened.comm_id, opened.target_name,
                                      opened.data))

    def on_page_msg(self, msg: m.CommMsg, buffers: list[Any] | None = None) -> None:
        data, problem = with_buffers(msg.data, buffers or [])
        if problem:
            log.warning("%s", problem)
        if data is not None:
            self._handle(e.PageCommMsg(self.clock(), msg.comm_id, data))

    def on_page_close(self, closed: m.CommClose) -> None:
        self._handle(e.PageCommClosed(self.clock(), closed.comm_id))

    def on_widget_msg(self, msg: m.CommMsg, parent: dict[str, Any] | None,
                      buffers: list[Any] | None = None) -> None:
        """A comm_msg on the widget model's comm, from any page."""
        for event in self.widget.on_page_msg(msg.data, parent, buffers or []):
            now = self.clock()
            if isinstance(event, wt.Opened):
                self._handle(e.PageCommOpened(now, event.connection_id, e.COMM_TARGET_NAME,
                                              event.data))
            elif isinstance(event, wt.Received):
                self._handle(e.PageCommMsg(now, event.connection_id, event.data))
            else:
                self._handle(e.PageCommClosed(now, event.connection_id))
                self.widget.forget(event.connection_id)

    def add_to_control_reply(self, data: Any) -> None:
        self.widget.add_to_control_reply(data)

    def on_worker_frame(self, frame: frames.WorkerToKernel) -> None:
        now = self.clock()
        # pydantic validated each frame when the kernel read it: its fields go to the
        # core as they are.
        if isinstance(frame, frames.AddressStartFrame):
            self._handle(e.StartRequested(now, frame.request_id, frame.retry))
        elif isinstance(frame, frames.AddressSendFrame):
            value = frame.value if not frame.buffer_paths else insert_buffers(
                frame.value, frame.buffer_paths, frame.buffers)
            self._handle(e.SendRequested(now, frame.request_id, frame.address, value))
        elif isinstance(frame, frames.AddressReadFrame):
            self._handle(e.ReadRequested(now, frame.request_id, frame.address, frame.timeout_s))
        elif isinstance(frame, frames.AddressSyncFrame):
            self._handle(e.SyncRequested(now, frame.request_id))
        elif isinstance(frame, frames.AddressSendManyFrame):
            items = frame.items if not frame.buffer_paths else _items_with_buffers(frame)
            self._handle(e.SendManyRequested(now, frame.request_id, items))
        elif isinstance(frame, frames.AddressSubscriptionFrame):
            event = e.ProgramSubscribed if frame.subscribed else e.ProgramUnsubscribed
            self._handle(event(now, frame.address))
        else:
            log.warning("unexpected address-channel frame %s", frame.type)

    def on_worker_restarted(self) -> None:
        self._handle(e.WorkerRestarted(self.clock()))

    def _fire(self, timer: str) -> None:
        self._timers.pop(timer, None)
        try:
            self._handle(e.TimerFired(self.clock(), timer))
        except Exception:  # noqa: BLE001 - the one catch-all of a timer callback
            # asyncio would log it and carry on too, but without saying what was lost:
            # the timer is gone, so the core's state may wait for an event that never comes.
            log.exception("the comm core failed on timer %r; the address channel may "
                          "need a comms.start() or a kernel restart", timer)

    # ------------------------------------------------------------------ actions out

    def _handle(self, event: e.Event) -> None:
        for action in self.core.handle(event):
            self._perform(action)

    def _perform(self, action: e.Action) -> None:
        if isinstance(action, e.SendCommMsg):
            data, buffers = wire_payload(action.data)
            if self.widget.carries(action.comm_id):
                self.widget.send(action.comm_id, data, action.seq, buffers)
                return
            self.transport.publish("comm_msg", {"comm_id": action.comm_id, "data": data},
                                   parent=None, metadata={"seq": action.seq}, buffers=buffers)
        elif isinstance(action, e.DeliverToProgram):
            value, paths, buffers = extract_buffers(action.value)
            self.worker.send(frames.AddressValueFrame(address=action.address, value=value,
                                                      buffer_paths=paths, buffers=buffers))
        elif isinstance(action, e.ReplyToProgram):
            value, paths, buffers = extract_buffers(action.value)
            self.worker.send(frames.AddressReplyFrame(request_id=action.request_id, ok=action.ok,
                                                   value=value, error=action.error,
                                                   buffer_paths=paths, buffers=buffers))
        elif isinstance(action, e.StartTimer):
            old = self._timers.pop(action.timer, None)
            if old is not None:
                old.cancel()
            loop = asyncio.get_running_loop()
            self._timers[action.timer] = loop.call_later(action.delay_s, self._fire, action.timer)
        elif isinstance(action, e.CancelTimer):
            handle = self._timers.pop(action.timer, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(action, e.RelayReadRequest):
            self.worker.send(frames.AddressReadRequestFrame(address=action.address))
        elif isinstance(action, e.PublishInstallScript):
            self._publish_install(action.display_id)
        elif isinstance(action, e.EraseInstallScript):
            parent = self._install_parents.pop(action.display_id, None)
            if parent is None:
                return  # the widget transport alone published nothing to erase
            self.transport.publish("update_display_data", {
                "data": {}, "metadata": {}, "transient": {"display_id": action.display_id},
            }, parent=parent)
        elif isinstance(action, e.SendCommClose):
            if self.widget.carries(action.comm_id):
                self.widget.close(action.comm_id)
                return
            self.transport.publish("comm_close", {"comm_id": action.comm_id, "data": {}},
                                   parent=None)
        elif isinstance(action, e.Log):
            log.log(LOG_LEVELS.get(action.level, logging.INFO), "%s", action.text)
        else:
            log.error("the comm core asked for an unknown action %r", action)

    def _publish_install(self, display_id: str) -> None:
        """Installs the page client in every page that needs one: the install script
        (a transient display, erased once a page connects) unless only the widget
        transport is wanted, and the widget model unless only the websocket is (opened
        once; later installs ask its pages to install)."""
        parent = self.current_parent()
        config = install_config(self.kernel_id, debug=self.debug,
                                heartbeat_timeout_s=self.timings.heartbeat_timeout_s,
                                transport=self.page_transport, install_id=display_id)
        if self.page_transport != "websocket":
            if not self.widget.open(parent, config):
                self.widget.broadcast_install(config)
        if self.page_transport == "widget":
            return
        self._install_parents[display_id] = parent
        self.transport.publish("display_data", {
            "data": {"text/html": render_install_html(config),
                     "text/plain": "(wrapperkernel: connecting the page to the kernel)"},
            "metadata": {},
            "transient": {"display_id": display_id},
        }, parent=parent)


# --- binary values (wrapperkernel/buffers.py) ----------------------------------------------


def wire_payload(data: Any) -> tuple[Any, list[memoryview]]:
    """A payload for the page: bytes-like values out of it, their ``buffer_paths`` at its
    top level, and the buffers to send with the message."""
    out, paths, buffers = extract_buffers(data)
    if not paths:
        return data, []
    return {**out, "buffer_paths": paths}, buffers


def _items_with_buffers(frame: frames.AddressSendManyFrame) -> list[tuple[str, Any, int]]:
    """The program's values with their buffers back in (paths are [item index, *path])."""
    items = [list(item) for item in frame.items]
    for path, buffer in zip(frame.buffer_paths, frame.buffers, strict=True):
        index, *inner = path
        items[index][1] = insert_buffers(items[index][1], [inner], [buffer])
    return [(address, value, size) for address, value, size in items]
