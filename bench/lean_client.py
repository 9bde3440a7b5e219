"""The measuring client of the kernel and comm benchmarks: one thread, no reader threads.

``LeanClient`` holds a kernel's shell, control and IOPub sockets and nothing else: no
heartbeat thread, no channel threads, no queues between threads. One ``zmq.Poller``
waits on the sockets, a message is timestamped with ``time.perf_counter()`` the moment
``recv_multipart`` returns it, then verified and parsed by ``jupyter_client.Session``
(the same signing and JSON as every Jupyter frontend). Every kernel is measured through
this one class, so what it costs is the same for all of them and as small as a client
can make it: a round trip is the kernel's time plus one sign, one verify and one JSON
parse per message on the client side.

Why not ``BlockingKernelClient``: on the same warm kernels its loop (``get_msg`` on
shell, then on IOPub) gave execute round-trip medians 1.4-2.2 ms above this client's,
by different amounts per kernel, with or without its heartbeat thread, so the cost is in
its per-socket reads rather than that thread (where exactly was not pinned down). The comm benchmark's notebook connection hands every message from a reader
thread to the measuring thread through a ``queue.Queue``: another wake-up and GIL
hand-off per message. Both stay as reference rows in the reports.

Every wait has a deadline and raises ``BenchFailure`` when it passes. This module starts
no process and formats nothing.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import Any

import zmq
from jupyter_client.session import Session
from launch import BenchFailure

CHANNELS = ("shell", "control", "iopub")
_OTHER = object()  # "not a message on the comm asked for"


def _parent_id(msg: dict[str, Any]) -> str:
    return (msg.get("parent_header") or {}).get("msg_id", "")


class LeanClient:
    """One kernel connection read by the calling thread only.

    ``connection`` is the connection info (a ``KernelManager.get_connection_info()``).
    ``context`` lets the caller choose socket options (reconnect interval, IMMEDIATE);
    by default zmq's defaults, as a frontend has them. ``iopub_rcvhwm`` 0 lets the SUB
    socket queue without bound, so that a flood of messages the client does not read
    at once is never dropped by this client."""

    def __init__(self, connection: dict[str, Any], context: zmq.Context | None = None,
                 channels: tuple[str, ...] = CHANNELS, iopub_rcvhwm: int | None = None) -> None:
        self._own_context = context is None
        self.context = context or zmq.Context()
        key = connection["key"]
        self.session = Session(key=key.encode() if isinstance(key, str) else key,
                               signature_scheme=connection.get("signature_scheme", "hmac-sha256"),
                               username="bench")
        self.sockets: dict[str, zmq.Socket] = {}
        self.poller = zmq.Poller()
        self._names: dict[zmq.Socket, str] = {}
        ip, transport = connection["ip"], connection.get("transport", "tcp")
        for name in channels:
            kind = zmq.SUB if name == "iopub" else zmq.DEALER
            sock = self.context.socket(kind)
            sock.linger = 0
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
                if iopub_rcvhwm is not None:
                    sock.setsockopt(zmq.RCVHWM, iopub_rcvhwm)
            else:
                sock.setsockopt(zmq.IDENTITY, self.session.bsession)
            sock.connect(f"{transport}://{ip}:{connection[name + '_port']}")
            self.sockets[name] = sock
            self._names[sock] = name
            self.poller.register(sock, zmq.POLLIN)
        # Messages read while waiting for another one, in arrival order, per channel.
        self._held: dict[str, deque[tuple[float, dict[str, Any]]]] = {n: deque() for n in channels}

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(linger=0)
        if self._own_context:
            self.context.term()

    # ------------------------------------------------------------------ sending

    def message(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        return self.session.msg(msg_type, content)

    def send(self, channel: str, msg: dict[str, Any], nowait: bool = False) -> str:
        """Sign and send ``msg``; with ``nowait``, raise ``zmq.Again`` rather than block or
        queue when the socket has no connected peer (needs IMMEDIATE on the context)."""
        self.sockets[channel].send_multipart(self.session.serialize(msg),
                                             zmq.NOBLOCK if nowait else 0)
        return msg["header"]["msg_id"]

    def request(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        return self.send(channel, self.message(msg_type, content))

    def execute(self, code: str, **extra: Any) -> str:
        return self.request("shell", "execute_request", {
            "code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True, **extra})

    def comm_open(self, target_name: str, data: Any, comm_id: str | None = None) -> str:
        comm_id = comm_id or uuid.uuid4().hex
        self.request("shell", "comm_open", {"comm_id": comm_id, "target_name": target_name,
                                            "data": data})
        return comm_id

    def comm_msg(self, comm_id: str, data: Any) -> None:
        self.request("shell", "comm_msg", {"comm_id": comm_id, "data": data})

    def comm_close(self, comm_id: str) -> None:
        self.request("shell", "comm_close", {"comm_id": comm_id, "data": {}})

    # ------------------------------------------------------------------ receiving

    def recv_on(self, channel: str, deadline: float, what: str) -> tuple[float, dict[str, Any]]:
        """The next message on ``channel``; what arrives on other channels is held."""
        held = self._held[channel]
        if held:
            return held.popleft()
        while True:
            got = self._recv_socket(deadline)
            if got is None:
                raise BenchFailure(f"timed out waiting for {what} on {channel}")
            name, t, msg = got
            if name == channel:
                return t, msg
            self._held[name].append((t, msg))

    def recv_on_parent(self, channel: str, msg_id: str, deadline: float,
                       what: str) -> tuple[float, dict[str, Any]]:
        """The next message on ``channel`` parented to ``msg_id``; others there are dropped."""
        while True:
            t, msg = self.recv_on(channel, deadline, what)
            if _parent_id(msg) == msg_id:
                return t, msg

    def next_comm_msg(self, comm_id: str, deadline: float, what: str) -> tuple[float, Any]:
        """The data of the next ``comm_msg`` on ``comm_id`` from IOPub; a ``comm_close`` on
        it raises. IOPub messages whose header names another type (the busy/idle pair
        some kernels publish around every comm_msg they handle) are dropped before they
        are verified or parsed, so that kernel does not pay this client's parsing for them."""
        held = self._held["iopub"]
        while held:
            t, msg = held.popleft()
            data = self._comm_data(msg, comm_id)
            if data is not _OTHER:
                return t, data
        while True:
            got = self._recv_socket(deadline, iopub_types=(b"comm_msg", b"comm_close"))
            if got is None:
                raise BenchFailure(f"timed out waiting for {what}")
            name, t, msg = got
            if msg is None:
                continue
            if name != "iopub":
                self._held[name].append((t, msg))
                continue
            data = self._comm_data(msg, comm_id)
            if data is not _OTHER:
                return t, data

    @staticmethod
    def _comm_data(msg: dict[str, Any], comm_id: str) -> Any:
        if msg["content"].get("comm_id") != comm_id:
            return _OTHER
        if msg["header"]["msg_type"] == "comm_close":
            raise BenchFailure(f"the kernel closed comm {comm_id}")
        if msg["header"]["msg_type"] != "comm_msg":
            return _OTHER
        return msg["content"].get("data")

    def _recv_socket(self, deadline: float, iopub_types: tuple[bytes, ...] = ()
                     ) -> tuple[str, float, dict[str, Any] | None] | None:
        """One message from whichever socket is ready first; ``None`` at the deadline.
        With ``iopub_types``, an IOPub message whose header frame contains none of them
        comes back as (name, time, None), unparsed."""
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return None
        events = self.poller.poll(max(1, int(remaining * 1000 + 0.999)))
        if not events:
            return None
        sock = events[0][0]
        frames = sock.recv_multipart(copy=False)
        t = time.perf_counter()
        name = self._names[sock]
        _idents, rest = self.session.feed_identities(frames, copy=False)
        if iopub_types and name == "iopub":
            header = rest[1].bytes  # rest: signature, header, parent, metadata, content, buffers
            if not any(kind in header for kind in iopub_types):
                return name, t, None
        return name, t, self.session.deserialize(rest, content=True, copy=False)

    def drop_held(self, channel: str) -> None:
        self._held[channel].clear()

    def reply_and_idle(self, msg_id: str, deadline: float, channel: str = "shell",
                       on_iopub: Any = None) -> tuple[float, dict[str, Any]]:
        """Wait for the reply to ``msg_id`` on ``channel`` AND the IOPub ``idle`` parented
        to it, in whichever order they come; returns (time the later one arrived, reply).
        IOPub messages parented to ``msg_id`` go to ``on_iopub(t, msg)``; others are dropped."""
        reply: dict[str, Any] | None = None
        reply_t = idle_t = 0.0
        idle = False
        while reply is None or not idle:
            got = self.next_message(deadline)
            if got is None:
                have = "the reply" if reply is not None else ("idle" if idle else "nothing")
                raise BenchFailure(f"timed out waiting for the {channel} reply and the IOPub idle "
                                   f"of msg_id {msg_id} (had {have})")
            name, t, msg = got
            if _parent_id(msg) != msg_id:
                continue
            if name == channel:
                reply, reply_t = msg, t
            elif name == "iopub":
                if (msg["header"]["msg_type"] == "status"
                        and msg["content"].get("execution_state") == "idle"):
                    idle, idle_t = True, t
                elif on_iopub is not None:
                    on_iopub(t, msg)
        return max(reply_t, idle_t), reply

    def next_message(self, deadline: float) -> tuple[str, float, dict[str, Any]] | None:
        """The next message on any socket, as (channel, receipt time, message); ``None``
        when nothing arrives by ``deadline``. Held messages come first."""
        for name, held in self._held.items():
            if held:
                t, msg = held.popleft()
                return name, t, msg
        return self._recv_socket(deadline)

    def run(self, code: str, timeout_s: float, what: str = "") -> str:
        """Execute ``code``; require status ok; return its stdout."""
        out: list[str] = []

        def collect(_t: float, msg: dict[str, Any]) -> None:
            if msg["header"]["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["header"]["msg_type"] == "error":
                out.append(f"{msg['content'].get('ename')}: {msg['content'].get('evalue')}\n")

        msg_id = self.execute(code)
        _t, reply = self.reply_and_idle(msg_id, time.perf_counter() + timeout_s, on_iopub=collect)
        if reply["content"].get("status") != "ok":
            raise BenchFailure(f"{what or 'cell'} failed: {reply['content'].get('ename')}: "
                               f"{reply['content'].get('evalue')}; code {code[:200]!r}; "
                               f"output {''.join(out)[-300:]!r}")
        return "".join(out)

    def wait_ready(self, timeout_s: float) -> None:
        """kernel_info until answered and IOPub delivers (as ``wait_for_ready`` checks):
        afterwards nothing the kernel publishes is missed by the SUB socket."""
        deadline = time.perf_counter() + timeout_s
        while True:
            msg_id = self.request("shell", "kernel_info_request", {})
            try:
                self.reply_and_idle(msg_id, min(deadline, time.perf_counter() + 1.0))
                return
            except BenchFailure:
                if time.perf_counter() >= deadline:
                    raise BenchFailure(f"no kernel_info_reply and IOPub idle in {timeout_s:.0f} s") from None
