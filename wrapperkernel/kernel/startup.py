"""Answers ``kernel_info_request`` while the rest of the kernel is still loading.

A frontend's first message is ``kernel_info_request``, and it waits for the answer
before anything else. The gate answers it from the static kernel info as soon as the
sockets are bound; every other message is held, in arrival order, and handed to the
real handlers once they exist. It decides nothing else and must stay cheap to import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from wrapperkernel.kernel.info import kernel_info_content
from wrapperkernel.wire.transport import Incoming, Transport

Handler = Callable[[Incoming], Awaitable[None]]
# How long the first kernel_info_reply may wait for IOPub's first subscriber.
SUBSCRIBER_WAIT_S = 0.15


class StartupGate:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.answered = asyncio.Event()
        self._held: list[tuple[str, Incoming]] = []
        self._handlers: dict[str, Handler] | None = None

    def handler(self, channel: str) -> Handler:
        async def on_message(request: Incoming) -> None:
            if self._handlers is not None:
                await self._handlers[channel](request)
            elif request.msg_type == "kernel_info_request" and not self._held:
                await self._wait_for_a_subscriber()
                self._answer_kernel_info(request)
            else:
                self._held.append((channel, request))

        return on_message

    async def _wait_for_a_subscriber(self) -> None:
        """A frontend's IOPub connects at about the time its shell does, but may be one
        reconnect behind. jupyter_client's ``wait_for_ready`` wants an IOPub message
        within 0.2 s of the reply, or it asks again: busy and idle published before its
        subscription would be lost. A short wait here is shorter than that."""
        if self.transport.subscribed.is_set():
            return
        try:
            await asyncio.wait_for(self.transport.subscribed.wait(), SUBSCRIBER_WAIT_S)
        except asyncio.TimeoutError:
            return  # a client without IOPub: it gets its answer anyway

    def _answer_kernel_info(self, request: Incoming) -> None:
        publish = self.transport.publish
        publish("status", {"execution_state": "busy"}, parent=request.header)
        self.transport.send(request.channel, "kernel_info_reply", kernel_info_content(),
                            parent=request.header, idents=request.idents)
        publish("status", {"execution_state": "idle"}, parent=request.header)
        self.answered.set()

    async def open(self, handlers: dict[str, Handler]) -> None:
        """Replay what was held, in order, then route everything to ``handlers``."""
        while self._held:
            channel, request = self._held.pop(0)
            await handlers[channel](request)
        self._handlers = handlers
