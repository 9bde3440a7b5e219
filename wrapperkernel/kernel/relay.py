"""The kernel's half of the relay of Jupyter's ``comm`` package (ipywidgets, anywidget...).

Comms of any target other than the address channel's belong to the ``comm`` package in
the worker. This module forwards their messages, unchanged, between the page's own kernel
connection and the worker (``RelayCommFrame`` both ways) and remembers which comm ids are
open, so the router can tell them apart and ``comm_info`` can list them. It decides
nothing about their content; the worker's ``comm`` package does (``worker/relay.py``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from wrapperkernel.wire.transport import Incoming, Transport
from wrapperkernel.workerlink import frames
from wrapperkernel.workerlink.framing import encode_body

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class KernelRelay:
    def __init__(self, transport: Transport, worker: Any,
                 current_parent: Callable[[], dict[str, Any]] = dict) -> None:
        self.transport = transport
        self.worker = worker
        self.current_parent = current_parent
        self.open_comms: dict[str, str] = {}  # comm_id -> target_name

    def owns(self, comm_id: str) -> bool:
        return comm_id in self.open_comms

    def to_worker(self, request: Incoming, msg_type: str, comm_id: str, data: Any,
                  target_name: str | None = None, target_module: str | None = None) -> None:
        if msg_type == "comm_open":
            self.open_comms[comm_id] = target_name or ""
        elif msg_type == "comm_close":
            self.open_comms.pop(comm_id, None)
        buffers = [base64.b64encode(bytes(b)).decode("ascii")
                   for b in request.msg.get("buffers") or []]
        metadata = request.msg.get("metadata")
        fields = {
            "type": "relay_comm",
            "msg_type": msg_type,
            "comm_id": comm_id,
            "data": {} if data is None else data,
            "metadata": metadata if isinstance(metadata, dict) else {},
            "buffers": buffers,
            "target_name": target_name,
            "target_module": target_module,
        }
        try:
            # The frame's JSON, written directly (the worker validates it as a
            # RelayCommFrame): the page's message is JSON already, and building the
            # model only to write it out again cost as much as the rest of the relay.
            body = _dumps(fields).encode("utf-8", errors="surrogateescape")
        except ValueError:
            # NaN or infinity in the page's data: the model writes them as JSON can.
            del fields["type"]
            self.worker.send(frames.RelayCommFrame(**fields))
            return
        self.worker.send_encoded(encode_body(body, "relay_comm"))
        if not self.transport.has_queued(request.channel):
            # Now, not at the end of this turn of the event loop: the worker starts on
            # the message while the kernel publishes its idle. With more queued behind
            # it, they go out together, in one write.
            self.worker.flush()

    def to_page(self, frame: frames.RelayCommFrame) -> None:
        content: dict[str, Any] = {"comm_id": frame.comm_id, "data": frame.data}
        if frame.msg_type == "comm_open":
            self.open_comms[frame.comm_id] = frame.target_name or ""
            content["target_name"] = frame.target_name or ""
            if frame.target_module:
                content["target_module"] = frame.target_module
        elif frame.msg_type == "comm_close":
            self.open_comms.pop(frame.comm_id, None)
        buffers = [base64.b64decode(b) for b in frame.buffers]
        self.transport.publish(frame.msg_type, content, parent=self.current_parent(),
                               metadata=frame.metadata, buffers=buffers)

    def on_worker_restarted(self) -> None:
        # The new worker has none of the old comms; the page learns they are closed.
        for comm_id in list(self.open_comms):
            self.transport.publish("comm_close", {"comm_id": comm_id, "data": {}}, parent=None)
        self.open_comms.clear()
