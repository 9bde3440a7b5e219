"""A worker that sends something the kernel cannot handle costs that worker, never the
kernel: the running cell gets an error reply saying what happened, a fresh worker starts,
and the next cell runs (issue 8, item 1).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import own_loop
import pytest
from kernel_helpers import REPLY_TIMEOUT_S, KernelConnection, running_kernel

from wrapperkernel.kernel.supervisor import WorkerSupervisor

# A cell that writes one frame to the worker's end of the private channel (the fd after
# --fd on the worker's command line), framed as docs/workerlink.md says.
WRITE_FRAME = """
import json, os, struct, sys
fd = int(sys.argv[sys.argv.index("--fd") + 1])
body = json.dumps({body}).encode()
os.write(fd, struct.pack("!I", len(body)) + body)
import time; time.sleep(5)
"""


@pytest.fixture
def own_kernel(kernel_env: object) -> Iterator[KernelConnection]:
    with running_kernel() as connection:
        yield connection


@pytest.mark.parametrize("body", [
    pytest.param({"type": "address_send", "request_id": "x", "address": None},
                 id="send-without-address"),
    pytest.param({"type": "address_read", "request_id": "x", "address": "/a",
                  "timeout_s": -1}, id="read-with-negative-timeout"),
    pytest.param({"type": "address_start", "request_id": "x", "retry": "yes"},
                 id="start-with-a-string"),
])
def test_a_frame_the_kernel_cannot_accept_fails_the_cell_and_the_next_cell_runs(
    own_kernel: KernelConnection, body: dict
) -> None:
    assert own_kernel.run("before = 1").status == "ok"

    broken = own_kernel.run(WRITE_FRAME.format(body=body))

    assert broken.status == "error"
    assert broken.content["ename"] == "WorkerDied"
    assert "corrupt frame" in broken.content["evalue"]
    assert body["type"] in broken.content["evalue"]
    after = own_kernel.run("print('still here')", timeout=REPLY_TIMEOUT_S)
    assert after.status == "ok"
    assert after.stdout == "still here\n"


def test_a_handler_that_raises_on_a_frame_replaces_the_worker() -> None:
    """The read loop's one broad except: any exception from on_frame (a bug in the
    kernel's handling) kills that worker and reports it, and a fresh worker starts."""

    async def scenario() -> tuple[list[str], list[int], int]:
        exits: list[str] = []
        pids: list[int] = []
        ready_seen = asyncio.Event()
        second_ready = asyncio.Event()

        def on_frame(frame: object) -> None:
            if getattr(frame, "type", "") != "ready":
                return
            pids.append(frame.pid)  # type: ignore[attr-defined]
            if len(pids) == 1:
                ready_seen.set()
                raise RuntimeError("a bug in the kernel's frame handling")
            second_ready.set()

        supervisor = WorkerSupervisor(on_frame=on_frame, on_exit=exits.append)
        await supervisor.start()
        try:
            await asyncio.wait_for(ready_seen.wait(), 60)
            await asyncio.wait_for(second_ready.wait(), 60)
        finally:
            await supervisor.stop()
        return exits, pids, supervisor.generation

    exits, pids, generation = own_loop.run(scenario())

    assert len(exits) == 1
    assert "could not handle a frame from the worker" in exits[0]
    assert "RuntimeError: a bug in the kernel's frame handling" in exits[0]
    assert len(pids) == 2 and pids[0] != pids[1]
    assert generation == 2


if sys.platform != "linux":  # the worker's inherited fd is read from /proc-style argv
    pytestmark = pytest.mark.skip(reason="Linux only")
