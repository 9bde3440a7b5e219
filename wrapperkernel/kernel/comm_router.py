"""Routes Jupyter comm traffic: the address channel's comms (one per page connected by
websocket, and the kernel's widget model, shared by the pages on the widget transport) to
its adapter, every other comm to the relay of the ``comm`` package.

A ``comm_open`` is routed by its target name (``COMM_TARGET_NAME`` is the address
channel's); ``comm_msg`` and ``comm_close`` by the comm id. Frames from the worker are
routed by their type; a worker's answer on ``jupyter.widget.control`` gets the kernel's
widget model added, so that pages restoring widgets from the kernel create it too. It also answers the two questions the request handlers ask about
comms: which are open (``comm_info_request``) and which messages are too frequent to
get busy/idle around them.
"""

from __future__ import annotations

import logging
from typing import Any

from wrapperkernel.address.events import COMM_TARGET_NAME
from wrapperkernel.kernel import widget_transport as wt
from wrapperkernel.kernel.address_adapter import AddressAdapter
from wrapperkernel.kernel.relay import KernelRelay
from wrapperkernel.wire import messages as m
from wrapperkernel.wire.transport import Incoming
from wrapperkernel.workerlink import frames

log = logging.getLogger("wrapperkernel.address")

# ipywidgets' control comm: a page asks it for every widget's state when it loads.
CONTROL_TARGET = "jupyter.widget.control"


class CommRouter:
    def __init__(self, address: AddressAdapter, relay: KernelRelay) -> None:
        self.address = address
        self.relay = relay

    def open_comms(self) -> dict[str, dict[str, str]]:
        comms = {cid: {"target_name": target} for cid, target in self.relay.open_comms.items()}
        for comm_id in self.address.comm_ids:  # each websocket page's, and the widget model's
            target = wt.WIDGET_TARGET if self.address.widget.owns(comm_id) else COMM_TARGET_NAME
            comms[comm_id] = {"target_name": target}
        return comms

    def is_quiet(self, request: Incoming) -> bool:
        """Traffic on the address channel's comms gets no busy/idle: it is not a request and
        would make JupyterLab's busy indicator flicker at the pages' send rate."""
        if request.msg_type not in ("comm_msg", "comm_close"):
            return False
        content = request.content
        return isinstance(content, dict) and content.get("comm_id") in self.address.comm_ids

    def on_page_message(self, request: Incoming, kind: str) -> None:
        if kind == "open":
            opened = m.parse(m.CommOpen, request.content)
            if opened.target_name != COMM_TARGET_NAME:
                # Any other target belongs to the comm package in the worker, which
                # answers a target nobody registered with comm_close.
                self.relay.to_worker(request, "comm_open", opened.comm_id, opened.data,
                                     opened.target_name, opened.target_module)
                return
            self.address.on_page_open(opened)
        elif kind == "msg":
            content = request.content
            comm_id = content.get("comm_id")
            if isinstance(comm_id, str) and self.relay.owns(comm_id):
                # The relay's comms (ipywidgets...) are the busiest: the only check their
                # message needs, that comm_id is a string, is done here.
                self.relay.to_worker(request, "comm_msg", comm_id, content.get("data"))
                return
            msg = m.parse(m.CommMsg, request.content)
            buffers = list(request.msg.get("buffers") or [])
            if self.address.widget.owns(msg.comm_id):
                self.address.on_widget_msg(msg, request.msg.get("header"), buffers)
                return
            self.address.on_page_msg(msg, buffers)
        else:
            closed = m.parse(m.CommClose, request.content)
            if self.address.widget.owns(closed.comm_id):
                # One frontend that cannot create the model (no anywidget, no widget
                # manager) closes it; the others still use it, so it stays open.
                log.info("a frontend closed the widget model %s; it stays open for the others",
                         closed.comm_id)
                return
            if self.relay.owns(closed.comm_id):
                self.relay.to_worker(request, "comm_close", closed.comm_id, closed.data)
                return
            self.address.on_page_close(closed)

    def on_worker_frame(self, frame: Any) -> None:
        if isinstance(frame, frames.RelayCommFrame):
            if frame.msg_type == "comm_msg" and \
                    self.relay.open_comms.get(frame.comm_id) == CONTROL_TARGET:
                self.address.add_to_control_reply(frame.data)
            self.relay.to_page(frame)
        else:
            self.address.on_worker_frame(frame)

    def on_worker_restarted(self) -> None:
        self.relay.on_worker_restarted()
        self.address.on_worker_restarted()
