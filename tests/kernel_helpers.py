"""Talking to a real wrapperkernel through jupyter_client, for the kernel-level tests.

``KernelConnection`` files every message it receives under the ``msg_id`` of its parent,
per channel, so a test can have several requests in flight and still ask "the reply to
this request" or "the IOPub messages of that cell" without losing anything that arrived
in between. Every wait has a timeout and fails with a summary of what did arrive.
"""

from __future__ import annotations

import os
import queue
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

KERNEL_NAME = "wrapperkernel"
STARTUP_TIMEOUT_S = 60.0
# Generous: a loaded CI machine must never turn a correct kernel into a failed test.
REPLY_TIMEOUT_S = 10.0
CELL_TIMEOUT_S = 60.0
POLL_S = 0.2

Message = dict[str, Any]


@dataclass
class Result:
    """The reply to a request and the IOPub messages parented to it, busy to idle."""

    reply: Message
    iopub: list[Message]

    @property
    def content(self) -> dict[str, Any]:
        return self.reply["content"]

    @property
    def status(self) -> str:
        return self.content["status"]

    @property
    def outputs(self) -> list[Message]:
        return [msg for msg in self.iopub if msg["msg_type"] not in ("status", "execute_input")]

    @property
    def output_types(self) -> list[str]:
        return [msg["msg_type"] for msg in self.outputs]

    def stream(self, name: str) -> str:
        return "".join(
            msg["content"]["text"]
            for msg in self.outputs
            if msg["msg_type"] == "stream" and msg["content"]["name"] == name
        )

    @property
    def stdout(self) -> str:
        return self.stream("stdout")

    @property
    def stderr(self) -> str:
        return self.stream("stderr")


class KernelConnection:
    """A started kernel and a client on all channels, with per-request message buckets."""

    def __init__(self, km: KernelManager, kc: BlockingKernelClient) -> None:
        self.km = km
        self.kc = kc
        self._buckets: dict[str, dict[str, list[Message]]] = {
            name: defaultdict(list) for name in ("shell", "control", "iopub", "stdin")
        }
        # Every message of a channel in arrival order, whatever its parent.
        self.arrivals: dict[str, list[Message]] = {name: [] for name in self._buckets}
        self._getters: dict[str, Callable[..., Message]] = {
            "shell": kc.get_shell_msg,
            "control": kc.get_control_msg,
            "iopub": kc.get_iopub_msg,
            "stdin": kc.get_stdin_msg,
        }

    # ------------------------------------------------------------------ sending

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        """Send a request of any type on ``channel``; returns its ``msg_id``."""
        msg = self.kc.session.msg(msg_type, content)
        getattr(self.kc, f"{channel}_channel").send(msg)
        return msg["header"]["msg_id"]

    def execute(self, code: str, **options: Any) -> str:
        return self.kc.execute(code, **options)

    # ------------------------------------------------------------------ receiving

    def _pump(self, channel: str, timeout: float) -> bool:
        """Move one message (if one arrives within ``timeout``) into its bucket."""
        try:
            msg = self._getters[channel](timeout=timeout)
        except queue.Empty:
            return False
        parent = msg.get("parent_header") or {}
        self.arrivals[channel].append(msg)
        self._buckets[channel][parent.get("msg_id", "")].append(msg)
        return True

    def wait_for(
        self,
        channel: str,
        parent_id: str,
        done: Callable[[list[Message]], bool],
        timeout: float = REPLY_TIMEOUT_S,
        what: str = "",
    ) -> list[Message]:
        bucket = self._buckets[channel][parent_id]
        deadline = time.monotonic() + timeout
        while not done(bucket):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                types = [msg["msg_type"] for msg in bucket]
                raise AssertionError(
                    f"no {what or 'answer'} on {channel} for {parent_id} within {timeout} s; "
                    f"got {len(types)} messages: {types[:5]}{' ...' if len(types) > 5 else ''}"
                )
            self._pump(channel, min(remaining, POLL_S))
        return bucket

    def messages(self, channel: str, parent_id: str) -> list[Message]:
        """What arrived so far for ``parent_id``, without waiting."""
        while self._pump(channel, 0):
            pass
        return list(self._buckets[channel][parent_id])

    def find(self, channel: str, match: Callable[[Message], bool],
             timeout: float = REPLY_TIMEOUT_S, what: str = "") -> Message:
        """The first message on ``channel``, whatever its parent, for which ``match`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            for bucket in self._buckets[channel].values():
                for msg in bucket:
                    if match(msg):
                        return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what or 'matching message'} on {channel} within {timeout} s")
            self._pump(channel, min(remaining, POLL_S))

    def replies(self, parent_id: str, channel: str = "shell") -> list[Message]:
        return [msg for msg in self.messages(channel, parent_id) if msg["msg_type"].endswith("_reply")]

    def reply(self, parent_id: str, channel: str = "shell", timeout: float = REPLY_TIMEOUT_S) -> Message:
        bucket = self.wait_for(channel, parent_id, lambda msgs: len(msgs) > 0, timeout, "reply")
        return bucket[0]

    def iopub(self, parent_id: str, timeout: float = REPLY_TIMEOUT_S) -> list[Message]:
        """IOPub messages of a request up to and including its ``idle`` status."""
        bucket = self.wait_for("iopub", parent_id, _has_idle, timeout, "idle status")
        return list(bucket)

    def wait_for_output(self, parent_id: str, text: str, timeout: float = REPLY_TIMEOUT_S) -> None:
        """Wait until the request's stdout contains ``text`` (proof that a cell is running)."""

        def seen(msgs: list[Message]) -> bool:
            return text in "".join(
                m["content"]["text"] for m in msgs if m["msg_type"] == "stream"
            )

        self.wait_for("iopub", parent_id, seen, timeout, f"output {text!r}")

    def result(self, parent_id: str, channel: str = "shell", timeout: float = REPLY_TIMEOUT_S) -> Result:
        reply = self.reply(parent_id, channel, timeout)
        return Result(reply, self.iopub(parent_id, timeout))

    def run(self, code: str, timeout: float = CELL_TIMEOUT_S, **options: Any) -> Result:
        """Execute ``code`` and wait for its reply and its IOPub messages."""
        return self.result(self.execute(code, **options), timeout=timeout)

    def request(self, msg_type: str, content: dict[str, Any], channel: str = "shell",
                timeout: float = REPLY_TIMEOUT_S) -> Result:
        return self.result(self.send(msg_type, content, channel), channel, timeout)


def _has_idle(msgs: list[Message]) -> bool:
    return any(
        m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" for m in msgs
    )


@contextmanager
def running_kernel(kernel_name: str = KERNEL_NAME,
                   env: dict[str, str] | None = None) -> Iterator[KernelConnection]:
    """Start a kernel on 127.0.0.1 with a client on all channels; stop both afterwards.

    ``env``: variables added to the kernel's environment.
    """
    km = KernelManager(kernel_name=kernel_name, ip="127.0.0.1")
    km.start_kernel(**({"env": {**os.environ, **env}} if env else {}))
    try:
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=STARTUP_TIMEOUT_S)
            yield KernelConnection(km, kc)
        finally:
            kc.stop_channels()
    finally:
        # Asks politely, then kills the kernel if it has not gone within its grace period.
        km.shutdown_kernel(now=False)
