"""Turns measured results into the markdown section of docs/benchmarks.md.

Every number in the output comes from the results dict that ``run_bench.py`` measured in
this run; nothing here is a remembered result. The section is written between the
``kernel-bench`` markers and the rest of the file is preserved, so other benchmark
scripts (the comm benchmark) can keep their own sections in the same file.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from summary import ratio, summarize

START_MARKER = "<!-- kernel-bench:start -->"
END_MARKER = "<!-- kernel-bench:end -->"
PACKAGES = ("ipykernel", "xeus-python", "jupyter_client", "pyzmq", "ipython", "wrapperkernel")
STARTUP_TARGET_RATIO = 0.5
ROUND_TRIP_TARGET_RATIO = 0.5


# ---------------------------------------------------------------------- machine description

def machine_info(repo: Path) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cgroup_cpu_max": _read_first_line(Path("/sys/fs/cgroup/cpu.max")),
        "ram_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "loadavg_at_start": os.getloadavg(),
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": {name: _version(name) for name in PACKAGES},
        "commit": _git(repo, "rev-parse", "--short", "HEAD"),
        "dirty": bool(_git(repo, "status", "--porcelain", "--", "wrapperkernel")),
    }
    return info


def _cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""  # not Linux: fall back to what the platform module knows
    model = platform.processor() or "unknown CPU"
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return f"{model} (virtual machine)" if " hypervisor" in flags else model


def _read_first_line(path: Path) -> str | None:
    try:
        return path.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(repo: Path, *args: str) -> str:
    """Read-only git queries (rev-parse, status) to name the code that was measured."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


# ---------------------------------------------------------------------- formatting helpers

def ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    value = seconds * 1000
    if value < 10:
        return f"{value:.2f} ms"
    if value < 100:
        return f"{value:.1f} ms"
    return f"{value:.0f} ms"


def mib(size: float | None) -> str:
    return "—" if size is None else f"{size / 2**20:.1f} MiB"


def times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def count(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _stat(stats: dict[str, Any], key: str) -> float | None:
    return stats.get(key) if stats else None


def _p99_label(n: int) -> str:
    return "p99" if n >= 100 else f"p99 (n={n}: the maximum)"


# ---------------------------------------------------------------------- the section

def render(results: dict[str, Any]) -> str:
    names = results["kernels"]
    label = results["labels"]
    meta = results["meta"]
    title = " vs ".join(label[n] for n in names)
    out: list[str] = [START_MARKER, "", f"## Kernel benchmarks: {title}", ""]
    out += _intro(results, meta)
    out += targets(results)
    out += _startup(results)
    out += _round_trip(results)
    out += _throughput(results)
    out += _memory(results)
    if results["findings"]:
        out += ["### Findings during this run", ""]
        out += [f"- {finding}" for finding in results["findings"]]
        out.append("")
    out.append(END_MARKER)
    return "\n".join(out)


def _intro(results: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    m = meta["machine"]
    v = m["versions"]
    p = meta["params"]
    label = results["labels"]
    cores = f"{m['logical_cores']} logical cores"
    if m["usable_cores"] and m["usable_cores"] != m["logical_cores"]:
        cores += f" ({m['usable_cores']} usable)"
    if m["cgroup_cpu_max"] and not m["cgroup_cpu_max"].startswith("max"):
        cores += f", cgroup cpu.max `{m['cgroup_cpu_max']}`"
    commit = m["commit"] or "unknown commit"
    if m["dirty"]:
        commit += " with uncommitted changes under wrapperkernel/"
    load = "start " + ", ".join(f"{x:.2f}" for x in m["loadavg_at_start"])
    if meta.get("loadavg_at_end"):
        load += "; end " + ", ".join(f"{x:.2f}" for x in meta["loadavg_at_end"])
    load += (f" (1, 5, 15 min; {m['logical_cores']} cores — other work on the machine shows "
             "up here and in the spread between median and p90)")
    specs = ", ".join(f"`{label[n]}` is kernelspec `{n}`" for n in results["kernels"])
    cand = label[results["candidate"]]
    return [
        f"Generated by `bench/run_bench.py{' --quick' if p['quick'] else ''}` on {m['date_utc']} "
        f"({'quick' if p['quick'] else 'full'} mode, {meta['duration_s']:.0f} s). {specs}; all "
        "were measured in the same run, alternating (A B C A B C …) between repetitions so "
        f"that machine noise hits them alike. Ratio = {cand} / the other kernel; lower is "
        "better except for throughput.",
        "",
        f"**Machine.** {m['cpu_model']}, {cores}, {m['ram_bytes'] / 2**30:.1f} GiB RAM; "
        f"{m['platform']}; Python {m['python']}; ipykernel {v['ipykernel']}, "
        f"xeus-python {v.get('xeus-python', '?')}, jupyter_client {v['jupyter_client']}, "
        f"pyzmq {v['pyzmq']}, IPython {v['ipython']}; "
        f"wrapperkernel {v['wrapperkernel']} at {commit}. Load average: {load}.",
        "",
        "**How.**",
        "",
        "- Each kernel is started by `jupyter_client.KernelManager` from its kernelspec, on "
        "127.0.0.1 over tcp, with a temporary IPYTHONDIR and runtime dir; every wait has a "
        "timeout and every process started is shut down (a leftover child is a finding). "
        "All import from a bytecode cache filled by one unmeasured launch each "
        "(`PYTHONPYCACHEPREFIX` in the temp dir), as an installed package would.",
        "- *The measuring client* is `bench/lean_client.py`, the same for every kernel: the "
        "calling thread alone reads the kernel's sockets through one `zmq.Poller` (no "
        "heartbeat thread, no reader thread, no queue between threads), stamps each message "
        "with `perf_counter()` as `recv_multipart` returns it, and verifies and parses it with "
        "`jupyter_client.Session`. The previous harness (`BlockingKernelClient` with its "
        "heartbeat thread, `get_msg` on shell and then on IOPub) and `execute_interactive` are "
        "measured on the same kernels afterwards, as reference rows: the difference is what a "
        "client adds, not the kernel.",
        f"- *Startup*: {p['launches']} fresh kernels each, per client setting, all alternating. "
        "The clock starts at the `km.start_kernel()` call. **Default settings**: what "
        "`KernelClient.wait_for_ready` does over sockets with zmq's defaults (100 ms reconnect "
        "interval, no `ZMQ_IMMEDIATE`): one `kernel_info_request`, queued by zmq until the "
        f"connection is up; {measure_wait(p, 'reply')} for the reply, then "
        f"{measure_wait(p, 'iopub')} for any IOPub message (else it sends again); *ready* is "
        "when both have arrived. **5 ms reconnect**: the sockets retry every "
        f"{p['reconnect_ivl_ms']} ms with `ZMQ_IMMEDIATE`, and a `kernel_info_request` goes out "
        f"every {p['poll_ms']:.0f} ms once the shell socket is connected. Then "
        "`execute_request(\"pass\")`, as a frontend does after kernel_info.",
        f"- *Round trip*: one warm kernel each; `execute_request(\"pass\")` until both the "
        "shell `execute_reply` and the IOPub `idle` parented to it have arrived (whichever comes "
        f"last). {p['warmup']} warm-up runs, then {p['samples']} samples, alternating kernels "
        f"every {p['block']} samples; {p['interactive_samples']} samples each for the reference rows.",
        f"- *stdout throughput*: `for i in range({p['lines']}): print(i)` on the warm kernels, "
        "read until `idle` by the client with zmq's default high-water marks (a frontend's); "
        "every line is checked against the expected sequence. **lines/s counts the lines that "
        "arrived** (expected − lost) over the time from the `execute_request` to the `idle`: "
        "a kernel that drops lines is not credited for them. When a kernel's IOPub drops the "
        f"`idle` as well, the run ends {p['idle_grace_s']:g} s after the last message parented "
        "to the request, and its time is that last message's. "
        f"{p['reps']} repetitions each.",
        "- *Memory*: RSS (psutil) of the kernel process and of its child processes "
        "(wrapperkernel's worker), idle, after startup and after the benchmarks. RSS counts "
        "shared pages (the Python binary, libraries) once per process.",
        "",
    ]


def measure_wait(params: dict[str, Any], which: str) -> str:
    return f"{params['ready_' + which + '_wait_s']:g} s"


def launch_stats(results: dict[str, Any], name: str, key: str, mode: str) -> dict[str, Any]:
    return summarize([s[key] for s in results["launch"].get(name, []) if s["mode"] == mode])


def throughput_rates(results: dict[str, Any], name: str) -> list[float]:
    """Delivered lines per second (see ``measure.ThroughputSample.delivered_rate``)."""
    return [(s["lines_expected"] - s["lines_lost"]) / s["elapsed_s"]
            for s in results["throughput"].get(name, [])]


def line_rate(value: float | None) -> str:
    return "—" if value is None else f"{count(value)} lines/s"


class Targets:
    """Rows of a targets table: each a measure of the candidate against one other kernel."""

    def __init__(self, label: dict[str, str], candidate: str) -> None:
        self.label = label
        self.candidate = candidate
        self.rows: list[list[str]] = []
        self.missed: list[str] = []

    def check(self, title: str, other: str | None, va: float | None, vb: float | None,
              fmt: Callable[[float | None], str], want: str, factor: float,
              higher_is_better: bool = False, why_missing: str = "not measured (see findings)") -> None:
        r = ratio(va, vb)
        them = self.label.get(other, other) if other else "—"
        if va is None or vb is None or r is None:
            verdict = why_missing
            self.missed.append(f"{title} vs {them}: {why_missing}")
        elif (r >= factor) if higher_is_better else (r <= factor):
            verdict = "**pass**"
        else:
            verdict = "**FAIL**"
            self.missed.append(f"{title} vs {them}: {fmt(va)} vs {fmt(vb)} ({times(r)}; required {want})")
        self.rows.append([title, fmt(va), them, fmt(vb), times(r), want, verdict])

    def raw(self, row: list[str], ok: bool, miss: str) -> None:
        self.rows.append(row + ["**pass**" if ok else "**FAIL**"])
        if not ok:
            self.missed.append(miss)

    def lines(self, heading: str = "### Targets") -> list[str]:
        out = [heading, ""]
        out += markdown_table(["target", self.label[self.candidate], "compared with", "its value",
                               "ratio", "required", "result"], self.rows)
        out.append("")
        out.append(("Missed in this run: " + "; ".join(self.missed) + ".") if self.missed
                   else "All targets met in this run.")
        out.append("")
        return out


def targets(results: dict[str, Any]) -> list[str]:
    return target_checks(results).lines()


def target_checks(results: dict[str, Any]) -> Targets:
    """Every target of one run (``runs_report.py`` sets several runs side by side)."""
    cand, base, ref = results["candidate"], results["baseline"], results.get("reference")
    t = Targets(results["labels"], cand)

    def med(values: dict[str, Any]) -> float | None:
        return _stat(values, "median")

    launch = {(n, mode): med(launch_stats(results, n, "kernel_info_s", mode))
              for n in results["kernels"] for mode in ("default", "fast")}
    rt = {n: med(summarize(results["roundtrip"].get(n, []))) for n in results["kernels"]}
    tp = {n: med(summarize(throughput_rates(results, n))) for n in results["kernels"]}
    lost = {n: sum(s["lines_lost"] for s in results["throughput"].get(n, []))
            for n in results["kernels"] if results["throughput"].get(n)}
    # issue 13: against xeus-python
    if ref:
        t.check("launch → kernel_info_reply, jupyter_client default settings (median)", ref,
                launch.get((cand, "default")), launch.get((ref, "default")), ms, "≤ 1.0×", 1.0)
        t.check("launch → kernel_info_reply, 5 ms reconnect interval (median)", ref,
                launch.get((cand, "fast")), launch.get((ref, "fast")), ms, "≤ 1.0×", 1.0)
        t.check("execute round trip (median)", ref, rt.get(cand), rt.get(ref), ms, "≤ 0.9×", 0.9)
        t.check("stdout, delivered lines/s (median)", ref, tp.get(cand), tp.get(ref), line_rate,
                "≥ 10×", 10.0, higher_is_better=True)
    # the original targets, against ipykernel
    t.check("launch → kernel_info_reply, 5 ms reconnect interval (median)", base,
            launch.get((cand, "fast")), launch.get((base, "fast")), ms,
            f"≤ {STARTUP_TARGET_RATIO}×", STARTUP_TARGET_RATIO)
    t.check("execute round trip (median)", base, rt.get(cand), rt.get(base), ms,
            f"≤ {ROUND_TRIP_TARGET_RATIO}×", ROUND_TRIP_TARGET_RATIO)
    t.check("stdout, delivered lines/s (median)", base, tp.get(cand), tp.get(base), line_rate,
            "≥ 1×", 1.0, higher_is_better=True)
    others = ", ".join(f"{results['labels'][n]} {count(lost[n])}" for n in results["kernels"]
                       if n != cand and n in lost)
    t.raw([f"stdout lines lost by {results['labels'][cand]}, all repetitions",
           count(lost.get(cand)), "lost by the others", others or "—", "", "0"],
          cand in lost and lost[cand] == 0, f"{results['labels'][cand]} lost "
          f"{count(lost.get(cand))} stdout lines")
    return t


def _columns(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The kernels in column order, and the others (ratio columns)."""
    names = list(results["kernels"])
    return names, [n for n in names if n != results["candidate"]]


def side_by_side(results: dict[str, Any],
                 rows: list[tuple[str, dict[str, float | None], Callable[[Any], str]]],
                 with_ratio: bool = True) -> list[str]:
    """A table: one row per (title, {kernel: value}, format); ratio columns candidate / other."""
    names, others = _columns(results)
    label, cand = results["labels"], results["candidate"]
    table_rows = []
    for title, values, fmt in rows:
        row = [title] + [fmt(values.get(n)) for n in names]
        if with_ratio:
            row += [times(ratio(values.get(cand), values.get(o))) for o in others]
        table_rows.append(row)
    header = [""] + [label[n] for n in names]
    if with_ratio:
        header += [f"÷ {label[o]}" for o in others]
    return markdown_table(header, table_rows)


def _startup(results: dict[str, Any]) -> list[str]:
    names = results["kernels"]
    rows: list[tuple[str, dict[str, float | None], Callable[[Any], str]]] = []
    for mode, setting in (("default", "default settings"), ("fast", "5 ms reconnect")):
        for key, title in (("kernel_info_s", "launch → kernel_info_reply"),
                           ("ready_s", "launch → ready (reply + IOPub message)"),
                           ("first_execute_s", "launch → first execute_reply (`pass`)"),
                           ("start_call_s", "of which `km.start_kernel()` call")):
            if key == "ready_s" and mode == "fast":
                continue
            stats = {n: launch_stats(results, n, key, mode) for n in names}
            counts = [int(s.get("n", 0)) for s in stats.values() if s]
            keys = ("median",) if key == "start_call_s" else ("median", "p90", "p99")
            for stat in keys:
                name = _p99_label(min(counts) if counts else 0) if stat == "p99" else stat
                rows.append((f"{setting}: {title}, {name}",
                             {n: _stat(stats[n], stat) for n in names}, ms))
    sent = {n: summarize([s["kernel_info_sent"] for s in results["launch"].get(n, [])
                          if s["mode"] == "default"]) for n in names}
    rows.append(("default settings: kernel_info_requests sent, median",
                 {n: _stat(sent[n], "median") for n in names}, count))
    per = " / ".join(str(len(results["launch"].get(n, [])) // 2) for n in names)
    out = [f"### Startup ({per} fresh kernels per setting)", ""]
    out += side_by_side(results, rows)
    out.append("")
    return out


def _round_trip(results: dict[str, Any]) -> list[str]:
    names = results["kernels"]
    s = {n: summarize(results["roundtrip"].get(n, [])) for n in names}
    blocking = {n: summarize(results["roundtrip_blocking"].get(n, [])) for n in names}
    inter = {n: summarize(results["roundtrip_interactive"].get(n, [])) for n in names}
    n_min = min((int(x.get("n", 0)) for x in s.values()), default=0)
    rows: list[tuple[str, dict[str, float | None], Callable[[Any], str]]] = [
        (label_, {n: _stat(s[n], key) for n in names}, ms)
        for label_, key in (("median", "median"), (_p99_label(n_min), "p99"), ("mean", "mean"),
                            ("min", "min"), ("max", "max"))]
    rows.append(("previous harness (`BlockingKernelClient`, `get_msg`), median (reference)",
                 {n: _stat(blocking[n], "median") for n in names}, ms))
    rows.append(("`execute_interactive`, median (reference)",
                 {n: _stat(inter[n], "median") for n in names}, ms))
    counts = " / ".join(str(int(s[n].get("n", 0))) for n in names)
    out = [f"### execute_request(\"pass\") round trip ({counts} samples)", ""]
    out += side_by_side(results, rows)
    out.append("")
    return out


def _throughput(results: dict[str, Any]) -> list[str]:
    names = results["kernels"]
    lines = results["meta"]["params"]["lines"]
    tp = {n: results["throughput"].get(n, []) for n in names}
    rate = {n: summarize(throughput_rates(results, n)) for n in names}
    elapsed = {n: summarize([x["elapsed_s"] for x in tp[n]]) for n in names}

    def per_rep(samples: list[dict[str, Any]], key: str) -> str:
        return ", ".join(f"{x[key]:,}" for x in samples) or "—"

    def ordered(samples: list[dict[str, Any]]) -> str:
        return ("yes" if all(x["in_order"] for x in samples) else "**no**") if samples else "—"

    rows: list[tuple[str, dict[str, Any], Callable[[Any], str]]] = [
        ("elapsed, median", {n: _stat(elapsed[n], "median") for n in names}, ms),
        ("delivered lines/s, median", {n: _stat(rate[n], "median") for n in names}, count),
    ]
    table = side_by_side(results, rows)
    others = len(_columns(results)[1])
    for title, cell in (
            ("delivered lines/s, min – max",
             lambda n: f"{count(_stat(rate[n], 'min'))} – {count(_stat(rate[n], 'max'))}"),
            ("lines received, per repetition", lambda n: per_rep(tp[n], "lines_received")),
            ("lines lost, per repetition", lambda n: per_rep(tp[n], "lines_lost")),
            ("all lines in order", lambda n: ordered(tp[n])),
            ("lines arriving after `idle`", lambda n: per_rep(tp[n], "late_lines")),
            ("IOPub `idle` lost (reply came, idle never did)",
             lambda n: ", ".join("**yes**" if x.get("idle_lost") else "no" for x in tp[n]) or "—"),
            ("stream messages, per repetition", lambda n: per_rep(tp[n], "stream_messages"))):
        table.append("| " + " | ".join([title] + [cell(n) for n in names] + [""] * others) + " |")
    reps = " / ".join(str(len(tp[n])) for n in names)
    out = [f"### stdout throughput ({lines:,} printed lines; {reps} repetitions)", ""]
    out += table
    out.append("")
    return out


def _memory(results: dict[str, Any]) -> list[str]:
    names = results["kernels"]
    mem = {n: results["memory"].get(n, {}) for n in names}
    rows: list[tuple[str, dict[str, Any], Callable[[Any], str]]] = []
    for when, title in (("after_startup", "after startup"), ("after_bench", "after the benchmarks")):
        x = {n: mem[n].get(when, {}) for n in names}
        kids = " / ".join(str(x[n].get("children", "—")) for n in names)
        rows.append((f"kernel process, {title}", {n: x[n].get("kernel_rss") for n in names}, mib))
        rows.append((f"child processes ({kids}), {title}",
                     {n: x[n].get("children_rss") for n in names}, mib))
        rows.append((f"**total**, {title}",
                     {n: (x[n]["kernel_rss"] + x[n]["children_rss"]) if x[n] else None for n in names}, mib))
    out = ["### Resident memory (RSS, idle)", ""]
    out += side_by_side(results, rows)
    out.append("")
    return out


# ---------------------------------------------------------------------- the file

def write_section(path: Path, section: str, name: str = "kernel-bench") -> None:
    """Replace the section ``name`` of ``path`` (between its ``<!-- name:start -->`` and
    ``<!-- name:end -->`` markers), or add it; everything else in the file is kept."""
    start_marker, end_marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if path.exists():
        text = path.read_text()
        start, end = text.find(start_marker), text.find(end_marker)
        if start != -1 and end > start:
            text = text[:start] + section + text[end + len(end_marker):]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        text = ("# Benchmarks\n\n"
                "Each section below is generated by a script and sits between its own "
                "`<!-- name:start -->` / `<!-- name:end -->` markers; re-running a script "
                "replaces only its section. See `bench/README.md`.\n\n" + section + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
