"""The page on the widget transport, for the transport benchmark: the real page client,
run in Node by ``tests/widget_frontend.py`` from the widget model the kernel opened.

``NodePage`` drives that client the way ``comm_client.BenchPage`` stands for a
websocket page: it echoes ``/echo/out`` back on ``/echo/in`` (the program's round trip),
times the page's own echo through the program, counts a burst of values and sends one.
Each workload runs as one loop inside the page (code given to the frontend's ``eval``),
so the stand-in's stdio link to Python is crossed once per workload, not once per value:
the times are taken in Node, by the page client's own callbacks.

What a number includes beyond the page client: on the widget transport every message
between the kernel and the page crosses the stand-in's Python side (its IOPub reader
thread and its shell socket) and a line of JSON on Node's stdin or stdout. A real
frontend has a hop of its own there (VS Code: the extension host and the webview's
postMessage); this one is not that one.

Times inside the page are differences of ``performance.now()``; a time compared with
the benchmark's own clock (the end of a burst, against the moment the cell was sent) is
``process.hrtime``, which is CLOCK_MONOTONIC as ``time.perf_counter()`` is on Linux;
``check_clock`` makes sure of it before anything is measured.

This module owns the page side of the widget-transport measurements. It must never start
a kernel, run a cell or format a report.
"""

from __future__ import annotations

import json
import time
from typing import Any

from comm_client import ECHO_IN, ECHO_OUT, load_from_tests
from launch import BenchFailure

WidgetFrontend = load_from_tests("widget_frontend", "WidgetFrontend")

OPEN_TIMEOUT_S = 30.0
EVAL_SLACK_S = 15.0  # an eval waits this long beyond the loop's own timeouts
VALUE_WAIT_MS = 15_000  # the page's longest wait for one value before it calls it a hang

# Shared by the snippets below: the page API, the clock, and a promise that gives up.
_PRELUDE = """
const c = globalThis.wrapperkernel_comm;
const clock = () => Number(process.hrtime.bigint()) / 1e9;
const within = (promise, ms, what) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  promise.then((v) => { clearTimeout(timer); resolve(v); }, (e) => { clearTimeout(timer); reject(e); });
});
"""


class NodePage:
    """One page on the widget transport: a frontend whose only link is its kernel
    connection, running the page client in Node."""

    def __init__(self, connection_file: str, key: bytes) -> None:
        self.frontend = WidgetFrontend(connection_file, key)

    def _eval(self, code: str, timeout: float = EVAL_SLACK_S) -> Any:
        try:
            return self.frontend.eval(_PRELUDE + code, timeout=timeout)
        except (RuntimeError, TimeoutError) as error:
            raise BenchFailure(f"the Node page: {error}") from None

    # ------------------------------------------------------------------ setup

    def wait_open(self, timeout: float = OPEN_TIMEOUT_S) -> None:
        """Until the page client is open on the widget transport, and echoing /echo/out."""
        deadline = time.perf_counter() + timeout
        state = None
        while time.perf_counter() < deadline:
            state = self._eval("return c === undefined ? null : {state: c.state, transport: c.transport};")
            if state == {"state": "open", "transport": "widget"}:
                self._eval(f"c.subscribe({json.dumps(ECHO_OUT)}, (a, v) => c.send({json.dumps(ECHO_IN)}, v));")
                return
            time.sleep(0.05)
        raise BenchFailure(f"the Node page's client is {state}, not open on the widget transport, "
                           f"after {timeout:.0f} s")

    def check_clock(self) -> None:
        before = time.perf_counter()
        page = self._eval("return clock();")
        after = time.perf_counter()
        if not before <= page <= after:
            raise BenchFailure(f"Node's process.hrtime ({page}) is not time.perf_counter()'s clock "
                               f"({before}..{after}); the burst times would be wrong")

    # ------------------------------------------------------------------ workloads

    def echo_round_trips(self, n: int, gap_s: float, request: str, response: str) -> list[float]:
        """``n`` times: send ``i`` on ``request``, wait for it on ``response``; seconds each."""
        code = f"""
const n = {n}, gapMs = {gap_s * 1e3};
const out = [];
let waiting = null;
const id = c.subscribe({json.dumps(response)}, (a, v) => {{
  const t1 = performance.now();
  const w = waiting;
  waiting = null;
  if (w !== null) w([v, t1]);
}});
try {{
  for (let i = 0; i < n; i++) {{
    const got = new Promise((resolve) => {{ waiting = resolve; }});
    const t0 = performance.now();
    c.send({json.dumps(request)}, i);
    const [v, t1] = await within(got, {VALUE_WAIT_MS}, `echo ${{i}}`);
    if (v !== i) throw new Error(`echo ${{i}}: got ${{JSON.stringify(v)}}`);
    out.push((t1 - t0) / 1000);
    const rest = t0 + gapMs - performance.now();
    if (rest > 0) await new Promise((resolve) => setTimeout(resolve, rest));
  }}
}} finally {{
  c.unsubscribe(id);
}}
return out;
"""
        return self._eval(code, EVAL_SLACK_S + VALUE_WAIT_MS / 1e3 + n * (0.1 + gap_s))

    def arm_count(self, address: str, n: int) -> None:
        """Start counting the values on ``address`` (``counted`` says how many came)."""
        self._eval(f"""
const s = {{n: {n}, received: 0, inOrder: true, previous: -Infinity, last: null}};
s.done = new Promise((resolve) => {{ s.finish = resolve; }});
s.id = c.subscribe({json.dumps(address)}, (a, v) => {{
  s.last = clock();
  s.inOrder = s.inOrder && v > s.previous;
  s.previous = v;
  s.received += 1;
  if (s.received === s.n) s.finish();
}});
globalThis.wkBenchCount = s;
return null;
""")

    def counted(self, timeout: float) -> tuple[float | None, int, bool]:
        """(time of the last value on the benchmark's clock, how many, in order), once all
        ``n`` came or ``timeout`` passed."""
        result = self._eval(f"""
const s = globalThis.wkBenchCount;
delete globalThis.wkBenchCount;
try {{
  await within(s.done, {timeout * 1e3}, `${{s.n}} values`);
}} catch (error) {{
  // fewer than n: what came is counted
}} finally {{
  c.unsubscribe(s.id);
}}
return {{last: s.last, received: s.received, in_order: s.inOrder}};
""", timeout + EVAL_SLACK_S)
        return result["last"], result["received"], result["in_order"]

    def arm_sink(self, n: int, ready: str, values: str, done: str) -> None:
        """When the program says ``ready``, send 0..n-1 on ``values`` in one go (the page
        client batches them as it does a page's sends within one task); ``sunk`` waits for
        the program's ``done``."""
        self._eval(f"""
const s = {{t0: null, t1: null, result: null}};
s.done = new Promise((resolve) => {{ s.finish = resolve; }});
s.ready = c.subscribe({json.dumps(ready)}, () => {{
  s.t0 = clock();
  for (let i = 0; i < {n}; i++) c.send({json.dumps(values)}, i);
}});
s.doneId = c.subscribe({json.dumps(done)}, (a, v) => {{
  s.t1 = clock();
  s.result = v;
  s.finish();
}});
globalThis.wkBenchSink = s;
return null;
""")

    def sunk(self, timeout: float) -> tuple[float, float, list[Any]]:
        """(when the page started sending, when the program's count came, the count)."""
        result = self._eval(f"""
const s = globalThis.wkBenchSink;
delete globalThis.wkBenchSink;
try {{
  await within(s.done, {timeout * 1e3}, "the program's count");
}} finally {{
  c.unsubscribe(s.ready);
  c.unsubscribe(s.doneId);
}}
return {{t0: s.t0, t1: s.t1, result: s.result}};
""", timeout + EVAL_SLACK_S)
        return result["t0"], result["t1"], result["result"]

    def close(self) -> None:
        self.frontend.close()
