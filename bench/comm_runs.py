"""The measured runs of the comm benchmark: one warm kernel of each kernelspec, a headless
page on wrapperkernel, and every measurement the report shows.

``Run`` starts the kernels and the page, sends the cells of ``comm_cells.py`` and times
what comes back: relayed comms on all three kernels (wrapperkernel, ipykernel,
xeus-python) through ``lean_client.LeanClient`` before any other client connects, then
round trips (idle and while a cell runs), throughput in each direction and widget
latency on wrapperkernel and ipykernel. Samples go to ``samples`` (seconds), throughput rows to
``tp``, one-off observations to ``facts``; a measurement that fails, hangs or loses
values becomes a sentence in ``findings`` (with the kernel's last log lines), and the
kernel is interrupted so that the run goes on.

This module owns the measuring. It must never format the report (``comm_report.py``)
or write files; the command line (``comm_bench.py``) decides what is run and where the
result goes.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from typing import Any

import comm_cells as cells
import measure
from comm_cells import BUSY_CELL_S, B, K, X
from comm_client import READY_TIMEOUT_S, BenchPage, LostIdle, Notebook
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from launch import BenchFailure, RunningKernel, Sandbox, start
from lean_client import LeanClient

WAIT_S = 15.0  # longest single wait for one value / reply before it is called a hang


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.perf_counter()))


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def json_line(text: str) -> Any:
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
        self.comms: dict[str, Any] = {}  # measure.relayed_comms, all three kernels
        self.labels = {K: "wrapperkernel", B: "ipykernel", X: "xeus-python"}
        self.lean: dict[str, LeanClient] = {}
        # Per cell: stdout text after the last needle found, and when it arrived.
        self._stream_rest: dict[str, tuple[str, float]] = {}

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
        pending = nb.pending()
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

    def start_kernels(self) -> None:
        """All kernels, each with only a lean client: the relayed-comm phase runs before
        the notebook connections' reader threads and the headless page exist."""
        names = [K, B]
        try:
            KernelSpecManager().get_kernel_spec(X)
            names.append(X)
        except NoSuchKernel:
            self.finding(f"no kernelspec `{X}` (xeus-python) is installed: its column is empty "
                         "(`make bench` installs it, a test extra)")
        for name in names:
            kernel = start(name, self.sandbox)
            self.kernels[name] = kernel
            client = LeanClient(kernel.km.get_connection_info(), iopub_rcvhwm=0)
            try:
                client.wait_ready(READY_TIMEOUT_S)
                client.run(cells.SETUP_COMMON, 60, f"{name}: the setup cell")
            except BenchFailure as error:
                client.close()
                if name != X:
                    raise
                self.finding(f"`{name}`: not ready for the relayed-comm runs: {error}", name)
                continue
            self.lean[name] = client
            kernel.children()

    def relayed_comms(self) -> None:
        a = self.args
        self.comms = measure.relayed_comms(
            self.lean, a.rt_n, a.block, a.comm_count_n, a.reps, WAIT_S,
            lambda name, phase, error: self.finding(f"`{name}`, {phase}: {error}", name), log)
        for client in self.lean.values():
            client.close()
        self.lean.clear()

    def start_page(self) -> None:
        for name in (K, B):
            self.nb[name] = Notebook(self.kernels[name])
        self.page = BenchPage(self.kernels[K].km.connection_file)
        for name in (K, B):
            self.nb[name].run(cells.SETUP_WIDGETS, timeout=60)
        out = self.nb[K].run(cells.SETUP_WRAPPERKERNEL, timeout=60)
        self.slider_address = json_line(out)["slider_address"]
        if not self.page.acked.is_set():
            raise BenchFailure("the headless page did not connect")
        for name in (K, B):
            self.islider[name] = self._find_intslider(name)
        self.kernels[K].children()

    def start(self) -> None:
        self.start_kernels()
        self.start_page()

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
        for client in self.lean.values():
            client.close()
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
            _sleep_until(t0 + self.args.gap_s)
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
            _sleep_until(t0 + self.args.gap_s)
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
        self.guard(K, "warm-up", lambda: (nbk.run(cells.RT_WARMUP), self.page_echo(50)))
        for block in range(a.rt_n // a.block):
            self.guard(K, "program round trip (idle)", lambda: self.add(
                "k_prog_idle", json_line(nbk.run(cells.round_trips(a.block, a.gap_s), 60))))
            self.guard(K, "address echo (idle)", lambda: self.add("k_page_idle", self.page_echo(a.block)))
            # The same comm echo through the notebook connection (reader thread, queue
            # hand-off): a reference row for what that client adds.
            for name, key in ((K, "k_relay_idle_nb"), (B, "b_comm_idle_nb")):
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
                "k_prog_busy", json_line(nbk.run(cells.round_trips_busy(a.block, a.gap_s),
                                                  BUSY_CELL_S + 30))))
        # Diagnostic: the same with Python's default 5 ms GIL switch interval instead of
        # the worker's own (WRAPPERKERNEL_SWITCH_INTERVAL_S).
        self.guard(K, "program round trip (main thread busy, switch interval 5 ms)", lambda: self.add(
            "k_prog_busy_si", json_line(nbk.run(
                cells.round_trips_busy_default_switch_interval(a.block, a.gap_s),
                BUSY_CELL_S + 30))))
        log("program round trips with a busy main thread done")
        cid = self.echo_cids.get(K)
        for label, code in cells.BUSY_CELLS.items():
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
        msg_id = nb.execute(cells.SLEEP_5)
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
        msg_id = nbk.execute(cells.flood(n))
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
        info = json_line(out)
        self._record_tp(f"k_prog_to_page_{n}", n, last - t0, received, in_order,
                        {"loop_s": info["loop_s"], "sync_s": info["sync_s"]})

    def _comm_flood(self, name: str, n: int) -> None:
        nb = self.nb[name]
        cid = nb.comm_open("bench_tp", {})
        nb.run(cells.wait_for_throughput_comm(cid))
        t0 = time.perf_counter()
        msg_id = nb.execute(cells.comm_flood(n))
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
        msg_id = nbk.execute(cells.sink(n))
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
        """client -> kernel comm_msgs through the notebook connection (transport_bench.py's
        reference row); the counting target answers ``{"report": true}`` with its count."""
        nb = self.nb[name]
        cid = nb.comm_open("bench_count", {})
        t0 = time.perf_counter()
        for i in range(n):
            nb.comm_msg(cid, {"i": i})
        nb.comm_msg(cid, {"report": True})
        t1, data = nb.next_comm_msg(cid, 120, f"the count of {n} comm messages")
        nb.comm_close(cid)
        key = "k_relay_from_client" if name == K else "b_comm_from_client"
        self._record_tp(f"{key}_{n}", n, t1 - t0, data.get("count", 0), bool(data.get("in_order")))

    # ------------------------------------------------------------------ 3. widgets

    def widgets(self) -> None:
        a = self.args
        base = 0
        for _block in range(a.widget_n // a.widget_block):
            for fn, key in ((cells.SLIDER_SPIN, "w_slider_spin"),
                            (cells.SLIDER_CHANGES, "w_slider_changes")):
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
        msg_id = nbk.execute(cells.slider_loop(fn, n, base))
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
        # The worker's output flusher may split one print() over two stream messages, so
        # the needle is looked for in the text seen so far, not in each message; what
        # follows it is kept for the next wait on the same cell.
        seen, t = self._stream_rest.pop(msg_id, ("", 0.0))
        while True:
            if needle in seen:
                self._stream_rest[msg_id] = (seen[seen.index(needle) + len(needle):], t)
                return t
            t, msg = nb.next_output(msg_id, deadline - time.perf_counter(), f"{needle!r} on stdout")
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                seen += msg["content"]["text"]
                continue
            if kind == "error" or (kind == "status" and msg["content"]["execution_state"] == "idle"):
                nb.put_back(msg_id, (t, msg))  # let finish() see it
                raise BenchFailure(f"the cell ended ({kind}) before printing {needle!r}: "
                                   f"{msg['content'].get('evalue', '')}")

    def _islider(self, n: int, base: int) -> list[float]:
        nbk = self.nb[K]
        msg_id = nbk.execute(cells.islider_spin(n, base))
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
        msg_id = nb.execute(cells.islider_wait(target, 3.0))
        self._wait_stream(name, msg_id, "ready", WAIT_S)
        time.sleep(0.1)
        t0 = time.perf_counter()
        self._update(name, target)
        _reply, text, _ = nb.finish(msg_id, 30)
        result = json_line(text)
        after = nb.run(cells.ISLIDER_VALUE).strip()
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
        msg_id = nb.execute(cells.ISLIDER_VALUE)
        reply, text, chunks = nb.finish(msg_id, 30)
        if reply.get("status") != "ok" or not chunks:
            raise BenchFailure(f"{cells.ISLIDER_VALUE}: {reply} {text!r}")
        self.add(f"{'k' if name == K else 'b'}_islider_next_cell", [chunks[0][0] - t0])
        if text.strip() != str(value):
            self.facts.setdefault(f"{name}_islider_next_cell_stale", []).append(
                {"sent": value, "printed": text.strip()})
            log(f"{name}: update {value} sent before execute_request; the cell printed {text.strip()}")
