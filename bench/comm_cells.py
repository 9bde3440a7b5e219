"""The code the comm benchmark runs in cells, and the kernels it runs in.

``SETUP_COMMON`` runs first in every kernel (comm targets for echo, counting and
throughput, and ``_bench_open``, which opens an echo or counting comm from the kernel
side); ``SETUP_WIDGETS`` in wrapperkernel and ipykernel (an ipywidgets ``IntSlider``);
``SETUP_WRAPPERKERNEL`` then runs in wrapperkernel only (the address channel's round trips, flood and sink, and a
``widgets.Slider``). The functions below write the one-line cells that call what the
setup defined; their names start with ``_bench`` in the kernel's namespace, so they never
meet a user's. What a cell reports, it prints: a JSON line, or ``ready`` / ``ack N``
lines for the widget loops.

This module owns cell source text only. It must never talk to a kernel, measure or
format a report: the runs (``comm_runs.py``) send these cells and read what they print.
"""

from __future__ import annotations

# The kernelspecs measured: wrapperkernel, ipykernel as the reference, and xeus-python
# beside them in the relayed-comm runs (it has no frontend-opened comm targets).
K, B, X = "wrapperkernel", "python3", "xpython"
KERNEL_ECHO, KERNEL_COUNT = "bench_kecho", "bench_kcount"  # targets of kernel-opened comms
BUSY_CELL_S = 90  # a "busy" cell ends by itself after this if the interrupt fails

SETUP_COMMON = r'''
import comm as _bench_comm, json as _j, time as _t, threading as _th
_bench = {}
_bench_counts = {}
def _bench_echo_on(c):
    @c.on_msg
    def _echo(msg):
        c.send(msg["content"]["data"])
def _bench_count_on(c):
    state = _bench_counts.setdefault(c.comm_id, {"count": 0, "in_order": True})
    @c.on_msg
    def _count(msg):
        data = msg["content"]["data"]
        if "report" in data:
            c.send(state)
            return
        if data.get("i") != state["count"]:
            state["in_order"] = False
        state["count"] += 1
def _bench_open(target, role):
    c = _bench_comm.create_comm(target_name=target)
    _bench[target] = c
    (_bench_echo_on if role == "echo" else _bench_count_on)(c)
def _bench_tp_target(c, open_msg):
    _bench["tp"] = c
    _bench["tp_id"] = c.comm_id
for _n, _f in (("bench_echo", lambda c, open_msg: _bench_echo_on(c)),
               ("bench_count", lambda c, open_msg: _bench_count_on(c)),
               ("bench_tp", _bench_tp_target)):
    _bench_comm.get_comm_manager().register_target(_n, _f)
def _bench_comm_flood(n):
    c = _bench["tp"]
    for i in range(n):
        c.send(i)
print("setup ok")
'''

# The ipywidgets part, in wrapperkernel and ipykernel only (their notebook connections
# look for the IntSlider's comm_open).
SETUP_WIDGETS = r'''
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
print("widgets ok")
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


# ---------------------------------------------------------------------- one-line cells

RT_WARMUP = "_bench_rt(50)"
SLEEP_5 = "import time; time.sleep(5)"
ISLIDER_VALUE = "print(_bench_islider.value)"
SLIDER_SPIN = "_bench_wslider_spin"  # a loop that spins on Slider.value
SLIDER_CHANGES = "_bench_wslider_changes"  # a loop that blocks on Slider.changes().get()
# Cells that keep the kernel busy while the page and the client echo: one sleeping, one
# spinning in pure Python (holding the GIL).
BUSY_CELLS = {
    "sleep": f"import time; time.sleep({BUSY_CELL_S})",
    "spin": f"_e = _t.perf_counter() + {BUSY_CELL_S}\nwhile _t.perf_counter() < _e: pass",
}


def round_trips(n: int, gap_s: float) -> str:
    return f"print(_j.dumps(_bench_rt({n}, {gap_s})))"


def round_trips_busy(n: int, gap_s: float) -> str:
    return f"print(_j.dumps(_bench_rt_busy({n}, {BUSY_CELL_S}, {gap_s})))"


def round_trips_busy_default_switch_interval(n: int, gap_s: float) -> str:
    """The same with Python's default 5 ms GIL switch interval instead of the worker's own
    (WRAPPERKERNEL_SWITCH_INTERVAL_S), put back afterwards."""
    return ("import sys as _sys\n_si = _sys.getswitchinterval()\n_sys.setswitchinterval(0.005)\n"
            f"try:\n    print(_j.dumps(_bench_rt_busy({n}, {BUSY_CELL_S}, {gap_s})))\n"
            "finally:\n    _sys.setswitchinterval(_si)")


def flood(n: int) -> str:
    return f"_bench_flood({n})"


def wait_for_throughput_comm(comm_id: str) -> str:
    """Waits (10 s at most) until the kernel has opened the throughput comm ``comm_id``."""
    return (f"_e = _t.perf_counter() + 10\nwhile _bench.get('tp_id') != {comm_id!r} and "
            "_t.perf_counter() < _e: _t.sleep(0.001)\nassert _bench.get('tp_id') == "
            + repr(comm_id))


def comm_flood(n: int) -> str:
    return f"_bench_comm_flood({n})"


def sink(n: int) -> str:
    return f"_bench_sink({n})"


def slider_loop(loop: str, n: int, base: int) -> str:
    """``loop`` is SLIDER_SPIN or SLIDER_CHANGES."""
    return f"{loop}({n}, {base})"


def islider_spin(n: int, base: int) -> str:
    return f"_bench_islider_spin({n}, {base})"


def islider_wait(target: int, seconds: float) -> str:
    return f"_bench_islider_wait({target}, {seconds})"
