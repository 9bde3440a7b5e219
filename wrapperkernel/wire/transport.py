"""The kernel's five zmq sockets, served from the asyncio event loop.

Messages are (de)serialised and signed by ``codec.Codec`` (the connection's key and
scheme, as ``jupyter_client.Session`` signs, with less work per message) and sent with
plain non-blocking sends. A message with a bad signature, that cannot be parsed, or
whose header cannot address a reply (no header object, no ``msg_type``) is logged and
dropped here; the kernel's handlers only ever see signed messages with a usable header.
Their content may still be any JSON value: whether a non-object content is answered (a
request) or only logged is the kernel's decision, since only it knows which messages are
requests.

Each receive loop (``serve``, ``serve_subscriptions``) has one broad catch around its
body, so that a failure in one message is logged with its traceback and the next message
is still served.

IOPub is an XPUB socket (JEP 65): each new subscriber gets an ``iopub_welcome`` message,
so a client knows when it starts receiving. The heartbeat echoes on its own thread, so a
slow handler can never make the kernel look dead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zmq

from wrapperkernel.wire.codec import Codec
from wrapperkernel.wire.connection import ConnectionInfo

log = logging.getLogger("wrapperkernel.wire")

Handler = Callable[["Incoming"], Awaitable[None]]
# pyzmq's flags are enums whose ``|`` runs Python code: combined once, as plain ints.
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_LAST = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
# Messages already queued on a socket are read one after the other, this many at most
# before other tasks get a turn.
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


class _Arrivals:
    """Wakes the receive loop of one socket when a message is there to read.

    A zmq socket's ``FD`` tells of work for the socket, not of messages: it turns readable
    when zmq's I/O thread left the socket commands, and any call that processes them (a
    receive, a send, reading ``EVENTS``) clears it, possibly with messages left queued.
    So the event loop's callback and every send read ``EVENTS``, and a receive waits only
    after ``EVENTS`` said there was nothing. Reading ``EVENTS`` is also what clears the fd,
    so the loop's (level-triggered) callback never spins.
    """

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self._waiter: asyncio.Future[None] | None = None

    def on_fd(self) -> None:
        """The event loop's callback: the fd is readable."""
        if self.sock.getsockopt(_EVENTS) & _POLLIN:  # read even with nobody waiting
            self._wake()

    def check(self) -> None:
        """After a send: a receive that waits may have a message now. A receive that
        does not wait looks at ``EVENTS`` itself before it waits."""
        if self._waiter is not None and self.sock.getsockopt(_EVENTS) & _POLLIN:
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        while not self.sock.getsockopt(_EVENTS) & _POLLIN:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class Transport:
    def __init__(self, info: ConnectionInfo, codec: Codec) -> None:
        self.info = info
        self.codec = codec
        # Plain sockets, read from the event loop's own fd callbacks (``_Arrivals``):
        # pyzmq's asyncio sockets make futures for every receive and every part sent,
        # which cost more than the messages themselves. Sending never waits (ROUTER
        # and XPUB sockets do not block a sender).
        self._context = zmq.Context()
        self._sockets: dict[str, zmq.Socket] = {}
        self._arrivals: dict[str, _Arrivals] = {}
        self._watched: list[int] = []
        self._hb_thread: threading.Thread | None = None
        self._hb_context = zmq.Context()
        # Set once IOPub has had a subscriber (see StartupGate).
        self.subscribed = asyncio.Event()

    def bind(self) -> None:
        info = self.info
        # IOPub first: a client that connects all its sockets at once (retrying every
        # 100 ms by default) then never reaches shell before IOPub, and sees the busy
        # and idle of its first kernel_info, which jupyter_client's wait_for_ready needs.
        for name, kind, port in (
            ("iopub", zmq.XPUB, info.iopub_port),
            ("shell", zmq.ROUTER, info.shell_port),
            ("control", zmq.ROUTER, info.control_port),
            ("stdin", zmq.ROUTER, info.stdin_port),
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
            self._arrivals[name] = _Arrivals(sock)
        hb = self._hb_context.socket(zmq.REP)
        hb.linger = 0
        hb.bind(info.address(info.hb_port))
        self._hb_thread = threading.Thread(target=_echo, args=(hb,), name="heartbeat", daemon=True)
        self._hb_thread.start()

    def _watch(self, channel: str) -> _Arrivals:
        arrivals = self._arrivals[channel]
        fd = arrivals.sock.getsockopt(zmq.FD)
        if fd not in self._watched:
            asyncio.get_running_loop().add_reader(fd, arrivals.on_fd)
            self._watched.append(fd)
        return arrivals

    async def serve(self, channel: str, handler: Handler) -> None:
        """Receive on ``channel`` forever, handing each valid message to ``handler``."""
        arrivals = self._watch(channel)
        sock = arrivals.sock
        while True:
            current: list[Incoming] = []  # the message being handled, for the log
            try:
                await self._serve_ready(channel, arrivals, handler, current)
            except Exception:  # noqa: BLE001 - the one catch-all of this loop: log, serve on
                what = (f"{current[0].msg_type} (msg_id {current[0].msg_id})" if current
                        else "a message")
                log.exception("receiving or handling %s on %s failed; serving on", what, channel)
                if sock.closed:
                    return  # closed under us (shutdown): nothing left to serve

    async def _serve_ready(self, channel: str, arrivals: _Arrivals, handler: Handler,
                           current: list[Incoming]) -> None:
        """Wait for a message, then handle it and up to ``DRAIN_MAX`` more queued ones."""
        await arrivals.wait()
        sock = arrivals.sock
        for _ in range(DRAIN_MAX):
            # EVENTS, not a receive that may fail: pyzmq's Again costs more than a check.
            if not sock.getsockopt(_EVENTS) & _POLLIN:
                return
            frames = sock.recv_multipart(_NOBLOCK, copy=True)
            current.clear()
            request = self._parse(channel, frames)
            if request is not None:
                current.append(request)
                await handler(request)
        await asyncio.sleep(0)  # more are queued: the other channels get a turn first

    def _parse(self, channel: str, frames: list[bytes]) -> Incoming | None:
        try:
            idents, msg = self.codec.parse(frames)
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
        arrivals = self._watch("iopub")
        sock = arrivals.sock
        while True:
            try:
                await arrivals.wait()
                while True:
                    try:
                        event = sock.recv(_NOBLOCK)
                    except zmq.Again:
                        break
                    if event[:1] == b"\x01":
                        self.subscribed.set()
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
        frames = self.codec.frames(msg_type, content, parent, idents, metadata)
        if buffers:
            frames = frames + list(buffers)
        # ROUTER and XPUB sockets never block a sender, so a non-blocking send from the
        # loop's thread is safe.
        sender = self._sockets[channel]
        try:
            for frame in frames[:-1]:
                sender.send(frame, _MORE)
            sender.send(frames[-1], _LAST)
        except zmq.ZMQError as error:
            log.error("sending %s on %s failed: %s", msg_type, channel, error)
        # A send processes the socket's commands, which may clear its fd with a message
        # queued: the receive waiting on this socket must look (see _Arrivals).
        self._arrivals[channel].check()

    def has_queued(self, channel: str) -> bool:
        """Whether another message already waits on ``channel``'s socket."""
        return bool(self._sockets[channel].getsockopt(_EVENTS) & _POLLIN)

    def publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None,
                metadata: dict[str, Any] | None = None,
                buffers: list[bytes] | None = None) -> None:
        self.send("iopub", msg_type, content, parent, metadata=metadata, buffers=buffers)

    def close(self) -> None:
        if self._watched:
            loop = asyncio.get_running_loop()
            for fd in self._watched:
                loop.remove_reader(fd)
            self._watched.clear()
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
