"""Memory of wrapperkernel's kernel and worker beside ipykernel and xeus-python (issue 13).

Default run (about 4 minutes): writes the ``memory-bench`` section of docs/benchmarks.md.

- **What each import costs the kernel process.** In a fresh interpreter (the sandbox's
  environment and warm bytecode cache), the modules of the kernel's startup path are
  imported in the kernel's order, one step at a time; after each step the RSS and USS of
  the interpreter (psutil) and the time the step took. Median of ``--import-runs`` runs.
  Beside it, for reference, what the kernel loads only when a request needs it (the
  debugger, IPython's input transformers, ``jupyter_client.session``) or never (pydantic's
  plugin lookup), and ``jupyter_client.session`` imported the ordinary way.
- **RSS, USS and PSS of each process** (psutil ``memory_full_info``): wrapperkernel's
  kernel and worker, ipykernel, xeus-python, launched from their kernelspecs by
  ``launch.py``, kernels alternating (the order flips each round), ``--launches`` each
  after one unmeasured launch that fills the bytecode cache; median. Measured
  ``--settle-s`` after the first ``kernel_info_reply`` ("after startup"), and again after
  a few cells ran ("after cells").
- The targets: the kernel process's RSS after startup <= 38 MiB, and the kernel's and
  the worker's RSS together <= 1.5x ipykernel's, marked pass or fail.

``--soak`` (``--seconds`` of chaos, 600 by default: about 11 minutes) runs
``tests/test_chaos.py`` with its long-lived faults (page reloads, dropped connections,
malformed messages; no worker kills or kernel restarts, so that one kernel and one worker
live through the run), samples the kernel's and the worker's RSS every ``--sample-s``
seconds, and writes the soak's own part of the section (start, peak, end, the second
minute beside the last one, the slope). Each mode keeps the other's part.

    .venv/bin/python bench/memory_bench.py                 # ~4 minutes
    .venv/bin/python bench/memory_bench.py --soak          # ~11 minutes
    .venv/bin/python bench/memory_bench.py --source DIR    # wrapperkernel from a checkout

Every kernel started is stopped; a process that outlives its kernel is killed and
reported.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import report
from launch import BenchFailure, RunningKernel, Sandbox, start

REPO = Path(__file__).resolve().parent.parent
SECTION = "memory-bench"
SOAK_SECTION = "memory-soak"
MiB = 2**20
KERNEL_RSS_TARGET_MIB = 38.0
TOTAL_TARGET_RATIO = 1.5
READY_TIMEOUT_S = 60.0
CELL_TIMEOUT_S = 60.0
# Cells run before the "after cells" measurement: output, a display, an error, a magic.
CELLS = (
    "x = sum(range(100_000))",
    "print('hello ' * 100)",
    "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))",
    "import json\nlen(json.dumps(list(range(10_000))))",
    "1 / 0",
    "%time y = [i * i for i in range(10_000)]",
)
LONG_LIVED_ACTIONS = "reopen,reload,drop,malformed"
SOAK_GROWTH_TOLERANCE_MIB = 0.5

# The kernel's startup path, in the order cli.py and app.py import it. Each step is
# Python code run in the measuring interpreter.
IMPORT_STEPS: tuple[tuple[str, str], ...] = (
    ("asyncio", "import asyncio"),
    ("zmq", "import zmq"),
    ("wrapperkernel.wire.codec, wire.transport, kernel.startup, kernel.supervisor",
     "import wrapperkernel.wire.codec, wrapperkernel.wire.transport, "
     "wrapperkernel.kernel.startup, wrapperkernel.kernel.supervisor"),
    ("pydantic", "import pydantic"),
    ("pydantic.BaseModel (the model machinery)", "from pydantic import BaseModel"),
    ("a first model class (schema building; the plugin lookup held back: "
     "wrapperkernel/pydantic_plugins.py)",
     "from wrapperkernel import pydantic_plugins\npydantic_plugins.hold_back()\n"
     "class _First(BaseModel):\n    x: int = 0"),
    ("wrapperkernel.wire.messages (15 models)", "import wrapperkernel.wire.messages"),
    ("wrapperkernel.workerlink.framing (the frame models and their union)",
     "import wrapperkernel.workerlink.framing"),
    ("wrapperkernel.address (core, outbox, page script)",
     "import wrapperkernel.address.core, wrapperkernel.address.page_script"),
    ("wrapperkernel.kernel (kernel, address adapter, comm router, relay)",
     "import wrapperkernel.kernel.kernel, wrapperkernel.kernel.comm_router, "
     "wrapperkernel.kernel.address_adapter, wrapperkernel.kernel.relay"),
)
# Not on the startup path, measured after it for reference: what the kernel loads only
# when a request needs it, and what it never loads.
REFERENCE_STEPS: tuple[tuple[str, str], ...] = (
    ("wrapperkernel.kernel.debugger (loaded at the first debug_request)",
     "import wrapperkernel.kernel.debugger"),
    ("IPython's input transformers (loaded at the first is_complete_request)",
     "import IPython.core.inputtransformer2"),
    ("jupyter_client.session (wire/session.py; loaded only for a message the codec "
     "hands to the Session)",
     "from wrapperkernel.wire.session import import_session_class; import_session_class()"),
    ("pydantic's plugin lookup (never loaded in the kernel: importlib.metadata, email, "
     "zipfile)",
     "pydantic_plugins.release()\nimport pydantic.plugin._loader"),
)
# In an interpreter of its own, after asyncio and zmq: the import the kernel avoids.
PLAIN_SESSION_STEPS: tuple[tuple[str, str], ...] = (
    ("asyncio", "import asyncio"),
    ("zmq, zmq.asyncio", "import zmq, zmq.asyncio"),
    ("jupyter_client.session, imported the ordinary way", "import jupyter_client.session"),
)


# ---------------------------------------------------------------------- import costs

# Run by a fresh interpreter (``python -c``), so that nothing this script imports is
# counted: only psutil (in every row, the first one included) and the steps themselves.
STEP_RUNNER = """
import json, sys, time
import psutil
process = psutil.Process()
rows = []
def row(label, seconds):
    info = process.memory_full_info()
    rows.append({"step": label, "rss": info.rss, "uss": info.uss, "s": seconds,
                 "modules": len(sys.modules)})
row("python (interpreter started, and psutil)", 0.0)
scope = {}
for label, code in json.loads(sys.argv[1]):
    began = time.perf_counter()
    exec(code, scope)
    row(label, time.perf_counter() - began)
print(json.dumps(rows))
"""


def import_costs(sandbox: Sandbox, build: dict[str, str], runs: int) -> dict[str, Any]:
    env = {**sandbox.env(), **build}
    out: dict[str, Any] = {}
    for name, steps in (("kernel", IMPORT_STEPS + REFERENCE_STEPS),
                        ("plain_session", PLAIN_SESSION_STEPS)):
        samples: list[list[dict[str, Any]]] = []
        for run in range(runs + 1):  # the first run fills the bytecode cache: not counted
            done = subprocess.run([sys.executable, "-c", STEP_RUNNER, json.dumps(steps)],
                                  env=env, capture_output=True, text=True, timeout=120,
                                  cwd=sandbox.root)
            if done.returncode != 0:
                raise BenchFailure(f"import steps ({name}) failed: {done.stderr[-2000:]}")
            if run:
                samples.append(json.loads(done.stdout))
        out[name] = [{**rows[0], **{key: statistics.median(r[i][key] for r in samples)
                                    for key in ("rss", "uss", "s", "modules")}}
                     for i, rows in enumerate(zip(*samples, strict=True))]
    return out


# ---------------------------------------------------------------------- processes

def memory_of(pid: int) -> dict[str, int] | None:
    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.Error:
        return None
    return {"rss": info.rss, "uss": info.uss, "pss": info.pss}


def processes_of(kernel: RunningKernel) -> dict[str, dict[str, int]]:
    """The kernel process and its children (wrapperkernel's worker), each measured."""
    found = {"kernel": memory_of(kernel.pid)}
    children = [child for child in kernel.children()
                if child.status() != psutil.STATUS_ZOMBIE]
    for index, child in enumerate(children):
        found["worker" if index == 0 else f"child {index}"] = memory_of(child.pid)
    return {role: info for role, info in found.items() if info is not None}


def run_cells(kernel: RunningKernel) -> None:
    """Each cell until its reply and its IOPub ``idle`` (outputs are read and dropped)."""
    client = kernel.km.client()
    client.start_channels()
    try:
        for code in CELLS:
            msg_id = client.execute(code, stop_on_error=False)
            reply = client.get_shell_msg(timeout=CELL_TIMEOUT_S)
            while reply["parent_header"].get("msg_id") != msg_id:
                reply = client.get_shell_msg(timeout=CELL_TIMEOUT_S)
            expected = "error" if code == "1 / 0" else "ok"
            if reply["content"]["status"] != expected:
                raise BenchFailure(f"{kernel.name}: cell {code!r} replied "
                                   f"{reply['content']['status']}")
            while True:
                msg = client.get_iopub_msg(timeout=CELL_TIMEOUT_S)
                if ((msg.get("parent_header") or {}).get("msg_id") == msg_id
                        and msg["msg_type"] == "status"
                        and msg["content"]["execution_state"] == "idle"):
                    break
    except queue.Empty as timeout:
        raise BenchFailure(f"{kernel.name}: no reply or idle within {CELL_TIMEOUT_S:g} s"
                           ) from timeout
    finally:
        client.stop_channels()


def wait_ready(kernel: RunningKernel) -> None:
    client = kernel.km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=READY_TIMEOUT_S)
    except RuntimeError as error:
        raise BenchFailure(f"{kernel.name}: not ready: {error}") from error
    finally:
        client.stop_channels()


def one_launch(name: str, sandbox: Sandbox, env: dict[str, str],
               settle_s: float) -> dict[str, Any]:
    kernel = start(name, sandbox, env)
    result: dict[str, Any] = {"findings": []}
    try:
        wait_ready(kernel)
        time.sleep(settle_s)
        result["after_startup"] = processes_of(kernel)
        run_cells(kernel)
        time.sleep(settle_s)
        result["after_cells"] = processes_of(kernel)
    except BenchFailure as failure:
        result["findings"].append(f"{failure}\n{kernel.log_tail()}")
    finally:
        result["findings"] += kernel.stop()
    return result


def launches(args: argparse.Namespace, sandbox: Sandbox,
             build: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    names = list(args.kernels)
    env = {name: (build if kernel_label(name) == "wrapperkernel" else {}) for name in names}
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    findings: list[str] = []
    for name in names:  # unmeasured: fills the bytecode cache
        findings += one_launch(name, sandbox, env[name], 0.5)["findings"]
    for round_ in range(args.launches):
        for name in names if round_ % 2 == 0 else reversed(names):
            result = one_launch(name, sandbox, env[name], args.settle_s)
            findings += [f"`{name}`: {text}" for text in result["findings"]]
            if "after_cells" in result:
                samples[name].append(result)
    summary: dict[str, Any] = {}
    for name, results in samples.items():
        summary[name] = {"n": len(results)}
        for when in ("after_startup", "after_cells"):
            roles = sorted({role for r in results for role in r[when]})
            summary[name][when] = {
                role: {key: statistics.median(r[when][role][key] for r in results
                                              if role in r[when])
                       for key in ("rss", "uss", "pss")}
                for role in roles}
            summary[name][when]["total"] = {
                key: statistics.median(sum(info[key] for info in r[when].values())
                                       for r in results)
                for key in ("rss", "uss", "pss")}
    return summary, findings


def kernel_label(name: str) -> str:
    return {"python3": "ipykernel", "xpython": "xeus-python"}.get(name, name)


# ---------------------------------------------------------------------- the soak

class Sampler:
    """RSS of the kernel and the worker under ``root`` (the test run), on a thread."""

    def __init__(self, root: int, every_s: float) -> None:
        self.root = psutil.Process(root)
        self.every_s = every_s
        self.began = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _find(self) -> dict[str, psutil.Process]:
        found: dict[str, psutil.Process] = {}
        try:
            descendants = self.root.children(recursive=True)
        except psutil.Error:
            return found
        for process in descendants:
            try:
                line = " ".join(process.cmdline())
            except psutil.Error:
                continue
            if "wrapperkernel.worker" in line:
                found.setdefault("worker", process)
            elif "wrapperkernel" in line and " run " in f" {line} ":
                found.setdefault("kernel", process)
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            for role, process in self._find().items():
                info = memory_of(process.pid)
                if info is not None:
                    self.samples.append({"t": time.monotonic() - self.began, "role": role,
                                         "pid": process.pid, **info})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def soak_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per role, the process that lived longest: start, peak, end, the second and the last
    minute of its life (medians), and the least-squares slope after its first minute."""
    out: dict[str, Any] = {}
    for role in ("kernel", "worker"):
        by_pid: dict[int, list[dict[str, Any]]] = {}
        for sample in samples:
            if sample["role"] == role:
                by_pid.setdefault(sample["pid"], []).append(sample)
        if not by_pid:
            continue
        mine = max(by_pid.values(), key=len)
        t0 = mine[0]["t"]
        life = [(s["t"] - t0, s["rss"] / MiB) for s in mine]
        end_t = life[-1][0]
        second = [rss for t, rss in life if 60 <= t < 120]
        last = [rss for t, rss in life if t >= end_t - 60]
        later = [(t, rss) for t, rss in life if t >= 60]
        slope = None
        if len(later) >= 3:
            mean_t = statistics.fmean(t for t, _ in later)
            mean_r = statistics.fmean(r for _, r in later)
            var = sum((t - mean_t) ** 2 for t, _ in later)
            slope = 60 * sum((t - mean_t) * (r - mean_r) for t, r in later) / var
        out[role] = {
            "processes": len(by_pid), "samples": len(mine), "lived_s": end_t,
            "start": life[0][1], "peak": max(r for _, r in life), "end": life[-1][1],
            "second_minute": statistics.median(second) if second else None,
            "last_minute": statistics.median(last) if last else None,
            "slope_mib_per_min": slope,
            "uss_end": mine[-1]["uss"] / MiB,
        }
    return out


def soak(args: argparse.Namespace, build: dict[str, str]) -> dict[str, Any]:
    env = {**os.environ, **build, "WRAPPERKERNEL_CHAOS_S": str(args.seconds),
           "WRAPPERKERNEL_CHAOS_SEED": str(args.seed),
           "WRAPPERKERNEL_CHAOS_ACTIONS": args.actions,
           "WRAPPERKERNEL_CHAOS_FORGET_OUTPUTS": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-s",
               "tests/test_chaos.py"]
    began = time.monotonic()
    with open(args.log, "w") as log:
        test = subprocess.Popen(command, cwd=args.source or REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        sampler = Sampler(test.pid, args.sample_s)
        sampler.start()
        try:
            returncode = test.wait(timeout=args.seconds + 600)
        except subprocess.TimeoutExpired:
            test.kill()
            returncode = test.wait(30)
        finally:
            sampler.stop()
    tail = Path(args.log).read_text(errors="replace").splitlines()[-5:]
    return {"returncode": returncode, "elapsed_s": time.monotonic() - began,
            "seconds": args.seconds, "seed": args.seed, "actions": args.actions,
            "sample_s": args.sample_s, "summary": soak_summary(sampler.samples),
            "samples": sampler.samples,
            "test_tail": tail, "date_utc": report.machine_info(args.source or REPO)["date_utc"],
            "commit": report.machine_info(args.source or REPO)["commit"]}


# ---------------------------------------------------------------------- the report

def fmt(size: float | None) -> str:
    return "—" if size is None else f"{size / MiB:.1f}"


def render(results: dict[str, Any]) -> str:
    meta, mem, imports = results["machine"], results["processes"], results["imports"]
    names = results["kernels"]
    wk = mem.get("wrapperkernel", {})
    ipk = mem.get("python3", {})
    out = [f"<!-- {SECTION}:start -->", "", "## Memory (issue 13): kernel, worker, ipykernel, "
           "xeus-python", "",
           f"Generated by `bench/memory_bench.py` on {meta['date_utc']} at "
           f"{meta['commit']}{' (with uncommitted changes)' if meta['dirty'] else ''}; "
           f"{meta['cpu_model']}, {meta['logical_cores']} logical cores, "
           f"{meta['ram_bytes'] / 2**30:.1f} GiB RAM, Python {meta['python']}; "
           + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", "",
           f"Each kernel launched from its kernelspec by `bench/launch.py` (127.0.0.1, a "
           f"sandboxed IPYTHONDIR and a warm bytecode cache), {results['launches']} launches "
           "each after an unmeasured one, alternating, median. psutil `memory_full_info` "
           f"of each process {results['settle_s']:g} s after the first `kernel_info_reply` "
           f"(after startup), and {results['settle_s']:g} s after {len(CELLS)} cells "
           "(output, a display, an error, `%time`). RSS counts every page the process maps, "
           "shared libraries included; USS only its own pages; PSS shares the shared ones "
           "out. MiB throughout.", ""]
    # targets
    kernel_rss = wk.get("after_startup", {}).get("kernel", {}).get("rss")
    total = wk.get("after_startup", {}).get("total", {}).get("rss")
    base = ipk.get("after_startup", {}).get("total", {}).get("rss")
    ratio = total / base if total and base else None
    out += ["### Targets", "", *report.markdown_table(
        ["target", "measured", "result"],
        [[f"kernel process RSS after startup ≤ {KERNEL_RSS_TARGET_MIB:g} MiB",
          f"{fmt(kernel_rss)} MiB",
          verdict(kernel_rss is not None and kernel_rss <= KERNEL_RSS_TARGET_MIB * MiB)],
         [f"kernel + worker RSS after startup ≤ {TOTAL_TARGET_RATIO:g}× ipykernel's",
          f"{fmt(total)} / {fmt(base)} MiB = {ratio:.2f}×" if ratio else "—",
          verdict(ratio is not None and ratio <= TOTAL_TARGET_RATIO)]]), ""]
    # processes
    rows = []
    for when, title in (("after_startup", "after startup"), ("after_cells", "after cells")):
        for name in names:
            for role, info in mem.get(name, {}).get(when, {}).items():
                if role == "total" and len(mem[name][when]) == 2:
                    continue  # one process: its total is itself
                rows.append([title, kernel_label(name), role, fmt(info["rss"]),
                             fmt(info["uss"]), fmt(info["pss"])])
    out += ["### Each process", "", *report.markdown_table(
        ["when", "kernel", "process", "RSS", "USS", "PSS"], rows), ""]
    # imports
    out += ["### What each import costs the kernel process", "",
            "A fresh interpreter imports the kernel's startup path step by step, in the "
            "kernel's order; each row is what that step added (median of "
            f"{results['import_runs']} runs; the RSS after it in brackets). The kernel "
            "itself comes to a little more: its sockets, threads, the worker's pipes and "
            "the first messages.", ""]
    out += import_table(imports["kernel"])
    rows = imports["kernel"][:len(IMPORT_STEPS) + 1]  # the startup path only
    pydantic_rss = sum(row["rss"] - before["rss"] for before, row in zip(rows, rows[1:],
                                                                          strict=False)
                       if "pydantic" in row["step"] or "model" in row["step"])
    out += ["", f"pydantic and the models built with it come to {pydantic_rss / MiB:.1f} MiB "
            "of that (the rows that name pydantic or models): `import pydantic` loads "
            "pydantic-core's shared library, and the first model class imports the "
            "schema-building machinery. Its lookup of pydantic plugins would import "
            "importlib.metadata, email and zipfile (the last reference row); the kernel "
            "holds it back for good, and the worker until its first request "
            "(`wrapperkernel/pydantic_plugins.py`), so the user's models still get their "
            "plugins. The worker imports pydantic for its frame models too."]
    out += ["", "What the kernel avoids, for reference (an interpreter of its own: after "
            "asyncio and zmq, `jupyter_client.session` imported the ordinary way, with the "
            "package `__init__`, tornado and dateutil):", ""]
    out += import_table(imports["plain_session"])
    if results["findings"]:
        out += ["", "### Findings", ""] + [f"- {text}" for text in results["findings"]]
    out += ["", results.get("soak_block") or soak_placeholder(), "", f"<!-- {SECTION}:end -->"]
    return "\n".join(out)


def import_table(rows: list[dict[str, Any]]) -> list[str]:
    table = []
    for before, row in zip([None, *rows], rows, strict=False):
        if before is None:
            table.append([row["step"], f"({fmt(row['rss'])})", f"({fmt(row['uss'])})", "—",
                          str(row["modules"])])
            continue
        table.append([row["step"], f"+{(row['rss'] - before['rss']) / MiB:.1f} "
                      f"({fmt(row['rss'])})", f"+{(row['uss'] - before['uss']) / MiB:.1f}",
                      f"{row['s'] * 1000:.0f}", f"+{row['modules'] - before['modules']:.0f}"])
    return report.markdown_table(["step", "RSS", "USS", "ms", "modules"], table)


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**fail**"


def soak_placeholder() -> str:
    return (f"<!-- {SOAK_SECTION}:start -->\n\n### Soak\n\nNot run yet: "
            f"`bench/memory_bench.py --soak`.\n\n<!-- {SOAK_SECTION}:end -->")


def render_soak(result: dict[str, Any]) -> str:
    out = [f"<!-- {SOAK_SECTION}:start -->", "", "### Soak: the chaos test, "
           f"{result['seconds'] / 60:g} minutes", "",
           f"Generated by `bench/memory_bench.py --soak` on {result['date_utc']} at "
           f"{result['commit']}. `tests/test_chaos.py` with `WRAPPERKERNEL_CHAOS_S="
           f"{result['seconds']:g}`, `WRAPPERKERNEL_CHAOS_SEED={result['seed']}` and "
           f"`WRAPPERKERNEL_CHAOS_ACTIONS={result['actions']}` (page reopens, reloads, "
           "dropped connections, malformed messages; no worker kills or kernel restarts, so "
           "one kernel and one worker live through the run, while a cell streams values to "
           "the page and the page sends values back), and `WRAPPERKERNEL_CHAOS_FORGET_OUTPUTS=1`: "
           "the cell clears `get_ipython().history_manager.outputs` at each checkpoint. "
           "IPython 9 keeps there every write to stdout of every cell for the whole session, "
           "one object per printed line in ipykernel as in wrapperkernel, and the cell prints "
           "a ledger line about 800 times a minute: left in, that was the worker's growth "
           "(+4.88 MiB at 079f223). RSS (psutil) of the kernel and the "
           f"worker every {result['sample_s']:g} s. Growth: the median of the last minute "
           "minus the median of the second minute (the first is warm-up); slope: least "
           "squares over everything after the first minute. The test "
           f"{'passed' if result['returncode'] == 0 else 'FAILED (exit status ' + str(result['returncode']) + ')'}"
           f" in {result['elapsed_s']:.0f} s.", ""]
    rows = []
    for role, s in result["summary"].items():
        growth = (s["last_minute"] - s["second_minute"]
                  if s["last_minute"] is not None and s["second_minute"] is not None else None)
        ok = growth is not None and growth <= SOAK_GROWTH_TOLERANCE_MIB
        rows.append([role, f"{s['processes']} ({s['lived_s']:.0f} s, {s['samples']} samples)",
                     f"{s['start']:.1f}", f"{s['peak']:.1f}", f"{s['end']:.1f}",
                     "—" if s["second_minute"] is None else f"{s['second_minute']:.1f}",
                     "—" if s["last_minute"] is None else f"{s['last_minute']:.1f}",
                     "—" if growth is None else f"{growth:+.2f}",
                     "—" if s["slope_mib_per_min"] is None else f"{s['slope_mib_per_min']:+.3f}",
                     verdict(ok)])
    out += report.markdown_table(
        ["process", "processes (longest life)", "start", "peak", "end", "2nd minute",
         "last minute", "growth", "slope MiB/min",
         f"no growth (≤ {SOAK_GROWTH_TOLERANCE_MIB:g} MiB)"], rows)
    out += ["", f"<!-- {SOAK_SECTION}:end -->"]
    return "\n".join(out)


def existing_soak_block(path: Path) -> str | None:
    if not path.exists():
        return None
    text = path.read_text()
    start, end = text.find(f"<!-- {SOAK_SECTION}:start -->"), text.find(f"<!-- {SOAK_SECTION}:end -->")
    if start == -1 or end < start:
        return None
    return text[start:end + len(f"<!-- {SOAK_SECTION}:end -->")]


def write_soak(path: Path, block: str) -> None:
    """Replace the soak's part of the section, or put it at the end of the section."""
    text = path.read_text() if path.exists() else ""
    old = existing_soak_block(path)
    if old is not None:
        text = text.replace(old, block)
    elif f"<!-- {SECTION}:end -->" in text:
        text = text.replace(f"<!-- {SECTION}:end -->", f"{block}\n\n<!-- {SECTION}:end -->")
    else:
        report.write_section(path, f"<!-- {SECTION}:start -->\n\n{block}\n\n"
                                   f"<!-- {SECTION}:end -->", SECTION)
        return
    path.write_text(text)


# ---------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", nargs="+", default=None,
                        help="kernelspecs (default: wrapperkernel, python3, xpython if installed)")
    parser.add_argument("--launches", type=int, default=5)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--import-runs", type=int, default=3)
    parser.add_argument("--source", type=Path, default=None,
                        help="run wrapperkernel from this checkout (PYTHONPATH)")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"),
                        help="the file whose section is replaced; '-' prints it")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--soak", action="store_true", help="run the soak instead")
    parser.add_argument("--seconds", type=float, default=600.0, help="soak: chaos duration")
    parser.add_argument("--seed", type=int, default=601, help="soak: the chaos seed")
    parser.add_argument("--actions", default=LONG_LIVED_ACTIONS, help="soak: chaos faults")
    parser.add_argument("--sample-s", type=float, default=5.0, help="soak: sampling period")
    parser.add_argument("--log", default="/tmp/wrapperkernel-memory-soak.log",
                        help="soak: the chaos test's output")
    return parser.parse_args(argv)


def installed_kernels() -> list[str]:
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    return [name for name in ("wrapperkernel", "python3", "xpython") if name in specs]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    build = {} if args.source is None else {"PYTHONPATH": str(args.source.resolve()),
                                            "PYTHONSAFEPATH": "1"}
    out = Path(args.out) if args.out != "-" else None
    if args.soak:
        result = soak(args, build)
        block = render_soak(result)
        if out is None:
            print(block)
        else:
            write_soak(out, block)
            print(block)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0 if result["returncode"] == 0 else 1
    args.kernels = args.kernels or installed_kernels()
    sandbox = Sandbox()
    try:
        machine = report.machine_info(args.source or REPO)
        imports = import_costs(sandbox, build, args.import_runs)
        processes, findings = launches(args, sandbox, build)
    finally:
        sandbox.cleanup()
    results = {"machine": machine, "kernels": args.kernels, "launches": args.launches,
               "settle_s": args.settle_s, "import_runs": args.import_runs,
               "imports": imports, "processes": processes, "findings": findings,
               "soak_block": existing_soak_block(out) if out else None}
    section = render(results)
    if out is None:
        print(section)
    else:
        report.write_section(out, section, SECTION)
        print(section)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0 if not findings else 1


if __name__ == "__main__":
    sys.exit(main())
