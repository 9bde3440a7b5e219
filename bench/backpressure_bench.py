"""Memory under back-pressure: a program that sends as fast as it can to a slow page.

A cell sends ``--values`` values (default 2,000,000) in a tight loop, then calls
``comms.sync()``; the page (``tests/headless_page.py``'s ``HeadlessPage``, over real ZMQ)
spends ``1 / --page-rate`` seconds on each value it receives (default 10,000 values/s)
and acknowledges as the browser client does. The kernel's queue to the page is bounded
by ``WRAPPERKERNEL_COMM_QUEUE_BYTES`` (``--bound``), so the sender blocks instead of the
kernel growing. The RSS of the kernel process and of the worker is sampled every
``--sample-s`` seconds; the result (start, peak, end, beside the bound) replaces the
``backpressure-bench`` section of ``docs/benchmarks.md`` (``--out -`` prints it).

ipykernel has no address channel (its comms have no flow control or bound at all), so
there is nothing to put beside it; the figure that matters is the peak beside the bound.

    .venv/bin/python bench/backpressure_bench.py                 # ~4 minutes (make bench: each ends within 10)
    .venv/bin/python bench/backpressure_bench.py --values 500000 # ~1 minute
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from jupyter_client import KernelManager

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from headless_page import HeadlessPage, wait_until  # noqa: E402

SECTION = "backpressure-bench"
MiB = 1024 * 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=2_000_000)  # 5M took ~9 min: too close to 10
    parser.add_argument("--page-rate", type=float, default=10_000.0,
                        help="values per second the page reads")
    parser.add_argument("--bound", type=int, default=None,
                        help="WRAPPERKERNEL_COMM_QUEUE_BYTES (default: the kernel's own)")
    parser.add_argument("--sample-s", type=float, default=0.2)
    parser.add_argument("--kernel", default="wrapperkernel")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    return parser.parse_args(argv)


def rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


class Tally:
    """Counts the page's /bp values and checks they come 0, 1, 2, ... (the page thread)."""

    def __init__(self) -> None:
        self.count = 0
        self.in_order = True

    def add(self, address: str, value: object) -> None:
        if address == "/bp":
            self.in_order = self.in_order and value == self.count
            self.count += 1


class Sampler:
    """RSS of the kernel and its worker, on a thread, until stopped."""

    def __init__(self, kernel_pid: int, every_s: float) -> None:
        self.kernel = psutil.Process(kernel_pid)
        self.every_s = every_s
        self.samples: list[tuple[float, int, int]] = []  # (t, kernel, worker)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def worker(self) -> psutil.Process | None:
        children = self.kernel.children()
        return children[0] if children else None

    def sample(self) -> tuple[int, int]:
        worker = self.worker()
        pair = (rss(self.kernel), rss(worker) if worker else 0)
        self.samples.append((time.monotonic(), *pair))
        return pair

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from wrapperkernel.worker.send_batcher import DEFAULT_QUEUE_BYTES

    bound = args.bound or DEFAULT_QUEUE_BYTES
    # The commit the kernel under test runs (read before it starts).
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="wrapperkernel-bp-") as tmp:
        env = {**os.environ, "IPYTHONDIR": f"{tmp}/ipython", "JUPYTER_RUNTIME_DIR": tmp,
               "WRAPPERKERNEL_COMM_QUEUE_BYTES": str(bound)}
        km = KernelManager(kernel_name=args.kernel, ip="127.0.0.1")
        km.start_kernel(env=env)
        kc = km.client()
        kc.start_channels()
        page = None
        try:
            kc.wait_for_ready(timeout=60)
            tally = Tally()
            page = HeadlessPage(km.connection_file, seconds_per_value=1.0 / args.page_rate,
                                on_value=tally.add)
            kc.execute_interactive("from wrapperkernel import comms\ncomms.start()", timeout=30)
            page.wait_connected(15)
            sampler = Sampler(km.provisioner.process.pid, args.sample_s)  # type: ignore[union-attr]
            wait_until(lambda: sampler.worker() is not None, 10, "the worker process")
            start_kernel, start_worker = sampler.sample()
            sampler.start()
            began = time.monotonic()
            reply = kc.execute_interactive(
                f"for i in range({args.values}):\n    comms.send('/bp', i)\ncomms.sync()",
                timeout=args.values / args.page_rate * 3 + 120)
            elapsed = time.monotonic() - began
            sampler.stop()
            end_kernel, end_worker = sampler.sample()
            status = reply["content"]["status"]
            if status != "ok":
                print(f"the cell failed: {reply['content'].get('ename')}: "
                      f"{reply['content'].get('evalue')}", file=sys.stderr)
            # What was delivered reaches the page at its own pace after sync().
            wait_until(lambda: tally.count >= args.values, 120, "the page to read every value")
            received, in_order = tally.count, tally.in_order
        finally:
            if page is not None:
                page.close()
            kc.stop_channels()
            km.shutdown_kernel(now=False)

    peak_kernel = max(k for _, k, _ in sampler.samples)
    peak_worker = max(w for _, _, w in sampler.samples)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    lines = [
        f"<!-- {SECTION}:start -->",
        "",
        "## Back-pressure: kernel memory while a program floods a slow page",
        "",
        f"Generated by `bench/backpressure_bench.py` on {now} at {commit}; {os.cpu_count()} "
        f"logical cores ({cpu}), {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
        f"Python {platform.python_version()}.",
        "",
        f"A cell sends {args.values:,} values (`comms.send('/bp', i)`) as fast as it can, then "
        f"`comms.sync()`. The page (the headless test page over real ZMQ, acknowledging as "
        f"the browser client does) reads {args.page_rate:,.0f} values/s. RSS sampled every "
        f"{args.sample_s:g} s. ipykernel has no address channel and its comms no bound, so "
        "there is no ipykernel column.",
        "",
        "| | value |",
        "|---|---|",
        f"| queue bound (`WRAPPERKERNEL_COMM_QUEUE_BYTES`, JSON bytes of values) | {bound / MiB:.1f} MiB |",
        f"| kernel RSS at start / peak / end | {start_kernel / MiB:.1f} / **{peak_kernel / MiB:.1f}** / {end_kernel / MiB:.1f} MiB |",
        f"| kernel RSS growth at peak | {(peak_kernel - start_kernel) / MiB:.1f} MiB "
        f"({(peak_kernel - start_kernel) / bound:.0f}× the bound) |",
        f"| worker RSS at start / peak / end | {start_worker / MiB:.1f} / {peak_worker / MiB:.1f} / {end_worker / MiB:.1f} MiB |",
        f"| cell status; time | {status}; {elapsed:.0f} s ({args.values / elapsed:,.0f} values/s end to end) |",
        f"| values received by the page, in order | {received:,} of {args.values:,}, {'in order' if in_order else 'OUT OF ORDER'} |",
        "",
        "The kernel's growth depends on the bound, not on the number of values: the bound "
        "counts the values' JSON bytes, and the kernel holds them as Python objects (a "
        "dict per value, a few hundred bytes for a small one) in its outbox, plus at most "
        "64 serialised messages waiting at the page. Before issue 8 the kernel's queue had "
        "no bound: it held every value the page had not taken yet.",
        "",
        f"<!-- {SECTION}:end -->",
    ]
    section = "\n".join(lines)
    if args.out == "-":
        print(section)
    else:
        path = Path(args.out)
        text = path.read_text()
        start = text.find(f"<!-- {SECTION}:start -->")
        end = text.find(f"<!-- {SECTION}:end -->")
        if start >= 0 and end >= 0:
            text = text[:start] + section + text[end + len(f"<!-- {SECTION}:end -->"):]
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        path.write_text(text)
        print(section)
    ok = status == "ok" and received == args.values and in_order
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
