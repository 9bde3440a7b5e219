"""A page without a browser: plays the page client's part of the address channel.

It connects to a kernel as a second jupyter_client client (its own session, as the real
page client opens its own websocket), watches IOPub for the install script, answers with
``comm_open``, and then behaves like ``js/wrapperkernel_comm.js``: acks, pongs, values,
batches, read requests answered from its synced values, and ``#ack`` of the kernel's
message ``seq`` (at once after ``ACK_EVERY_MSGS`` messages, else ``ACK_DELAY_S`` after
the first unacknowledged one), unless ``acknowledge`` is False. Tests use it to exercise the
kernel and the worker over real ZMQ without a browser.
"""

from __future__ import annotations

import copy
import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient

from wrapperkernel import buffers

# What the kernel tells the page client (ack_every_msgs, ack_delay_ms in its config).
from wrapperkernel.address.defaults import ACK_DELAY_S, ACK_EVERY_MSGS

INSTALL_CALL = re.compile(r"wrapperkernel_comm_install\((\{.*?\})\);", re.S)


class HeadlessPage:
    def __init__(self, connection_file: str, *, answer_pings: bool = True,
                 connect: bool = True, acknowledge: bool = True,
                 seconds_per_value: float = 0.0,
                 on_value: Callable[[str, Any], None] | None = None) -> None:
        self.client = BlockingKernelClient(connection_file=connection_file)
        self.client.load_connection_file()
        self.client.start_channels()
        self.answer_pings = answer_pings
        self.connect = connect
        self.acknowledge = acknowledge
        # A slow page: it spends this long on each value it receives.
        self.seconds_per_value = seconds_per_value
        # Instead of recording: called with each value (address, value), and comm
        # messages are not kept in iopub_log (a benchmark's millions of values).
        self.on_value = on_value
        self.last_seq = 0
        self.acked_seq = 0
        self.acks_sent = 0
        self._unacked_since: float | None = None
        self.comm_id: str | None = None
        self.kernel_id: str | None = None
        self.acked = threading.Event()
        self.received: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.synced: dict[str, Any] = {}
        self.installs = 0
        self.comm_msgs_seen = 0
        self.closed_by_kernel = threading.Event()
        # Records for tests that check order and parentage (appended by the page thread):
        # every IOPub message seen, every value received as (comm_id, address, value), every
        # comm the page opened (oldest first), and the msg_id of every message it sent.
        self.iopub_log: list[dict[str, Any]] = []
        self.history: list[tuple[str, str, Any]] = []
        self.comm_ids: list[str] = []
        self.sent_msg_ids: list[str] = []
        # The page thread (pongs, read answers) and a test thread may send at once, and a
        # zmq socket must not be used by two threads at the same time.
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._reopen_wanted = threading.Event()
        self._reopened = threading.Event()
        self._thread = threading.Thread(target=self._run, name="headless-page", daemon=True)
        self._thread.start()

    # -- page API, as in js/wrapperkernel_comm.js

    def send(self, address: str, value: Any) -> None:
        self._comm_msg({"address": address, "value": value})

    def send_batch(self, items: list[tuple[str, Any]]) -> None:
        self._comm_msg({"batch": [{"address": a, "value": v} for a, v in items]})

    def next_value(self, timeout: float = 10.0) -> tuple[str, Any]:
        return self.received.get(timeout=timeout)

    def wait_connected(self, timeout: float = 10.0) -> None:
        if not self.acked.wait(timeout):
            raise TimeoutError(f"the kernel did not ack the page's comm_open within {timeout} s")

    def reopen(self, timeout: float = 5.0) -> None:
        """A reloaded page whose client installs itself (a restored widget does): a new
        comm_open on a new comm, without waiting for the kernel's install script.

        The page thread makes the switch, between two messages: the seq bookkeeping of
        the old comm must not leak into the new one's."""
        if self.kernel_id is None:
            raise RuntimeError("the headless page never saw the kernel's install script")
        self._reopened.clear()
        self._reopen_wanted.set()
        if not self._reopened.wait(timeout):
            raise TimeoutError(f"the headless page did not reopen within {timeout} s")

    def join(self, kernel_id: str, timeout: float = 5.0) -> None:
        """A second page (another tab, a collaborator) whose client installs itself and
        joins kernel ``kernel_id``: a comm_open on a new comm, from the page thread.
        Learn the id from a page that saw the install script (``kernel_id``)."""
        self.kernel_id = kernel_id
        self.reopen(timeout)

    def reload(self) -> None:
        """Forget the connection, as a page reload does: no close is sent."""
        self.comm_id = None
        self.acked.clear()
        self._forget_seq()

    def _forget_seq(self) -> None:
        self.last_seq = self.acked_seq = 0
        self._unacked_since = None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.stop_channels()

    def drop(self, outage_s: float = 0.0) -> None:
        """The page's connection drops without a word (network gone, server restarted):
        the page stops reading and answering, its sockets close, and after ``outage_s``
        it comes back on new sockets with no comm, as a page client whose websocket died.
        The kernel hears nothing, pings, gets no pong and reinstalls the client; this
        page answers an install script published once it is back. What was published
        meanwhile never reaches it."""
        self._stop.set()
        self._thread.join(5)
        if self._thread.is_alive():
            raise RuntimeError("the headless page's thread did not stop within 5 s")
        with self._send_lock:
            self.comm_id = None
            self.acked.clear()
            self._forget_seq()
            self.client.stop_channels()
        time.sleep(outage_s)
        client = BlockingKernelClient(connection_file=self.client.connection_file)
        client.load_connection_file()
        client.start_channels()
        with self._send_lock:
            self.client = client
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="headless-page", daemon=True)
        self._thread.start()

    # -- internals

    def _comm_msg(self, data: Any) -> None:
        if self.comm_id is None:
            raise RuntimeError("the headless page is not connected")
        # Bytes-like values travel as the message's buffers, as the page client sends them.
        out, paths, bufs = buffers.extract(data)
        if paths:
            data = {**out, "buffer_paths": paths}
        msg = self.client.session.msg("comm_msg", {"comm_id": self.comm_id, "data": data})
        if paths:
            msg["buffers"] = [bytes(b) for b in bufs]
        self._send(msg)

    def _send(self, msg: dict[str, Any]) -> None:
        with self._send_lock:
            self.sent_msg_ids.append(msg["header"]["msg_id"])
            self.client.shell_channel.send(msg)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._reopen_wanted.is_set():
                self._reopen_wanted.clear()
                self._open(self.kernel_id or "")
                self._reopened.set()
            self._maybe_ack(time.monotonic())
            try:
                msg = self.client.get_iopub_msg(timeout=ACK_DELAY_S / 2)
            except queue.Empty:
                continue
            kind = msg["header"]["msg_type"]
            if self.on_value is None or kind != "comm_msg":
                self.iopub_log.append(msg)
            content = msg["content"]
            if kind == "display_data":
                html = content.get("data", {}).get("text/html", "")
                found = INSTALL_CALL.search(html)
                if found and self.connect:
                    self.installs += 1
                    config = json.loads(found.group(1))
                    self._open(config["kernel_id"])
            elif kind == "comm_msg" and content.get("comm_id") == self.comm_id:
                self.comm_msgs_seen += 1
                data = content["data"]
                if "buffer_paths" in data:
                    # Binary values: each buffer back at its slot, as bytes.
                    data = copy.deepcopy(data)  # the iopub_log keeps what arrived
                    paths = data.pop("buffer_paths")
                    data = buffers.insert(data, paths, msg.get("buffers") or [])
                    data = _bytes_in(data)
                items = data["batch"] if "batch" in data else [data]
                for item in items:
                    self._item(item, content["comm_id"])
                if self.seconds_per_value:
                    time.sleep(self.seconds_per_value * len(items))
                seq = (msg.get("metadata") or {}).get("seq")
                if type(seq) is int and content["comm_id"] == self.comm_id:
                    self.last_seq = max(self.last_seq, seq)
                    if self._unacked_since is None:
                        self._unacked_since = time.monotonic()
                    if self.last_seq - self.acked_seq >= ACK_EVERY_MSGS:
                        self._ack()
            elif kind == "comm_close" and content.get("comm_id") == self.comm_id:
                self.closed_by_kernel.set()

    def _maybe_ack(self, now: float) -> None:
        if self._unacked_since is not None and now - self._unacked_since >= ACK_DELAY_S:
            self._ack()

    def _ack(self) -> None:
        self._unacked_since = None
        if not self.acknowledge or self.comm_id is None or self.last_seq <= self.acked_seq:
            return
        self.acked_seq = self.last_seq
        self.acks_sent += 1
        self._comm_msg({"address": "#ack", "value": self.last_seq})

    def _open(self, kernel_id: str) -> None:
        self.kernel_id = kernel_id
        self._forget_seq()
        self.comm_id = uuid.uuid4().hex
        self.comm_ids.append(self.comm_id)
        self.acked.clear()
        msg = self.client.session.msg("comm_open", {
            "comm_id": self.comm_id, "target_name": "wrapperkernel_comm",
            "data": {"kernel_id": kernel_id},
        })
        self._send(msg)

    def _item(self, item: dict[str, Any], comm_id: str = "") -> None:
        address = item.get("address")
        if address == "#comm_open_ack":
            self.acked.set()
        elif address == "#heartbeat/ping":
            if self.answer_pings:
                self._comm_msg({"address": "#heartbeat/pong", "value": item.get("value")})
        elif item.get("read_request"):
            if address in self.synced:
                self._comm_msg({"address": address, "value": self.synced[address]})
            else:
                self._comm_msg({"address": address, "read_error": f"no value for {address}"})
        elif "value" in item:
            if self.on_value is not None:
                self.on_value(address, item["value"])
                return
            self.history.append((comm_id, address, item["value"]))
            self.received.put((address, item["value"]))


def _bytes_in(value: Any) -> Any:
    """``value`` with its memoryviews as bytes (comparable in tests)."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, list):
        return [_bytes_in(item) for item in value]
    if isinstance(value, dict):
        return {key: _bytes_in(item) for key, item in value.items()}
    return value


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
