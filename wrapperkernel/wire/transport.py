"""The kernel's five zmq sockets on asyncio, signing through ``jupyter_client.Session``.

Messages are (de)serialised and signed by ``Session.serialize`` / ``Session.deserialize``
and sent with plain non-blocking sends: ``Session.send`` on an asyncio socket would send
synchronously. A message with a bad signature, that cannot be parsed, or whose header
cannot address a reply (no header object, no ``msg_type``) is logged and dropped here;
the kernel's handlers only ever see signed messages with a usable header. Their content
may still be any JSON value: whether a non-object content is answered (a request) or
only logged is the kernel's decision, since only it knows which messages are requests.

Each receive loop (``serve``, ``serve_subscriptions``) has one broad catch around its
body, so that a failure in one message is logged with its traceback and the next message
is still served.

IOPub is an XPUB socket (JEP 65): each new subscriber gets an ``iopub_welcome`` message,
so a client knows when it starts receiving. The heartbeat echoes on its own thread, so a
slow handler can never make the kernel look dead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from wrapperkernel.wire.connection import ConnectionInfo

log = logging.getLogger("wrapperkernel.wire")

Handler = Callable[["Incoming"], Awaitable[None]]
# pyzmq's flags are enums whose ``|`` runs Python code: combined once, as plain ints.
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_NOBLOCK = int(zmq.NOBLOCK)
# Messages already queued on a socket are read without the asyncio socket's futures,
# this many at most before other tasks get a turn.
DRAIN_MAX = 100


@dataclass(frozen=True)
class Incoming:
    channel: str
    idents: list[bytes]
    msg: dict[str, Any]

    @property
    def header(self) -> dict[str, Any]:
        return self.msg["header"]

    @property
    def msg_type(self) -> str:
        return self.msg["header"].get("msg_type", "")

    @property
    def msg_id(self) -> str:
        return self.msg["header"].get("msg_id", "")

    @property
    def content(self) -> Any:
        return self.msg["content"]


class Transport:
    def __init__(self, info: ConnectionInfo, session: Any) -> None:
        self.info = info
        self.session = session
        self._context = zmq.asyncio.Context()
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        # Plain sockets sharing each asyncio socket's zmq socket: sending never waits,
        # and a queued message can be read at once; both skip pyzmq's asyncio futures.
        self._plain: dict[str, zmq.Socket] = {}
        self._hb_thread: threading.Thread | None = None
        self._hb_context = zmq.Context()

    def bind(self) -> None:
        info = self.info
        for name, kind, port in (
            ("shell", zmq.ROUTER, info.shell_port),
            ("control", zmq.ROUTER, info.control_port),
            ("stdin", zmq.ROUTER, info.stdin_port),
            ("iopub", zmq.XPUB, info.iopub_port),
        ):
            sock = self._context.socket(kind)
            sock.linger = 1000
            if kind == zmq.XPUB:
                # Every subscription is reported, so each client gets its welcome. zmq
                # applies a subscription itself, at once: a client that joins while a cell
                # floods output may get some of it before its welcome (a known limit; the
                # manual mode that would order them delays subscribers under load).
                sock.setsockopt(zmq.XPUB_VERBOSE, 1)
                # Never drop output at the kernel: a slow client is the client's business.
                sock.sndhwm = 0
            if kind == zmq.ROUTER:
                sock.router_handover = 1
            sock.bind(info.address(port))
            self._sockets[name] = sock
            self._plain[name] = zmq.Socket.shadow(sock.underlying)
        hb = self._hb_context.socket(zmq.REP)
        hb.linger = 0
        hb.bind(info.address(info.hb_port))
        self._hb_thread = threading.Thread(target=_echo, args=(hb,), name="heartbeat", daemon=True)
        self._hb_thread.start()

    async def serve(self, channel: str, handler: Handler) -> None:
        """Receive on ``channel`` forever, handing each valid message to ``handler``."""
        sock, plain = self._sockets[channel], self._plain[channel]
        while True:
            current: list[Incoming] = []  # the message being handled, for the log
            try:
                await self._serve_ready(channel, sock, plain, handler, current)
            except Exception:  # noqa: BLE001 - the one catch-all of this loop: log, serve on
                what = (f"{current[0].msg_type} (msg_id {current[0].msg_id})" if current
                        else "a message")
                log.exception("receiving or handling %s on %s failed; serving on", what, channel)
                if sock.closed:
                    return  # closed under us (shutdown): nothing left to serve

    async def _serve_ready(self, channel: str, sock: zmq.asyncio.Socket, plain: zmq.Socket,
                           handler: Handler, current: list[Incoming]) -> None:
        """Wait for one message, then handle it and up to ``DRAIN_MAX`` queued ones."""
        frames: list[bytes] | None = await sock.recv_multipart(copy=True)
        try:
            drained = 0
            while frames is not None:
                current.clear()
                request = self._parse(channel, frames)
                if request is not None:
                    current.append(request)
                    await handler(request)
                frames = None
                if drained < DRAIN_MAX:
                    drained += 1
                    try:
                        frames = plain.recv_multipart(_NOBLOCK, copy=True)
                    except zmq.Again:
                        frames = None
        finally:
            # As after a send (see send): the reads above may have taken the fd's edge. Also
            # after a failure, or messages already queued would wait for the next one.
            sock.get(_EVENTS)

    def _parse(self, channel: str, frames: list[bytes]) -> Incoming | None:
        try:
            idents, parts = self.session.feed_identities(frames, copy=True)
            msg = self.session.deserialize(parts, content=True, copy=True)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            # Bad or duplicate signature, too few frames, no delimiter, bad JSON.
            log.warning("dropped a message on %s: %s", channel, error)
            return None
        problem = _header_problem(msg)
        if problem:
            log.warning("dropped a message on %s: %s", channel, problem)
            return None
        return Incoming(channel, idents, msg)

    async def serve_subscriptions(self) -> None:
        """Answer each IOPub subscription with ``iopub_welcome`` (JEP 65)."""
        sock = self._sockets["iopub"]
        while True:
            try:
                frames = await sock.recv_multipart()
                event = frames[0]
                if event[:1] == b"\x01":
                    topic = event[1:].decode("utf-8", "replace")
                    self.publish("iopub_welcome", {"subscription": topic}, parent=None)
            except Exception:  # noqa: BLE001 - the one catch-all of this loop: log, serve on
                log.exception("answering an IOPub subscription failed; serving on")
                if sock.closed:
                    return  # closed under us (shutdown): nothing left to serve

    def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any] | None,
        idents: list[bytes] | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
    ) -> None:
        msg = self.session.msg(msg_type, content, parent=parent or {}, metadata=metadata)
        frames = self.session.serialize(msg, ident=idents)
        if buffers:
            frames = frames + list(buffers)
        # ROUTER and XPUB sockets never block a sender, so a non-blocking send from the
        # loop's thread is safe. It goes through a plain socket: the asyncio socket would
        # make a future for every part of every message (a third of the kernel's CPU).
        sender = self._plain[channel]
        try:
            for frame in frames[:-1]:
                sender.send(frame, _MORE)
            sender.send(frames[-1], _LAST)
        except zmq.ZMQError as error:
            log.error("sending %s on %s failed: %s", msg_type, channel, error)
        # zmq signals readiness on an edge-triggered fd, and a send can consume the edge of
        # a message that arrived meanwhile: reading EVENTS through the asyncio socket makes
        # pyzmq wake the receive waiting on this socket, as its own send path does.
        self._sockets[channel].get(_EVENTS)

    def publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None,
                metadata: dict[str, Any] | None = None,
                buffers: list[bytes] | None = None) -> None:
        self.send("iopub", msg_type, content, parent, metadata=metadata, buffers=buffers)

    def close(self) -> None:
        # The senders are shadows: closing one would close the zmq socket under its owner.
        self._plain.clear()
        for sock in self._sockets.values():
            sock.close(linger=500)
        self._context.term()


def _header_problem(msg: dict[str, Any]) -> str:
    """Why ``msg`` cannot be handled at all (no reply can even be addressed), or ''.

    A content that is not an object is not such a reason: a request with one is answered
    with an error by the kernel (STYLE.md: every request gets exactly one reply).
    """
    header = msg.get("header")
    if not isinstance(header, dict):
        return "the header is not an object"
    if not isinstance(header.get("msg_type"), str) or not header["msg_type"]:
        return f"header.msg_type is {header.get('msg_type')!r}, not a message type name"
    if not isinstance(header.get("msg_id", ""), str):
        return f"header.msg_id is {header.get('msg_id')!r}, not a string"
    if not isinstance(msg.get("parent_header"), dict):
        msg["parent_header"] = {}
    return ""


def _echo(sock: zmq.Socket) -> None:
    while True:
        try:
            sock.send(sock.recv())
        except zmq.ContextTerminated:
            return
