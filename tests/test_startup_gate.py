"""The first kernel_info_reply, answered by the startup gate before the kernel has loaded:
a client whose IOPub connects a little after its shell still sees that request's busy
and idle, which jupyter_client's ``wait_for_ready`` waits for (0.2 s, then it asks
again)."""

from __future__ import annotations

import asyncio
import time

import own_loop
import zmq
import zmq.asyncio
from jupyter_client.session import Session
from test_faults_requests import bound_transport

from wrapperkernel.kernel.startup import StartupGate

TIMEOUT_S = 10.0


async def _first_kernel_info(iopub_delay_s: float | None) -> dict[str, object]:
    transport = bound_transport()
    gate = StartupGate(transport)
    tasks = [asyncio.create_task(transport.serve("shell", gate.handler("shell"))),
             asyncio.create_task(transport.serve_subscriptions())]
    context = zmq.asyncio.Context()
    client = Session(key=b"secret")
    info = transport.info
    shell = context.socket(zmq.DEALER)
    shell.linger = 0
    shell.connect(info.address(info.shell_port))
    sub = None
    seen: list[str] = []
    try:
        request = client.msg("kernel_info_request", {})
        await shell.send_multipart(client.serialize(request))
        if iopub_delay_s is not None:
            await asyncio.sleep(iopub_delay_s)
            sub = context.socket(zmq.SUB)
            sub.linger = 0
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(info.address(info.iopub_port))
        reply = client.deserialize(client.feed_identities(
            await asyncio.wait_for(shell.recv_multipart(), TIMEOUT_S))[1])
        if sub is not None:
            deadline = time.perf_counter() + 2.0
            while "idle" not in seen and time.perf_counter() < deadline:
                try:
                    frames = await asyncio.wait_for(sub.recv_multipart(), 0.5)
                except asyncio.TimeoutError:
                    continue
                msg = client.deserialize(client.feed_identities(frames)[1])
                if msg["parent_header"].get("msg_id") == request["header"]["msg_id"]:
                    seen.append(msg["content"]["execution_state"])
        return {"reply": reply["msg_type"], "statuses": seen}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        shell.close()
        if sub is not None:
            sub.close()
        transport.close()
        context.term()


def test_an_iopub_a_little_behind_the_shell_sees_busy_and_idle() -> None:
    outcome = own_loop.run(_first_kernel_info(iopub_delay_s=0.05))
    assert outcome["reply"] == "kernel_info_reply"
    assert outcome["statuses"] == ["busy", "idle"]


def test_a_client_without_iopub_is_answered_all_the_same() -> None:
    outcome = own_loop.run(_first_kernel_info(iopub_delay_s=None))
    assert outcome["reply"] == "kernel_info_reply"
