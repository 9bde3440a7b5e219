"""Relays comm traffic between the page and the worker (filled in by the address channel)."""

from __future__ import annotations

import logging
from typing import Any

from wrapperkernel.wire import messages as m
from wrapperkernel.wire.transport import Incoming, Transport

log = logging.getLogger("wrapperkernel.comms")


class CommRelay:
    def __init__(self, transport: Transport, worker: Any, kernel_id: str) -> None:
        self.transport = transport
        self.worker = worker
        self.kernel_id = kernel_id

    def open_comms(self) -> dict[str, dict[str, str]]:
        return {}

    def on_page_message(self, request: Incoming, kind: str) -> None:
        if kind == "open":
            opened = m.parse(m.CommOpen, request.content)
            log.info("comm_open for unknown target %r: closing it", opened.target_name)
            self.transport.publish("comm_close", {"comm_id": opened.comm_id, "data": {}},
                                   parent=request.header)

    def on_worker_frame(self, frame: Any) -> None:
        log.warning("comm frame %s not handled yet", frame.type)

    def on_worker_restarted(self) -> None:
        return
