"""The timed loops: one function per metric, each bounded by a deadline.

Every wait here has a timeout; a kernel that does not answer in time raises
``BenchFailure`` with what was sent and what came back, so a hang becomes a finding in
the report instead of a stuck benchmark. The kernel benchmark measures through
``lean_client.LeanClient`` (one thread, one poller over the sockets, the same for every
kernel); the ``BlockingKernelClient`` loops (``execute_round_trip``, ``wait_reply``,
``wait_idle``) stay for the debugger and subshell benchmarks and as the reference row
"the previous harness".

This module starts no process itself (``launch.py`` does) and formats nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from queue import Empty
from typing import Any

import psutil
import zmq
from jupyter_client.blocking import BlockingKernelClient
from launch import BenchFailure, RunningKernel, Sandbox, polling_context, start
from lean_client import LeanClient

KERNEL_INFO_POLL_S = 0.010
RECONNECT_IVL_MS = 5
LATE_OUTPUT_WAIT_S = 0.5
IDLE_GRACE_S = 3.0  # reply in, nothing more for this long: the idle was lost
# jupyter_client's KernelClient.wait_for_ready: wait this long for the kernel_info_reply
# on shell, then this long for any IOPub message, else send kernel_info again.
READY_REPLY_WAIT_S = 1.0
READY_IOPUB_WAIT_S = 0.2
# How a launch's client connects: "default" is a frontend with jupyter_client's default
# settings (zmq's 100 ms reconnect interval, requests queued until connected, the
# wait_for_ready loop); "fast" is the 5 ms reconnect interval with ZMQ_IMMEDIATE and a
# kernel_info_request every 10 ms.
LAUNCH_MODES = ("default", "fast")


@dataclass
class LaunchSample:
    mode: str  # one of LAUNCH_MODES
    kernel_info_s: float  # start_kernel() call -> first kernel_info_reply
    ready_s: float  # -> wait_for_ready would return (reply, then an IOPub message)
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
    idle_lost: bool = False  # the execute_reply came, the IOPub idle never did

    @property
    def delivered_rate(self) -> float:
        """Lines that arrived per second: a kernel that drops lines is not paid for them."""
        return (self.lines_expected - self.lines_lost) / self.elapsed_s


@dataclass
class CountSample:
    n: int  # comm_msgs the client sent
    counted: int  # comm_msgs the kernel-side handler saw
    in_order: bool
    elapsed_s: float  # first send -> the handler's report at the client
    how: str  # "report" (the handler answered) or "cell" (read by a cell after a timeout)

    @property
    def rate(self) -> float:
        return self.counted / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.perf_counter())


def _parent_id(msg: dict[str, Any]) -> str:
    return (msg.get("parent_header") or {}).get("msg_id", "")


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


def launch_once(name: str, sandbox: Sandbox, timeout_s: float,
                mode: str = "default") -> tuple[LaunchSample, RunningKernel]:
    """Launch a fresh kernel; time the first kernel_info_reply and the first execute_reply.

    The client connects right after ``start_kernel()`` returns. ``mode`` "default" does
    what ``KernelClient.wait_for_ready`` does with zmq's default socket options (one
    kernel_info_request, queued by zmq until the connection is up; 1 s for the reply,
    then 0.2 s for an IOPub message, else again); "fast" sends a kernel_info_request
    every 10 ms, only once the shell socket is connected, over sockets that retry every
    5 ms. Then ``execute_request("pass")``, as a frontend does once the kernel answered.
    The caller stops the returned kernel.
    """
    if mode not in LAUNCH_MODES:
        raise ValueError(f"launch mode {mode!r}: one of {LAUNCH_MODES}")
    context = zmq.Context() if mode == "default" else polling_context(RECONNECT_IVL_MS)
    kernel = start(name, sandbox)
    client = LeanClient(kernel.km.get_connection_info(), context, channels=("shell", "iopub"))
    try:
        deadline = kernel.started_at + timeout_s
        if mode == "default":
            kernel_info_at, ready_at, sent = _wait_ready_default(client, kernel, deadline)
        else:
            kernel_info_at, sent = _poll_kernel_info(client, kernel, deadline)
            ready_at = kernel_info_at
        msg_id = client.execute("pass")
        reply_at, reply = client.recv_on_parent("shell", msg_id, deadline,
                                                f"{name} first execute_request('pass')")
        if reply["content"].get("status") != "ok":
            raise BenchFailure(f"{name}: first execute_request('pass') replied {reply['content']}")
        kernel.children()  # remember the worker's pid so stop() can check it exits
        sample = LaunchSample(mode, kernel_info_at - kernel.started_at, ready_at - kernel.started_at,
                              reply_at - kernel.started_at, kernel.start_call_s, sent)
        return sample, kernel
    except BaseException as error:
        if isinstance(error, BenchFailure):
            error.log_tail = kernel.log_tail()
        client.close()
        context.destroy(linger=0)
        kernel.stop()
        raise
    finally:
        client.close()
        if not context.closed:
            context.destroy(linger=0)


def _wait_ready_default(client: LeanClient, kernel: RunningKernel,
                        deadline: float) -> tuple[float, float, int]:
    """``wait_for_ready``'s loop; returns (first kernel_info_reply, ready, requests sent)."""
    sent = 0
    kernel_info_at = None
    while True:
        if time.perf_counter() >= deadline:
            raise BenchFailure(f"{kernel.name}: not ready {deadline - kernel.started_at:.0f} s "
                               f"after launch ({sent} kernel_info requests sent)")
        if not kernel.km.is_alive():
            raise BenchFailure(f"{kernel.name}: kernel process exited during startup")
        client.request("shell", "kernel_info_request", {})
        sent += 1
        try:
            at, msg = client.recv_on("shell", min(deadline, time.perf_counter() + READY_REPLY_WAIT_S),
                                     "kernel_info_reply")
        except BenchFailure:
            continue
        if msg["header"]["msg_type"] != "kernel_info_reply":
            continue
        kernel_info_at = kernel_info_at or at
        try:
            client.recv_on("iopub", time.perf_counter() + READY_IOPUB_WAIT_S, "an IOPub message")
        except BenchFailure:
            continue  # IOPub not connected yet: wait_for_ready starts over
        return kernel_info_at, time.perf_counter(), sent


def _poll_kernel_info(client: LeanClient, kernel: RunningKernel, deadline: float) -> tuple[float, int]:
    """kernel_info_request every 10 ms (only to a connected peer) until one is answered."""
    sent = 0
    next_send = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now >= deadline:
            raise BenchFailure(f"{kernel.name}: no kernel_info_reply {deadline - kernel.started_at:.0f} s "
                               f"after launch ({sent} requests sent)")
        if now >= next_send:
            if not kernel.km.is_alive():
                raise BenchFailure(f"{kernel.name}: kernel process exited during startup")
            try:
                client.send("shell", client.message("kernel_info_request", {}), nowait=True)
                sent += 1
            except zmq.Again:
                pass  # not connected yet: IMMEDIATE refuses to queue it
            next_send = now + KERNEL_INFO_POLL_S
        try:
            at, msg = client.recv_on("shell", next_send, "kernel_info_reply")
        except BenchFailure:
            continue
        if msg["header"]["msg_type"] == "kernel_info_reply":
            return at, sent


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


def lean_round_trip(client: LeanClient, timeout_s: float, code: str = "pass") -> float:
    """execute_request sent -> execute_reply on shell AND idle on IOPub, both parented to
    it, whichever comes last; the client polls both sockets at once."""
    started = time.perf_counter()
    msg_id = client.execute(code)
    done, reply = client.reply_and_idle(msg_id, started + timeout_s)
    if reply["content"].get("status") != "ok":
        raise BenchFailure(f"execute_request({code!r}) replied {reply['content']}")
    return done - started


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


def stdout_throughput(client: LeanClient, lines: int, timeout_s: float) -> ThroughputSample:
    """Run a print loop; collect every stdout stream message until idle; count lost lines.

    A kernel whose IOPub drops messages may drop the ``idle`` too: once the reply is in
    and nothing parented to the request has come for ``IDLE_GRACE_S``, the run ends there
    (``idle_lost``) and its time is that of the last message that did arrive."""
    code = f"for i in range({lines}): print(i)"
    texts: list[str] = []
    messages = 0
    started = time.perf_counter()
    deadline = started + timeout_s
    msg_id = client.execute(code)
    reply: dict[str, Any] | None = None
    idle_at: float | None = None
    last_at = started
    while reply is None or idle_at is None:
        got = client.next_message(deadline if reply is None else min(deadline, last_at + IDLE_GRACE_S))
        if got is None:
            if reply is None:
                raise BenchFailure(f"no execute_reply to the print loop in {timeout_s:.0f} s "
                                   f"({messages} stream messages had arrived)")
            break
        name, t, msg = got
        if _parent_id(msg) != msg_id:
            continue
        last_at = t
        kind = msg["header"]["msg_type"]
        if name == "shell":
            reply = msg
        elif kind == "status" and msg["content"].get("execution_state") == "idle":
            idle_at = t
        elif kind == "stream" and msg["content"].get("name") == "stdout":
            texts.append(msg["content"]["text"])
            messages += 1
    elapsed = (idle_at or last_at) - started
    if reply["content"].get("status") != "ok":
        raise BenchFailure(f"the print loop replied {reply['content']}")
    late: list[str] = []
    if idle_at is not None:
        _drain_iopub(client, msg_id, LATE_OUTPUT_WAIT_S, late)
    received = "".join(texts + late).splitlines()
    expected = [str(i) for i in range(lines)]
    lost = len(set(expected) - set(received))
    return ThroughputSample(elapsed, lines, len(received), lost, received == expected,
                            messages + len(late), "".join(late).count("\n"), idle_at is None)


def _drain_iopub(client: LeanClient, msg_id: str, wait_s: float, late: list[str]) -> None:
    """Output parented to a request must come before its idle; catch any that does not."""
    deadline = time.perf_counter() + wait_s
    while True:
        try:
            _t, msg = client.recv_on("iopub", deadline, "late output")
        except BenchFailure:
            return
        if (_parent_id(msg) == msg_id and msg["header"]["msg_type"] == "stream"
                and msg["content"].get("name") == "stdout"):
            late.append(msg["content"]["text"])


# ---------------------------------------------------------------------- relayed comms

def open_kernel_comm(client: LeanClient, target: str, role: str, timeout_s: float) -> str:
    """A cell opens a comm (``comm.create_comm``) with an echo or counting ``on_msg``; the
    comm_id is taken from the ``comm_open`` the client receives on IOPub."""
    opened: list[str] = []

    def on_iopub(_t: float, msg: dict[str, Any]) -> None:
        if (msg["header"]["msg_type"] == "comm_open"
                and msg["content"].get("target_name") == target):
            opened.append(msg["content"]["comm_id"])

    msg_id = client.execute(f"_bench_open({target!r}, {role!r})")
    _t, reply = client.reply_and_idle(msg_id, time.perf_counter() + timeout_s, on_iopub=on_iopub)
    if reply["content"].get("status") != "ok":
        raise BenchFailure(f"opening a {role} comm in a cell failed: {reply['content'].get('ename')}: "
                           f"{reply['content'].get('evalue')}")
    if len(opened) != 1:
        raise BenchFailure(f"the cell that opens comm {target!r} published {len(opened)} comm_open "
                           "messages on IOPub, not 1")
    return opened[0]


def comm_echo(client: LeanClient, comm_id: str, n: int, timeout_s: float) -> list[float]:
    """comm_msg {"i": k} sent -> the same data back on IOPub on ``comm_id``, n times."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        client.comm_msg(comm_id, {"i": i})
        t1, data = client.next_comm_msg(comm_id, t0 + timeout_s, f"comm echo {i}")
        if data != {"i": i}:
            raise BenchFailure(f"comm echo {i}: got {data!r}")
        out.append(t1 - t0)
    return out


def probe_comm_echo(client: LeanClient, target: str, wait_s: float) -> tuple[str | None, str]:
    """Open a comm to registered target ``target`` from the client and send one message;
    returns (comm_id, "") when it echoes, or (None, what happened instead)."""
    comm_id = client.comm_open(target, {})
    client.comm_msg(comm_id, {"i": -1})
    deadline = time.perf_counter() + wait_s
    while True:
        got = client.next_message(deadline)
        if got is None:
            return None, (f"a `comm_open` to target `{target}` (registered with "
                          "`comm.get_comm_manager().register_target`) and a `comm_msg` on it got "
                          f"no answer in {wait_s:g} s")
        _name, _t, msg = got
        kind, content = msg["header"]["msg_type"], msg["content"]
        if content.get("comm_id") != comm_id:
            continue
        if kind == "comm_close":
            return None, f"the kernel closed the comm opened to target `{target}` (comm_close)"
        if kind == "comm_msg" and content.get("data") == {"i": -1}:
            return comm_id, ""


def comm_count(client: LeanClient, comm_id: str, n: int, timeout_s: float) -> CountSample:
    """n comm_msgs as fast as the client can send them, then {"report": true}: the
    kernel-side handler answers with how many it counted and whether in order. If that
    answer is lost, a cell reads the count (``_bench_counts``)."""
    t0 = time.perf_counter()
    for i in range(n):
        client.comm_msg(comm_id, {"i": i})
    client.comm_msg(comm_id, {"report": True})
    try:
        t1, data = client.next_comm_msg(comm_id, time.perf_counter() + timeout_s,
                                        f"the count of {n} comm messages")
        return CountSample(n, int(data.get("count", 0)), bool(data.get("in_order")), t1 - t0, "report")
    except BenchFailure:
        out = client.run(f"print(_j.dumps(_bench_counts.get({comm_id!r})))", timeout_s, "count cell")
        t1 = time.perf_counter()
        state = json_line(out) or {}
        return CountSample(n, int(state.get("count", 0)), bool(state.get("in_order")), t1 - t0, "cell")


def json_line(text: str) -> Any:
    """The last line of ``text`` that parses as JSON (``null`` included), else ``None``."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[", "null")):
            return json.loads(line)
    return None


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


# ---------------------------------------------------------------------- relayed comms, all kernels

COMM_KINDS = ("frontend", "kernel")  # who opens the comm: the client, or a cell
PROBE_WAIT_S = 2.0
ECHO_WARMUP = 50


def relayed_comms(clients: dict[str, LeanClient], echo_n: int, block: int, count_n: int,
                  reps: int, timeout_s: float, fail: Any, log: Any) -> dict[str, Any]:
    """Comm echo and client -> kernel comm_msgs/s on every kernel of ``clients`` (each
    has run ``comm_cells.SETUP_COMMON``), both for a comm the client opens to a registered
    target and for one a cell opens, alternating kernels in blocks of ``block`` echoes
    and per count. A kernel that cannot do one of them gets the reason in
    ``unsupported``; ``fail(name, phase, error)`` is told of failures (that kernel is then
    left out of the rest of the phase)."""
    from comm_cells import KERNEL_COUNT, KERNEL_ECHO

    res: dict[str, Any] = {"kernels": list(clients),
                           "sizes": {"echo_n": echo_n, "block": block, "count_n": count_n, "reps": reps},
                           "echo": {k: {} for k in COMM_KINDS},
                           "count": {k: {} for k in COMM_KINDS},
                           "unsupported": {k: {} for k in COMM_KINDS}}
    echo_ids: dict[tuple[str, str], str] = {}
    broken: set[str] = set()

    def guarded(name: str, phase: str, action: Any) -> Any:
        if name in broken:
            return None
        try:
            return action()
        except BenchFailure as error:
            fail(name, phase, error)
            broken.add(name)
            return None

    for name, client in clients.items():
        found = guarded(name, "frontend-opened echo probe",
                        lambda c=client: probe_comm_echo(c, "bench_echo", PROBE_WAIT_S))
        if found is not None:
            comm_id, reason = found
            if comm_id:
                echo_ids[name, "frontend"] = comm_id
            else:
                res["unsupported"]["frontend"][name] = reason
                log(f"{name}: frontend-opened comms: {reason}")
        comm_id = guarded(name, "kernel-opened echo comm",
                          lambda c=client: open_kernel_comm(c, KERNEL_ECHO, "echo", timeout_s))
        if comm_id:
            echo_ids[name, "kernel"] = comm_id
    for (name, _kind), comm_id in echo_ids.items():
        guarded(name, "comm echo warm-up",
                lambda c=clients[name], i=comm_id: comm_echo(c, i, ECHO_WARMUP, timeout_s))
    for done in range(0, echo_n, block):
        size = min(block, echo_n - done)
        for kind in COMM_KINDS:
            for name, client in clients.items():
                comm_id = echo_ids.get((name, kind))
                if comm_id is None:
                    continue
                got = guarded(name, f"{kind}-opened comm echo",
                              lambda c=client, i=comm_id, n=size: comm_echo(c, i, n, timeout_s))
                if got:
                    res["echo"][kind].setdefault(name, []).extend(got)
    for kind in COMM_KINDS:
        for name in clients:
            samples = res["echo"][kind].get(name)
            if samples:
                log(f"comm echo {kind:8s} {name:14s} median {sorted(samples)[len(samples) // 2] * 1e3:.3f} ms")
    for rep in range(reps):
        for kind in COMM_KINDS:
            for name, client in clients.items():
                if name in res["unsupported"][kind] or name in broken:
                    continue

                def one(c: LeanClient = client, kind: str = kind) -> CountSample:
                    if kind == "frontend":
                        comm_id = c.comm_open("bench_count", {})
                    else:
                        comm_id = open_kernel_comm(c, KERNEL_COUNT, "count", timeout_s)
                    # Bounded, but long enough for the slowest kernel's rate (~400/s here).
                    sample = comm_count(c, comm_id, count_n, max(timeout_s, count_n / 50))
                    c.comm_close(comm_id)
                    return sample

                sample = guarded(name, f"{kind}-opened client -> kernel comm_msgs", one)
                if sample is None:
                    continue
                res["count"][kind].setdefault(name, []).append(asdict(sample))
                log(f"client->kernel {kind:8s} {name:14s} rep {rep + 1}: {sample.counted:,}/{sample.n:,} "
                    f"in {sample.elapsed_s:.3f} s = {sample.rate:,.0f}/s in order {sample.in_order} "
                    f"({sample.how})")
    return res
