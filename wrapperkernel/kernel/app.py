"""The composition root of the kernel process: builds the objects and wires them.

Order matters for startup time: the sockets are bound and the first kernel_info is
answered before the worker is spawned (on two cores the worker would compete with the
kernel's own imports), and before the rest of the kernel is imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

from wrapperkernel.kernel.startup import StartupGate
from wrapperkernel.kernel.supervisor import WorkerSupervisor
from wrapperkernel.settings import READ_TIMEOUT_VARIABLE, seconds_from_environment
from wrapperkernel.wire.codec import Codec
from wrapperkernel.wire.connection import ConnectionInfo
from wrapperkernel.wire.transport import Transport

log = logging.getLogger("wrapperkernel")

# How long the gate waits for the frontend's first kernel_info_request before the kernel
# loads the rest of itself anyway.
FIRST_KERNEL_INFO_WAIT_S = 0.2


TIMING_VARIABLES = {
    "WRAPPERKERNEL_WAIT_FOR_CONNECTION_S": "wait_for_connection_s",
    "WRAPPERKERNEL_HEARTBEAT_REQUEST_THRESHOLD_S": "heartbeat_request_threshold_s",
    "WRAPPERKERNEL_HEARTBEAT_TIMEOUT_S": "heartbeat_timeout_s",
    READ_TIMEOUT_VARIABLE: "read_timeout_s",  # the worker reads it too, for the reads it sends
}


def address_timings_from_environment(environ: dict[str, str]) -> object:
    """The address channel's timeouts, each overridable by an environment variable
    (set them in the kernelspec's ``env``); a value that is not a positive number is
    reported and ignored."""
    from wrapperkernel.address.events import AddressTimings

    return AddressTimings(**address_timing_overrides(environ))


def address_timing_overrides(environ: dict[str, str]) -> dict[str, float]:
    """The ``AddressTimings`` fields the environment sets (see address_timings_from_environment)."""
    overrides: dict[str, float] = {}
    for variable, field in TIMING_VARIABLES.items():
        try:
            value = seconds_from_environment(environ, variable)
        except ValueError as ignored:
            log.warning("%s", ignored)
            continue
        if value is not None:
            overrides[field] = value
    return overrides


PAGE_TRANSPORT_VARIABLE = "WRAPPERKERNEL_PAGE_TRANSPORT"


def page_transport_from_environment(environ: dict[str, str]) -> str:
    """How page clients reach the kernel: "auto" unless ``WRAPPERKERNEL_PAGE_TRANSPORT``
    says "websocket" or "widget" (docs/comms-api.md, "Transports")."""
    from wrapperkernel.kernel.widget_transport import TRANSPORTS

    text = environ.get(PAGE_TRANSPORT_VARIABLE)
    if text is None or text.strip().lower() in TRANSPORTS:
        return "auto" if text is None else text.strip().lower()
    log.warning("ignored %s=%r: expected one of %s", PAGE_TRANSPORT_VARIABLE, text,
                ", ".join(TRANSPORTS))
    return "auto"


def kernel_id_from_connection_file(path: str) -> str:
    """Jupyter Server names connection files ``kernel-<kernel_id>.json``."""
    name = os.path.basename(path)
    if name.startswith("kernel-") and name.endswith(".json"):
        return name[len("kernel-") : -len(".json")]
    return ""


class DebuggerOnDemand:
    """The visual debugger (``kernel/debugger.py``), imported and built at the first
    ``debug_request``: most sessions never debug, and the kernel need not carry it.

    Until then no debug session exists, so no cell is held, no new worker has a session to
    get back, and no worker sends debugger frames: the worker events are no-ops.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._debugger: Any = None

    async def handle(self, request: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
        if self._debugger is None:
            self._debugger = self._build()
        return await self._debugger.handle(request, parent)

    @property
    def holds_cells(self) -> bool:
        return self._debugger is not None and self._debugger.holds_cells

    def on_worker_ready(self) -> None:
        if self._debugger is not None:
            self._debugger.on_worker_ready()

    def on_worker_exit(self) -> None:
        if self._debugger is not None:
            self._debugger.on_worker_exit()

    def on_worker_frame(self, frame: object) -> None:
        if self._debugger is not None:
            self._debugger.on_worker_frame(frame)
        else:
            log.warning("a debugger frame from the worker, but no debug_request came yet: dropped")


async def serve(connection_file: str) -> int:
    info = ConnectionInfo.load(connection_file)
    kernel_ref: list = []
    early_frames: list = []  # from a worker faster than this process's own imports

    def on_frame(frame: object) -> None:
        if kernel_ref:
            kernel_ref[0].on_worker_frame(frame)
        else:
            early_frames.append(frame)

    def on_exit(reason: str) -> None:
        if kernel_ref:
            kernel_ref[0].on_worker_exit(reason)
        else:
            log.error("%s before the kernel finished starting; starting a new one", reason)

    supervisor = WorkerSupervisor(on_frame=on_frame, on_exit=on_exit)

    codec = Codec(
        key=info.key.encode(),
        signature_scheme=info.signature_scheme,
        username=os.environ.get("USER", "kernel"),
        session_id=uuid.uuid4().hex,
    )
    transport = Transport(info, codec)
    transport.bind()
    gate = StartupGate(transport)
    tasks = [
        asyncio.create_task(transport.serve(channel, gate.handler(channel)))
        for channel in ("shell", "control", "stdin")
    ]
    tasks.append(asyncio.create_task(transport.serve_subscriptions()))
    # No "starting" status here: a client subscribing right now could see it before its
    # iopub_welcome (zmq routes to a subscriber before we read its subscription), and
    # Jupyter Server tracks the starting state itself.
    try:
        await asyncio.wait_for(gate.answered.wait(), FIRST_KERNEL_INFO_WAIT_S)
    except asyncio.TimeoutError:
        log.debug("no kernel_info_request yet; loading the kernel anyway")
    # pydantic is first needed from here on (importing it takes about 100 ms, which the
    # first answer above does not wait for). The kernel's models never get pydantic's
    # plugins, for the process's whole life: it runs no user code (pydantic_plugins.py).
    from wrapperkernel import pydantic_plugins

    pydantic_plugins.hold_back()
    # Now the worker: started earlier, it would compete for the CPU with the imports
    # above on a two-core machine and delay the first answer. Its widgets carry the page
    # client's install config, to install it themselves in a reloaded page.
    # (The address core is imported after the spawn: it takes about 10 ms.)
    import json

    from wrapperkernel.address.defaults import HEARTBEAT_TIMEOUT_S
    from wrapperkernel.address.page_script import WORKER_ENV, install_config

    kernel_id = kernel_id_from_connection_file(connection_file)
    overrides = address_timing_overrides(dict(os.environ))
    debug = os.environ.get("WRAPPERKERNEL_COMM_DEBUG", "") not in ("", "0")
    page_transport = page_transport_from_environment(dict(os.environ))
    client = install_config(kernel_id, debug=debug, heartbeat_timeout_s=overrides.get(
        "heartbeat_timeout_s", HEARTBEAT_TIMEOUT_S), transport=page_transport)
    from wrapperkernel import cellfiles

    cell_directory = cellfiles.directory_for(os.getpid())
    supervisor.env = {**os.environ, WORKER_ENV: json.dumps(client),
                      cellfiles.DIRECTORY_ENV: cell_directory,
                      # pydevd would warn in the cell's output that Python's frozen
                      # stdlib modules can miss breakpoints; they are not the user's code.
                      "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    await supervisor.start()

    # The rest of the kernel: request handlers, the comm router, the address channel.
    from wrapperkernel.address.events import AddressTimings
    from wrapperkernel.kernel.address_adapter import AddressAdapter
    from wrapperkernel.kernel.comm_router import CommRouter
    from wrapperkernel.kernel.kernel import Kernel, install_interrupt_handler
    from wrapperkernel.kernel.relay import KernelRelay

    kernel = Kernel(transport, supervisor)
    kernel_ref.append(kernel)
    address = AddressAdapter(
        transport,
        supervisor,
        kernel_id=kernel_id,
        current_parent=kernel.current_parent,
        timings=AddressTimings(**overrides),
        debug=debug,
        page_transport=page_transport,
    )
    kernel.comm_router = CommRouter(address, KernelRelay(transport, supervisor,
                                                        kernel.current_parent))

    def build_debugger() -> Any:
        from wrapperkernel.kernel.debugger import Debugger

        return Debugger(
            supervisor.send,
            lambda event, parent: transport.publish("debug_event", event, parent=parent),
            cell_directory,
            on_settled=kernel.start_next,
        )

    kernel.debugger = DebuggerOnDemand(build_debugger)
    for frame in early_frames:
        kernel.on_worker_frame(frame)
    early_frames.clear()
    loop = asyncio.get_running_loop()
    install_interrupt_handler(loop, kernel)
    await gate.open({"shell": kernel.on_shell, "control": kernel.on_control,
                     "stdin": kernel.on_stdin})
    await kernel.shutdown_event.wait()
    await supervisor.stop()
    # The cell files the debugger dumped are this kernel's alone (cellfiles.py).
    import shutil  # here: shutil imports bz2 and lzma, which only shutdown needs

    shutil.rmtree(cell_directory, ignore_errors=True)
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
