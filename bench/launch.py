"""Starts and stops the kernels under test, each in an isolated environment.

This module owns every process the benchmark starts. Kernels are launched by
jupyter_client's ``KernelManager`` from their kernelspec, on 127.0.0.1 over tcp, with a
temporary IPYTHONDIR and runtime dir so no user profile, startup file or history
database changes what is measured. ``stop`` leaves no process behind: a child that
outlives its kernel's clean shutdown is killed and reported as a finding.

It never measures anything; the timed loops live in ``measure.py``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import zmq
from jupyter_client import KernelManager
from jupyter_client.blocking import BlockingKernelClient

LOCALHOST = "127.0.0.1"
SHUTDOWN_WAIT_S = 5.0
CHILD_EXIT_WAIT_S = 3.0


class BenchFailure(Exception):
    """A kernel did not do what the protocol promises (no reply, died, lost output)."""

    log_tail = ""  # the kernel's last log lines, when they help explain the failure


class Sandbox:
    """A temporary directory that holds the kernels' IPYTHONDIR, connection files and logs."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="wrapperkernel-bench-")
        self.root = Path(self._tmp.name)
        (self.root / "ipython").mkdir()
        (self.root / "runtime").mkdir()
        (self.root / "pycache").mkdir()
        self._count = 0

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["IPYTHONDIR"] = str(self.root / "ipython")
        env["JUPYTER_RUNTIME_DIR"] = str(self.root / "runtime")
        # A parent's Jupyter session or debugger must not leak into the kernels.
        for name in ("JPY_SESSION_NAME", "JPY_PARENT_PID", "PYDEVD_USE_FRAME_EVAL"):
            env.pop(name, None)
        # Both kernels import from cached bytecode, as an installed package does, even where
        # the environment forbids writing .pyc files or the source tree has none (an
        # editable install); the run starts with one unmeasured launch per kernel to fill it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.root / "pycache")
        return env

    def next_paths(self, name: str) -> tuple[Path, Path]:
        self._count += 1
        stem = f"{self._count:03d}-{name}"
        return self.root / "runtime" / f"kernel-{stem}.json", self.root / f"{stem}.log"

    def cleanup(self) -> None:
        self._tmp.cleanup()


@dataclass
class RunningKernel:
    """One launched kernel: its manager, the pids it owns, and where its log goes."""

    name: str
    km: KernelManager
    log_path: Path
    started_at: float  # perf_counter() just before km.start_kernel()
    start_call_s: float  # how long km.start_kernel() itself took
    known_children: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid  # type: ignore[union-attr]

    def children(self) -> list[psutil.Process]:
        try:
            found = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.known_children.update(p.pid for p in found)
        return found

    def log_tail(self, max_lines: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-max_lines:])

    def stop(self) -> list[str]:
        """Shut the kernel down cleanly (bounded); returns findings, e.g. a leaked child."""
        findings: list[str] = []
        self.children()
        if self.km.has_kernel:
            try:
                self.km.shutdown_kernel(now=False)
            except (RuntimeError, zmq.ZMQError, OSError) as error:
                findings.append(f"{self.name}: shutdown_kernel failed ({error}); killed it")
                self.km.shutdown_kernel(now=True)
        deadline = time.monotonic() + CHILD_EXIT_WAIT_S
        for pid in sorted(self.known_children):
            while psutil.pid_exists(pid) and time.monotonic() < deadline and _not_zombie(pid):
                time.sleep(0.05)
            if psutil.pid_exists(pid) and _not_zombie(pid):
                findings.append(f"{self.name}: child pid {pid} still alive "
                                f"{CHILD_EXIT_WAIT_S:.0f} s after a clean kernel shutdown; killed it")
                with contextlib.suppress(psutil.NoSuchProcess):  # it exited just now
                    psutil.Process(pid).kill()
        return findings


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start(name: str, sandbox: Sandbox, env: dict[str, str] | None = None) -> RunningKernel:
    """Launch kernelspec ``name``; the clock starts right before ``km.start_kernel()``.

    ``env`` is added to the sandbox's environment (a setting of the kernel under test,
    such as ``WRAPPERKERNEL_PAGE_TRANSPORT``)."""
    connection_file, log_path = sandbox.next_paths(name)
    km = KernelManager(kernel_name=name, ip=LOCALHOST, transport="tcp",
                       transport_encryption="disabled", shutdown_wait_time=SHUTDOWN_WAIT_S)
    km.connection_file = str(connection_file)
    env = {**sandbox.env(), **(env or {})}
    with open(log_path, "wb") as log:
        started_at = time.perf_counter()
        km.start_kernel(env=env, stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL)
        start_call_s = time.perf_counter() - started_at
    return RunningKernel(name, km, log_path, started_at, start_call_s)


def polling_context(reconnect_ivl_ms: int) -> zmq.Context:
    """A zmq context whose sockets retry the connection fast and queue only to live peers.

    zmq's default reconnect interval (100 ms) would quantize the startup measurement;
    IMMEDIATE makes a send to a not-yet-bound kernel fail (EAGAIN) instead of piling up a
    backlog of kernel_info requests that the kernel would then have to answer before the
    first execute_request.
    """
    context = zmq.Context()
    context.setsockopt(zmq.RECONNECT_IVL, reconnect_ivl_ms)
    context.setsockopt(zmq.IMMEDIATE, 1)
    return context


def default_client(kernel: RunningKernel) -> BlockingKernelClient:
    """A client exactly as jupyter_client makes it: default socket options and HWMs."""
    client = kernel.km.client()
    client.start_channels()
    return client
