"""A/B of the address channel's idle latencies between two wrapperkernel kernelspecs.

Used to compare two versions of wrapperkernel in one run (for example before and after a
refactoring): give each version a kernelspec whose ``env`` has ``PYTHONPATH`` set to a
git worktree of that version and ``PYTHONSAFEPATH=1`` (so the kernel's working directory
does not shadow it), put both in a ``JUPYTER_PATH`` directory, and run

    JUPYTER_PATH=DIR .venv/bin/python bench/address_ab.py --a SPEC_A --b SPEC_B

It measures, alternating blocks of 100 between the two kernels (the order flips every
block, so machine noise hits both alike): the program's round trip (``comms.send`` to the
headless page, which echoes, back to a ``listen``ing cell) and the page's echo (page ->
program callback -> page). It prints median and p99 (nearest rank) per kernel; nothing is
written to docs/benchmarks.md. Every kernel and page it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import comm_cells as cells
from comm_client import BenchPage, Notebook
from launch import Sandbox, start

ECHO_WAIT_S = 10.0
CELL_WAIT_S = 60.0


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def page_echo(page: BenchPage, n: int, gap_s: float) -> list[float]:
    page.drain("/bench/echo/resp")
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        page.send("/bench/echo/req", i)
        t1, value = page.next("/bench/echo/resp", ECHO_WAIT_S, f"echo {i}")
        if value != i:
            raise RuntimeError(f"echo {i}: got {value!r}")
        out.append(t1 - t0)
        while time.perf_counter() < t0 + gap_s:
            pass
    return out


def program_round_trips(nb: Notebook, n: int, gap_s: float) -> list[float]:
    text = nb.run(cells.round_trips(n, gap_s), CELL_WAIT_S)
    return json.loads([line for line in text.splitlines() if line.startswith("[")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="kernelspec A")
    parser.add_argument("--b", required=True, help="kernelspec B")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--gap-ms", type=float, default=2.0)
    args = parser.parse_args()
    gap_s = args.gap_ms / 1000
    names = (args.a, args.b)
    sandbox = Sandbox()
    kernels, notebooks, pages = {}, {}, {}
    try:
        for name in names:
            kernels[name] = start(name, sandbox)
            notebooks[name] = Notebook(kernels[name])
            pages[name] = BenchPage(kernels[name].km.connection_file)
            notebooks[name].run(cells.SETUP_COMMON, timeout=CELL_WAIT_S)
            notebooks[name].run(cells.SETUP_WRAPPERKERNEL, timeout=CELL_WAIT_S)
        samples: dict[tuple[str, str], list[float]] = {
            (name, metric): [] for name in names for metric in ("program", "page echo")}
        for name in names:  # warm-up, unmeasured
            notebooks[name].run(cells.RT_WARMUP, CELL_WAIT_S)
            page_echo(pages[name], 50, gap_s)
        for block in range(args.blocks):
            for name in names if block % 2 == 0 else names[::-1]:
                samples[(name, "program")] += program_round_trips(
                    notebooks[name], args.block, gap_s)
                samples[(name, "page echo")] += page_echo(pages[name], args.block, gap_s)
        for (name, metric), values in samples.items():
            print(f"{name:12s} {metric:10s} n={len(values)} median "
                  f"{statistics.median(values) * 1e3:.3f} ms  p99 {p99(values) * 1e3:.3f} ms")
    finally:
        for page in pages.values():
            page.close()
        for nb in notebooks.values():
            nb.close()
        for kernel in kernels.values():
            kernel.stop()
        sandbox.cleanup()


if __name__ == "__main__":
    main()
