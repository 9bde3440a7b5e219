"""Side-by-side benchmark of wrapperkernel, ipykernel and xeus-python, in the same run.

Usage: .venv/bin/python bench/run_bench.py [--quick | --headline] [--out docs/benchmarks.md]

This is the composition root of bench/: it parses the command line, runs the phases in
order (fresh launches with two client settings, then one warm kernel per kernelspec for
round trips, stdout throughput and memory), alternating kernels A B C A B C between
repetitions, and hands the measured numbers to ``report.py``. ``--headline`` runs issue
13's five headline measures only (launch, round trip, stdout, comm echo, client -> kernel
comm_msgs/s; the last two as ``comm_bench.py`` measures them), small, and prints them. A kernel that hangs, dies or loses output becomes a
finding in the report; the run continues with what can still be measured and always
shuts down everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import comm_cells
import comm_report
import measure
import report
import zmq
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from launch import BenchFailure, RunningKernel, Sandbox, default_client, start
from lean_client import LeanClient

REPO = Path(__file__).resolve().parent.parent
SETTLE_S = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer samples (10 launches, 200 round trips, 2 throughput runs)")
    parser.add_argument("--headline", action="store_true",
                        help="only issue 13's five headline measures, small sizes, for all "
                             "kernels (about a minute); prints the targets and writes no file "
                             "unless --out is given")
    parser.add_argument("--out", help="markdown file to update between the kernel-bench markers; "
                                      "'-' prints it (default docs/benchmarks.md; --headline: '-')")
    parser.add_argument("--json", dest="json_path", help="also write the raw samples here")
    parser.add_argument("--kernel", default="wrapperkernel", help="kernelspec under test")
    parser.add_argument("--baseline", default="python3", help="kernelspec to compare with (ipykernel)")
    parser.add_argument("--reference", default="xpython",
                        help="the third kernelspec (xeus-python); '' leaves it out")
    parser.add_argument("--launches", type=int,
                        help="fresh launches per kernel and client setting (default 20, quick 10)")
    parser.add_argument("--samples", type=int, help="round-trip samples per kernel (default 1000, quick 200)")
    parser.add_argument("--warmup", type=int, default=50, help="round-trip warm-up runs per kernel")
    parser.add_argument("--block", type=int, default=100,
                        help="round-trip samples in a row before switching kernel")
    parser.add_argument("--lines", type=int,
                        help="lines printed by the throughput cell (default 50,000: xeus-python "
                             "publishes every write, about 1,600 lines/s)")
    parser.add_argument("--reps", type=int, help="throughput repetitions per kernel (default 3, quick 2)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for a launch or one request before calling it a hang")
    args = parser.parse_args(argv)
    if args.headline:
        args.launches = args.launches or 2
        args.samples = args.samples or 300
        args.reps = args.reps or 1
        args.lines = args.lines or 5_000
        args.warmup = min(args.warmup, 20)
        args.out = args.out or "-"
    args.launches = args.launches or (10 if args.quick else 20)
    args.samples = args.samples or (200 if args.quick else 1000)
    args.reps = args.reps or (2 if args.quick else 3)
    args.lines = args.lines or (20_000 if args.quick else 50_000)
    args.out = args.out or "docs/benchmarks.md"
    args.interactive_samples = max(20, args.samples // 5)
    args.comm_echo_n, args.comm_block, args.comm_count_n = 200, 100, 1_000  # --headline only
    names = [args.kernel, args.baseline] + ([args.reference] if args.reference else [])
    if len(set(names)) != len(names):
        parser.error("--kernel, --baseline and --reference must name different kernelspecs")
    return args


def label_for(name: str) -> str:
    """ipykernel's spec is usually called python3, xeus-python's xpython: name them after
    the kernel they start."""
    argv = KernelSpecManager().get_kernel_spec(name).argv
    if any("ipykernel" in part for part in argv) and name != "ipykernel":
        return f"ipykernel ({name})"
    if any("xpython" in part for part in argv) and name != "xeus-python":
        return f"xeus-python ({name})"
    return name


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.findings: list[str] = []
        self.order: list[str] = []
        labels: dict[str, str] = {}
        for name in (args.kernel, args.baseline, args.reference):
            if not name:
                continue
            try:
                labels[name] = label_for(name)
            except NoSuchKernel:
                if name in (args.kernel, args.baseline):
                    sys.exit(f"no kernelspec named {name!r}; `jupyter kernelspec list` shows what is installed")
                self.findings.append(f"no kernelspec `{name}` is installed (xeus-python: `make bench` "
                                     "installs it, a test extra): its column is empty")
                continue
            self.order.append(name)
        self.sandbox = Sandbox()
        self.results: dict[str, Any] = {
            "kernels": self.order,
            "candidate": args.kernel,
            "baseline": args.baseline,
            "reference": args.reference if args.reference in self.order else None,
            "labels": labels,
            "launch": {name: [] for name in self.order},
            "roundtrip": {name: [] for name in self.order},
            "roundtrip_blocking": {name: [] for name in self.order},
            "roundtrip_interactive": {name: [] for name in self.order},
            "throughput": {name: [] for name in self.order},
            "memory": {name: {} for name in self.order},
            "findings": self.findings,
        }
        self.warm: dict[str, tuple[RunningKernel, LeanClient]] = {}
        self.broken: set[str] = set()

    def fail(self, name: str, phase: str, error: BaseException, kernel: RunningKernel | None) -> None:
        text = f"`{name}`, {phase}: {error}"
        tail = kernel.log_tail() if kernel else getattr(error, "log_tail", "")
        if tail:
            text += "\n\n  Kernel log (last lines):\n\n  ```\n  " + tail.replace("\n", "\n  ") + "\n  ```"
        log(f"FINDING {text}")
        self.findings.append(text)

    # ------------------------------------------------------------------ phases

    def launches(self) -> None:
        for name in self.order:  # unmeasured: fills the bytecode cache (see launch.Sandbox)
            try:
                _sample, kernel = measure.launch_once(name, self.sandbox, self.args.timeout)
            except BenchFailure as error:
                self.fail(name, "unmeasured first launch", error, None)
                continue
            self.findings.extend(kernel.stop())
        for i in range(self.args.launches):
            for mode in measure.LAUNCH_MODES:
                for name in self.order:
                    try:
                        sample, kernel = measure.launch_once(name, self.sandbox, self.args.timeout, mode)
                    except BenchFailure as error:
                        self.fail(name, f"launch {i + 1} ({mode} client settings)", error, None)
                        continue
                    self.results["launch"][name].append(asdict(sample))
                    self.findings.extend(kernel.stop())
                    log(f"launch {i + 1:2d} {mode:7s} {name:14s} kernel_info "
                        f"{sample.kernel_info_s * 1000:7.1f} ms  ready {sample.ready_s * 1000:7.1f} ms"
                        f"  first execute {sample.first_execute_s * 1000:7.1f} ms")

    def start_warm(self) -> None:
        for name in self.order:
            kernel = start(name, self.sandbox)
            try:
                client = LeanClient(kernel.km.get_connection_info())
            except zmq.ZMQError as error:
                self.fail(name, "warm start", error, kernel)
                self.findings.extend(kernel.stop())
                continue
            self.warm[name] = (kernel, client)
            try:
                client.wait_ready(self.args.timeout)
                measure.lean_round_trip(client, self.args.timeout)
            except BenchFailure as error:
                self.fail(name, "warm start", error, kernel)
                self.broken.add(name)
        time.sleep(SETTLE_S)
        self.measure_memory("after_startup")

    def measure_memory(self, when: str) -> None:
        for name, (kernel, _client) in self.warm.items():
            if kernel.km.is_alive():
                self.results["memory"][name][when] = measure.memory(kernel)

    def round_trips(self) -> None:
        args = self.args
        for _ in range(args.warmup):
            for name in self.live():
                self._guard(name, "round-trip warm-up",
                            lambda k, c: measure.lean_round_trip(c, args.timeout))
        done = 0
        while done < args.samples:
            block = min(args.block, args.samples - done)
            for name in self.live():
                samples = self.results["roundtrip"][name]
                for _ in range(block):
                    value = self._guard(name, "execute round trip",
                                        lambda k, c: measure.lean_round_trip(c, args.timeout))
                    if value is None:
                        break
                    samples.append(value)
            done += block
        for name in self.order:
            samples = self.results["roundtrip"][name]
            if samples:
                log(f"round trip {name:14s} median {sorted(samples)[len(samples) // 2] * 1000:.3f} ms")
        if not args.headline:
            self.reference_round_trips()

    def reference_round_trips(self) -> None:
        """The previous harness and execute_interactive, on a BlockingKernelClient that
        exists only for this phase (its heartbeat thread must not run during the others)."""
        args = self.args
        blocking: dict[str, Any] = {}
        for name in self.live():
            kernel, _lean = self.warm[name]
            client = default_client(kernel)
            blocking[name] = client
            try:
                client.wait_for_ready(timeout=args.timeout)
            except RuntimeError as error:
                self.fail(name, "BlockingKernelClient for the reference rows", error, kernel)
        try:
            for key, how in (("roundtrip_blocking", measure.execute_round_trip),
                             ("roundtrip_interactive", measure.execute_interactive_round_trip)):
                for _ in range(args.interactive_samples):
                    for name, client in blocking.items():
                        value = self._guard(name, f"{key} (reference)",
                                            lambda k, c, how=how, client=client: how(client, args.timeout))
                        if value is not None:
                            self.results[key][name].append(value)
        finally:
            for client in blocking.values():
                client.stop_channels()
        for name in self.warm:
            self.warm[name][1].drop_held("iopub")

    def throughput(self) -> None:
        for rep in range(self.args.reps):
            for name in self.live():
                sample = self._guard(name, f"stdout throughput, repetition {rep + 1}",
                                     lambda k, c: measure.stdout_throughput(c, self.args.lines,
                                                                            self.args.timeout))
                if sample is None:
                    continue
                self.results["throughput"][name].append(asdict(sample))
                log(f"throughput {name:14s} {sample.elapsed_s:6.2f} s "
                    f"{sample.delivered_rate:10,.0f} delivered lines/s "
                    f"received {sample.lines_received:,} lost {sample.lines_lost:,} "
                    f"in order {sample.in_order} late {sample.late_lines} "
                    f"messages {sample.stream_messages} idle lost {sample.idle_lost}")
                if sample.lines_lost or not sample.in_order or sample.late_lines or sample.idle_lost:
                    self.findings.append(
                        f"`{name}`, stdout throughput repetition {rep + 1}: received "
                        f"{sample.lines_received:,} of {sample.lines_expected:,} lines, "
                        f"{sample.lines_lost:,} lost, in order: {sample.in_order}, "
                        f"{sample.late_lines:,} arrived after idle"
                        + (f"; the IOPub `idle` never came (the run ended {measure.IDLE_GRACE_S:g} s "
                           "after the last message)" if sample.idle_lost else ""))

    def relayed_comms(self) -> None:
        """--headline: comm echo and client -> kernel comm_msgs/s, as comm_bench.py measures
        them, on the warm kernels; each gets a client with an unbounded IOPub queue."""
        args = self.args
        clients: dict[str, LeanClient] = {}
        for name in self.live():
            kernel, old = self.warm[name]
            old.close()
            client = LeanClient(kernel.km.get_connection_info(), iopub_rcvhwm=0)
            self.warm[name] = (kernel, client)
            ok = self._guard(name, "comm setup", lambda k, c: (c.wait_ready(args.timeout),
                                                               c.run(comm_cells.SETUP_COMMON, args.timeout)))
            if ok is not None:
                clients[name] = client
        self.results["comms"] = measure.relayed_comms(
            clients, args.comm_echo_n, args.comm_block, args.comm_count_n, 1, args.timeout,
            lambda name, phase, error: self.fail(name, phase, error, self.warm[name][0]), log)

    def live(self) -> list[str]:
        return [name for name in self.order if name in self.warm and name not in self.broken]

    def _guard(self, name: str, phase: str, action: Any) -> Any:
        kernel, client = self.warm[name]
        try:
            return action(kernel, client)
        except BenchFailure as error:
            alive = "alive" if kernel.km.is_alive() else "dead"
            self.fail(name, f"{phase} (kernel process {alive}; no further warm measurements)",
                      error, kernel)
            self.broken.add(name)
            return None

    def close(self) -> None:
        for kernel, client in self.warm.values():
            client.close()
            self.findings.extend(kernel.stop())
        self.warm.clear()
        self.sandbox.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    meta: dict[str, Any] = {"machine": report.machine_info(REPO)}
    run = Run(args)
    try:
        log(f"launches: {args.launches} per kernel and client setting, alternating "
            f"{' / '.join(run.order)}")
        run.launches()
        log("warm kernels")
        run.start_warm()
        log(f"round trips: {args.warmup} warm-up + {args.samples} samples per kernel")
        run.round_trips()
        log(f"stdout throughput: {args.reps} x {args.lines:,} lines per kernel")
        run.throughput()
        time.sleep(SETTLE_S)
        run.measure_memory("after_bench")
        if args.headline:
            log("relayed comms: echo and client -> kernel comm_msgs/s")
            run.relayed_comms()
    finally:
        run.close()
    meta["duration_s"] = time.perf_counter() - started
    meta["loadavg_at_end"] = os.getloadavg()
    meta["params"] = {
        "quick": args.quick, "headline": args.headline, "launches": args.launches,
        "samples": args.samples, "warmup": args.warmup, "block": args.block, "lines": args.lines,
        "reps": args.reps, "interactive_samples": args.interactive_samples, "timeout_s": args.timeout,
        "poll_ms": measure.KERNEL_INFO_POLL_S * 1000, "reconnect_ivl_ms": measure.RECONNECT_IVL_MS,
        "ready_reply_wait_s": measure.READY_REPLY_WAIT_S,
        "ready_iopub_wait_s": measure.READY_IOPUB_WAIT_S, "idle_grace_s": measure.IDLE_GRACE_S,
    }
    run.results["meta"] = meta
    if args.headline:
        section = "\n".join(report.targets(run.results)
                            + comm_report.comm_targets(run.results["comms"], run.results["labels"],
                                                       args.kernel, args.baseline,
                                                       run.results["reference"]).lines(
                                                           "### Relayed comms"))
        if run.findings:
            section += "\n### Findings\n\n" + "\n".join(f"- {x}" for x in run.findings) + "\n"
    else:
        section = report.render(run.results)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(run.results, indent=1))
    if args.out == "-":
        print(section)
    else:
        out = Path(args.out)
        report.write_section(out if out.is_absolute() else Path.cwd() / out, section)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
