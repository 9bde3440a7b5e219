"""Browser benchmark (issue 13): what a user feels in JupyterLab, with wrapperkernel and
with ipykernel, in headless Chromium through a real Jupyter Server on 127.0.0.1.

Usage: .venv/bin/python bench/browser_bench.py [--quick] [--out docs/benchmarks.md]
       [--plot docs/benchmarks-browser-latency.png] [--json FILE]

- Latency: the page moves a slider while a cell runs a loop that reads it; the loop
  writes each new value into an ack the page shows; the page times from the input event
  to the ack's DOM update (``browser_pages.LATENCY``). Paths: wrapperkernel.widgets,
  ipywidgets relayed by wrapperkernel, ipykernel alone, ipykernel with JupyterLab's
  ``commsOverSubshells``, ipykernel with jupyter-ui-poll. A path whose loop does not see
  the first event within ``FIRST_EVENT_TIMEOUT_S`` is reported as such and stopped.
- Floor: the page's own ``kernel_info`` round trip on each notebook's kernel connection.
- Program -> page on wrapperkernel's address channel: values/s for ``comms.send`` in a
  loop, a 60 fps animation drawn on a canvas, and the same with 1 MiB binary frames;
  in a Chromium that Playwright does not watch (``browser_cdp.py``), and under
  Playwright for comparison.
- Diagnosis: the wrapperkernel paths and the program -> page runs again on a server
  with TCP_NODELAY on its kernel websockets (``browser_nodelay.py``); ``--no-diagnosis``
  leaves it out.

The server and the browser come from the browser tests (``tests/browser/conftest.py``,
``tests/browser/jupyterlab.py``). Each path runs in a fresh browser context and notebook;
its kernel is shut down afterwards. The results replace the section between
``<!-- browser-bench:start -->`` and ``<!-- browser-bench:end -->`` in docs/benchmarks.md,
and the latency distributions are plotted to a PNG.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import browser_cdp
import browser_cells as cells
import browser_pages as pages
import browser_report
import psutil
import report

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/browser is imported as a package, as pytest does

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

from tests.browser import jupyterlab  # noqa: E402
from tests.browser.conftest import (  # noqa: E402
    CHROMIUM_ARGS,
    CHROMIUM_PATH,
    KERNEL_CHOICES,
    VIEWPORT,
    KernelUnderTest,
    LabServerFactory,
    shut_down_sessions,
)
from tests.browser.test_subshells_browser import Wire, put_kernels_settings  # noqa: E402

SECTION = "browser-bench"
FIRST_EVENT_TIMEOUT_S = 5.0
EVENT_TIMEOUT_S = 2.0
LOOP_IDLE_S = FIRST_EVENT_TIMEOUT_S + 3.0  # a loop that sees nothing ends after this
LOOP_READY_TIMEOUT_S = 30.0
GAP_MS = (5, 25)  # random pause after each ack, so events do not lock to the loop's turn
CELL_TIMEOUT_S = 60.0
PAGE_WAIT_S = 60.0
INSTALL_TIMEOUT_S = 120.0
FPS = 60
RESULT = re.compile(r"seen (\d+) last (\S+)")
SEEN_AT = re.compile(r"^seen_at (.*)$", re.MULTILINE)
NODELAY_EXTENSION = "browser_nodelay"


@dataclass(frozen=True)
class Sizes:
    events: int
    kernel_infos: int
    throughput_values: int
    animation_s: float
    binary_s: float  # 1 MiB frames go at well under 60 fps: shorter, to stay within 10 min


FULL = Sizes(events=250, kernel_infos=250, throughput_values=100_000, animation_s=10.0,
             binary_s=5.0)
QUICK = Sizes(events=40, kernel_infos=40, throughput_values=10_000, animation_s=2.0,
              binary_s=2.0)


@dataclass(frozen=True)
class LatencyPath:
    key: str
    label: str
    kernel: str  # kernelspec name
    comms_over_subshells: str  # JupyterLab's setting for this path's page
    slider: str  # "range" (wrapperkernel.widgets) or "nouislider" (ipywidgets)
    cells: cells.LatencyCells


PATHS = (
    LatencyPath("wk-widgets", "wrapperkernel.widgets", "wrapperkernel", "perCommTarget",
                "range", cells.WK_WIDGETS),
    LatencyPath("wk-ipywidgets", "ipywidgets, relayed by wrapperkernel", "wrapperkernel",
                "perCommTarget", "nouislider", cells.IPYWIDGETS),
    LatencyPath("wk-ipywidgets-main", "ipywidgets, relayed by wrapperkernel, commsOverSubshells off",
                "wrapperkernel", "disabled", "nouislider", cells.IPYWIDGETS),
    LatencyPath("ipykernel", "ipykernel alone (commsOverSubshells off)", "python3", "disabled",
                "nouislider", cells.IPYWIDGETS),
    LatencyPath("ipykernel-subshells", "ipykernel, commsOverSubshells perCommTarget", "python3",
                "perCommTarget", "nouislider", cells.IPYWIDGETS),
    LatencyPath("ipykernel-ui-poll", "ipykernel + jupyter-ui-poll (commsOverSubshells off)",
                "python3", "disabled", "nouislider", cells.IPYWIDGETS_UI_POLL),
)


class BenchError(RuntimeError):
    """Something the benchmark needs did not happen; the message says what."""


def install_wrapperkernel(prefix: Path) -> KernelUnderTest:
    """The wrapperkernel kernelspec of this checkout, in a prefix of its own (as the tests)."""
    choice = KERNEL_CHOICES["wrapperkernel"]
    done = subprocess.run([sys.executable, "-m", *choice.install_args, "--prefix", str(prefix)],
                          cwd=REPO, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                          check=False)
    if done.returncode != 0:
        raise BenchError(f"wrapperkernel install failed: {done.stderr}")
    return KernelUnderTest("wrapperkernel", choice.display_name, prefix / "share" / "jupyter")


def display_names(server: jupyterlab.LabServer) -> dict[str, str]:
    specs = (server.api("api/kernelspecs") or {}).get("kernelspecs", {})
    return {name: spec["spec"]["display_name"] for name, spec in specs.items()}


class Session:
    """One browser context with JupyterLab loaded and one notebook of one kernel."""

    def __init__(self, browser: Browser, server: jupyterlab.LabServer, display_name: str,
                 comms_over_subshells: str, watch_wire: bool = False) -> None:
        self.server = server
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.set_default_timeout(PAGE_WAIT_S * 1000)
        self.page: Page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        # The kernel messages on the page's websockets: which went to a subshell.
        self.wire = Wire()
        if watch_wire:
            self.page.on("websocket", self.wire.watch)
        # ?reset: an empty workspace, so no notebook of an earlier path is reopened.
        self.page.goto(server.lab_url("lab", reset=""))
        jupyterlab.wait_lab_ready(self.page)
        put_kernels_settings(self.page, json.dumps({"commsOverSubshells": comms_over_subshells}))
        jupyterlab.reload_page(self.page)
        jupyterlab.create_notebook(self.page, display_name)

    def run(self, code: str, timeout_s: float = CELL_TIMEOUT_S) -> str:
        return cell_text(jupyterlab.run_cell(self.page, code, timeout_s))

    def close(self) -> None:
        shut_down_sessions(self.server)
        self.context.close()


def cell_text(result: jupyterlab.CellResult) -> str:
    text = result.text
    if "Traceback" in text or "Error" in text:
        # The exception's own line (IPython's traceback ends with it), for the report.
        errors = [line for line in text.splitlines() if re.match(r"^\w*(Error|Exception)\b", line)]
        raise BenchError(f"cell failed: {errors[-1] if errors else text.strip()[-300:]}")
    return text


def kernel_info_floor(page: Page, count: int) -> dict[str, Any]:
    return page.evaluate(pages.KERNEL_INFO, {"count": count, "timeoutMs": 10_000})


def run_latency_path(browser: Browser, server: jupyterlab.LabServer, names: dict[str, str],
                     path: LatencyPath, sizes: Sizes) -> dict[str, Any]:
    row: dict[str, Any] = {"path": asdict(path) | {"cells": None}, "sent": 0, "samples": []}
    session = Session(browser, server, names[path.kernel], path.comms_over_subshells,
                      watch_wire=True)
    try:
        floor = kernel_info_floor(session.page, sizes.kernel_infos)
        row["floor_ms"] = floor.get("samples", [])
        if "error" in floor:
            row["floor_error"] = floor["error"]
        session.run(path.cells.setup)
        loop = jupyterlab.start_cell(
            session.page, path.cells.loop.format(last=sizes.events, idle_s=LOOP_IDLE_S))
        measured = session.page.evaluate(pages.LATENCY, {
            "panelSelector": jupyterlab.CURRENT_NOTEBOOK_PANEL,
            "kind": path.slider,
            "count": sizes.events,
            "firstTimeoutMs": FIRST_EVENT_TIMEOUT_S * 1000,
            "timeoutMs": EVENT_TIMEOUT_S * 1000,
            "readyTimeoutMs": LOOP_READY_TIMEOUT_S * 1000,
            "gapMs": list(GAP_MS),
        })
        row.update(measured)
        loop_timeout = LOOP_IDLE_S + CELL_TIMEOUT_S + sizes.events * EVENT_TIMEOUT_S
        loop_text = cell_text(jupyterlab.wait_cell(session.page, loop, loop_timeout))
        found = RESULT.search(loop_text)
        seen_at = SEEN_AT.search(loop_text)
        row["seen_at"] = json.loads(seen_at.group(1)) if seen_at else []
        row["loop_output"] = SEEN_AT.sub("", loop_text).strip()
        row["loop_seen"] = int(found.group(1)) if found else None
        row["after_cell"] = session.run(cells.AFTER_LOOP).strip()
        sent = session.wire.find("comm_msg", sent=True)
        row["wire"] = {
            "comm_msgs_sent": len(sent),
            "to_subshell": sum(1 for m in sent if m.header.get("subshell_id")),
            "create_subshell_requests": len(session.wire.find("create_subshell_request", sent=True)),
        }
    except (BenchError, TimeoutError, jupyterlab.PlaywrightTimeoutError) as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        row["console"] = session.console[-20:]
    finally:
        session.close()
    return row


def frame_stats(measured: dict[str, Any], frames: int) -> dict[str, Any]:
    """Dropped frames of one animation run, from the page's arrival and draw records."""
    arrivals = measured["arrivals"]
    drawn = measured["drawn"]
    seqs_received = {seq for seq, _ in arrivals}
    seqs_drawn = [seq for _, seq, _ in drawn if seq is not None]
    draw_times = [t for t, seq, _ in drawn if seq is not None]
    # Frames between the first and the last drawn value that had nothing new to draw.
    window = [entry for entry in drawn if draw_times and draw_times[0] <= entry[0] <= draw_times[-1]]
    frame_times = [t for t, _, _ in drawn]
    intervals = [b - a for a, b in itertools.pairwise(frame_times)]
    arrival_times = [t for _, t in arrivals]
    gaps = [b - a for a, b in itertools.pairwise(arrival_times)]
    span_ms = (arrival_times[-1] - arrival_times[0]) if len(arrival_times) > 1 else None
    return {
        "sent": frames,
        "received": len(seqs_received),
        "drawn": len(set(seqs_drawn)),
        "never_drawn": frames - len(set(seqs_drawn)),
        "never_received": frames - len(seqs_received),
        "empty_frames": sum(1 for _, seq, _ in window if seq is None),
        "frames_in_window": len(window),
        "raf_interval_ms": intervals,
        "arrival_gap_ms": gaps,
        "arrival_span_ms": span_ms,
        "bytes": measured["bytes"],
        "draw_cost_ms": [end - start for start, seq, end in drawn if seq is not None],
    }


def cpu_seconds(server: jupyterlab.LabServer) -> dict[str, float]:
    """CPU time (user + system) so far of each kind of process this run started: the
    server, the kernel processes (children of the server), the kernels' own children
    (wrapperkernel's worker), Chromium, Playwright's driver, and this script."""
    groups: dict[str, float] = {}

    def add(group: str, process: psutil.Process) -> None:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            return
        groups[group] = groups.get(group, 0.0) + times.user + times.system

    me = psutil.Process()
    add("bench script", me)
    server_pid = server.process.pid
    for child in me.children(recursive=True):
        try:
            name, parent = child.name(), child.ppid()
        except psutil.NoSuchProcess:
            continue
        if child.pid == server_pid:
            add("jupyter server", child)
        elif parent == server_pid:
            add("kernel process", child)
        elif "chrom" in name:
            add("chromium", child)
        elif name == "node":
            add("playwright driver", child)
        elif parent != me.pid and psutil.pid_exists(parent) and psutil.Process(parent).ppid() == server_pid:
            add("kernel children (worker)", child)
    return groups


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}


class PlaywrightNotebook:
    """The current notebook of a Playwright page: evaluate page code, run cells."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def evaluate(self, function: str, arg: Any) -> Any:
        return self.page.evaluate(function, arg)

    def start_cell(self, code: str) -> jupyterlab.StartedCell:
        return jupyterlab.start_cell(self.page, code)

    def wait_cell(self, started: jupyterlab.StartedCell, timeout_s: float = CELL_TIMEOUT_S) -> str:
        return cell_text(jupyterlab.wait_cell(self.page, started, timeout_s))


class CdpNotebook:
    """The same for a notebook page in ``browser_cdp.RawChromium``: cells run through
    JupyterLab's own commands (``browser_pages.START_CELL``)."""

    def __init__(self, browser: browser_cdp.RawChromium) -> None:
        self.browser = browser

    def evaluate(self, function: str, arg: Any) -> Any:
        return self.browser.evaluate(function, arg, timeout_s=600)

    def start_cell(self, code: str) -> int:
        return int(self.browser.evaluate(pages.START_CELL, {"code": code}))

    def wait_cell(self, started: int, timeout_s: float = CELL_TIMEOUT_S) -> str:
        done = self.browser.evaluate(pages.WAIT_CELL, {"id": started, "timeoutMs": timeout_s * 1000},
                                     timeout_s=timeout_s + 30)
        text = done["text"]
        if not done["finished"]:
            raise TimeoutError(f"cell did not finish within {timeout_s:.0f} s; output {text[-300:]!r}")
        if "Error" in text:
            raise BenchError(f"cell failed: {text.strip().splitlines()[-1]}")
        return text


Notebook = PlaywrightNotebook | CdpNotebook


def measure_throughput(notebook: Notebook, server: jupyterlab.LabServer,
                       sizes: Sizes) -> dict[str, Any]:
    count = sizes.throughput_values
    cpu_before, wall_before = cpu_seconds(server), time.monotonic()
    started = notebook.start_cell(cells.THROUGHPUT.format(count=count))
    got = notebook.evaluate(pages.THROUGHPUT_RESULT, {"count": count, "timeoutMs": 300_000})
    text = notebook.wait_cell(started, 300)
    got["cpu_s"] = cpu_delta(cpu_before, cpu_seconds(server))
    got["wall_s"] = time.monotonic() - wall_before
    got["cell"] = text.strip()
    got["sent"] = count
    return got


def measure_animation(notebook: Notebook, server: jupyterlab.LabServer, sizes: Sizes,
                      variant: dict[str, str], binary: bool) -> dict[str, Any]:
    duration_s = sizes.binary_s if binary else sizes.animation_s
    frames = round(duration_s * FPS)
    cpu_before, wall_before = cpu_seconds(server), time.monotonic()
    notebook.evaluate(pages.ANIMATION_START, {"binary": binary})
    started = notebook.start_cell(cells.ANIMATION.format(fps=FPS, frames=frames, **variant))
    measured = notebook.evaluate(pages.ANIMATION_STOP,
                                 {"frames": frames, "timeoutMs": duration_s * 20_000})
    stats = frame_stats(measured, frames)
    try:
        stats["cell"] = notebook.wait_cell(started, duration_s * 20 + 60).strip()
    except BenchError as exc:  # what the page got is kept beside the cell's error
        stats["error"] = str(exc)
    stats["cpu_s"] = cpu_delta(cpu_before, cpu_seconds(server))
    stats["wall_s"] = time.monotonic() - wall_before
    return stats


def program_to_page(notebook: Notebook, server: jupyterlab.LabServer, sizes: Sizes,
                    console: list[str]) -> dict[str, Any]:
    """Throughput, animation and binary animation on one wrapperkernel notebook; a part
    that fails is reported with its error and the next part still runs."""
    out: dict[str, Any] = {}
    parts = (
        ("throughput", lambda: measure_throughput(notebook, server, sizes)),
        ("animation", lambda: measure_animation(notebook, server, sizes, cells.ANIMATION_JSON,
                                                False)),
        ("binary", lambda: measure_animation(notebook, server, sizes, cells.ANIMATION_BINARY,
                                             True)),
    )
    errors = (BenchError, TimeoutError, jupyterlab.PlaywrightTimeoutError, browser_cdp.CdpError)
    try:
        setup = notebook.start_cell(cells.COMMS_START)
        installed = notebook.evaluate(pages.INSTALL_RECEIVERS,
                                      {"timeoutMs": PAGE_WAIT_S * 1000, "side": cells.BINARY_SIDE})
        if "error" in installed:
            raise BenchError(installed["error"])
        notebook.wait_cell(setup)
        for key, measure in parts:
            try:
                out[key] = measure()
            except errors as exc:
                out[key] = {"error": f"{type(exc).__name__}: {exc}", "console": console[-20:]}
    except errors as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["console"] = console[-20:]
    return out


def run_program_to_page(browser: Browser, server: jupyterlab.LabServer, names: dict[str, str],
                        sizes: Sizes) -> dict[str, Any]:
    session = Session(browser, server, names["wrapperkernel"], "perCommTarget")
    try:
        out = program_to_page(PlaywrightNotebook(session.page), server, sizes, session.console)
    finally:
        session.close()
    if any("error" in part for part in out.values() if isinstance(part, dict)) or "error" in out:
        out["server_log_tail"] = server.log_tail(6000)  # the kernels log to the server's log
    return out


def run_program_to_page_cdp(server: jupyterlab.LabServer, profile: Path,
                            sizes: Sizes) -> dict[str, Any]:
    """The same runs in a Chromium that no Playwright watches: the notebook file and its
    session are made through the REST API, the page opens it and runs its cells."""
    name = "program-to-page.ipynb"
    notebook_json = {"type": "notebook", "content": {
        "cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [],
                   "execution_count": None}],
        "metadata": {"kernelspec": {"name": "wrapperkernel", "display_name": "wrapperkernel",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}}
    api_send(server, f"api/contents/{name}", "PUT", notebook_json)
    api_send(server, "api/sessions", "POST",
             {"path": name, "type": "notebook", "name": "", "kernel": {"name": "wrapperkernel"}})
    chromium = browser_cdp.RawChromium(CHROMIUM_PATH, profile, list(CHROMIUM_ARGS),
                                       (VIEWPORT["width"], VIEWPORT["height"]))
    try:
        chromium.open(server.lab_url(f"lab/tree/{name}", reset=""))
        chromium.wait_for(pages.NOTEBOOK_READY, jupyterlab.KERNEL_READY_TIMEOUT_S)
        out = program_to_page(CdpNotebook(chromium), server, sizes, [])
    except browser_cdp.CdpError as exc:
        out = {"error": f"CdpError: {exc}"}
    finally:
        chromium.close()
        shut_down_sessions(server)
    if any("error" in part for part in out.values() if isinstance(part, dict)) or "error" in out:
        out["server_log_tail"] = server.log_tail(6000)
    return out


def api_send(server: jupyterlab.LabServer, path: str, method: str, body: Any) -> Any:
    request = urllib.request.Request(
        f"{server.url}{path}", method=method, data=json.dumps(body).encode(),
        headers={"Authorization": f"token {server.token}", "Content-Type": "application/json"})
    with jupyterlab._DIRECT.open(request, timeout=jupyterlab.KERNEL_READY_TIMEOUT_S) as response:
        data = response.read()
    return json.loads(data) if data else None


DIAGNOSIS_PATHS = ("wk-widgets", "wk-ipywidgets")


def run_server(factory: LabServerFactory, browser: Browser, paths: tuple[LatencyPath, ...],
               sizes: Sizes, out: dict[str, Any], profile: Path, nodelay_dir: Path | None = None,
               playwright_program_to_page: bool = False) -> None:
    """Start one server, run the latency paths and the program -> page runs on it, stop it.
    With ``nodelay_dir``, the server loads ``browser_nodelay`` (copied there, on its
    PYTHONPATH only) and its kernel websockets have TCP_NODELAY."""
    extra_args = ["--LabApp.expose_app_in_browser=True"]
    saved_path = os.environ.get("PYTHONPATH")
    if nodelay_dir is not None:
        nodelay_dir.mkdir(parents=True, exist_ok=True)
        source = Path(__file__).with_name(f"{NODELAY_EXTENSION}.py")
        (nodelay_dir / source.name).write_text(source.read_text())
        extra_args.append(f"--ServerApp.jpserver_extensions={NODELAY_EXTENSION}=True")
        os.environ["PYTHONPATH"] = str(nodelay_dir)  # read when the server's env is built
    try:
        server = factory(extra_args=extra_args)
    finally:
        if saved_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_path
    try:
        if nodelay_dir is not None and "browser_nodelay: TCP_NODELAY" not in server.log_tail(20000):
            raise BenchError(f"the diagnosis server did not load {NODELAY_EXTENSION}: {server.log_path}")
        names = display_names(server)
        label = "TCP_NODELAY server" if nodelay_dir is not None else "server"
        for path in paths:
            print(f"[browser-bench] {label}: {path.key}", file=sys.stderr, flush=True)
            out["latency"].append(run_latency_path(browser, server, names, path, sizes))
        print(f"[browser-bench] {label}: program -> page, without Playwright", file=sys.stderr,
              flush=True)
        out["program_to_page"] = run_program_to_page_cdp(server, profile, sizes)
        if playwright_program_to_page:
            print(f"[browser-bench] {label}: program -> page, in Playwright", file=sys.stderr,
                  flush=True)
            out["program_to_page_playwright"] = run_program_to_page(browser, server, names, sizes)
    finally:
        factory.stop(server)


def write_outputs(results: dict[str, Any], options: argparse.Namespace) -> None:
    browser_report.plot(results, options.plot)
    section = browser_report.render(results, options.plot, options.out)
    if str(options.out) != "-":
        report.write_section(options.out, section, name=SECTION)
    print(section)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few events, short animations")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "benchmarks-browser-latency.png")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--paths", help="comma-separated latency paths (default: all)")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: write the section and the plot from the raw "
                             "results of an earlier run (its --json file)")
    parser.add_argument("--no-diagnosis", action="store_true",
                        help="skip the second server with TCP_NODELAY on kernel websockets")
    options = parser.parse_args()
    if options.render is not None:
        write_outputs(json.loads(options.render.read_text()), options)
        return 0
    sizes = QUICK if options.quick else FULL
    paths = PATHS
    if options.paths:
        wanted = options.paths.split(",")
        paths = tuple(p for p in PATHS if p.key in wanted)
    started = time.monotonic()
    meta: dict[str, Any] = {"machine": report.machine_info(REPO), "quick": options.quick,
                            "sizes": asdict(sizes)}
    results: dict[str, Any] = {"meta": meta, "latency": [], "program_to_page": {},
                               "nodelay": {"latency": [], "program_to_page": {}}}
    with tempfile.TemporaryDirectory(prefix="wk-browser-bench-") as tmp:
        kernel = install_wrapperkernel(Path(tmp) / "prefix")
        factory = LabServerFactory(Path(tmp) / "lab", kernel)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM_PATH), headless=True, args=CHROMIUM_ARGS)
            meta["chromium"] = browser.version
            try:
                run_server(factory, browser, paths, sizes, results, Path(tmp) / "profile-1",
                           playwright_program_to_page=True)
                if not options.no_diagnosis:
                    diagnosis = tuple(p for p in paths if p.key in DIAGNOSIS_PATHS)
                    run_server(factory, browser, diagnosis, sizes, results["nodelay"],
                               Path(tmp) / "profile-2", nodelay_dir=Path(tmp) / "nodelay")
            finally:
                browser.close()
                factory.stop_all()
    meta["versions"] = {name: report._version(name) for name in (
        "jupyterlab", "jupyter_server", "tornado", "ipywidgets", "jupyter-ui-poll", "playwright")}
    meta["duration_s"] = time.monotonic() - started
    meta["loadavg_at_end"] = os.getloadavg()
    if options.json is not None:
        options.json.write_text(json.dumps(results, indent=1))
    write_outputs(results, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
