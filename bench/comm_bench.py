"""Comm benchmark: wrapperkernel's address channel and relayed comms vs ipykernel's and
xeus-python's comms.

Usage: .venv/bin/python bench/comm_bench.py [--quick] [--out docs/benchmarks.md] [--json FILE]

Measures, in one run, on one warm kernel of each kernelspec (alternating kernels in
blocks where they can be measured alike):

0. relayed comms on wrapperkernel, ipykernel and xeus-python, through a lean client
   before any other client connects: comm echo and client -> kernel comm_msgs/s, for a
   comm the client opens to a registered target (xeus-python cannot: its row says so)
   and for one a cell opens with ``comm.create_comm``;

1. round trips: program -> page -> program inside a cell (wrapperkernel, idle and with
   the cell's main thread busy); client-side echoes page -> program -> page (wrapperkernel
   address channel and relayed comm) and client -> kernel -> client (ipykernel comm), idle
   and while a cell runs;
2. values/s in each direction (address channel, relayed comm, ipykernel comm);
3. widget latency: page event -> a running loop sees it -> ack back to the page.

The results replace the section between ``<!-- comm-bench:start -->`` and
``<!-- comm-bench:end -->`` in docs/benchmarks.md (appended when absent); the rest of the
file is kept. This file is the command line and the composition root: it sizes the run,
runs ``comm_runs.Run`` (which sends the cells of ``comm_cells.py``) under a watchdog,
and hands the results to ``comm_report.py``. Process launch, sandbox, machine
description and percentiles come from ``launch.py``, ``report.py`` and ``summary.py``;
the connections from ``comm_client.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import report
from comm_report import render, write_section
from comm_runs import Run, log
from launch import BenchFailure

REPO = Path(__file__).resolve().parent.parent


def add_common_arguments(parser: argparse.ArgumentParser, section: str) -> None:
    """The options of every benchmark run by ``measure_and_write`` (``section``: the
    name of its markers in docs/benchmarks.md)."""
    parser.add_argument("--quick", action="store_true", help="smaller N, one throughput repetition")
    parser.add_argument("--out", default="docs/benchmarks.md",
                        help=f"markdown file to update between the {section} markers; '-' prints it")
    parser.add_argument("--json", dest="json_path", help="also write the raw samples here")
    parser.add_argument("--limit", type=float, default=900.0,
                        help="seconds after which a watchdog kills everything and exits")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="least time between the starts of two round-trip samples")


def size_round_trips_and_throughput(args: argparse.Namespace) -> None:
    """The sizes of the round-trip and throughput phases, in full or ``--quick`` mode."""
    # Round-trip samples start at least this far apart, for every kernel and path alike;
    # 0 (the default) means back to back. The address channel paces its messages to the
    # page at 500 a second sustained with bursts of 1000 (under Jupyter Server's IOPub
    # limit), so a block of more than a thousand back-to-back samples would meet that pacing.
    args.gap_s = max(0.0, args.gap_ms / 1e3)
    args.rt_n = 200 if args.quick else 1000
    args.block = 100 if args.quick else 200
    args.tp_sizes = [10_000] if args.quick else [10_000, 50_000]
    args.tp_in = 10_000
    args.reps = 1 if args.quick else 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, "comm-bench")
    args = parser.parse_args(argv)
    size_round_trips_and_throughput(args)
    # client -> kernel comm_msgs per repetition, path and kernel (ipykernel takes ~400/s).
    args.comm_count_n = 2_000 if args.quick else 5_000
    args.widget_n = 50 if args.quick else 200
    args.widget_block = 25 if args.quick else 50
    args.idle_widget_n = 10 if args.quick else 30
    return args


def watchdog_fired(run: Run, limit: float) -> None:
    """Last resort against a wait that is not bounded: dump stacks, kill kernels, exit."""
    log(f"WATCHDOG: the run exceeded {limit:.0f} s; stacks follow, then every kernel is killed")
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    for kernel in list(run.kernels.values()):
        for child in kernel.children():
            with contextlib.suppress(Exception):
                child.kill()
        with contextlib.suppress(Exception):
            kernel.km.shutdown_kernel(now=True)
    with contextlib.suppress(Exception):
        run.sandbox.cleanup()
    os._exit(3)


def measure_and_write(args: argparse.Namespace, run: Run, phases: list[tuple[str, Callable[[], None]]],
                      render_section: Callable[[Run, dict[str, Any]], str],
                      write: Callable[[Path, str], None], repo: Path = REPO) -> int:
    """Runs ``phases`` (log line, step) under the watchdog, always closes the run, then
    renders its section and writes it (``--out``, ``--json``). ``repo`` is the checkout
    whose commit the report names."""
    started = time.perf_counter()
    meta: dict[str, Any] = {"machine": report.machine_info(repo)}
    watchdog = threading.Timer(args.limit, watchdog_fired, (run, args.limit))
    watchdog.daemon = True
    watchdog.start()
    try:
        for text, step in phases:
            log(text)
            step()
    except BenchFailure as error:
        run.finding(f"setup failed: {error}")
    finally:
        watchdog.cancel()
        run.close()
    meta["duration_s"] = time.perf_counter() - started
    meta["loadavg_at_end"] = os.getloadavg()
    section = render_section(run, meta)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(
            {"meta": meta, "samples": run.samples, "throughput": run.tp, "facts": run.facts,
             "comms": getattr(run, "comms", None), "findings": run.findings}, indent=1, default=str))
    if args.out == "-":
        print(section)
    else:
        out = Path(args.out)
        write(out if out.is_absolute() else Path.cwd() / out, section)
        log(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run(args)
    return measure_and_write(args, run, [
        ("starting the kernels (wrapperkernel, ipykernel, xeus-python)", run.start_kernels),
        ("0. relayed comms on all three kernels (lean client)", run.relayed_comms),
        ("starting the notebook connections and the headless page", run.start_page),
        ("1. round trips, idle", run.round_trips_idle),
        ("1. round trips, while a cell runs", run.round_trips_busy),
        ("2. throughput", run.throughput),
        ("3. widgets", run.widgets),
    ], render, write_section)


if __name__ == "__main__":
    sys.exit(main())
