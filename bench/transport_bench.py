"""Transport benchmark: the address channel on its two page transports, side by side.

Usage: .venv/bin/python bench/transport_bench.py [--quick] [--out docs/benchmarks.md] [--json FILE]

One run, three warm kernels: the same wrapperkernel build twice, with
``WRAPPERKERNEL_PAGE_TRANSPORT=websocket`` (its page is ``tests/headless_page.py``, a
client connection of its own, as the page client's own websocket is) and ``=widget`` (its
page is the real page client run in Node from the kernel's widget model,
``tests/widget_frontend.py``, through ``transport_pages.NodePage``), and ipykernel as the
reference where it has the workload (its comms). The workloads are the comm benchmark's
for the websocket page, with the cells of ``comm_cells.py``:

1. round trips: the page's echo through a program callback (page -> program -> page),
   idle and while a cell sleeps or spins; the program's round trip through the page
   (program -> page -> program, timed in the cell); ipykernel's comm echo beside them;
2. values/s: a burst from the program to the page (``comms.send`` + ``sync``), and
   from the page to a listening cell; ipykernel's ``comm.send`` flood and comm_msgs.

Blocks alternate between the transports (the order flips every block or repetition).
``--source DIR`` runs both wrapperkernel kernels from a checkout of one commit (its
``PYTHONPATH``, with ``PYTHONSAFEPATH=1``), so that work in progress in this tree is not
what is measured; the report names that checkout's commit.
The results replace the section between ``<!-- transport-bench:start -->`` and
``<!-- transport-bench:end -->`` in docs/benchmarks.md. This file is the command line, the
composition root and the runs (``TransportRun`` extends ``comm_runs.Run``, whose
primitives measure the websocket page and ipykernel); the wording is
``transport_report.py``'s.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import comm_cells as cells
import report
from comm_bench import add_common_arguments, measure_and_write, size_round_trips_and_throughput
from comm_cells import B, K
from comm_client import BenchPage, Notebook
from comm_runs import Run, json_line, log
from launch import BenchFailure, start
from transport_pages import NodePage
from transport_report import SECTION, render

REPO = Path(__file__).resolve().parent.parent
W = "wrapperkernel (widget transport)"  # the second kernel of kernelspec K
TRANSPORT_ENV = "WRAPPERKERNEL_PAGE_TRANSPORT"
ECHO_REQ, ECHO_RESP = "/bench/echo/req", "/bench/echo/resp"
BURST, SINK_READY, SINK_IN, SINK_DONE = "/bench/tp/v", "/bench/tp/ready", "/bench/tp/in", "/bench/tp/done"
BURST_WAIT_S = 120.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, SECTION)
    parser.add_argument("--source", type=Path,
                        help="a checkout (e.g. a git worktree of one commit) whose wrapperkernel "
                             "both wrapperkernel kernels run, instead of the installed one")
    args = parser.parse_args(argv)
    size_round_trips_and_throughput(args)  # the comm benchmark's sizes
    return args


class TransportRun(Run):
    """The comm benchmark's run with a second wrapperkernel whose page is on the widget
    transport. Sample keys: ``k_`` the websocket page, ``g_`` the widget transport,
    ``b_`` ipykernel."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.node: NodePage | None = None

    def start(self) -> None:
        # One build for both transports: the installed wrapperkernel, or --source's.
        build = {} if self.args.source is None else {
            "PYTHONPATH": str(self.args.source.resolve()), "PYTHONSAFEPATH": "1"}
        for key, spec, transport in ((K, K, "websocket"), (W, K, "widget"), (B, B, None)):
            kernel = start(spec, self.sandbox, {**build, TRANSPORT_ENV: transport} if transport else None)
            self.kernels[key] = kernel
            self.nb[key] = Notebook(kernel)
            kernel.children()
        self.page = BenchPage(self.kernels[K].km.connection_file)
        self.node = NodePage(self.kernels[W].km.connection_file, self.kernels[W].km.session.key)
        for key in (K, W, B):
            self.nb[key].run(cells.SETUP_COMMON, timeout=60)
        for key in (K, W):
            self.nb[key].run(cells.SETUP_WRAPPERKERNEL, timeout=60)
        if not self.page.acked.is_set():
            raise BenchFailure("the headless page did not connect")
        self.node.wait_open()
        self.node.check_clock()
        for key in (K, W):
            self.kernels[key].children()

    def close(self) -> None:
        if self.node is not None:
            self.node.close()
        super().close()

    def _pages(self, flip: int) -> list[tuple[str, str, Callable[[int], list[float]]]]:
        """(kernel, sample prefix, the page's echo) for each transport, in this block's order."""
        pages = [(K, "k", self.page_echo), (W, "g", self.node_echo)]
        return pages if flip % 2 == 0 else pages[::-1]

    def node_echo(self, n: int) -> list[float]:
        assert self.node is not None
        return self.node.echo_round_trips(n, self.args.gap_s, ECHO_REQ, ECHO_RESP)

    # ------------------------------------------------------------------ 1. round trips

    def round_trips(self) -> None:
        a = self.args
        cid = self.guard(B, "open the echo comm", lambda: self.open_echo(B))
        for key, _prefix, echo in self._pages(0):
            self.guard(key, "warm-up", lambda key=key, echo=echo: (
                self.nb[key].run(cells.RT_WARMUP), echo(50)))
        for block in range(a.rt_n // a.block):
            for key, prefix, echo in self._pages(block):
                self.guard(key, "program round trip (idle)", lambda key=key, prefix=prefix: self.add(
                    f"{prefix}_prog_idle", json_line(self.nb[key].run(cells.round_trips(a.block, a.gap_s), 60))))
                self.guard(key, "page echo (idle)", lambda prefix=prefix, echo=echo: self.add(
                    f"{prefix}_page_idle", echo(a.block)))
            if cid:
                self.guard(B, "comm echo (idle)", lambda: self.add("b_comm_idle", self.comm_echo(B, a.block, cid)))
            log(f"idle round trips: block {block + 1}/{a.rt_n // a.block}")
        for flip, (label, code) in enumerate(cells.BUSY_CELLS.items()):
            for key, prefix, echo in self._pages(flip):
                self.guard(key, f"page echo while a cell runs ({label})",
                           lambda key=key, prefix=prefix, echo=echo, label=label, code=code:
                           self._echo_while(key, f"{prefix}_page_{label}", code, echo))
            log(f"page echo while a `{label}` cell runs: done")

    def _echo_while(self, key: str, sample_key: str, code: str, echo: Callable[[int], list[float]]) -> None:
        """The page's echo while ``code`` keeps the cell busy; the cell is interrupted after."""
        nb = self.nb[key]
        msg_id = nb.execute(code)
        nb.wait_busy(msg_id)
        time.sleep(0.2)
        self.add(sample_key, echo(self.args.rt_n))
        self.kernels[key].km.interrupt_kernel()
        reply, _out, _ = nb.finish(msg_id, timeout=15)
        if reply.get("status") == "ok":
            self.finding(f"`{key}`: the busy cell ended on its own before the echoes finished; "
                         f"some `{sample_key}` samples were taken with no cell running")
        elif reply.get("ename") != "KeyboardInterrupt":
            self.finding(f"`{key}`: interrupting the busy cell gave {reply.get('ename')}: "
                         f"{reply.get('evalue')}", key)

    # ------------------------------------------------------------------ 2. throughput

    def throughput(self) -> None:
        a = self.args
        for rep in range(a.reps):
            for n in a.tp_sizes:
                for key, _prefix, _echo in self._pages(rep):
                    flood = self._k_flood if key == K else self._g_flood
                    self.guard(key, f"program -> page {n}", lambda flood=flood, n=n: flood(n))
                self.guard(B, f"comm.send flood {n}", lambda n=n: self._comm_flood(B, n))
            for key, _prefix, _echo in self._pages(rep):
                self.guard(key, f"page -> program {a.tp_in}", lambda key=key: (
                    self._k_sink(a.tp_in, 1000) if key == K else self._g_sink(a.tp_in)))
            self.guard(B, f"client -> kernel comm_msgs {a.tp_in}", lambda: self._comm_count(B, a.tp_in))
            log(f"throughput repetition {rep + 1}/{a.reps} done")

    def _g_flood(self, n: int) -> None:
        node, nb = self.node, self.nb[W]
        assert node is not None
        node.arm_count(BURST, n)
        t0 = time.perf_counter()
        msg_id = nb.execute(cells.flood(n))
        last, received, in_order = node.counted(BURST_WAIT_S)
        _reply, out, _ = nb.finish(msg_id, timeout=60)
        info = json_line(out)
        self._record_tp(f"g_prog_to_page_{n}", n, (t0 if last is None else last) - t0, received,
                        in_order, {"loop_s": info["loop_s"], "sync_s": info["sync_s"]})

    def _g_sink(self, n: int) -> None:
        node, nb = self.node, self.nb[W]
        assert node is not None
        node.arm_sink(n, SINK_READY, SINK_IN, SINK_DONE)
        msg_id = nb.execute(cells.sink(n))
        t0, t1, (received, in_order) = node.sunk(BURST_WAIT_S)
        nb.finish(msg_id, timeout=30)
        self._record_tp(f"g_page_to_prog_{n}", n, t1 - t0, received, in_order)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = TransportRun(args)
    return measure_and_write(args, run, [
        ("starting three kernels, the headless page and the Node page", run.start),
        ("1. round trips", run.round_trips),
        ("2. throughput", run.throughput),
    ], render, lambda path, section: report.write_section(path, section, SECTION),
        args.source or REPO)


if __name__ == "__main__":
    sys.exit(main())
