"""The composition root of the kernel process: builds the objects and wires them.

Order matters for startup time: the worker is spawned first, so that IPython loads in
the worker while the kernel binds its sockets and can answer ``kernel_info`` already.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid

from wrapperkernel.kernel.kernel import Kernel, install_interrupt_handler
from wrapperkernel.kernel.supervisor import WorkerSupervisor
from wrapperkernel.wire.connection import ConnectionInfo
from wrapperkernel.wire.session import import_session_class
from wrapperkernel.wire.transport import Transport

log = logging.getLogger("wrapperkernel")

# The is_complete checker needs IPython's input transformers (~0.1 s to import): load them
# once the kernel answers, not before.
PRELOAD_DELAY_S = 0.5


def kernel_id_from_connection_file(path: str) -> str:
    """Jupyter Server names connection files ``kernel-<kernel_id>.json``."""
    name = os.path.basename(path)
    if name.startswith("kernel-") and name.endswith(".json"):
        return name[len("kernel-") : -len(".json")]
    return ""


async def serve(connection_file: str) -> int:
    info = ConnectionInfo.load(connection_file)
    kernel_ref: list[Kernel] = []
    supervisor = WorkerSupervisor(
        on_frame=lambda frame: kernel_ref[0].on_worker_frame(frame),
        on_exit=lambda reason: kernel_ref[0].on_worker_exit(reason),
    )
    await supervisor.start()

    Session = import_session_class()
    session = Session(
        key=info.key.encode(),
        signature_scheme=info.signature_scheme,
        username=os.environ.get("USER", "kernel"),
        session=uuid.uuid4().hex,
    )
    transport = Transport(info, session)
    transport.bind()
    kernel = Kernel(transport, supervisor)
    kernel_ref.append(kernel)

    from wrapperkernel.kernel.comm_relay import CommRelay

    kernel.comms = CommRelay(
        transport,
        supervisor,
        kernel_id=kernel_id_from_connection_file(connection_file),
        current_parent=kernel.current_parent,
        debug=os.environ.get("WRAPPERKERNEL_COMM_DEBUG", "") not in ("", "0"),
    )

    loop = asyncio.get_running_loop()
    install_interrupt_handler(loop, kernel)
    tasks = [
        asyncio.create_task(transport.serve("shell", kernel.on_shell)),
        asyncio.create_task(transport.serve("control", kernel.on_control)),
        asyncio.create_task(transport.serve("stdin", kernel.on_stdin)),
        asyncio.create_task(transport.serve_subscriptions()),
        asyncio.create_task(kernel.run_queue()),
    ]
    transport.publish("status", {"execution_state": "starting"}, parent=None)
    loop.call_later(PRELOAD_DELAY_S, lambda: loop.run_in_executor(None, kernel.preload_checker))
    await kernel.shutdown_event.wait()
    await supervisor.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    transport.close()
    return 0


def run(connection_file: str) -> int:
    logging.basicConfig(
        level=os.environ.get("WRAPPERKERNEL_LOG_LEVEL", "WARNING").upper(),
        format="[wrapperkernel %(levelname)s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(serve(connection_file))
