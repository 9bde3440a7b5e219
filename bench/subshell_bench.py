"""Subshell benchmark (JEP 91): how fast a subshell reaches a cell that is running in the
main shell, and what a busy main shell costs a subshell's requests, for wrapperkernel and
ipykernel in the same run.

Usage: .venv/bin/python bench/subshell_bench.py [--quick] [--out docs/benchmarks.md]

One warm kernel of each kernelspec, with one subshell (``create_subshell_request`` on
control). A subshell's ``execute_request`` carries the ``subshell_id`` in its header.

- *Latency*: the main shell runs a cell that prints ``spinning`` and then loops until a
  variable changes, either in pure Python (``while _bench_flag == old: pass``) or sleeping
  1 ms per turn, and records ``time.perf_counter()`` when it sees the change. Once the
  ``spinning`` stream has arrived, the subshell runs ``_bench_flag = new;
  _bench_set = time.perf_counter()``. Both clocks are read in the one process that runs
  cells (the probe checks it), so ``seen - set`` is the latency inside the kernel; both
  values come back as ``user_expressions``. Client side: from sending the subshell's
  request to each shell reply.
- *Round trip*: ``execute_request("pass")`` on the subshell until its shell reply and its
  IOPub ``idle`` (``measure.py``'s waits), with the main shell idle and then while the main
  shell runs a pure-Python busy loop; the main shell's own ``pass`` for reference. The busy
  loop ends when a subshell request sets ``_bench_stop`` (or after ``--timeout`` seconds,
  which is a finding).

Kernels alternate (A B A B) between samples (latency) or blocks of samples (round trip).
Every loop in a cell is bounded by ``--timeout``; every wait has a deadline. A failed reply,
a timeout, a reply parented to the wrong request or a dead kernel becomes a finding in the
report, and that kernel's remaining measurements of the phase are skipped. Every kernel
started is shut down (``launch.py``). ``--source DIR`` runs wrapperkernel from a checkout
of one commit, as ``debugger_bench.py`` does. The results replace the section between
``<!-- subshell-bench:start -->`` and ``<!-- subshell-bench:end -->`` in
docs/benchmarks.md; every number in it comes from the run that wrote it.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import measure
import report
from comm_report import machine_paragraph
from debugger_bench import CpuShare, _blocks, _median, kernel_label, log, ready_client
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from launch import BenchFailure, RunningKernel, Sandbox, start
from summary import summarize

REPO = Path(__file__).resolve().parents[1]
SECTION = "subshell-bench"
KERNELS = ("wrapperkernel", "python3")
SLEEP_S = 0.001
SETUP = "import json, os, sys, threading, time\n_bench_flag = 0\n_bench_stop = False\n"
# What the process that runs cells looks like, from the main shell and from the subshell.
PROBE = {"pid": "os.getpid()", "switch_interval_s": "sys.getswitchinterval()",
         "thread": "threading.current_thread().name",
         "threads": "sorted(t.name for t in threading.enumerate())",
         "wrapperkernel": "getattr(sys.modules.get('wrapperkernel'), '__file__', None)"}
# The main shell's cell for the latency: {body} is the loop's body, {bound_s} its time bound.
WATCH_CELL = ("_bench_old = _bench_flag\n"
              "_bench_bound = time.perf_counter() + {bound_s}\n"
              "print('spinning', flush=True)\n"
              "while _bench_flag == _bench_old and time.perf_counter() < _bench_bound:\n"
              "    {body}\n"
              "_bench_seen = time.perf_counter()\n"
              "_bench_changed = _bench_flag != _bench_old\n")
WATCH_BODIES = {"spin": "pass", "sleep": f"time.sleep({SLEEP_S})"}
WATCH_TITLES = {"spin": "pure-Python spin (`while flag == old: pass`)",
                "sleep": f"loop sleeping {SLEEP_S * 1000:g} ms per turn (`time.sleep({SLEEP_S})`)"}
SET_CELL = "_bench_flag = {value}; _bench_set = time.perf_counter()"
# The main shell's busy loop while the subshell's round trips are measured.
BUSY_CELL = ("_bench_stop = False\n"
             "_bench_bound = time.perf_counter() + {bound_s}\n"
             "print('spinning', flush=True)\n"
             "while not _bench_stop and time.perf_counter() < _bench_bound:\n"
             "    pass\n"
             "_bench_stopped = _bench_stop\n")
STOP_CELL = "_bench_stop = True; print('stopping')"
# The hand-over alone, in a bare interpreter: the main thread spins on a variable that a
# second thread assigns, after which that thread keeps spinning (it never blocks, so only
# a forced switch gives the GIL back). Prints the latencies as JSON.
GIL_REFERENCE = """
import json, sys, threading, time
sys.setswitchinterval(float(sys.argv[1]))
flag, latencies = 0, []
def assign(value, out):
    global flag
    time.sleep(0.002)
    flag = value; out.append(time.perf_counter())
    end = time.perf_counter() + 0.005
    while time.perf_counter() < end:
        pass
for i in range(int(sys.argv[2])):
    old, out = flag, []
    thread = threading.Thread(target=assign, args=(i + 1, out))
    thread.start()
    bound = time.perf_counter() + 5
    while flag == old and time.perf_counter() < bound:
        pass
    seen = time.perf_counter()
    thread.join()
    latencies.append(seen - out[0])
print(json.dumps(latencies))
"""
SWITCH_VARIANT = "wrapperkernel-switch"
TRIP_STAGES = ("main", "idle", "busy")
TRIP_TITLES = {"main": "main shell, kernel otherwise idle (reference)",
               "idle": "subshell, main shell idle",
               "busy": "**subshell, main shell in a pure-Python busy loop**"}


def _float(expression: dict[str, Any]) -> float:
    """A user_expressions result as a float (its text/plain is a float's repr)."""
    if expression.get("status") != "ok":
        raise BenchFailure(f"a user expression failed: {json.dumps(expression)[:300]}")
    return float(expression["data"]["text/plain"])


@dataclass
class Kernel:
    """One warm kernel, its client, and the subshell this run created in it."""

    name: str
    running: RunningKernel
    client: BlockingKernelClient
    subshell_id: str = ""

    def execute(self, code: str, *, subshell: bool = False,
                user_expressions: dict[str, str] | None = None) -> str:
        """Send an execute_request to the main shell or to the subshell; its msg_id."""
        content = {"code": code, "silent": False, "store_history": True,
                   "user_expressions": user_expressions or {}, "allow_stdin": False,
                   "stop_on_error": True}
        msg = self.client.session.msg("execute_request", content)
        if subshell:
            msg["header"]["subshell_id"] = self.subshell_id
        self.client.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def control(self, msg_type: str, content: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        msg = self.client.session.msg(msg_type, content)
        self.client.control_channel.send(msg)
        reply = measure.wait_reply(self.client, msg["header"]["msg_id"],
                                   time.perf_counter() + timeout_s, msg_type, channel="control")
        if reply["content"].get("status") != "ok":
            raise BenchFailure(f"{msg_type} replied {json.dumps(reply['content'])[:300]}")
        return reply["content"]

    def run(self, code: str, timeout_s: float, *, subshell: bool = False,
            user_expressions: dict[str, str] | None = None) -> dict[str, Any]:
        """Execute and wait for the reply and the idle; the reply's content."""
        deadline = time.perf_counter() + timeout_s
        msg_id = self.execute(code, subshell=subshell, user_expressions=user_expressions)
        reply = measure.wait_shell_reply(self.client, msg_id, deadline, f"execute_request({code!r})")
        measure.wait_idle(self.client, msg_id, deadline, f"execute_request({code!r})")
        if reply["content"].get("status") != "ok":
            raise BenchFailure(f"execute_request({code!r}) replied {_short(reply['content'])}")
        return reply["content"]

    def round_trip(self, timeout_s: float, *, subshell: bool) -> float:
        """``pass`` until its shell reply and its IOPub idle (``measure.execute_round_trip``
        with the subshell in the header)."""
        started = time.perf_counter()
        self.run("pass", timeout_s, subshell=subshell)
        return time.perf_counter() - started

    def start_spinning(self, code: str, timeout_s: float,
                       user_expressions: dict[str, str] | None = None) -> str:
        """Send a main-shell cell that prints ``spinning`` before its loop; return its
        msg_id once that stream has arrived (so the loop is running)."""
        deadline = time.perf_counter() + timeout_s
        msg_id = self.execute(code, user_expressions=user_expressions)
        while True:
            try:
                msg = self.client.iopub_channel.get_msg(timeout=max(0.0, deadline - time.perf_counter()))
            except Empty:
                raise BenchFailure("the main shell's loop cell printed no 'spinning' in time") from None
            parent = msg.get("parent_header", {}).get("msg_id")
            if parent == msg_id and msg["msg_type"] == "stream" and "spinning" in msg["content"]["text"]:
                return msg_id
            if parent == msg_id and msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                raise BenchFailure("the main shell's loop cell ended before it printed 'spinning'")


def _short(content: dict[str, Any], limit: int = 300) -> str:
    text = json.dumps({k: v for k, v in content.items() if k != "traceback"})
    return text if len(text) <= limit else text[:limit] + " …"


def wait_both(kernel: Kernel, msg_ids: list[str], deadline: float,
              streams: dict[str, list[str]] | None = None) -> dict[str, tuple[dict[str, Any], float]]:
    """The shell reply to each of ``msg_ids`` (any order) with its arrival time, then the
    IOPub idle of each; the stdout of each goes into ``streams`` by msg_id."""
    client = kernel.client
    replies: dict[str, tuple[dict[str, Any], float]] = {}
    while len(replies) < len(msg_ids):
        try:
            msg = client.shell_channel.get_msg(timeout=max(0.0, deadline - time.perf_counter()))
        except Empty:
            missing = [m for m in msg_ids if m not in replies]
            raise BenchFailure(f"no shell reply to {missing} in time ({len(replies)} of "
                               f"{len(msg_ids)} arrived)") from None
        parent = msg.get("parent_header", {}).get("msg_id")
        if parent in msg_ids:
            replies[parent] = (msg, time.perf_counter())
    idle: set[str] = set()
    while len(idle) < len(msg_ids):
        try:
            msg = client.iopub_channel.get_msg(timeout=max(0.0, deadline - time.perf_counter()))
        except Empty:
            raise BenchFailure(f"no IOPub idle for {[m for m in msg_ids if m not in idle]} in time") from None
        parent = msg.get("parent_header", {}).get("msg_id")
        if parent not in msg_ids:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle.add(parent)
        elif msg["msg_type"] == "stream" and streams is not None:
            streams.setdefault(parent, []).append(msg["content"]["text"])
    for msg_id, (reply, _at) in replies.items():
        if reply["content"].get("status") != "ok":
            raise BenchFailure(f"execute_request {msg_id} replied {_short(reply['content'])}")
    return replies


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        build = {} if args.source is None else {
            "PYTHONPATH": str(args.source.resolve()), "PYTHONSAFEPATH": "1"}
        # Each measured kernel by key: its kernelspec and what its environment adds. Only
        # wrapperkernel runs from --source; ipykernel is what is installed.
        self.specs: dict[str, tuple[str, dict[str, str]]] = {
            name: (name, build if kernel_label(name) == "wrapperkernel" else {}) for name in args.kernels}
        if args.switch_variant and "wrapperkernel" in self.specs:
            # The same wrapperkernel with Python's default switch interval (ipykernel's).
            self.specs[SWITCH_VARIANT] = ("wrapperkernel", {
                **build, "WRAPPERKERNEL_SWITCH_INTERVAL_S": f"{args.switch_variant:g}"})
        self.names: list[str] = list(self.specs)
        self.sandbox = Sandbox()
        self.kernels: dict[str, Kernel] = {}
        self.live: list[str] = []
        self.findings: list[str] = []
        self.probes: dict[str, dict[str, Any]] = {name: {} for name in self.names}
        self.create_s: dict[str, float] = {}
        # latency[name][variant][key]: "kernel" (seen - set), "main_reply", "sub_reply" (client).
        self.latency: dict[str, dict[str, dict[str, list[float]]]] = {
            name: {v: {"kernel": [], "main_reply": [], "sub_reply": []} for v in WATCH_BODIES}
            for name in self.names}
        # GIL_REFERENCE's latencies by switch interval (seconds, as text).
        self.reference: dict[str, list[float]] = {}
        self.trips: dict[str, dict[str, list[float]]] = {
            name: {stage: [] for stage in TRIP_STAGES} for name in self.names}

    def label(self, name: str) -> str:
        spec, env = self.specs[name]
        if name == SWITCH_VARIANT:
            return f"wrapperkernel, {float(env['WRAPPERKERNEL_SWITCH_INTERVAL_S']) * 1000:g} ms switch interval"
        return kernel_label(spec)

    def finding(self, name: str, phase: str, error: BaseException, drop: bool = True) -> None:
        kernel = self.kernels.get(name)
        alive = kernel is not None and kernel.running.km.is_alive()
        text = f"`{name}`, {phase}: {error} (kernel process {'alive' if alive else 'dead'}"
        text += "; no further measurements of it)" if drop else ")"
        tail = kernel.running.log_tail(8) if kernel is not None else ""
        if tail:
            text += "\n\n  Kernel log (last lines):\n\n  ```\n  " + tail.replace("\n", "\n  ") + "\n  ```"
        log(f"FINDING {text}")
        self.findings.append(text)
        if drop and name in self.live:
            self.live.remove(name)

    # ------------------------------------------------------------------ kernels

    def start_kernels(self) -> None:
        timeout_s = self.args.timeout
        for name in self.names:
            spec, env = self.specs[name]
            running = start(spec, self.sandbox, env)
            kernel = Kernel(name, running, None)  # type: ignore[arg-type]
            self.kernels[name] = kernel
            try:
                kernel.client = ready_client(running, timeout_s)
                kernel.run(SETUP, timeout_s)
                started = time.perf_counter()
                kernel.subshell_id = kernel.control("create_subshell_request", {}, timeout_s)["subshell_id"]
                self.create_s[name] = time.perf_counter() - started
                self.live.append(name)
                self.probe(kernel)
            except (BenchFailure, KeyError) as error:
                self.finding(name, "start and create_subshell_request", error)

    def probe(self, kernel: Kernel) -> None:
        timeout_s = self.args.timeout
        for where, subshell in (("main", False), ("subshell", True)):
            content = kernel.run("pass", timeout_s, subshell=subshell, user_expressions=PROBE)
            found = {}
            for key, result in content.get("user_expressions", {}).items():
                if result.get("status") != "ok":
                    raise BenchFailure(f"probe {key!r} in the {where}: {_short(result)}")
                try:
                    found[key] = ast.literal_eval(result["data"]["text/plain"])
                except (ValueError, SyntaxError, KeyError):
                    raise BenchFailure(f"probe {key!r} in the {where} gave {_short(result)}") from None
            self.probes[kernel.name][where] = found
        main, sub = self.probes[kernel.name]["main"], self.probes[kernel.name]["subshell"]
        if main.get("pid") != sub.get("pid"):
            self.findings.append(f"`{kernel.name}`: the subshell runs in pid {sub.get('pid')}, the main "
                                 f"shell in {main.get('pid')}: their perf_counter values are not "
                                 "from one process")
        log(f"probe {kernel.name}: {self.probes[kernel.name]}")

    def close(self) -> None:
        for name, kernel in self.kernels.items():
            if kernel.subshell_id and name in self.live:
                try:
                    kernel.control("delete_subshell_request", {"subshell_id": kernel.subshell_id},
                                   self.args.timeout)
                except BenchFailure as error:
                    self.finding(name, "delete_subshell_request", error, drop=False)
            if kernel.client is not None and kernel.client.channels_running:
                kernel.client.stop_channels()
            self.findings.extend(kernel.running.stop())
        self.sandbox.cleanup()

    # ------------------------------------------------------------------ latency

    def latency_once(self, kernel: Kernel, variant: str, value: int) -> dict[str, float]:
        timeout_s = self.args.timeout
        deadline = time.perf_counter() + 2 * timeout_s
        main_id = kernel.start_spinning(
            WATCH_CELL.format(body=WATCH_BODIES[variant], bound_s=timeout_s), timeout_s,
            user_expressions={"seen": "_bench_seen", "changed": "_bench_changed"})
        sent = time.perf_counter()
        sub_id = kernel.execute(SET_CELL.format(value=value), subshell=True,
                                user_expressions={"set": "_bench_set"})
        replies = wait_both(kernel, [main_id, sub_id], deadline)
        main, sub = replies[main_id][0]["content"], replies[sub_id][0]["content"]
        if main["user_expressions"].get("changed", {}).get("data", {}).get("text/plain") != "True":
            raise BenchFailure(f"the main shell's loop ended after {timeout_s:.0f} s without seeing "
                               "the subshell's assignment")
        return {"kernel": _float(main["user_expressions"]["seen"]) - _float(sub["user_expressions"]["set"]),
                "main_reply": replies[main_id][1] - sent, "sub_reply": replies[sub_id][1] - sent}

    def measure_latency(self) -> None:
        value = 0
        for variant in WATCH_BODIES:
            for i in range(self.args.warmup_latency + self.args.latency_samples):
                for name in list(self.live):
                    value += 1
                    try:
                        sample = self.latency_once(self.kernels[name], variant, value)
                    except BenchFailure as error:
                        self.finding(name, f"latency ({variant}), sample {i + 1}", error)
                        continue
                    if i >= self.args.warmup_latency:
                        for key, seconds in sample.items():
                            self.latency[name][variant][key].append(seconds)
            for name in self.live:
                got = self.latency[name][variant]
                log(f"latency {variant:5s} {name:14s} in kernel {report.ms(_median(got['kernel']))}"
                    f"  to main reply {report.ms(_median(got['main_reply']))}"
                    f"  to subshell reply {report.ms(_median(got['sub_reply']))}")

    def gil_reference(self) -> None:
        """GIL_REFERENCE at the switch intervals the kernels probed (a bare interpreter)."""
        intervals = sorted({p["main"]["switch_interval_s"] for p in self.probes.values() if p})
        for interval in intervals:
            try:
                done = subprocess.run([sys.executable, "-c", GIL_REFERENCE, f"{interval:g}",
                                       str(self.args.latency_samples)], env=self.sandbox.env(),
                                      capture_output=True, text=True, timeout=self.args.timeout, check=True)
                self.reference[f"{interval:g}"] = json.loads(done.stdout)
            except (subprocess.SubprocessError, OSError, ValueError) as error:
                self.findings.append(f"the bare-interpreter reference at {interval:g} s failed: {error}")
                continue
            log(f"reference {interval:g} s: {_us(_median(self.reference[f'{interval:g}']))}")

    # ------------------------------------------------------------------ round trips

    def measure_round_trips(self) -> None:
        args = self.args
        for stage in TRIP_STAGES:
            blocks = [(args.warmup, False)] + [(size, True) for size in _blocks(args.samples, args.block)]
            for size, keep in blocks:
                for name in list(self.live):
                    self._trip_block(self.kernels[name], stage, size, keep)
            for name in self.live:
                log(f"round trip {stage:4s} {name:14s} {report.ms(_median(self.trips[name][stage]))}")

    def _trip_block(self, kernel: Kernel, stage: str, size: int, keep: bool) -> None:
        timeout_s = self.args.timeout
        try:
            busy_id = None
            if stage == "busy":
                busy_id = kernel.start_spinning(BUSY_CELL.format(bound_s=timeout_s), timeout_s,
                                                user_expressions={"stopped": "_bench_stopped"})
            for _ in range(size):
                seconds = kernel.round_trip(timeout_s, subshell=stage != "main")
                if keep:
                    self.trips[kernel.name][stage].append(seconds)
            if busy_id is not None:
                self._stop_busy(kernel, busy_id)
        except BenchFailure as error:
            self.finding(kernel.name, f"round trip, {TRIP_TITLES[stage]}", error)

    def _stop_busy(self, kernel: Kernel, busy_id: str) -> None:
        """The subshell sets ``_bench_stop``; the busy cell must then end, stopped by it, and
        the stop cell's output must be parented to the stop cell, not to the busy one."""
        timeout_s = self.args.timeout
        stop_id = kernel.execute(STOP_CELL, subshell=True)
        streams: dict[str, list[str]] = {}
        replies = wait_both(kernel, [busy_id, stop_id], time.perf_counter() + 2 * timeout_s, streams)
        stopped = replies[busy_id][0]["content"]["user_expressions"].get("stopped", {})
        if stopped.get("data", {}).get("text/plain") != "True":
            raise BenchFailure(f"the main shell's busy loop ran out its {timeout_s:.0f} s bound "
                               "instead of being stopped by the subshell")
        if "".join(streams.get(stop_id, [])) != "stopping\n" or "stopping" in "".join(streams.get(busy_id, [])):
            raise BenchFailure(f"the subshell's print('stopping') arrived as {streams.get(stop_id)!r} on "
                               f"its own request and {streams.get(busy_id)!r} on the main shell's")


# ---------------------------------------------------------------------- the section

def _median_p99(samples: list[float]) -> str:
    if not samples:
        return "—"
    s = summarize(samples)
    return f"{_us(s['median'])} / {_us(s['p99'])}"


def _us(seconds: float) -> str:
    """Below 1 ms in microseconds: the in-kernel latencies are that small."""
    return f"{seconds * 1e6:.0f} µs" if abs(seconds) < 0.001 else report.ms(seconds)


def render(run: Run, meta: dict[str, Any]) -> str:
    args, names = run.args, run.names
    labels = [run.label(name) for name in names]
    m = meta["machine"]
    out = [f"<!-- {SECTION}:start -->", "",
           "## Subshells (JEP 91): reaching a running cell, and requests beside a busy main shell", "",
           f"Generated by `{meta['command']}` on {m['date_utc']} "
           f"({'quick' if args.quick else 'full'} mode, {meta['duration_s']:.0f} s); "
           f"{len(labels)} kernels in the same run ({'; '.join(labels)}), one warm kernel each "
           "with one subshell, alternating between samples (latency) or blocks of "
           f"{args.block} samples (round trips).", "",
           machine_paragraph(meta) + f" Processes this run did not start used {meta['others_cores']:.2f} "
           f"cores on average during it (all busy CPU time minus this run's){meta['shared']}. "
           f"`uptime` before: `{meta['uptime_before']}`; after: `{meta['uptime_after']}`.", "",
           "**How.** *Latency*: the main shell runs a cell that prints `spinning` and then loops "
           "until `_bench_flag` changes, recording `time.perf_counter()` when it sees the change "
           "(every loop is bounded by a time limit); once `spinning` has arrived on IOPub, the "
           "client sends the subshell `_bench_flag = new; _bench_set = time.perf_counter()`. "
           "*In the kernel* is `seen - set`, both read in the one process that runs cells (the "
           "pid row), returned as `user_expressions`; *client* times run from sending the "
           f"subshell's `execute_request` to each shell reply. {args.latency_samples} samples per "
           f"loop after {args.warmup_latency} warm-up. *Round trip*: `execute_request(\"pass\")` "
           "with `subshell_id` in its header, until its shell reply and the IOPub `idle` parented "
           f"to it, {args.warmup} warm-up and {args.samples} samples per row; in the busy row the "
           "main shell runs `while not _bench_stop and time.perf_counter() < bound: pass`, started "
           "anew for each block and stopped by a subshell request after it. Median / p99 "
           "(nearest rank: with fewer than 100 samples p99 is the slowest)."
           + (f" The last column is the same wrapperkernel with `WRAPPERKERNEL_SWITCH_INTERVAL_S="
              f"{args.switch_variant:g}` in its environment (Python's default interval, which "
              "ipykernel keeps), to show what the worker's short interval does."
              if SWITCH_VARIANT in run.names else ""), ""]
    rows = []
    for variant in WATCH_BODIES:
        rows.append([f"**in the kernel: subshell's assignment → main cell sees it**, {WATCH_TITLES[variant]}"]
                    + [_median_p99(run.latency[name][variant]["kernel"]) + _negatives(run.latency[name][variant]["kernel"])
                       for name in names])
    for variant in WATCH_BODIES:
        rows.append([f"client: subshell request sent → main cell's `execute_reply`, {variant}"]
                    + [_median_p99(run.latency[name][variant]["main_reply"]) for name in names])
        rows.append([f"client: subshell request sent → subshell's `execute_reply`, {variant}"]
                    + [_median_p99(run.latency[name][variant]["sub_reply"]) for name in names])
    n = [len(run.latency[name]["spin"]["kernel"]) for name in names]
    out += [f"### From a statement in a subshell to a running cell ({' / '.join(map(str, n))} samples)", ""]
    out += report.markdown_table([""] + labels, rows)
    out.append("")
    if run.reference:
        out += ["Reference, no kernel: the same hand-over in a bare interpreter (`python -c`), the "
                "main thread spinning on a variable that a second thread assigns, that thread then "
                "spinning on for 5 ms (so only a forced switch gives the GIL back), "
                f"{args.latency_samples} samples; assignment → main thread sees it:", ""]
        out += report.markdown_table(["switch interval", "median / p99"], [
            [f"{float(interval) * 1000:g} ms", _median_p99(samples)] for interval, samples in run.reference.items()])
        out.append("")
    rows = [[TRIP_TITLES[stage]] + [_median_p99(run.trips[name][stage]) for name in names]
            for stage in TRIP_STAGES]
    rows.append(["busy / idle main shell, subshell (medians)"]
                + [_ratio(_median(run.trips[name]["busy"]), _median(run.trips[name]["idle"])) for name in names])
    out += ["### `execute_request(\"pass\")` round trip on a subshell (median / p99)", ""]
    out += report.markdown_table([""] + labels, rows)
    out.append("")
    rows = [["`create_subshell_request` → reply (one)"] + [report.ms(run.create_s.get(name)) for name in names]]
    for key, title in (("switch_interval_s", "`sys.getswitchinterval()` where cells run"),
                       ("pid", "pid of the process running the main shell's cells; the subshell's"),
                       ("thread", "thread running the cell: main shell; subshell"),
                       ("threads", "threads of that process (seen from the subshell)"),
                       ("wrapperkernel", "`wrapperkernel` imported from")):
        cells = []
        for name in names:
            probe = run.probes[name]
            if not probe:
                cells.append("—")
            elif key == "threads":
                cells.append(", ".join(f"`{thread}`" for thread in probe["subshell"].get(key, [])))
            elif key == "wrapperkernel":
                cells.append(f"`{probe['main'].get(key)}`")
            elif key == "switch_interval_s":
                cells.append(f"{probe['main'][key] * 1000:g} ms")
            else:
                cells.append(f"`{probe['main'].get(key)}`; `{probe['subshell'].get(key)}`")
        rows.append([title] + cells)
    out += ["### Probes", ""]
    out += report.markdown_table([""] + labels, rows)
    out.append("")
    out += meta["explanation"]
    if run.findings:
        out += ["", "### Findings during this run", ""]
        out += [f"- {finding}" for finding in run.findings]
    out += ["", f"<!-- {SECTION}:end -->"]
    return "\n".join(out)


def _beyond(reference: dict[str, list[float]]) -> str:
    """Whether the bare hand-over took longer than the interval that forces it."""
    slow = [k for k, v in reference.items() if v and _median(v) > 2 * float(k)]  # type: ignore[operator]
    if not slow:
        return ""
    return (", more than twice the interval at " + ", ".join(f"{float(k) * 1000:g} ms" for k in slow)
            + ": the waiting thread must also be woken and get a core")


def _negatives(samples: list[float]) -> str:
    """A negative latency: the main cell saw the new value before the subshell's next
    statement read the clock (the GIL changed hands between the two statements)."""
    negative = sum(1 for x in samples if x < 0)
    return f" ({negative} of {len(samples)} negative)" if negative else ""


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.1f}×"


def explain(run: Run) -> list[str]:
    """The paragraphs under the tables: what this run's numbers and probes show."""
    names = [n for n in run.names if run.probes[n] and all(run.latency[n][v]["kernel"] for v in WATCH_BODIES)
             and all(run.trips[n][stage] for stage in TRIP_STAGES)]
    if not names:
        return ["Too few measurements in this run to explain the numbers (see the findings)."]
    label = run.label
    interval = {n: run.probes[n]["main"]["switch_interval_s"] for n in names}
    lat = {n: {v: _median(run.latency[n][v]["kernel"]) for v in WATCH_BODIES} for n in names}
    trip = {n: {stage: _median(run.trips[n][stage]) for stage in TRIP_STAGES} for n in names}
    reply = {n: _median(run.latency[n]["spin"]["main_reply"]) for n in names}

    def each(values: dict[str, Any], fmt: Any = _us) -> str:
        return ", ".join(f"{fmt(values[n])} ({label(n)})" for n in names)

    out = [
        "**Why.** The subshell is a thread of the process that runs the main shell's cells (the "
        "pid rows), so while the main cell spins in pure Python the two threads share one GIL. "
        "A thread waiting for the GIL gets it when the holder blocks (a socket, a queue, "
        "`time.sleep`), or when it has waited one switch interval and forces a switch. "
        "wrapperkernel's worker sets the interval (`SWITCH_INTERVAL_S` in "
        "`wrapperkernel/worker/main.py`, from `WRAPPERKERNEL_SWITCH_INTERVAL_S`); ipykernel "
        "keeps Python's default. `sys.getswitchinterval()` where the cells ran: "
        + each(interval, lambda x: f"{x * 1000:g} ms") + ".", ""]
    text = ("**A request while the main shell spins.** A subshell's `pass` takes "
            + each({n: trip[n]["busy"] for n in names}, report.ms)
            + " (median), against " + each({n: trip[n]["idle"] for n in names}, report.ms)
            + " with the main shell idle. In wrapperkernel the kernel process, which runs no user "
            "code, receives the request and relays it to the worker, where the reader thread "
            "and then the subshell thread need the GIL from the spinning main thread; in "
            "ipykernel the `Shell channel` thread reads the shell socket and hands the request "
            "to the subshell thread, and the `IOPub` thread sends its status and reply "
            "messages (the threads row): all of them in the spinning process, each hand-over "
            "waiting for the GIL.")
    base = "wrapperkernel" if "wrapperkernel" in names else None
    ipk = next((n for n in names if "ipykernel" in label(n)), None)
    if base and SWITCH_VARIANT in names:
        variant = trip[SWITCH_VARIANT]["busy"]
        text += (f" The same wrapperkernel with a {interval[SWITCH_VARIANT] * 1000:g} ms interval "
                 f"takes {report.ms(variant)}, {variant / trip[base]['busy']:.1f}× its time at "
                 f"{interval[base] * 1000:g} ms")
        if ipk:
            text += (f", and ipykernel {trip[ipk]['busy'] / variant:.1f}× that: at the same "
                     "interval, what differs is which threads of the spinning process the request "
                     "and its replies pass through")
        text += "."
    out += [text, ""]
    text = ("**From a statement to a running cell.** Inside the kernel, the spinning cell sees "
            "the subshell's assignment after " + each({n: lat[n]["spin"] for n in names})
            + " (medians): the time until the subshell thread, which holds the GIL once it has "
            "run the assignment, gives it back (it blocks, or the main thread forces a switch "
            "after the interval)."
            + (" In a bare interpreter, where only a forced switch hands the GIL over, it takes "
               + ", ".join(f"{_us(_median(v))} at {float(k) * 1000:g} ms" for k, v in run.reference.items())
               + " on this machine (the reference table)" + _beyond(run.reference) + "."
               if run.reference else "")
            + " A cell that sleeps "
            f"{SLEEP_S * 1000:g} ms per turn sees it after " + each({n: lat[n]["sleep"] for n in names})
            + ": it checks once per turn, and on waking it too must get the GIL. From the "
            "client, the subshell's request to the main cell's `execute_reply` takes "
            + each(reply, report.ms) + " with the spinning cell: the request's way in (above) "
            "dominates, not the hand-over inside the kernel.")
    negative = {n: sum(1 for x in run.latency[n][v]["kernel"] if x < 0) for n in names for v in WATCH_BODIES}
    if any(negative.values()):
        text += (" A negative sample means the main cell ran between the subshell's assignment "
                 "and its `time.perf_counter()`: the GIL changed hands between two statements.")
    out.append(text)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 latency samples per loop, 30 round trips per row")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="markdown file to update between the subshell-bench markers; '-' prints it")
    parser.add_argument("--json", type=Path, help="also write the raw samples here")
    parser.add_argument("--source", type=Path,
                        help="a checkout of one commit (e.g. a git clone) whose wrapperkernel "
                             "the wrapperkernel kernel runs, instead of the installed one")
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS),
                        help=f"kernelspecs to compare (default: {' '.join(KERNELS)})")
    parser.add_argument("--switch-variant", type=float, default=0.005,
                        help="also measure wrapperkernel with WRAPPERKERNEL_SWITCH_INTERVAL_S set to "
                             "this (default 0.005, Python's default; 0: not)")
    parser.add_argument("--latency-samples", type=int, help="latency samples per loop (default 50, quick 10)")
    parser.add_argument("--warmup-latency", type=int, default=3, help="latency warm-up samples per loop")
    parser.add_argument("--samples", type=int, help="round trips per row (default 200, quick 30)")
    parser.add_argument("--warmup", type=int, default=10, help="round-trip warm-up per row")
    parser.add_argument("--block", type=int, default=50, help="round trips in a row per kernel")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds any one wait (and any loop in a cell) may take")
    args = parser.parse_args(argv)
    args.latency_samples = args.latency_samples or (10 if args.quick else 50)
    args.samples = args.samples or (30 if args.quick else 200)
    return args


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "uptime unavailable"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    installed = KernelSpecManager().find_kernel_specs()
    missing = [name for name in args.kernels if name not in installed]
    args.kernels = [name for name in args.kernels if name in installed]
    started = time.perf_counter()
    cpu = CpuShare()
    meta: dict[str, Any] = {"machine": report.machine_info(args.source or REPO),
                            "command": shlex.join(["bench/subshell_bench.py", *sys.argv[1:]]),
                            "uptime_before": _uptime()}
    run = Run(args)
    run.findings += [f"`{name}`: no such kernelspec here; not measured" for name in missing]
    try:
        log(f"kernels: {', '.join(run.names)}")
        run.start_kernels()
        log(f"latency: {args.latency_samples} samples per loop")
        run.measure_latency()
        run.gil_reference()
        log(f"round trips: {args.samples} per row")
        run.measure_round_trips()
    finally:
        run.close()
    meta["duration_s"] = time.perf_counter() - started
    meta["loadavg_at_end"] = os.getloadavg()
    meta["uptime_after"] = _uptime()
    meta["others_cores"] = cpu.others_cores()
    meta["shared"] = ("; the machine was shared during the run" if meta["others_cores"] > 0.25
                      else "; the machine was otherwise idle")
    meta["explanation"] = explain(run)
    section = render(run, meta)
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "latency": run.latency, "trips": run.trips,
                                         "probes": run.probes, "reference": run.reference,
                                         "findings": run.findings}, indent=1))
    if str(args.out) == "-":
        print(section)
    else:
        report.write_section(args.out, section, name=SECTION)
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
