"""The page's own kernel connection, played by a second jupyter_client client, for the
tests of the relay of the ``comm`` package.

``PageClient`` (its own session) sees IOPub like a page's websocket and sends comm_open /
comm_msg / comm_close on the shell channel, as JupyterLab's widget manager does. The
other helpers run cells and read their results the way those tests need.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from kernel_helpers import KernelConnection, Result

WAIT_S = 15.0  # bound on every wait for the kernel; generous, a loaded machine is no bug
JOIN_TIMEOUT_S = 20.0
POLL_S = 0.05
BINARY = b"\x00\x01binary"

Message = dict[str, Any]


class PageClient:
    """A second client on the kernel, like the page's own websocket: a thread files every
    IOPub message; the test sends comm messages on the shell channel."""

    def __init__(self, connection_file: str) -> None:
        self.client = BlockingKernelClient(connection_file=connection_file)
        self.client.load_connection_file()
        self.client.start_channels()
        self._lock = threading.Lock()
        self._iopub: list[Message] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="page-iopub", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.client.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            msg["arrived_at"] = time.monotonic()
            with self._lock:
                self._iopub.append(msg)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.stop_channels()

    # -- sending

    def send(self, msg_type: str, content: dict[str, Any], buffers: list[bytes] | None = None,
             metadata: dict[str, Any] | None = None) -> str:
        msg = self.client.session.msg(msg_type, content, metadata=metadata)
        if buffers:
            msg["buffers"] = buffers
        self.client.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def comm_open(self, target_name: str, data: Any = None,
                  metadata: dict[str, Any] | None = None) -> str:
        comm_id = uuid.uuid4().hex
        self.send("comm_open", {"comm_id": comm_id, "target_name": target_name,
                                "data": {} if data is None else data}, metadata=metadata)
        return comm_id

    def comm_msg(self, comm_id: str, data: Any, buffers: list[bytes] | None = None) -> str:
        return self.send("comm_msg", {"comm_id": comm_id, "data": data}, buffers=buffers)

    def comm_close(self, comm_id: str) -> str:
        return self.send("comm_close", {"comm_id": comm_id, "data": {}})

    # -- receiving

    def mark(self) -> int:
        with self._lock:
            return len(self._iopub)

    def since(self, mark: int = 0) -> list[Message]:
        with self._lock:
            return list(self._iopub[mark:])

    def find(self, match: Callable[[Message], bool], since: int = 0,
             timeout: float = WAIT_S, what: str = "message") -> Message:
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.since(since):
                if match(msg):
                    return msg
            if time.monotonic() >= deadline:
                seen = [(m["msg_type"], m["content"].get("comm_id"))
                        for m in self.since(since)][-10:]
                raise AssertionError(f"no {what} on the page's IOPub within {timeout} s; "
                                     f"last seen: {seen}")
            time.sleep(POLL_S)

    def find_comm(self, msg_type: str, comm_id: str | None = None, since: int = 0,
                  match: Callable[[dict[str, Any]], bool] = lambda content: True,
                  timeout: float = WAIT_S) -> Message:
        return self.find(
            lambda m: m["msg_type"] == msg_type
            and (comm_id is None or m["content"].get("comm_id") == comm_id)
            and match(m["content"]),
            since, timeout, f"{msg_type} for {comm_id or 'any comm'}",
        )

    def wait_joined(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """A SUB socket joins late: ask until the page hears the answer's status on IOPub."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = self.send("kernel_info_request", {})
            try:
                self.find(lambda m, sent=msg_id: (m.get("parent_header") or {}).get("msg_id")
                          == sent, timeout=1.0)
                return
            except AssertionError:
                continue
        raise AssertionError(f"the page client did not hear IOPub within {timeout} s")


def buffers_of(msg: Message) -> list[bytes]:
    return [bytes(b) for b in msg.get("buffers") or []]


def describe(result: Result) -> str:
    content = result.content
    error = f"{content.get('ename')}: {content.get('evalue')}" if result.status == "error" else ""
    return f"status={result.status} {error}\nstdout={result.stdout!r}\nstderr={result.stderr!r}"


def run_ok(kernel: KernelConnection, code: str, timeout: float = 60.0) -> Result:
    result = kernel.run(code, timeout=timeout)
    assert result.status == "ok", describe(result)
    return result


def last_line(result: Result) -> Any:
    """The cell's last printed line, parsed as JSON (cells print ``json.dumps(...)``)."""
    return json.loads(result.stdout.strip().splitlines()[-1])


def comm_info(kernel: KernelConnection, target_name: str | None = None) -> dict[str, Any]:
    content = {} if target_name is None else {"target_name": target_name}
    reply = kernel.request("comm_info_request", content)
    assert reply.status == "ok", reply.content
    return reply.content["comms"]
