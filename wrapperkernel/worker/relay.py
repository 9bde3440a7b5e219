"""Backs the standard ``comm`` package with the kernel, so ipywidgets, anywidget and any
other comm user work in this kernel — with their events handled while a cell runs.

``comm.create_comm`` and ``comm.get_comm_manager`` are replaced (the package documents
them as the hooks a kernel provides). Comms created by the program publish through
``RelayCommFrame``s, which the kernel turns into comm messages on IOPub. Comm messages
from the page's own kernel connection arrive as ``RelayCommFrame``s on the reader thread
and are handled on the callback dispatcher thread (``worker.callbacks``), in arrival
order, never concurrently with each other or with address-channel callbacks; the cell's
main thread keeps running.

This module owns that mapping only; it never talks to sockets itself.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable
from typing import Any

import comm
from comm.base_comm import BaseComm, CommManager

from wrapperkernel.workerlink import frames

log = logging.getLogger("wrapperkernel.worker.comm")


def _encode_buffers(buffers: Any) -> list[str]:
    return [base64.b64encode(bytes(buffer)).decode("ascii") for buffer in buffers or []]


class WorkerRelay:
    def __init__(
        self,
        send: Callable[[frames.WorkerToKernel], None],
        run_on_dispatcher: Callable[[Callable[[], None]], None],
    ) -> None:
        self._run_on_dispatcher = run_on_dispatcher
        self.manager = CommManager()

        class RelayedComm(BaseComm):
            """A comm whose messages go to the page through the kernel."""

            def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                            buffers: Any = None, **keys: Any) -> None:
                send(frames.RelayCommFrame(
                    msg_type=msg_type,  # type: ignore[arg-type]
                    comm_id=self.comm_id,
                    data={} if data is None else data,
                    metadata=metadata or {},
                    buffers=_encode_buffers(buffers),
                    target_name=keys.get("target_name"),
                    target_module=keys.get("target_module"),
                ))

        self.comm_class = RelayedComm

    def install(self) -> None:
        comm.create_comm = self.create_comm
        comm.get_comm_manager = self.get_comm_manager

    def create_comm(self, *args: Any, **kwargs: Any) -> BaseComm:
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
        handler = getattr(self.manager, frame.msg_type)
        self._run_on_dispatcher(lambda: handler(None, None, msg))
