"""Visual debugger benchmark: how long the debugger takes to start, and what an attached
debugger costs a cell, for wrapperkernel, ipykernel and xeus-python in the same run.

Usage: .venv/bin/python bench/debugger_bench.py [--quick] [--out docs/benchmarks.md]

Every request is the one JupyterLab 4's debugger sends (its ``DebuggerSession.start``
and ``stop``): ``initialize`` with JupyterLab's arguments, ``attach`` with none,
``configurationDone``, ``disconnect`` with ``restart`` and ``terminateDebuggee`` false.
Each is a ``debug_request`` on the control channel, timed from the send to its
``debug_reply``.

- *Start*: a fresh kernel per sample (the first ``initialize`` is what starts debugpy),
  ready and warm (``kernel_info``, one ``pass``); ``initialize`` then ``attach``, the
  processes the kernel gained meanwhile, ``configurationDone``, ``disconnect``, and a
  second ``initialize`` + ``attach`` on the same kernel (warm).
- *Cells*: one warm kernel each; ``execute_request`` until its shell reply and its IOPub
  ``idle`` (``measure.execute_round_trip``) for ``pass`` and two CPU-bound cells (a
  generator expression, a loop of Python function calls: a tracer costs most there), in
  three stages in this order: never attached, attached (``initialize``, ``attach``,
  ``configurationDone``, no breakpoints), and after ``disconnect``. While attached, after
  the cells: ``threads`` requests (pydevd answers them), then the same once a cell has set
  ``TCP_NODELAY`` on pydevd's socket (the only change this script makes to a kernel, and
  the stage after it times cells, not DAP requests).

Kernels alternate (A B C A B C) between samples or blocks of samples. A failed
``debug_reply`` (``success`` false), a timeout or a dead kernel becomes a finding in the
report; that kernel's remaining measurements of the phase are skipped. Every kernel
started is shut down, and so is a process it started that outlives it. ``--source DIR``
runs wrapperkernel from a checkout of one commit (its ``PYTHONPATH``, with
``PYTHONSAFEPATH=1``, as ``transport_bench.py`` does), so that work in progress in this
tree is not what is measured; the report names its commit. The results replace the
section between ``<!-- debugger-bench:start -->`` and ``<!-- debugger-bench:end -->`` in
docs/benchmarks.md; every number in it comes from the run that wrote it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import measure
import psutil
import report
from comm_report import machine_paragraph
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from launch import CHILD_EXIT_WAIT_S, BenchFailure, RunningKernel, Sandbox, default_client, start
from summary import summarize

REPO = Path(__file__).resolve().parents[1]
SECTION = "debugger-bench"
KERNELS = ("wrapperkernel", "python3", "xpython")
# JupyterLab 4 sends adapterID = the kernel's name; "" as in ipykernel's tests, so every
# kernel gets the same request.
INITIALIZE_ARGUMENTS = {
    "clientID": "jupyterlab", "clientName": "JupyterLab", "adapterID": "",
    "pathFormat": "path", "linesStartAt1": True, "columnsStartAt1": True,
    "supportsVariableType": True, "supportsVariablePaging": True,
    "supportsRunInTerminalRequest": True, "locale": "en",
}
DISCONNECT_ARGUMENTS = {"restart": False, "terminateDebuggee": False}
CELLS = {
    "pass": "pass",
    "genexpr": "sum(i * i for i in range(100000))",
    "calls": ("def _bench_step(x):\n    return x + 1\n\n_bench_total = 0\n"
              "for _bench_i in range(100000):\n    _bench_total = _bench_step(_bench_total)\n"),
}
CELL_TITLES = {
    "pass": "`pass`",
    "genexpr": "`sum(i * i for i in range(100000))`",
    "calls": "100,000 calls of a Python function",
}
STAGES = ("off", "on", "after")
STAGE_TITLES = {"off": "never attached", "on": "attached", "after": "after `disconnect`"}
# What traces the cell's thread (pydevd's tracer, or nothing), and whether the process
# that runs cells has imported debugpy.
PROBE = ("import json as _bench_json, sys as _bench_sys\n"
         "print(_bench_json.dumps({'tracer': type(_bench_sys.gettrace()).__name__\n"
         "                         if _bench_sys.gettrace() else None,\n"
         "                         'debugpy': 'debugpy' in _bench_sys.modules,\n"
         "                         'wrapperkernel': getattr(_bench_sys.modules.get('wrapperkernel'),\n"
         "                                                  '__file__', None)}))")
# pydevd writes each DAP message as two sendall calls (header, body) on a socket with
# Nagle's algorithm on; this cell, run where pydevd runs, turns it off (TCP_NODELAY).
NODELAY_CELL = ("import socket as _bench_socket, pydevd as _bench_pydevd\n"
                "_bench_sock = _bench_pydevd.get_global_debugger().writer.sock\n"
                "_bench_sock.setsockopt(_bench_socket.IPPROTO_TCP, _bench_socket.TCP_NODELAY, 1)\n"
                "print(_bench_sock.getsockopt(_bench_socket.IPPROTO_TCP, _bench_socket.TCP_NODELAY))")
# What wrapperkernel's worker imports at the first initialize (debugpy.connect imports the
# server API and pydevd), timed in a fresh interpreter beside a bare one.
IMPORT_CODE = "import debugpy; from debugpy.server import api"
IMPORT_REPEATS = 5
DAP_BLOCK = 10
START_METRICS = (
    ("initialize_s", "`initialize` (the first: starts debugpy)"),
    ("attach_s", "`attach`"),
    ("start_s", "**`initialize` + `attach`**"),
    ("configuration_done_s", "`configurationDone`"),
    ("disconnect_s", "`disconnect`"),
    ("warm_initialize_s", "`initialize` again after `disconnect` (warm)"),
    ("warm_attach_s", "`attach` again (warm)"),
    ("warm_start_s", "**`initialize` + `attach` again (warm)**"),
)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class DebugRefused(BenchFailure):
    """A debug_reply with ``success`` false: the kernel answered, but did not do it."""


class DebugSession:
    """DAP requests to one kernel over its control channel, each timed and bounded."""

    def __init__(self, client: BlockingKernelClient, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._seq = 0

    def request(self, command: str, arguments: dict[str, Any] | None = None) -> float:
        """Seconds from sending the debug_request to its debug_reply; refusals raise."""
        self._seq += 1
        msg = self._client.session.msg("debug_request", {
            "type": "request", "seq": self._seq, "command": command, "arguments": arguments or {}})
        started = time.perf_counter()
        self._client.control_channel.send(msg)
        reply = measure.wait_reply(self._client, msg["header"]["msg_id"],
                                   started + self._timeout_s, f"debug_request {command!r}",
                                   channel="control")
        elapsed = time.perf_counter() - started
        content = reply["content"]
        if not content.get("success"):
            raise DebugRefused(f"debug_request {command!r} was answered with success "
                               f"{content.get('success')!r}: {_short(content)}")
        return elapsed

    def start(self) -> tuple[float, float]:
        """``initialize`` then ``attach``: the seconds each took."""
        return self.request("initialize", INITIALIZE_ARGUMENTS), self.request("attach", {})


def _short(content: dict[str, Any], limit: int = 300) -> str:
    text = json.dumps(content)
    return text if len(text) <= limit else text[:limit] + " …"


def ready_client(kernel: RunningKernel, timeout_s: float) -> BlockingKernelClient:
    """A default client once the kernel answered kernel_info and ran one ``pass``."""
    client = default_client(kernel)
    try:
        client.wait_for_ready(timeout=timeout_s)
    except RuntimeError as error:
        client.stop_channels()
        raise BenchFailure(f"{kernel.name} did not get ready: {error}") from None
    measure.execute_round_trip(client, timeout_s)
    return client


def describe_process(process: psutil.Process) -> str:
    """The program a process runs, without its arguments (they hold ports and tokens)."""
    try:
        argv = process.cmdline()
    except psutil.Error:
        return f"pid {process.pid} (gone)"
    program = os.path.basename(argv[0]) if argv else process.name()
    for part in argv[1:]:
        if "debugpy" in part:
            return f"{program} …{part[part.index('debugpy'):]}"
        if part == "-m" or not part.startswith("-"):
            return f"{program} {part}"
    return program


def outlived(name: str, processes: list[psutil.Process]) -> list[str]:
    """Processes the debugger started that outlive their kernel's shutdown: killed, reported."""
    findings = []
    deadline = time.monotonic() + CHILD_EXIT_WAIT_S
    for process in processes:
        while _running(process) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _running(process):
            findings.append(f"`{name}`: `{describe_process(process)}` (pid {process.pid}) still "
                            f"ran {CHILD_EXIT_WAIT_S:.0f} s after its kernel shut down; killed it")
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    return findings


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def probe(client: BlockingKernelClient, timeout_s: float) -> dict[str, Any]:
    """The tracer of the cell's thread, and whether debugpy is imported (``PROBE``)."""
    deadline = time.perf_counter() + timeout_s
    msg_id = client.execute(PROBE)
    texts: list[str] = []
    measure.wait_idle(client, msg_id, deadline, "the probe cell", streams=texts)
    measure.wait_shell_reply(client, msg_id, deadline, "the probe cell")
    try:
        return json.loads("".join(texts))
    except ValueError:
        raise BenchFailure(f"the probe cell printed {''.join(texts)!r}") from None


def import_cost(sandbox: Sandbox, timeout_s: float) -> list[float]:
    """Seconds a fresh interpreter needs for ``IMPORT_CODE`` beyond a bare start, per repeat."""
    def run(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=sandbox.env(), capture_output=True,
                       timeout=timeout_s, check=True)
        return time.perf_counter() - started

    run(IMPORT_CODE)  # fills the bytecode cache, as the unmeasured kernel starts do
    return [run(IMPORT_CODE) - run("pass") for _ in range(IMPORT_REPEATS)]


def kernel_label(name: str) -> str:
    try:
        argv = KernelSpecManager().get_kernel_spec(name).argv
    except NoSuchKernel:
        return name
    text = " ".join(argv)
    if "ipykernel" in text:
        return f"ipykernel (`{name}`)"
    if "xpython" in text:
        return f"xeus-python (`{name}`)"
    return name


def versions() -> dict[str, str]:
    found = {}
    for package in ("debugpy", "ipykernel", "xeus-python", "xeus-python-shell"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


class CpuShare:
    """How much CPU other processes used during the run: all busy time minus ours."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        own = os.times()
        # Children's time counts once they are reaped: the kernels are, when they stop.
        ours = own.user + own.system + own.children_user + own.children_system
        return busy, ours, time.perf_counter()

    def others_cores(self) -> float:
        """Average cores used by processes this run did not start (approximate)."""
        busy0, ours0, t0 = self._start
        busy1, ours1, t1 = self._read()
        return max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / (t1 - t0))


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.names: list[str] = list(args.kernels)
        build = {} if args.source is None else {
            "PYTHONPATH": str(args.source.resolve()), "PYTHONSAFEPATH": "1"}
        # Only wrapperkernel runs from --source; the other kernels are what is installed.
        self.kernel_env = {name: build for name in self.names if kernel_label(name) == "wrapperkernel"}
        self.sandbox = Sandbox()
        self.findings: list[str] = []
        self.start: dict[str, list[dict[str, Any]]] = {name: [] for name in self.names}
        self.processes: dict[str, set[str]] = {name: set() for name in self.names}
        self.cells: dict[str, dict[str, dict[str, list[float]]]] = {
            name: {stage: {cell: [] for cell in CELLS} for stage in STAGES} for name in self.names}
        self.probes: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.names}
        self.import_s: list[float] = []
        # debug_request `threads` while attached (pydevd answers it), before and after NODELAY_CELL.
        self.threads: dict[str, dict[str, list[float]]] = {
            name: {"nagle": [], "nodelay": []} for name in self.names}

    def finding(self, name: str, phase: str, error: BaseException,
                kernel: RunningKernel | None = None) -> None:
        text = f"`{name}`, {phase}: {error}"
        tail = kernel.log_tail(8) if kernel is not None and not isinstance(error, DebugRefused) else ""
        if tail:
            text += "\n\n  Kernel log (last lines):\n\n  ```\n  " + tail.replace("\n", "\n  ") + "\n  ```"
        log(f"FINDING {text}")
        self.findings.append(text)

    # ------------------------------------------------------------------ debugger start

    def start_once(self, name: str) -> dict[str, Any]:
        """One fresh kernel: the debugger's first start, its stop, and a warm start."""
        timeout_s = self.args.timeout
        kernel = start(name, self.sandbox, self.kernel_env.get(name))
        client: BlockingKernelClient | None = None
        gained: list[psutil.Process] = []
        try:
            client = ready_client(kernel, timeout_s)
            before = set(psutil.pids())
            dap = DebugSession(client, timeout_s)
            initialize_s, attach_s = dap.start()
            children = {p.pid for p in kernel.children()}
            gained = [p for p in self.sandbox_processes() if p.pid not in before]
            sample = {"initialize_s": initialize_s, "attach_s": attach_s,
                      "start_s": initialize_s + attach_s,
                      "processes_gained": [describe_process(p) + ("" if p.pid in children else
                                                                   " (not a child of the kernel)")
                                           for p in gained]}
            sample["configuration_done_s"] = dap.request("configurationDone")
            sample["disconnect_s"] = dap.request("disconnect", DISCONNECT_ARGUMENTS)
            warm_initialize_s, warm_attach_s = dap.start()
            sample.update(warm_initialize_s=warm_initialize_s, warm_attach_s=warm_attach_s,
                          warm_start_s=warm_initialize_s + warm_attach_s)
            dap.request("configurationDone")
            dap.request("disconnect", DISCONNECT_ARGUMENTS)
            return sample
        except BenchFailure as error:
            error.log_tail = kernel.log_tail(8)
            raise
        finally:
            if client is not None and client.channels_running:
                client.stop_channels()
            self.findings.extend(kernel.stop())
            self.findings.extend(outlived(name, gained))

    def sandbox_processes(self) -> list[psutil.Process]:
        """Every process that runs in this run's sandbox: started by a kernel of this run,
        as a child or daemonized (debugpy's adapter forks away from the kernel)."""
        ipythondir = str(self.sandbox.root / "ipython")
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("IPYTHONDIR") == ipythondir:
                    found.append(process)
            except psutil.Error:
                continue  # gone, a zombie, or not ours to read
        return found

    def debugger_start(self) -> None:
        for name in self.names:  # unmeasured: fills the bytecode cache (launch.Sandbox)
            try:
                self.start_once(name)
            except BenchFailure as error:
                self.finding(name, "unmeasured first start", error)
        for i in range(self.args.launches):
            for name in self.names:
                try:
                    sample = self.start_once(name)
                except BenchFailure as error:
                    self.finding(name, f"debugger start, kernel {i + 1}", error)
                    continue
                self.start[name].append(sample)
                self.processes[name].update(sample["processes_gained"])
                log(f"start {i + 1:2d} {name:14s} initialize {sample['initialize_s'] * 1000:7.1f} ms"
                    f"  attach {sample['attach_s'] * 1000:7.1f} ms"
                    f"  warm {sample['warm_start_s'] * 1000:7.1f} ms"
                    f"  gained {sample['processes_gained']}")

    # ------------------------------------------------------------------ cells

    def cell_costs(self) -> None:
        args = self.args
        warm: dict[str, tuple[RunningKernel, BlockingKernelClient, DebugSession]] = {}
        live: list[str] = []
        try:
            for name in self.names:
                kernel = start(name, self.sandbox, self.kernel_env.get(name))
                try:
                    client = ready_client(kernel, args.timeout)
                except BenchFailure as error:
                    self.finding(name, "warm start", error, kernel)
                    self.findings.extend(kernel.stop())
                    continue
                warm[name] = (kernel, client, DebugSession(client, args.timeout))
                live.append(name)
            for stage in STAGES:
                for name in list(live):
                    kernel, client, dap = warm[name]
                    try:
                        if stage == "on":
                            dap.start()
                            dap.request("configurationDone")
                        elif stage == "after":
                            dap.request("disconnect", DISCONNECT_ARGUMENTS)
                        self.probes[name][stage] = probe(client, args.timeout)
                    except BenchFailure as error:
                        self.finding(name, f"cells, entering stage {STAGE_TITLES[stage]!r} "
                                     "(no further cell measurements)", error, kernel)
                        live.remove(name)
                log(f"stage {stage}: probes {[(n, self.probes[n].get(stage)) for n in live]}")
                self._measure_stage(stage, live, warm)
                if stage == "on":
                    self._pydevd_requests(live, warm)
        finally:
            for kernel, client, _dap in warm.values():
                if client.channels_running:
                    client.stop_channels()
                self.findings.extend(kernel.stop())

    def _measure_stage(self, stage: str, live: list[str],
                       warm: dict[str, tuple[RunningKernel, BlockingKernelClient, DebugSession]]) -> None:
        args = self.args

        def sample(name: str, cell: str) -> float | None:
            kernel, client, _dap = warm[name]
            try:
                return measure.execute_round_trip(client, args.timeout, CELLS[cell])
            except BenchFailure as error:
                alive = "alive" if kernel.km.is_alive() else "dead"
                self.finding(name, f"cells, {cell} {STAGE_TITLES[stage]} (kernel process {alive}; "
                             "no further cell measurements)", error, kernel)
                live.remove(name)
                return None

        for _ in range(args.warmup):
            for name in list(live):
                sample(name, "pass")
        for block in _blocks(args.samples, args.block):
            for name in list(live):
                for _ in range(block):
                    value = sample(name, "pass")
                    if value is None:
                        break
                    self.cells[name][stage]["pass"].append(value)
        for _ in range(args.cpu_samples):
            for cell in ("genexpr", "calls"):
                for name in list(live):
                    value = sample(name, cell)
                    if value is not None:
                        self.cells[name][stage][cell].append(value)
        for name in live:
            medians = {cell: _median(self.cells[name][stage][cell]) for cell in CELLS}
            log(f"stage {stage} {name:14s} " + "  ".join(
                f"{cell} {report.ms(value)}" for cell, value in medians.items()))

    def _pydevd_requests(self, live: list[str],
                         warm: dict[str, tuple[RunningKernel, BlockingKernelClient, DebugSession]]) -> None:
        """`threads` requests while attached, then the same after NODELAY_CELL (alternating)."""
        for variant in ("nagle", "nodelay"):
            if variant == "nodelay":
                for name in list(live):
                    kernel, client, _dap = warm[name]
                    try:
                        measure.execute_round_trip(client, self.args.timeout, NODELAY_CELL)
                    except BenchFailure as error:
                        self.finding(name, "setting TCP_NODELAY on pydevd's socket", error, kernel)
                        live.remove(name)
            # Back to back, as a debugging session sends them (a stop: threads, stackTrace,
            # scopes, variables); kernels alternate between blocks.
            for block in _blocks(self.args.dap_samples, DAP_BLOCK):
                for name in list(live):
                    kernel, _client, dap = warm[name]
                    try:
                        for _ in range(block):
                            self.threads[name][variant].append(dap.request("threads"))
                    except BenchFailure as error:
                        self.finding(name, f"debug_request 'threads' ({variant}; no further "
                                     "measurements)", error, kernel)
                        live.remove(name)
            log(f"threads {variant}: " + "  ".join(
                f"{name} {report.ms(_median(self.threads[name][variant]))}" for name in live))

    def close(self) -> None:
        self.sandbox.cleanup()


def _blocks(total: int, size: int) -> list[int]:
    """``total`` samples as blocks of at most ``size``, for alternating kernels between blocks."""
    return [min(size, total - done) for done in range(0, total, size)]


# ---------------------------------------------------------------------- the section

def _median(samples: list[float]) -> float | None:
    return summarize(samples)["median"] if samples else None


def _median_p99(samples: list[float]) -> str:
    if not samples:
        return "—"
    s = summarize(samples)
    return f"{report.ms(s['median'])} / {report.ms(s['p99'])}"


def _times(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.1f}×"


def render(run: Run, meta: dict[str, Any]) -> str:
    args, names = run.args, run.names
    labels = [kernel_label(name) for name in names]
    m, v = meta["machine"], meta["versions"]
    n_start = {name: len(run.start[name]) for name in names}
    out = [f"<!-- {SECTION}:start -->", "",
           "## Visual debugger: starting it, and what an attached debugger costs a cell", "",
           f"Generated by `{meta['command']}` on {m['date_utc']} "
           f"({'quick' if args.quick else 'full'} mode, {meta['duration_s']:.0f} s); "
           f"{', '.join(labels)} in the same run, alternating between samples (start) or "
           f"blocks of {args.block} samples (`pass`). debugpy {v['debugpy']}, ipykernel "
           f"{v['ipykernel']}, xeus-python {v['xeus-python']} (xeus-python-shell "
           f"{v['xeus-python-shell']}).", "",
           machine_paragraph(meta) + f" Processes this run did not start used {meta['others_cores']:.2f} "
           f"cores on average during it (all busy CPU time minus this run's){meta['shared']}.", "",
           "**How.** Each request is a `debug_request` on the control channel with JupyterLab 4's "
           "arguments (`initialize`: clientID `jupyterlab`, adapterID `\"\"`, pathFormat `path`, "
           "lines and columns from 1, supportsVariableType, supportsVariablePaging, "
           "supportsRunInTerminalRequest, locale `en`; `attach` with none; `disconnect` with "
           "`restart` and `terminateDebuggee` false), timed from the send to its `debug_reply`. "
           f"*Start*: a fresh, ready kernel for each sample ({args.launches} per kernel, after one "
           "unmeasured start each that fills the bytecode cache), `initialize` then `attach` as "
           "ipykernel's tests' `kernel_with_debug` fixture does it; then `configurationDone`, "
           "`disconnect`, and `initialize` + `attach` again on the same kernel. *Cells*: one warm "
           "kernel each, `execute_request` until the shell reply and the IOPub `idle` parented "
           f"to it, {args.warmup} warm-up and {args.samples} samples of `pass` and "
           f"{args.cpu_samples} of each CPU-bound cell, in this order on the same kernel: never "
           "attached, attached (`initialize`, `attach`, `configurationDone`, no breakpoints), "
           f"after `disconnect`. While attached, {args.dap_samples} `threads` requests each "
           f"(back to back in blocks of {DAP_BLOCK}), then a cell sets `TCP_NODELAY` on pydevd's "
           f"socket and {args.dap_samples} more. Every time is median / p99 (nearest rank: with "
           "fewer than 100 samples p99 is the slowest).", ""]
    # Start.
    rows = []
    for key, title in START_METRICS:
        rows.append([title] + [_median_p99([s[key] for s in run.start[name]]) for name in names])
    rows.append(["processes the kernel gained at the first `initialize` + `attach`"]
                + [", ".join(f"`{p}`" for p in sorted(run.processes[name])) or "none"
                   if run.start[name] else "—" for name in names])
    rows.append(["`threads`, attached (pydevd answers it; warm kernel)"]
                + [_median_p99(run.threads[name]["nagle"]) for name in names])
    rows.append(["`threads`, attached, after a cell set `TCP_NODELAY` on pydevd's socket"]
                + [_median_p99(run.threads[name]["nodelay"]) for name in names])
    out += [f"### Debugger start ({' / '.join(str(n_start[name]) for name in names)} fresh kernels)", ""]
    out += report.markdown_table([""] + labels, rows)
    out.append("")
    # Cells.
    rows = []
    for cell in CELLS:
        for stage in STAGES:
            rows.append([f"{CELL_TITLES[cell]}, {STAGE_TITLES[stage]}"]
                        + [_median_p99(run.cells[name][stage][cell]) for name in names])
        rows.append([f"{CELL_TITLES[cell]}: attached / never attached (medians)"]
                    + [_times(_median(run.cells[name]["on"][cell]), _median(run.cells[name]["off"][cell]))
                       for name in names])
    rows.append(["`sys.gettrace()` in a cell: never attached; attached; after `disconnect`"]
                + ["; ".join(f"`{run.probes[name].get(stage, {}).get('tracer', '—')}`"
                             for stage in STAGES) for name in names])
    rows.append(["`debugpy` in `sys.modules` of the process running cells, before any "
                 "`debug_request`"]
                + [str(run.probes[name].get("off", {}).get("debugpy", "—")) for name in names])
    out += ["### Execute round trip with and without the debugger (median / p99)", ""]
    out += report.markdown_table([""] + labels, rows)
    out.append("")
    out += meta["explanation"]
    if run.findings:
        out += ["", "### Findings during this run", ""]
        out += [f"- {finding}" for finding in run.findings]
    out += ["", f"<!-- {SECTION}:end -->"]
    return "\n".join(out)


def _and(names: list[str]) -> str:
    labels = [kernel_label(name) for name in names]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def explain(run: Run) -> list[str]:
    """The paragraphs under the tables: what this run's numbers and probes show."""
    label = kernel_label
    med = {name: {key: _median([s[key] for s in run.start[name]]) for key, _ in START_METRICS}
           for name in run.names if run.start[name]}
    out: list[str] = []
    if med:
        order = sorted(med, key=lambda name: med[name]["start_s"])
        fastest = order[0]
        parts = [f"**Why the starts differ.** {label(fastest)} is first to a working debugger "
                 f"({report.ms(med[fastest]['start_s'])} median for `initialize` + `attach`"
                 + "".join(f"; {label(n)} {report.ms(med[n]['start_s'])}" for n in order[1:]) + ")."]
        own = [n for n in med if not run.processes[n]]
        listen = [n for n in med if any("debugpy/adapter" in p for p in run.processes[n])]
        if "wrapperkernel" in own:
            parts.append("wrapperkernel starts no process: the kernel opens a listener on "
                         "127.0.0.1, the worker calls `debugpy.connect` to it, and from then on "
                         "pydevd in the worker speaks DAP to the kernel directly "
                         "(`wrapperkernel/worker/debugger.py`, `kernel/debugger.py`).")
        if listen:
            parts.append(f"{_and(listen)} call{'s' if len(listen) == 1 else ''} `debugpy.listen`, which "
                         "spawns debugpy's adapter, a new Python process that forks again to "
                         "daemonize (so it is no child of the kernel: it is found by this run's "
                         "IPYTHONDIR in its environment); the kernel talks DAP to the adapter and "
                         "the adapter to pydevd in the kernel's process, and the first "
                         "`initialize` waits until that process runs and has connected back.")
        imported = [n for n in med if run.probes[n].get("off", {}).get("debugpy")]
        late = [n for n in med if run.probes[n].get("off", {}).get("debugpy") is False]
        if imported and late:
            cost = (f", {report.ms(_median(run.import_s))} of it in a fresh interpreter here "
                    f"(`{IMPORT_CODE}`, median of {len(run.import_s)}, minus a bare start)"
                    if run.import_s else "")
            one = len(imported) == 1
            parts.append(f"{_and(imported)} import{'s' if one else ''} debugpy at launch "
                         f"(the `sys.modules` row), so {'its' if one else 'their'} `initialize` "
                         f"does not pay for it; {_and(late)} import{'s' if len(late) == 1 else ''} "
                         f"it at the first `initialize`{cost}.")
        parts.append("A second start after `disconnect` reuses what the first one started: "
                     + ", ".join(f"{label(n)} {report.ms(med[n]['warm_start_s'])}" for n in order)
                     + ".")
        out += [" ".join(parts), ""]
    nagle = {n: _median(run.threads[n]["nagle"]) for n in run.names if run.threads[n]["nodelay"]}
    nodelay = {n: _median(run.threads[n]["nodelay"]) for n in nagle}
    stalled = [n for n in nagle if nagle[n] > 4 * nodelay[n]]  # type: ignore[operator]
    if stalled:
        out += [
            f"**Each request that pydevd answers waits about 40 ms** in {_and(stalled)}: "
            "`threads` takes " + ", ".join(f"{report.ms(nagle[n])} ({label(n)})" for n in stalled)
            + ", and " + ", ".join(f"{report.ms(nodelay[n])}" for n in stalled)
            + " once a cell has set `TCP_NODELAY` on pydevd's socket (the two `threads` rows). "
            "pydevd sends a DAP message as two `sendall` calls, the `Content-Length` header and "
            "then the body (`_pydevd_bundle/pydevd_net_command.py`), on a socket with Nagle's "
            "algorithm on (`pydevd_comm.start_client` does not set `TCP_NODELAY`; reported as "
            "microsoft/debugpy#2054): the body waits until the peer acknowledges the header, "
            "and Linux delays that ACK by up to 40 ms. In a debugging session every step, stack "
            "and variables request that pydevd answers pays it.", ""]
    quick = [n for n in nagle if n not in stalled and n.startswith("wrapperkernel")]
    if quick:
        out += [
            f"**{_and(quick)} does not wait for pydevd's second write**: its kernel, the "
            "peer of pydevd's socket, asks Linux for quick acknowledgements (`TCP_QUICKACK`) "
            "before every read (`kernel/debugger.py`), so the header is acknowledged at once "
            "and pydevd's body follows without the delayed-ACK wait that Nagle's algorithm "
            "would impose (`threads` " + ", ".join(
                f"{report.ms(nagle[n])} as pydevd leaves it, {report.ms(nodelay[n])} with "
                "`TCP_NODELAY`" for n in quick) + ").", ""]
    ratios = {}
    for name in run.names:
        cells = run.cells[name]
        off = {cell: _median(cells["off"][cell]) for cell in CELLS}
        if all(off.values()) and all(cells[stage][cell] for stage in ("on", "after") for cell in CELLS):
            ratios[name] = {(stage, cell): _median(cells[stage][cell]) / off[cell]  # type: ignore[operator]
                            for stage in ("on", "after") for cell in CELLS}
    if ratios:
        def span(stage: str, cell: str) -> str:
            values = sorted(r[(stage, cell)] for r in ratios.values())
            return f"{values[0]:.1f}×" if len(values) == 1 else f"{values[0]:.1f}–{values[-1]:.1f}×"

        kept = [n for n in ratios if run.probes[n].get("after", {}).get("tracer")]
        text = ("**What attaching costs.** With no breakpoint set, pydevd's tracer (the "
                "`sys.gettrace()` row) is still called at every Python function call and every "
                "resume of a generator in the cell: attached, the generator-expression cell takes "
                f"{span('on', 'genexpr')} its time never attached and the function-call loop "
                f"{span('on', 'calls')} (in {_and(list(ratios))}: the same debugpy traces in "
                f"each); `pass` takes {span('on', 'pass')}. Python {platform.python_version()} "
                "here: debugpy traces with `sys.settrace`; from Python 3.12 on it uses "
                "`sys.monitoring` instead, so these ratios belong to this Python.")
        if kept:
            text += (f" After `disconnect` the tracer stays in {_and(kept)}, "
                     f"and so does the cost ({span('after', 'genexpr')} and {span('after', 'calls')}): "
                     "closing the debugger does not give the speed back until the kernel restarts.")
        out.append(text)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 fresh kernels each, 50 `pass` samples, 5 of each CPU-bound cell")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="markdown file to update between the debugger-bench markers; '-' prints it")
    parser.add_argument("--json", type=Path, help="also write the raw samples here")
    parser.add_argument("--source", type=Path,
                        help="a checkout of one commit (e.g. a git clone) whose wrapperkernel "
                             "the wrapperkernel kernels run, instead of the installed one")
    parser.add_argument("--kernels", nargs="+",
                        help=f"kernelspecs to compare (default: those of {', '.join(KERNELS)} installed)")
    parser.add_argument("--launches", type=int, help="fresh kernels per kernelspec (default 10, quick 4)")
    parser.add_argument("--samples", type=int, help="`pass` samples per stage (default 300, quick 50)")
    parser.add_argument("--cpu-samples", type=int, help="samples of each CPU cell per stage (default 30, quick 5)")
    parser.add_argument("--dap-samples", type=int,
                        help="`threads` requests per kernel, each way (default 20, quick 5)")
    parser.add_argument("--warmup", type=int, default=20, help="`pass` warm-up runs per stage")
    parser.add_argument("--block", type=int, default=50, help="`pass` samples in a row per kernel")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds any one wait may take before it is a finding")
    args = parser.parse_args(argv)
    args.launches = args.launches or (4 if args.quick else 10)
    args.samples = args.samples or (50 if args.quick else 300)
    args.cpu_samples = args.cpu_samples or (5 if args.quick else 30)
    args.dap_samples = args.dap_samples or (5 if args.quick else 20)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    installed = KernelSpecManager().find_kernel_specs()
    skipped = []
    if args.kernels is None:
        args.kernels = [name for name in KERNELS if name in installed]
        skipped = [name for name in KERNELS if name not in installed]
    started = time.perf_counter()
    cpu = CpuShare()
    meta: dict[str, Any] = {"machine": report.machine_info(args.source or REPO), "versions": versions(),
                            "command": shlex.join(["bench/debugger_bench.py", *sys.argv[1:]])}
    run = Run(args)
    for name in skipped:
        run.findings.append(f"`{name}`: no such kernelspec here; not measured")
    try:
        log(f"debugger start: {args.launches} fresh kernels each of {', '.join(run.names)}")
        run.debugger_start()
        log(f"reference: `{IMPORT_CODE}` in a fresh interpreter, {IMPORT_REPEATS} times")
        try:
            run.import_s = import_cost(run.sandbox, args.timeout)
        except (subprocess.SubprocessError, OSError) as error:
            run.findings.append(f"the reference import `{IMPORT_CODE}` failed: {error}")
        log(f"cells: {args.samples} `pass` and {args.cpu_samples} of each CPU cell per stage")
        run.cell_costs()
    finally:
        run.close()
    meta["duration_s"] = time.perf_counter() - started
    meta["loadavg_at_end"] = os.getloadavg()
    meta["others_cores"] = cpu.others_cores()
    meta["shared"] = ("; the machine was shared during the run" if meta["others_cores"] > 0.25
                      else "; the machine was otherwise idle")
    meta["explanation"] = explain(run)
    section = render(run, meta)
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "start": run.start, "cells": run.cells,
                                         "probes": run.probes,
                                         "import_s": run.import_s,
                                         "threads": run.threads, "findings": run.findings}, indent=1))
    if str(args.out) == "-":
        print(section)
    else:
        report.write_section(args.out, section, name=SECTION)
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
