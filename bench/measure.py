"""The timed loops: one function per metric, each bounded by a deadline.

Every wait here has a timeout; a kernel that does not answer in time raises
``BenchFailure`` with what was sent and what came back, so a hang becomes a finding in
the report instead of a stuck benchmark. Clients read their sockets directly with
``get_msg`` (no ``execute_interactive``, whose polling adds client-side latency).

This module starts no process itself (``launch.py`` does) and formats nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from queue import Empty
from typing import Any

import psutil
import zmq
from jupyter_client.blocking import BlockingKernelClient
from launch import BenchFailure, RunningKernel, Sandbox, polling_context, start

KERNEL_INFO_POLL_S = 0.010
RECONNECT_IVL_MS = 5
LATE_OUTPUT_WAIT_S = 0.5


@dataclass
class LaunchSample:
    kernel_info_s: float  # start_kernel() call -> first kernel_info_reply
    first_execute_s: float  # start_kernel() call -> execute_reply of `pass`
    start_call_s: float  # how long start_kernel() itself blocked
    kernel_info_sent: int  # kernel_info_requests that left the client before the reply


@dataclass
class ThroughputSample:
    elapsed_s: float  # execute_request sent -> idle status received
    lines_expected: int
    lines_received: int
    lines_lost: int  # expected lines that never arrived
    in_order: bool
    stream_messages: int
    late_lines: int  # stdout lines that arrived after the idle status (counted as received)


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.perf_counter())


def _parent_id(msg: dict[str, Any]) -> str:
    return msg.get("parent_header", {}).get("msg_id", "")


def wait_shell_reply(client: BlockingKernelClient, msg_id: str, deadline: float,
                     what: str) -> dict[str, Any]:
    return wait_reply(client, msg_id, deadline, what)


def wait_reply(client: BlockingKernelClient, msg_id: str, deadline: float, what: str,
               channel: str = "shell") -> dict[str, Any]:
    """The reply parented to ``msg_id`` on ``channel`` ("shell" or "control"); others are skipped."""
    socket_channel = getattr(client, f"{channel}_channel")
    while True:
        try:
            msg = socket_channel.get_msg(timeout=_remaining(deadline))
        except Empty:
            raise BenchFailure(f"no {channel} reply to {what} (msg_id {msg_id}) in time") from None
        if _parent_id(msg) == msg_id:
            return msg


def wait_idle(client: BlockingKernelClient, msg_id: str, deadline: float, what: str,
              streams: list[str] | None = None) -> int:
    """Read IOPub until ``idle`` parented to ``msg_id``; collect stdout text into ``streams``."""
    count = 0
    while True:
        try:
            msg = client.iopub_channel.get_msg(timeout=_remaining(deadline))
        except Empty:
            raise BenchFailure(f"no idle status on IOPub for {what} (msg_id {msg_id}) in time; "
                               f"{count} stream messages had arrived") from None
        if _parent_id(msg) != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream" and streams is not None:
            if msg["content"].get("name") == "stdout":
                streams.append(msg["content"]["text"])
            count += 1
        elif kind == "status" and msg["content"].get("execution_state") == "idle":
            return count


def _send_kernel_info_nowait(client: BlockingKernelClient) -> bool:
    """Send one kernel_info_request if the shell socket has a live peer; never blocks."""
    msg = client.session.msg("kernel_info_request", {})
    try:
        client.shell_channel.socket.send_multipart(client.session.serialize(msg), zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True


def launch_once(name: str, sandbox: Sandbox, timeout_s: float) -> tuple[LaunchSample, RunningKernel]:
    """Launch a fresh kernel; time the first kernel_info_reply and the first execute_reply.

    The client connects right after ``start_kernel()`` returns and sends a
    kernel_info_request every 10 ms until one is answered, then sends
    ``execute_request("pass")`` as a frontend does once the kernel has answered.
    The caller stops the returned kernel.
    """
    context = polling_context(RECONNECT_IVL_MS)
    kernel = start(name, sandbox)
    client = kernel.km.client(context=context)
    try:
        client.start_channels(shell=True, iopub=True, stdin=False, hb=False)
        deadline = kernel.started_at + timeout_s
        sent = 0
        next_send = time.perf_counter()
        kernel_info_at = None
        while kernel_info_at is None:
            now = time.perf_counter()
            if now >= deadline:
                raise BenchFailure(f"{name}: no kernel_info_reply {timeout_s:.0f} s after launch "
                                   f"({sent} requests sent)")
            if now >= next_send:
                if not kernel.km.is_alive():
                    raise BenchFailure(f"{name}: kernel process exited during startup")
                sent += _send_kernel_info_nowait(client)
                next_send = now + KERNEL_INFO_POLL_S
            try:
                msg = client.shell_channel.get_msg(timeout=max(0.0, next_send - time.perf_counter()))
            except Empty:
                continue
            if msg["msg_type"] == "kernel_info_reply":
                kernel_info_at = time.perf_counter()
        msg_id = client.execute("pass")
        reply = wait_shell_reply(client, msg_id, deadline, f"{name} first execute_request('pass')")
        executed_at = time.perf_counter()
        if reply["content"].get("status") != "ok":
            raise BenchFailure(f"{name}: first execute_request('pass') replied {reply['content']}")
        kernel.children()  # remember the worker's pid so stop() can check it exits
        sample = LaunchSample(kernel_info_at - kernel.started_at,
                              executed_at - kernel.started_at, kernel.start_call_s, sent)
        return sample, kernel
    except BaseException as error:
        _close(client, context)
        if isinstance(error, BenchFailure):
            error.log_tail = kernel.log_tail()
        kernel.stop()
        raise
    finally:
        _close(client, context)


def _close(client: BlockingKernelClient, context: zmq.Context) -> None:
    if client.channels_running:
        client.stop_channels()
    if not context.closed:
        context.destroy(linger=0)


def execute_round_trip(client: BlockingKernelClient, timeout_s: float, code: str = "pass") -> float:
    """execute_request sent -> execute_reply on shell AND idle on IOPub, both parented to it."""
    started = time.perf_counter()
    deadline = started + timeout_s
    msg_id = client.execute(code)
    reply = wait_shell_reply(client, msg_id, deadline, f"execute_request({code!r})")
    wait_idle(client, msg_id, deadline, f"execute_request({code!r})")
    elapsed = time.perf_counter() - started
    if reply["content"].get("status") != "ok":
        raise BenchFailure(f"execute_request({code!r}) replied {reply['content']}")
    return elapsed


def execute_interactive_round_trip(client: BlockingKernelClient, timeout_s: float) -> float:
    """The same round trip through jupyter_client's ``execute_interactive`` (secondary)."""
    started = time.perf_counter()
    try:
        reply = client.execute_interactive("pass", timeout=timeout_s, output_hook=lambda msg: None)
    except TimeoutError:
        raise BenchFailure("execute_interactive('pass') timed out") from None
    elapsed = time.perf_counter() - started
    if reply["content"].get("status") != "ok":
        raise BenchFailure(f"execute_interactive('pass') replied {reply['content']}")
    return elapsed


def stdout_throughput(client: BlockingKernelClient, lines: int, timeout_s: float) -> ThroughputSample:
    """Run a print loop; collect every stdout stream message until idle; count lost lines."""
    code = f"for i in range({lines}): print(i)"
    texts: list[str] = []
    started = time.perf_counter()
    deadline = started + timeout_s
    msg_id = client.execute(code)
    messages = wait_idle(client, msg_id, deadline, "the print loop", streams=texts)
    elapsed = time.perf_counter() - started
    reply = wait_shell_reply(client, msg_id, time.perf_counter() + timeout_s, "the print loop")
    if reply["content"].get("status") != "ok":
        raise BenchFailure(f"the print loop replied {reply['content']}")
    late = _late_stdout(client, msg_id, LATE_OUTPUT_WAIT_S)
    received = "".join(texts + late).splitlines()
    expected = [str(i) for i in range(lines)]
    lost = len(set(expected) - set(received))
    return ThroughputSample(elapsed, lines, len(received), lost, received == expected, messages,
                            "".join(late).count("\n"))


def _late_stdout(client: BlockingKernelClient, msg_id: str, wait_s: float) -> list[str]:
    """Output parented to a request must come before its idle; catch any that does not."""
    late: list[str] = []
    deadline = time.perf_counter() + wait_s
    while True:
        try:
            msg = client.iopub_channel.get_msg(timeout=_remaining(deadline))
        except Empty:
            return late
        if (_parent_id(msg) == msg_id and msg["msg_type"] == "stream"
                and msg["content"].get("name") == "stdout"):
            late.append(msg["content"]["text"])


def memory(kernel: RunningKernel) -> dict[str, int]:
    """RSS in bytes of the kernel process and of its children (the worker, if any)."""
    process = psutil.Process(kernel.pid)
    children = kernel.children()
    child_rss = 0
    for child in children:
        try:
            child_rss += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return {"kernel_rss": process.memory_info().rss, "children_rss": child_rss,
            "children": len(children)}
