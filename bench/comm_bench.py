"""Comm benchmark: wrapperkernel's address channel and relayed comms vs ipykernel's comms.

Usage: .venv/bin/python bench/comm_bench.py [--quick] [--out docs/benchmarks.md] [--json FILE]

Measures, in one run, on one warm kernel of each kernelspec (alternating kernels in
blocks where both can be measured):

1. round trips: program -> page -> program inside a cell (wrapperkernel, idle and with
   the cell's main thread busy); client-side echoes page -> program -> page (wrapperkernel
   address channel and relayed comm) and client -> kernel -> client (ipykernel comm), idle
   and while a cell runs;
2. values/s in each direction (address channel, relayed comm, ipykernel comm);
3. widget latency: page event -> a running loop sees it -> ack back to the page.

The results replace the section between ``<!-- comm-bench:start -->`` and
``<!-- comm-bench:end -->`` in docs/benchmarks.md (appended when absent); the rest of the
file is kept. Process launch, sandbox, machine description and percentiles come from
``launch.py``, ``report.py`` and ``summary.py``; the connections from ``comm_client.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import report
from comm_client import BenchPage, LostIdle, Notebook
from launch import BenchFailure, RunningKernel, Sandbox, start
from summary import summarize

REPO = Path(__file__).resolve().parent.parent
START_MARKER = "<!-- comm-bench:start -->"
END_MARKER = "<!-- comm-bench:end -->"
K, B = "wrapperkernel", "python3"
WAIT_S = 15.0  # longest single wait for one value / reply before it is called a hang
BUSY_CELL_S = 90  # a "busy" cell ends by itself after this if the interrupt fails
# Round-trip samples start at least this far apart (``--gap-ms``), for every kernel and
# path alike; 0 means back to back. The address channel paces its messages to the page
# at 500 a second sustained with bursts of 1000 (under Jupyter Server's IOPub limit),
# so a block of more than a thousand back-to-back samples would meet that pacing.
SAMPLE_GAP_S = 0.0

# ---------------------------------------------------------------------- cell code

SETUP_COMMON = r'''
import comm as _bench_comm, json as _j, time as _t, threading as _th
_bench = {}
def _bench_echo_target(c, open_msg):
    @c.on_msg
    def _echo(msg):
        c.send(msg["content"]["data"])
def _bench_count_target(c, open_msg):
    n = open_msg["content"]["data"]["n"]
    state = {"k": 0, "in_order": True}
    @c.on_msg
    def _count(msg):
        if msg["content"]["data"].get("i") != state["k"]:
            state["in_order"] = False
        state["k"] += 1
        if state["k"] == n:
            c.send({"done": state["k"], "in_order": state["in_order"]})
def _bench_tp_target(c, open_msg):
    _bench["tp"] = c
    _bench["tp_id"] = c.comm_id
for _n, _f in (("bench_echo", _bench_echo_target), ("bench_count", _bench_count_target),
               ("bench_tp", _bench_tp_target)):
    _bench_comm.get_comm_manager().register_target(_n, _f)
def _bench_comm_flood(n):
    c = _bench["tp"]
    for i in range(n):
        c.send(i)
import ipywidgets as _bench_W
_bench_islider = _bench_W.IntSlider(value=0, min=0, max=10**9)
def _bench_islider_spin(n, base):
    s = _bench_islider
    print("ready", flush=True)
    for k in range(1, n + 1):
        target = base + k
        end = _t.perf_counter() + 10
        while s.value != target:
            if _t.perf_counter() > end:
                raise TimeoutError(f"IntSlider never showed {target}; it has {s.value}")
        print(f"ack {target}", flush=True)
def _bench_islider_wait(target, seconds):
    print("ready", flush=True)
    end = _t.perf_counter() + seconds
    seen = None
    while _t.perf_counter() < end:
        if _bench_islider.value == target:
            seen = _t.perf_counter()
            break
    print(_j.dumps({"seen": seen is not None, "seen_at": seen, "value": _bench_islider.value}), flush=True)
print("setup ok")
'''

SETUP_WRAPPERKERNEL = r'''
from wrapperkernel import comms as _c, widgets as _bench_widgets
_c.start()
def _bench_echo_cb(address, value):
    _c.send("/bench/echo/resp", value)
_bench_echo_sub = _c.subscribe("/bench/echo/req", _bench_echo_cb)
def _bench_rt(n, gap_s=0.0):
    samples = []
    with _c.listen("/echo/in") as listener:
        for i in range(n):
            t0 = _t.perf_counter()
            _c.send("/echo/out", i)
            v = listener.get(timeout=10)
            samples.append(_t.perf_counter() - t0)
            if v != i:
                raise RuntimeError(f"round trip {i}: got {v!r}")
            _t.sleep(max(0.0, t0 + gap_s - _t.perf_counter()))
    return samples
def _bench_rt_busy(n, limit_s, gap_s=0.0):
    box = {}
    done = _th.Event()
    def run():
        try:
            box["s"] = _bench_rt(n, gap_s)
        except BaseException as error:
            box["e"] = repr(error)
        finally:
            done.set()
    _th.Thread(target=run, daemon=True).start()
    spins = 0
    end = _t.perf_counter() + limit_s
    while not done.is_set():  # the cell's main thread: pure-Python busy loop
        spins += 1
        if spins % 4096 == 0 and _t.perf_counter() > end:
            break
    if "e" in box or "s" not in box:
        raise RuntimeError(box.get("e", "busy round trips did not finish"))
    return box["s"]
def _bench_flood(n):
    t0 = _t.perf_counter()
    for i in range(n):
        _c.send("/bench/tp/v", i)
    t1 = _t.perf_counter()
    _c.sync(timeout_s=60)
    print(_j.dumps({"loop_s": t1 - t0, "sync_s": _t.perf_counter() - t1}))
def _bench_sink(n):
    got = []
    with _c.listen("/bench/tp/in") as listener:
        _c.send("/bench/tp/ready", n)
        for _ in range(n):
            got.append(listener.get(timeout=30))
    _c.send("/bench/tp/done", [len(got), got == list(range(n))])
_bench_wslider = _bench_widgets.Slider(0, 10**9, value=0)
_bench_wslider.display()
def _bench_wslider_spin(n, base):
    s = _bench_wslider
    _c.send("/bench/w/ready", base)
    for k in range(1, n + 1):
        target = base + k
        end = _t.perf_counter() + 10
        while s.value != target:
            if _t.perf_counter() > end:
                raise TimeoutError(f"Slider never showed {target}; it has {s.value}")
        _c.send("/bench/w/ack", target)
def _bench_wslider_changes(n, base):
    with _bench_wslider.changes() as changes:
        _c.send("/bench/w/ready", base)
        for k in range(1, n + 1):
            target = base + k
            v = changes.get(timeout=10)
            while v != target:
                v = changes.get(timeout=10)
            _c.send("/bench/w/ack", v)
print(_j.dumps({"slider_address": _bench_wslider.address}))
'''


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.perf_counter()))


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _json_line(text: str) -> Any:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            return json.loads(line)
    raise BenchFailure(f"no JSON in cell output: {text[-300:]!r}")


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sandbox = Sandbox()
        self.kernels: dict[str, RunningKernel] = {}
        self.nb: dict[str, Notebook] = {}
        self.page: BenchPage | None = None
        self.slider_address = ""
        self.islider: dict[str, str] = {}
        self.broken: set[str] = set()
        self.findings: list[str] = []
        self.samples: dict[str, list[float]] = {}
        self.tp: dict[str, list[dict[str, Any]]] = {}
        self.facts: dict[str, Any] = {}

    # ------------------------------------------------------------------ plumbing

    def add(self, key: str, values: list[float]) -> None:
        self.samples.setdefault(key, []).extend(values)

    def finding(self, text: str, kernel: str | None = None) -> None:
        if kernel and kernel in self.kernels:
            tail = self.kernels[kernel].log_tail(8)
            if tail:
                text += "\n\n  Kernel log (last lines):\n\n  ```\n  " + tail.replace("\n", "\n  ") + "\n  ```"
        log("FINDING " + text)
        self.findings.append(text)

    def guard(self, name: str, phase: str, action: Any) -> Any:
        if name in self.broken:
            return None
        try:
            return action()
        except (BenchFailure, RuntimeError, TimeoutError, ValueError, KeyError) as error:
            self.finding(f"`{name}`, {phase}: {type(error).__name__}: {error}", name)
            self.recover(name)
            return None

    def recover(self, name: str) -> None:
        """Interrupt a kernel whose cell may still run; give up on it if that fails."""
        nb = self.nb[name]
        pending = list(nb._by_parent)
        if not pending:
            return
        try:
            self.kernels[name].km.interrupt_kernel()
            for msg_id in pending:
                nb.finish(msg_id, timeout=10)
        except (BenchFailure, RuntimeError) as error:
            self.finding(f"`{name}`: could not recover after the failure above ({error}); "
                         "no further measurements on it", name)
            self.broken.add(name)

    def start(self) -> None:
        for name in (K, B):
            kernel = start(name, self.sandbox)
            self.kernels[name] = kernel
            self.nb[name] = Notebook(kernel)
            kernel.children()
        self.page = BenchPage(self.kernels[K].km.connection_file)
        for name in (K, B):
            self.nb[name].run(SETUP_COMMON, timeout=60)
        out = self.nb[K].run(SETUP_WRAPPERKERNEL, timeout=60)
        self.slider_address = _json_line(out)["slider_address"]
        if not self.page.acked.is_set():
            raise BenchFailure("the headless page did not connect")
        for name in (K, B):
            self.islider[name] = self._find_intslider(name)
        self.kernels[K].children()

    def _find_intslider(self, name: str) -> str:
        nb = self.nb[name]
        deadline = time.perf_counter() + WAIT_S
        while True:
            try:
                _t, content = nb.comm_opens.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                raise BenchFailure(f"{name}: no comm_open of an IntSliderModel on IOPub") from None
            state = (content.get("data") or {}).get("state") or {}
            if state.get("_model_name") == "IntSliderModel":
                return content["comm_id"]

    def close(self) -> None:
        if self.page is not None:
            self.page.close()
        for nb in self.nb.values():
            nb.close()
        for kernel in self.kernels.values():
            self.findings.extend(kernel.stop())
        self.sandbox.cleanup()

    # ------------------------------------------------------------------ primitives

    def page_echo(self, n: int) -> list[float]:
        page = self.page
        assert page is not None
        page.drain("/bench/echo/resp")
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            page.send("/bench/echo/req", i)
            t1, value = page.next("/bench/echo/resp", WAIT_S, f"echo {i} of the address channel")
            if value != i:
                raise BenchFailure(f"address-channel echo {i}: got {value!r}")
            out.append(t1 - t0)
            _sleep_until(t0 + SAMPLE_GAP_S)
        return out

    def comm_echo(self, name: str, n: int, cid: str) -> list[float]:
        nb = self.nb[name]
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            nb.comm_msg(cid, {"i": i})
            t1, data = nb.next_comm_msg(cid, WAIT_S, f"comm echo {i}")
            if data != {"i": i}:
                raise BenchFailure(f"comm echo {i}: got {data!r}")
            out.append(t1 - t0)
            _sleep_until(t0 + SAMPLE_GAP_S)
        return out

    def open_echo(self, name: str) -> str:
        cid = self.nb[name].comm_open("bench_echo", {})
        self.comm_echo(name, 20, cid)  # warm-up; also proves the target answers
        return cid

    # ------------------------------------------------------------------ 1. round trips

    def round_trips_idle(self) -> None:
        a = self.args
        nbk = self.nb[K]
        cids: dict[str, str] = {}
        for name in (K, B):
            cid = self.guard(name, "open the echo comm", lambda name=name: self.open_echo(name))
            if cid:
                cids[name] = cid
        self.guard(K, "warm-up", lambda: (nbk.run("_bench_rt(50)"), self.page_echo(50)))
        for block in range(a.rt_n // a.block):
            self.guard(K, "program round trip (idle)", lambda: self.add(
                "k_prog_idle", _json_line(nbk.run(
                    f"print(_j.dumps(_bench_rt({a.block}, {SAMPLE_GAP_S})))", 60))))
            self.guard(K, "address echo (idle)", lambda: self.add("k_page_idle", self.page_echo(a.block)))
            for name, key in ((K, "k_relay_idle"), (B, "b_comm_idle")):
                if name in cids:
                    self.guard(name, "comm echo (idle)", lambda name=name, key=key: self.add(
                        key, self.comm_echo(name, a.block, cids[name])))
            log(f"idle round trips: block {block + 1}/{a.rt_n // a.block}")
        self.echo_cids = cids

    def round_trips_busy(self) -> None:
        a = self.args
        nbk = self.nb[K]
        for _block in range(a.rt_n // a.block):
            self.guard(K, "program round trip (main thread busy)", lambda: self.add(
                "k_prog_busy", _json_line(nbk.run(
                    f"print(_j.dumps(_bench_rt_busy({a.block}, {BUSY_CELL_S}, {SAMPLE_GAP_S})))",
                    BUSY_CELL_S + 30))))
        # Diagnostic: the same with Python's default 5 ms GIL switch interval instead of
        # the worker's own (WRAPPERKERNEL_SWITCH_INTERVAL_S).
        self.guard(K, "program round trip (main thread busy, switch interval 5 ms)", lambda: self.add(
            "k_prog_busy_si", _json_line(nbk.run(
                "import sys as _sys\n_si = _sys.getswitchinterval()\n_sys.setswitchinterval(0.005)\n"
                f"try:\n    print(_j.dumps(_bench_rt_busy({a.block}, {BUSY_CELL_S}, {SAMPLE_GAP_S})))\n"
                "finally:\n    _sys.setswitchinterval(_si)", BUSY_CELL_S + 30))))
        log("program round trips with a busy main thread done")
        cid = self.echo_cids.get(K)
        for label, code in (("sleep", f"import time; time.sleep({BUSY_CELL_S})"),
                            ("spin", f"_e = _t.perf_counter() + {BUSY_CELL_S}\n"
                                     "while _t.perf_counter() < _e: pass")):
            self.guard(K, f"echo while a cell runs ({label})",
                       lambda label=label, code=code: self._echo_during_cell(label, code, cid))
            log(f"echo while a `{label}` cell runs: done")
        # ipykernel: a synchronous cell blocks its comms; time the first echo during sleep(5).
        for name in (B, K):
            self.guard(name, "first echo during time.sleep(5)",
                       lambda name=name: self._first_echo_during_sleep(name))

    def _echo_during_cell(self, label: str, code: str, cid: str | None) -> None:
        nbk = self.nb[K]
        msg_id = nbk.execute(code)
        nbk.wait_busy(msg_id)
        time.sleep(0.2)
        self.add(f"k_page_{label}", self.page_echo(self.args.rt_n))
        if cid:
            self.add(f"k_relay_{label}", self.comm_echo(K, self.args.rt_n, cid))
        self.kernels[K].km.interrupt_kernel()
        reply, _out, _ = nbk.finish(msg_id, timeout=15)
        if reply.get("status") == "ok":
            self.finding(f"`{K}`: the `{label}` cell ended on its own before the echoes finished; "
                         "some samples were taken with no cell running")
        elif reply.get("ename") != "KeyboardInterrupt":
            self.finding(f"`{K}`: interrupting the `{label}` cell gave {reply.get('ename')}: "
                         f"{reply.get('evalue')}", K)

    def _first_echo_during_sleep(self, name: str) -> None:
        nb = self.nb[name]
        cid = self.echo_cids.get(name)
        if not cid:
            return
        msg_id = nb.execute("import time; time.sleep(5)")
        busy_at = nb.wait_busy(msg_id)
        time.sleep(0.2)
        result: dict[str, Any] = {}
        t0 = time.perf_counter()
        nb.comm_msg(cid, {"i": -1})
        t1, data = nb.next_comm_msg(cid, 15, "the echo sent during time.sleep(5)")
        result["comm_echo_s"] = t1 - t0
        if name == K and self.page is not None:
            t0 = time.perf_counter()
            self.page.send("/bench/echo/req", -1)
            t1, _v = self.page.next("/bench/echo/resp", 15, "address echo during time.sleep(5)")
            result["address_echo_s"] = t1 - t0
        reply, _out, _ = nb.finish(msg_id, timeout=15)
        result["sent_after_cell_start_s"] = t0 - busy_at
        result["cell_idle_after_send_s"] = nb.last_idle_t - t0
        self.facts[f"{name}_sleep5"] = result
        log(f"{name}: first echo during time.sleep(5): {result}")

    # ------------------------------------------------------------------ 2. throughput

    def throughput(self) -> None:
        a = self.args
        for rep in range(a.reps):
            for n in a.tp_sizes:
                self.guard(K, f"program -> page {n}", lambda n=n: self._k_flood(n))
                for name in (K, B):
                    self.guard(name, f"comm.send flood {n}", lambda name=name, n=n: self._comm_flood(name, n))
            n_in = a.tp_in
            for batch in (1000, 1):
                self.guard(K, f"page -> program {n_in} (batch {batch})",
                           lambda batch=batch, n_in=n_in: self._k_sink(n_in, batch))
            for name in (K, B):
                self.guard(name, f"client -> kernel comm_msgs {n_in}",
                           lambda name=name, n_in=n_in: self._comm_count(name, n_in))
            log(f"throughput repetition {rep + 1}/{a.reps} done")

    def _record_tp(self, key: str, n: int, elapsed: float, received: int, in_order: bool,
                   extra: dict[str, Any] | None = None) -> None:
        row = {"n": n, "elapsed_s": elapsed, "received": received, "in_order": in_order,
               "rate": n / elapsed if elapsed > 0 else None, **(extra or {})}
        self.tp.setdefault(key, []).append(row)
        log(f"{key}: {received}/{n} in {elapsed:.3f} s = {row['rate'] or 0:,.0f}/s in order {in_order}")
        if received != n or not in_order:
            self.finding(f"{key}: received {received:,} of {n:,} values ({n - received:,} lost), "
                         f"{'in' if in_order else 'OUT OF'} order")

    def _k_flood(self, n: int) -> None:
        page, nbk = self.page, self.nb[K]
        assert page is not None
        page.drain("/bench/tp/v")
        t0 = time.perf_counter()
        msg_id = nbk.execute(f"_bench_flood({n})")
        received, in_order, last, previous = 0, True, t0, -1
        deadline = t0 + 120
        try:
            while received < n:
                last, value = page.next("/bench/tp/v", deadline - time.perf_counter(),
                                        f"value {received} of {n} at the page")
                in_order = in_order and value > previous
                previous = value
                received += 1
        except BenchFailure:
            pass
        _reply, out, _ = nbk.finish(msg_id, timeout=60)
        info = _json_line(out)
        self._record_tp(f"k_prog_to_page_{n}", n, last - t0, received, in_order,
                        {"loop_s": info["loop_s"], "sync_s": info["sync_s"]})

    def _comm_flood(self, name: str, n: int) -> None:
        nb = self.nb[name]
        cid = nb.comm_open("bench_tp", {})
        nb.run(f"_e = _t.perf_counter() + 10\nwhile _bench.get('tp_id') != {cid!r} and "
               "_t.perf_counter() < _e: _t.sleep(0.001)\nassert _bench.get('tp_id') == " + repr(cid))
        t0 = time.perf_counter()
        msg_id = nb.execute(f"_bench_comm_flood({n})")
        received, in_order, last, previous = 0, True, t0, -1
        try:
            while received < n:
                last, data = nb.next_comm_msg(cid, 5, f"comm message {received} of {n}")
                in_order = in_order and data > previous
                previous = data
                received += 1
        except BenchFailure:
            pass  # lost messages: counted below
        key = "k_relay_to_client" if name == K else "b_comm_to_client"
        try:
            nb.finish(msg_id, timeout=60)
        except LostIdle as error:
            self.facts[f"{key}_lost_idle"] = self.facts.get(f"{key}_lost_idle", 0) + 1
            self.finding(f"`{name}`, comm.send flood of {n:,}: {error} (dropped on IOPub with "
                         "the comm messages: a frontend would show this cell busy forever)")
        nb.comm_close(cid)
        self._record_tp(f"{key}_{n}", n, last - t0, received, in_order)

    def _k_sink(self, n: int, batch: int) -> None:
        page, nbk = self.page, self.nb[K]
        assert page is not None
        for address in ("/bench/tp/ready", "/bench/tp/done"):
            page.drain(address)
        msg_id = nbk.execute(f"_bench_sink({n})")
        page.next("/bench/tp/ready", WAIT_S, "the program's ready signal")
        t0 = time.perf_counter()
        if batch == 1:
            for i in range(n):
                page.send("/bench/tp/in", i)
        else:
            for start in range(0, n, batch):
                page.send_batch([("/bench/tp/in", i) for i in range(start, min(n, start + batch))])
        t1, (received, in_order) = page.next("/bench/tp/done", 120, "the program's count")
        nbk.finish(msg_id, timeout=30)
        self._record_tp(f"k_page_to_prog_b{batch}_{n}", n, t1 - t0, received, in_order)

    def _comm_count(self, name: str, n: int) -> None:
        nb = self.nb[name]
        cid = nb.comm_open("bench_count", {"n": n})
        t0 = time.perf_counter()
        for i in range(n):
            nb.comm_msg(cid, {"i": i})
        t1, data = nb.next_comm_msg(cid, 120, f"the count of {n} comm messages")
        nb.comm_close(cid)
        key = "k_relay_from_client" if name == K else "b_comm_from_client"
        self._record_tp(f"{key}_{n}", n, t1 - t0, data.get("done", 0), bool(data.get("in_order")))

    # ------------------------------------------------------------------ 3. widgets

    def widgets(self) -> None:
        a = self.args
        base = 0
        for _block in range(a.widget_n // a.widget_block):
            for fn, key in (("_bench_wslider_spin", "w_slider_spin"),
                            ("_bench_wslider_changes", "w_slider_changes")):
                base += 10_000
                self.guard(K, f"Slider {key}", lambda fn=fn, key=key, base=base:
                           self.add(key, self._slider(fn, a.widget_block, base)))
            base += 10_000
            self.guard(K, "relayed IntSlider", lambda base=base:
                       self.add("w_islider_spin", self._islider(a.widget_block, base)))
        for name in (B, K):
            base += 10_000
            self.guard(name, "IntSlider during a 3 s loop",
                       lambda name=name, base=base: self._islider_blocked(name, base + 1))
        for _i in range(a.idle_widget_n):
            for name in (K, B):
                base += 1
                self.guard(name, "IntSlider update -> next cell",
                           lambda name=name, base=base: self._islider_next_cell(name, base))
        stale = self.facts.get(f"{K}_islider_next_cell_stale")
        if stale:
            self.finding(
                f"`{K}`: ordering — an ipywidgets `update` comm_msg sent on the shell channel just "
                f"before an `execute_request` was not yet applied when that cell ran in "
                f"{len(stale)} of {a.idle_widget_n} tries ({stale[:3]}). The relayed comm_msg goes "
                "kernel → worker reader thread → comm dispatcher thread while the cell runs on the "
                "main thread, so nothing orders them; ipykernel handles shell messages in order "
                f"({len(self.facts.get(f'{B}_islider_next_cell_stale', []))} stale reads there).")

    def _slider(self, fn: str, n: int, base: int) -> list[float]:
        page, nbk = self.page, self.nb[K]
        assert page is not None
        for address in ("/bench/w/ready", "/bench/w/ack"):
            page.drain(address)
        msg_id = nbk.execute(f"{fn}({n}, {base})")
        page.next("/bench/w/ready", WAIT_S, "the slider loop's ready signal")
        out = []
        for k in range(1, n + 1):
            t0 = time.perf_counter()
            page.send(self.slider_address, base + k)
            t1, value = page.next("/bench/w/ack", WAIT_S, f"the loop's ack of {base + k}")
            if value != base + k:
                raise BenchFailure(f"slider ack {value!r}, expected {base + k}")
            out.append(t1 - t0)
        reply, text, _ = nbk.finish(msg_id, 30)
        if reply.get("status") != "ok":
            raise BenchFailure(f"{fn}: {reply.get('ename')}: {reply.get('evalue')} {text[-300:]}")
        return out

    def _update(self, name: str, value: int) -> None:
        self.nb[name].comm_msg(self.islider[name], {
            "method": "update", "state": {"value": value}, "buffer_paths": []})

    def _wait_stream(self, name: str, msg_id: str, needle: str, timeout: float) -> float:
        nb = self.nb[name]
        deadline = time.perf_counter() + timeout
        while True:
            t, msg = nb.next_output(msg_id, deadline - time.perf_counter(), f"{needle!r} on stdout")
            kind = msg["header"]["msg_type"]
            if kind == "stream" and needle in msg["content"]["text"]:
                return t
            if kind == "error" or (kind == "status" and msg["content"]["execution_state"] == "idle"):
                nb._by_parent[msg_id].put((t, msg))  # let finish() see it
                raise BenchFailure(f"the cell ended ({kind}) before printing {needle!r}: "
                                   f"{msg['content'].get('evalue', '')}")

    def _islider(self, n: int, base: int) -> list[float]:
        nbk = self.nb[K]
        msg_id = nbk.execute(f"_bench_islider_spin({n}, {base})")
        self._wait_stream(K, msg_id, "ready", WAIT_S)
        out = []
        for k in range(1, n + 1):
            t0 = time.perf_counter()
            self._update(K, base + k)
            t1 = self._wait_stream(K, msg_id, f"ack {base + k}\n", WAIT_S)
            out.append(t1 - t0)
        reply, text, _ = nbk.finish(msg_id, 30)
        if reply.get("status") != "ok":
            raise BenchFailure(f"IntSlider loop: {reply.get('ename')}: {reply.get('evalue')}")
        return out

    def _islider_blocked(self, name: str, target: int) -> None:
        nb = self.nb[name]
        msg_id = nb.execute(f"_bench_islider_wait({target}, 3.0)")
        self._wait_stream(name, msg_id, "ready", WAIT_S)
        time.sleep(0.1)
        t0 = time.perf_counter()
        self._update(name, target)
        _reply, text, _ = nb.finish(msg_id, 30)
        result = _json_line(text)
        after = nb.run("print(_bench_islider.value)").strip()
        self.facts[f"{name}_islider_3s_loop"] = {
            "seen": result["seen"],
            "seen_after_s": (result["seen_at"] - t0) if result["seen"] else None,
            "value_in_loop_at_end": result["value"], "target": target,
            "value_in_next_cell": int(after) if after.isdigit() else after,
        }
        log(f"{name}: IntSlider during a 3 s loop: {self.facts[f'{name}_islider_3s_loop']}")

    def _islider_next_cell(self, name: str, value: int) -> None:
        nb = self.nb[name]
        t0 = time.perf_counter()
        self._update(name, value)
        msg_id = nb.execute("print(_bench_islider.value)")
        reply, text, chunks = nb.finish(msg_id, 30)
        if reply.get("status") != "ok" or not chunks:
            raise BenchFailure(f"print(_bench_islider.value): {reply} {text!r}")
        self.add(f"{'k' if name == K else 'b'}_islider_next_cell", [chunks[0][0] - t0])
        if text.strip() != str(value):
            self.facts.setdefault(f"{name}_islider_next_cell_stale", []).append(
                {"sent": value, "printed": text.strip()})
            log(f"{name}: update {value} sent before execute_request; the cell printed {text.strip()}")


# ---------------------------------------------------------------------- report

def _ms(x: float | None) -> str:
    return report.ms(x)


def _stat_row(label: str, samples: list[float] | None) -> list[str]:
    if not samples:
        return [label, "0", "—", "—", "—"]
    s = summarize(samples)
    return [label, str(s["n"]), _ms(s["median"]), _ms(s["p99"]), _ms(s["max"])]


def _median(values: list[float]) -> float | None:
    return summarize(values)["median"] if values else None


def _rate(rows: list[dict[str, Any]] | None) -> float | None:
    rates = [r["rate"] for r in rows or [] if r.get("rate")]
    return _median(rates)


def _check(title: str, value: float | None, ref: float | None, want: str, factor: float,
           fmt: Any) -> list[str]:
    if value is None or ref is None:
        return [title, fmt(value), fmt(ref), "—", want, "not measured"]
    ratio = value / ref
    ok = ratio <= factor if want.startswith("≤") else ratio >= factor
    return [title, fmt(value), fmt(ref), f"{ratio:.2f}×", want, "**pass**" if ok else "**FAIL**"]


def render(run: Run, meta: dict[str, Any]) -> str:
    S, T, a = run.samples, run.tp, run.args
    m = meta["machine"]
    v = m["versions"]
    med = lambda key: _median(S.get(key, []))  # noqa: E731
    rate = lambda key: _rate(T.get(key))  # noqa: E731
    persec = lambda x: "—" if x is None else f"{x:,.0f}/s"  # noqa: E731
    load = ("start " + ", ".join(f"{x:.2f}" for x in m["loadavg_at_start"]) + "; end "
            + ", ".join(f"{x:.2f}" for x in meta["loadavg_at_end"]))
    commit = (m["commit"] or "unknown commit") + (" (uncommitted changes under wrapperkernel/)"
                                                    if m["dirty"] else "")
    out = [START_MARKER, "", "## Comm benchmarks: wrapperkernel address channel vs ipykernel comms", "",
           f"Generated by `bench/comm_bench.py{' --quick' if a.quick else ''}` on {m['date_utc']} "
           f"({'quick' if a.quick else 'full'} mode, {meta['duration_s']:.0f} s), one warm kernel "
           f"each, kernelspecs `{K}` and `{B}` (ipykernel {v['ipykernel']}), same run, "
           "alternating blocks where both kernels do the same thing.", "",
           f"**Machine.** {m['cpu_model']}, {m['logical_cores']} logical cores, "
           f"{m['ram_bytes'] / 2**30:.1f} GiB RAM; {m['platform']}; Python {m['python']}; "
           f"jupyter_client {v['jupyter_client']}, pyzmq {v['pyzmq']}, IPython {v['ipython']}; "
           f"wrapperkernel {v['wrapperkernel']} at {commit}. Load average (1, 5, 15 min): "
           f"{load} (other work on this 2-core machine shows up here and in the p99s).", "",
           "**How.** Everything on 127.0.0.1 over ZMQ, no Jupyter Server in between. The *page* is "
           "`tests/headless_page.py` (a second client connection that answers the install script "
           "with comm_open, as the JS client does); the *client* is a jupyter_client connection "
           "like the notebook's own. Client-side times are taken with `time.perf_counter()` on "
           "receipt by the reader thread; program-side times inside the cell. p99 is nearest-rank "
           "(with < 100 samples it is the maximum). "
           + (f"Round-trip samples start at least {SAMPLE_GAP_S * 1e3:g} ms apart, for every "
              "kernel and path. " if SAMPLE_GAP_S > 0 else
              "Round-trip samples run back to back, in blocks, for every kernel and path; the "
              "address channel's pacing (500 messages/s, bursts of 1000) is not reached by a "
              "block. ")
           + "`--gap-ms` spaces them (then processes go idle between samples and each "
           "wake-up costs more on this VM, for every kernel).", "",
           "- *program → page → program*: the cell does `comms.send('/echo/out', i)` then "
           "`listen('/echo/in').get()`; the page echoes from its reader thread. *Busy*: the round "
           "trips run on a thread started by the cell while the cell's main thread spins in a "
           "pure-Python loop (`while not done.is_set(): spins += 1`), i.e. they compete for the GIL.",
           "- *page → program → page* (wrapperkernel): the page sends `/bench/echo/req`, a "
           "`comms.subscribe` callback sends it back on `/bench/echo/resp`. *comm echo*: the client "
           "opens a comm to a target registered with `comm.get_comm_manager().register_target` "
           "whose `on_msg` does `comm.send(data)` — in ipykernel (shell thread) and in wrapperkernel "
           "(relayed to the worker's comm dispatcher thread). *During a cell*: the cell runs "
           f"`time.sleep({BUSY_CELL_S})` or a pure-Python spin loop and is interrupted afterwards.",
           f"- *Throughput*: `for i in range(N): comms.send(addr, i)` + `comms.sync()` timed from the "
           "execute_request to the last value at the page (order checked); ipykernel/relayed: "
           "`comm.send(i)` in a loop, timed to the last comm_msg at the client. Page → program: "
           f"{a.tp_in:,} values in batches of 1000 per comm_msg (as the JS client batches one tick) "
           "and unbatched, counted by a `listen` in a running cell, timed to the program's "
           f"`done` value; client → kernel: {a.tp_in:,} comm_msgs to a counting target that "
           f"answers once at the end. {a.reps} repetition(s), median rate shown.",
           "- *Widgets*: the page sets the value, a running cell's loop sees it and acks; the "
           "time is page send → ack at the page (wrapperkernel `widgets.Slider`: page sends on "
           "`slider.address`, ack via `comms.send`; ipywidgets `IntSlider`: client sends the "
           "`update` comm_msg on the page's kernel connection, ack is a flushed `print`).", ""]

    # targets
    b_idle = med("b_comm_idle")
    rows = [
        _check("program→page→program, idle (median) vs ipykernel idle comm echo",
               med("k_prog_idle"), b_idle, "≤ 1×", 1.0, _ms),
        _check("page→program→page echo, idle (median) vs ipykernel idle comm echo",
               med("k_page_idle"), b_idle, "≤ 1×", 1.0, _ms),
        _check("program round trip, main thread busy vs idle (median)",
               med("k_prog_busy"), med("k_prog_idle"), "≤ 2×", 2.0, _ms),
        _check("page echo during `time.sleep` cell vs idle (median)",
               med("k_page_sleep"), med("k_page_idle"), "≤ 2×", 2.0, _ms),
        _check("page echo during pure-Python spin cell vs idle (median)",
               med("k_page_spin"), med("k_page_idle"), "≤ 2×", 2.0, _ms),
    ]
    for n in a.tp_sizes:
        rows.append(_check(f"program→page values/s ({n:,}) vs ipykernel comm msgs/s kernel→client",
                           rate(f"k_prog_to_page_{n}"), rate(f"b_comm_to_client_{n}"), "≥ 10×", 10.0, persec))
    rows.append(_check(f"page→program values/s ({a.tp_in:,}, batched) vs ipykernel comm msgs/s client→kernel",
                       rate(f"k_page_to_prog_b1000_{a.tp_in}"), rate(f"b_comm_from_client_{a.tp_in}"),
                       "≥ 10×", 10.0, persec))
    rows.append(_check(f"page→program values/s ({a.tp_in:,}, one per comm_msg) vs ipykernel comm msgs/s "
                       "client→kernel", rate(f"k_page_to_prog_b1_{a.tp_in}"),
                       rate(f"b_comm_from_client_{a.tp_in}"), "≥ 10×", 10.0, persec))
    out += ["### Targets", ""]
    out += report._table(["target", "wrapperkernel", "reference", "ratio", "required", "result"], rows)
    out.append("")

    # round trips
    rt_rows = [
        _stat_row("wrapperkernel: program→page→program, idle (in cell)", S.get("k_prog_idle")),
        _stat_row("wrapperkernel: program→page→program, main thread busy (in cell)", S.get("k_prog_busy")),
        _stat_row("wrapperkernel: same, busy main thread, Python's default 5 ms switch interval (diagnostic)",
                  S.get("k_prog_busy_si")),
        _stat_row("wrapperkernel: page→program→page (address echo), idle", S.get("k_page_idle")),
        _stat_row("wrapperkernel: page→program→page, during `time.sleep` cell", S.get("k_page_sleep")),
        _stat_row("wrapperkernel: page→program→page, during spin-loop cell", S.get("k_page_spin")),
        _stat_row("wrapperkernel: client comm echo (relayed), idle", S.get("k_relay_idle")),
        _stat_row("wrapperkernel: client comm echo (relayed), during `time.sleep` cell", S.get("k_relay_sleep")),
        _stat_row("wrapperkernel: client comm echo (relayed), during spin-loop cell", S.get("k_relay_spin")),
        _stat_row("ipykernel: client comm echo, idle", S.get("b_comm_idle")),
    ]
    out += ["### Round trips", ""]
    out += report._table(["measurement", "n", "median", "p99", "max"], rt_rows)
    out.append("")
    for name, label in ((B, "ipykernel"), (K, "wrapperkernel")):
        f = run.facts.get(f"{name}_sleep5")
        if f:
            extra = (f", address echo {_ms(f['address_echo_s'])}" if "address_echo_s" in f else "")
            out.append(f"- {label}, comm_msg sent {f['sent_after_cell_start_s']:.2f} s into a "
                       f"`time.sleep(5)` cell: first echo after **{_ms(f['comm_echo_s'])}**{extra} "
                       f"(the cell went idle {f['cell_idle_after_send_s']:.2f} s after the send).")
    out.append("")

    # throughput
    tp_rows = []
    def tp_row(label: str, key: str) -> None:
        rows_ = T.get(key)
        if not rows_:
            tp_rows.append([label, "—", "0", "—", "—", "—"])
            return
        lost = sum(r["n"] - r["received"] for r in rows_)
        tp_rows.append([label, f"{rows_[0]['n']:,}", str(len(rows_)), persec(_rate(rows_)),
                        f"{min(r['elapsed_s'] for r in rows_):.3f}–{max(r['elapsed_s'] for r in rows_):.3f} s",
                        f"{lost:,} lost, {'in order' if all(r['in_order'] for r in rows_) else 'OUT OF ORDER'}"])
    for n in a.tp_sizes:
        tp_rows_label = f"{n:,}"
        tp_row("wrapperkernel: program → page, `comms.send` + `sync`", f"k_prog_to_page_{n}")
        tp_row("wrapperkernel: kernel → client, relayed `comm.send`", f"k_relay_to_client_{n}")
        tp_row("ipykernel: kernel → client, `comm.send`", f"b_comm_to_client_{n}")
        del tp_rows_label
    tp_row("wrapperkernel: page → program, batches of 1000", f"k_page_to_prog_b1000_{a.tp_in}")
    tp_row("wrapperkernel: page → program, one value per comm_msg", f"k_page_to_prog_b1_{a.tp_in}")
    tp_row("wrapperkernel: client → kernel, relayed comm_msgs", f"k_relay_from_client_{a.tp_in}")
    tp_row("ipykernel: client → kernel, comm_msgs", f"b_comm_from_client_{a.tp_in}")
    out += ["### Throughput", "",
            "No Jupyter Server here. Behind one, IOPub traffic above 1000 msg/s "
            "(`iopub_msg_rate_limit`) would be dropped by the server: the address channel paces "
            "itself under that (at most 500 msg/s, up to 1000 values per message); ipykernel's "
            "`comm.send` and wrapperkernel's relayed comms are not paced. \"lost\" counts "
            "messages that never reached this client (it reads on its own thread with an "
            "unlimited receive queue; the kernel's PUB socket keeps zmq's default high-water "
            "mark of 1000 and drops when the client falls behind).", ""]
    out += report._table(["path", "N", "reps", "median rate", "elapsed (min–max)", "delivery"], tp_rows)
    flood = [r for n in a.tp_sizes for r in T.get(f"k_prog_to_page_{n}", [])]
    if flood:
        out += ["", "Inside the cell, the `comms.send` loop took " + ", ".join(
            f"{r['loop_s'] * 1000:.0f} ms" for r in flood) + " and `sync()` " + ", ".join(
            f"{r['sync_s'] * 1000:.0f} ms" for r in flood) + " (same order as the runs)."]
    out.append("")

    # widgets
    w_rows = [
        _stat_row("wrapperkernel `widgets.Slider`, loop spins on `.value`", S.get("w_slider_spin")),
        _stat_row("wrapperkernel `widgets.Slider`, loop blocks on `.changes().get()`", S.get("w_slider_changes")),
        _stat_row("wrapperkernel relayed ipywidgets `IntSlider`, loop spins on `.value`", S.get("w_islider_spin")),
        _stat_row("wrapperkernel `IntSlider` idle: update → `print(s.value)` in the next cell", S.get("k_islider_next_cell")),
        _stat_row("ipykernel `IntSlider` idle: update → `print(s.value)` in the next cell", S.get("b_islider_next_cell")),
    ]
    out += ["### Widget latency: page event → running loop sees it → ack at the page", ""]
    out += report._table(["measurement", "n", "median", "p99", "max"], w_rows)
    out.append("")
    for name, label in ((B, "ipykernel"), (K, "wrapperkernel")):
        f = run.facts.get(f"{name}_islider_3s_loop")
        if f:
            seen = ("**yes**, after " + _ms(f["seen_after_s"]) + " (one way, shared CLOCK_MONOTONIC)"
                    if f["seen"] else "**no**")
            out.append(f"- {label}: `IntSlider` update sent 0.1 s into a cell that loops 3 s on "
                       f"`s.value == {f['target']}`: the loop saw it: {seen}; value at the loop's end "
                       f"{f['value_in_loop_at_end']}, in the next cell {f['value_in_next_cell']}.")
        stale = run.facts.get(f"{name}_islider_next_cell_stale")
        if stale:
            out.append(f"- {label}: {len(stale)} of the idle next-cell reads printed an older value "
                       f"than the update sent just before the execute_request (e.g. {stale[0]}).")
    out.append("")
    if run.findings:
        out += ["### Findings during this run", ""] + [f"- {x}" for x in run.findings] + [""]
    out.append(END_MARKER)
    return "\n".join(out)


def write_section(path: Path, section: str) -> None:
    """Replace the comm-bench section of ``path`` (or append it), keeping everything else."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(END_MARKER):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


# ---------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N, one throughput repetition")
    parser.add_argument("--out", default="docs/benchmarks.md",
                        help="markdown file to update between the comm-bench markers; '-' prints it")
    parser.add_argument("--json", dest="json_path", help="also write the raw samples here")
    parser.add_argument("--limit", type=float, default=900.0,
                        help="seconds after which a watchdog kills everything and exits")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="least time between the starts of two round-trip samples")
    args = parser.parse_args(argv)
    global SAMPLE_GAP_S
    SAMPLE_GAP_S = max(0.0, args.gap_ms / 1e3)
    args.rt_n = 200 if args.quick else 1000
    args.block = 100 if args.quick else 200
    args.tp_sizes = [10_000] if args.quick else [10_000, 50_000]
    args.tp_in = 10_000
    args.reps = 1 if args.quick else 3
    args.widget_n = 50 if args.quick else 200
    args.widget_block = 25 if args.quick else 50
    args.idle_widget_n = 10 if args.quick else 30
    return args


def _watchdog(run: Run, limit: float) -> None:
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    meta: dict[str, Any] = {"machine": report.machine_info(REPO)}
    run = Run(args)
    watchdog = threading.Timer(args.limit, _watchdog, (run, args.limit))
    watchdog.daemon = True
    watchdog.start()
    try:
        log("starting kernels and the headless page")
        run.start()
        log("1. round trips, idle")
        run.round_trips_idle()
        log("1. round trips, while a cell runs")
        run.round_trips_busy()
        log("2. throughput")
        run.throughput()
        log("3. widgets")
        run.widgets()
    except BenchFailure as error:
        run.finding(f"setup failed: {error}")
    finally:
        watchdog.cancel()
        run.close()
    meta["duration_s"] = time.perf_counter() - started
    meta["loadavg_at_end"] = os.getloadavg()
    section = render(run, meta)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(
            {"meta": meta, "samples": run.samples, "throughput": run.tp, "facts": run.facts,
             "findings": run.findings}, indent=1, default=str))
    if args.out == "-":
        print(section)
    else:
        out = Path(args.out)
        write_section(out if out.is_absolute() else Path.cwd() / out, section)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
