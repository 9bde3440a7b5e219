"""Client-side helpers for the comm benchmark: a notebook connection and a headless page.

``Notebook`` is the page's own kernel connection (execute requests, the ipykernel-style
comms, ipywidgets' comm messages). A reader thread timestamps every IOPub message with
``time.perf_counter()`` the moment it is received and files it by parent (requests this
client sent) or by comm_id (comms the benchmark watches); the measuring thread only ever
reads those timestamps, so its own queue hand-offs never count in a measurement. All
shell-socket traffic (sends and replies) stays on the measuring thread: a zmq socket must
not be used by two threads at once.

``BenchPage`` is ``tests/headless_page.py``'s ``HeadlessPage`` (imported by path) with two
additions: it echoes every value it receives on ``/echo/out`` back on ``/echo/in`` from
its own thread (for the program-side round trip), and it files values for addresses under
``/bench/`` in per-address queues with their receipt time.

Every wait here has a timeout and raises ``BenchFailure`` with what was expected.
"""

from __future__ import annotations

import importlib.util
import queue
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import zmq
from launch import BenchFailure, RunningKernel

REPO = Path(__file__).resolve().parent.parent
ECHO_OUT, ECHO_IN = "/echo/out", "/echo/in"
BENCH_PREFIX = "/bench/"
IDLE_AFTER_REPLY_S = 10.0
READY_TIMEOUT_S = 60.0


class LostIdle(BenchFailure):
    """The shell reply arrived but the IOPub idle status parented to it never did."""


def load_from_tests(stem: str, name: str) -> Any:
    """``name`` from ``tests/<stem>.py``, imported by path (tests/ is not a package)."""
    path = REPO / "tests" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"wrapperkernel_bench_{stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, name)


HeadlessPage = load_from_tests("headless_page", "HeadlessPage")


def _get(q: queue.Queue, timeout: float, what: str) -> Any:
    try:
        return q.get(timeout=max(0.0, timeout))
    except queue.Empty:
        raise BenchFailure(f"timed out after {timeout:.1f} s waiting for {what}") from None


class Notebook:
    """One kernel connection with an IOPub reader thread that timestamps on receipt."""

    def __init__(self, kernel: RunningKernel) -> None:
        self.kernel = kernel
        self.context = zmq.Context()
        # Unlimited receive queue: a burst of ipykernel comm messages must not be dropped
        # by this client's own SUB socket (the kernel's PUB socket keeps its default).
        self.context.setsockopt(zmq.RCVHWM, 0)
        self.client = kernel.km.client(context=self.context)
        self.client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        # Before the reader thread starts: wait_for_ready reads IOPub itself, and a zmq
        # socket must not be read by two threads.
        try:
            self.client.wait_for_ready(timeout=READY_TIMEOUT_S)
        except RuntimeError as error:
            self.client.stop_channels()
            self.context.destroy(linger=0)
            raise BenchFailure(f"{kernel.name}: not ready: {error}") from None
        self._lock = threading.Lock()
        self._by_parent: dict[str, queue.Queue] = {}
        self._by_comm: dict[str, queue.Queue] = {}
        self.comm_opens: queue.Queue = queue.Queue()
        self.last_idle_t = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"iopub-{kernel.name}", daemon=True)
        self._thread.start()

    # -- reader thread

    def _run(self) -> None:
        channel = self.client.iopub_channel
        while not self._stop.is_set():
            try:
                msg = channel.get_msg(timeout=0.05)
            except queue.Empty:
                continue
            except (zmq.ZMQError, ValueError):
                if self._stop.is_set():
                    return
                raise
            now = time.perf_counter()
            kind = msg["header"]["msg_type"]
            content = msg.get("content", {})
            if kind == "comm_open":
                self.comm_opens.put((now, content))
            if kind in ("comm_msg", "comm_close", "comm_open"):
                q = self._by_comm.get(content.get("comm_id", ""))
                if q is not None:
                    q.put((now, kind, content.get("data")))
                continue
            parent = msg.get("parent_header", {}).get("msg_id", "")
            q = self._by_parent.get(parent)
            if q is not None:
                q.put((now, msg))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self.client.channels_running:
            self.client.stop_channels()
        self.context.destroy(linger=0)

    # -- requests

    def execute(self, code: str) -> str:
        msg = self.client.session.msg("execute_request", {
            "code": code, "silent": False, "store_history": False,
            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
        with self._lock:
            self._by_parent[msg["header"]["msg_id"]] = queue.Queue()
        self.client.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def wait_busy(self, msg_id: str, timeout: float = 10.0) -> float:
        """Wait for the `busy` status of a request (the cell has started); returns its time."""
        q = self._by_parent[msg_id]
        deadline = time.perf_counter() + timeout
        seen: list[tuple[float, dict]] = []
        try:
            while True:
                now, msg = _get(q, deadline - time.perf_counter(), f"busy for {msg_id}")
                seen.append((now, msg))
                if msg["header"]["msg_type"] == "status" and \
                        msg["content"].get("execution_state") == "busy":
                    return now
        finally:
            for item in seen:  # put back for finish()
                q.put(item)

    def finish(self, msg_id: str, timeout: float = 30.0) -> tuple[dict, str, list[tuple[float, str]]]:
        """Wait for the shell reply and IOPub idle of a request.

        Returns (reply content, stdout text, [(receipt time, stdout chunk)]).
        """
        deadline = time.perf_counter() + timeout
        reply = None
        while reply is None:
            try:
                msg = self.client.shell_channel.get_msg(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                raise BenchFailure(f"no execute_reply for {msg_id} within {timeout:.0f} s") from None
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                reply = msg["content"]
        try:
            # The reply is in: the idle status follows at once unless IOPub dropped it.
            chunks = self.read_until_idle(msg_id, min(deadline, time.perf_counter() + IDLE_AFTER_REPLY_S))
        except BenchFailure:
            raise LostIdle(f"the execute_reply ({reply.get('status')}) arrived but the IOPub `idle` "
                           f"status did not within {IDLE_AFTER_REPLY_S:.0f} s") from None
        finally:
            with self._lock:
                self._by_parent.pop(msg_id, None)
        return reply, "".join(text for _t, text in chunks), chunks

    def read_until_idle(self, msg_id: str, deadline: float) -> list[tuple[float, str]]:
        q = self._by_parent[msg_id]
        chunks: list[tuple[float, str]] = []
        while True:
            now, msg = _get(q, deadline - time.perf_counter(), f"idle for {msg_id}")
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                chunks.append((now, msg["content"]["text"]))
            elif kind == "error":
                chunks.append((now, "ERROR " + msg["content"].get("ename", "") + ": "
                               + msg["content"].get("evalue", "") + "\n"))
            elif kind == "status" and msg["content"].get("execution_state") == "idle":
                self.last_idle_t = now
                return chunks

    def next_output(self, msg_id: str, timeout: float, what: str) -> tuple[float, dict]:
        """The next IOPub message of a running request (stream, error, status...)."""
        return _get(self._by_parent[msg_id], timeout, what)

    def put_back(self, msg_id: str, item: tuple[float, dict]) -> None:
        """Return an item taken by ``next_output`` that ``finish`` must still see (the
        request's error or idle status)."""
        self._by_parent[msg_id].put(item)

    def pending(self) -> list[str]:
        """The requests sent on this connection whose ``finish`` has not returned."""
        with self._lock:
            return list(self._by_parent)

    def run(self, code: str, timeout: float = 30.0) -> str:
        """Execute, require status ok, return stdout."""
        msg_id = self.execute(code)
        reply, out, _ = self.finish(msg_id, timeout)
        if reply.get("status") != "ok":
            raise BenchFailure(f"cell failed: {reply.get('ename')}: {reply.get('evalue')}\n"
                               f"code: {code[:300]!r}\noutput: {out[-500:]}")
        return out

    # -- comms on this connection (ipykernel-style)

    def watch_comm(self, comm_id: str) -> queue.Queue:
        with self._lock:
            q = self._by_comm.setdefault(comm_id, queue.Queue())
        return q

    def unwatch_comm(self, comm_id: str) -> None:
        with self._lock:
            self._by_comm.pop(comm_id, None)

    def comm_open(self, target_name: str, data: Any) -> str:
        comm_id = uuid.uuid4().hex
        self.watch_comm(comm_id)
        msg = self.client.session.msg("comm_open", {
            "comm_id": comm_id, "target_name": target_name, "data": data})
        self.client.shell_channel.send(msg)
        return comm_id

    def comm_msg(self, comm_id: str, data: Any) -> None:
        msg = self.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.client.shell_channel.send(msg)

    def comm_close(self, comm_id: str) -> None:
        msg = self.client.session.msg("comm_close", {"comm_id": comm_id, "data": {}})
        self.client.shell_channel.send(msg)
        self.unwatch_comm(comm_id)

    def next_comm_msg(self, comm_id: str, timeout: float, what: str) -> tuple[float, Any]:
        q = self._by_comm[comm_id]
        deadline = time.perf_counter() + timeout
        while True:
            now, kind, data = _get(q, deadline - time.perf_counter(), what)
            if kind == "comm_msg":
                return now, data
            if kind == "comm_close":
                raise BenchFailure(f"the kernel closed comm {comm_id} while waiting for {what}")


class BenchPage(HeadlessPage):  # type: ignore[misc, valid-type]
    """The headless page, echoing /echo/out to /echo/in and filing /bench/* values."""

    def __init__(self, connection_file: str) -> None:
        self._queues: dict[str, queue.Queue] = defaultdict(queue.Queue)
        self._queues_lock = threading.Lock()
        self.echoed = 0
        super().__init__(connection_file)

    def queue_for(self, address: str) -> queue.Queue:
        with self._queues_lock:
            return self._queues[address]

    def drain(self, address: str) -> int:
        q = self.queue_for(address)
        n = 0
        while True:
            try:
                q.get_nowait()
                n += 1
            except queue.Empty:
                return n

    def next(self, address: str, timeout: float, what: str = "") -> tuple[float, Any]:
        return _get(self.queue_for(address), timeout, what or f"a value on {address}")

    def _item(self, item: dict[str, Any], comm_id: str = "") -> None:
        address = item.get("address")
        if address == ECHO_OUT and "value" in item:
            self.echoed += 1
            self.send(ECHO_IN, item["value"])
            return
        if isinstance(address, str) and address.startswith(BENCH_PREFIX) and "value" in item:
            self.queue_for(address).put((time.perf_counter(), item["value"]))
            return
        super()._item(item, comm_id)
