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
PACKAGES = ("ipykernel", "jupyter_client", "pyzmq", "ipython", "wrapperkernel")
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
    cand, base = results["candidate"], results["baseline"]
    label = results["labels"]
    a, b = label[cand], label[base]
    meta = results["meta"]
    out: list[str] = [START_MARKER, "", f"## Kernel benchmarks: {a} vs {b}", ""]
    out += _intro(results, a, b, meta)
    out += _targets(results, a, b)
    out += _startup(results, a, b)
    out += _round_trip(results, a, b)
    out += _throughput(results, a, b)
    out += _memory(results, a, b)
    if results["findings"]:
        out += ["### Findings during this run", ""]
        out += [f"- {finding}" for finding in results["findings"]]
        out.append("")
    out.append(END_MARKER)
    return "\n".join(out)


def _intro(results: dict[str, Any], a: str, b: str, meta: dict[str, Any]) -> list[str]:
    m = meta["machine"]
    v = m["versions"]
    p = meta["params"]
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
    lines = [
        f"Generated by `bench/run_bench.py{' --quick' if p['quick'] else ''}` on {m['date_utc']} "
        f"({'quick' if p['quick'] else 'full'} mode, {meta['duration_s']:.0f} s). "
        f"`{a}` is kernelspec `{results['candidate']}`, `{b}` is kernelspec "
        f"`{results['baseline']}`; both were measured in the same run, alternating "
        "(A B A B …) between repetitions so that machine noise hits both alike. "
        f"Ratio = {a} / {b}; lower is better except for throughput.",
        "",
        f"**Machine.** {m['cpu_model']}, {cores}, {m['ram_bytes'] / 2**30:.1f} GiB RAM; "
        f"{m['platform']}; Python {m['python']}; ipykernel {v['ipykernel']}, "
        f"jupyter_client {v['jupyter_client']}, pyzmq {v['pyzmq']}, IPython {v['ipython']}; "
        f"wrapperkernel {v['wrapperkernel']} at {commit}. Load average: {load}.",
        "",
        "**How.**",
        "",
        "- Each kernel is started by `jupyter_client.KernelManager` from its kernelspec, on "
        "127.0.0.1 over tcp, with a temporary IPYTHONDIR and runtime dir; every wait has a "
        "timeout and every process started is shut down (a leftover child is a finding). "
        "Both import from a bytecode cache filled by one unmeasured launch each "
        "(`PYTHONPYCACHEPREFIX` in the temp dir), as an installed package would.",
        f"- *Startup*: {p['launches']} fresh kernels each. The clock starts at the "
        "`km.start_kernel()` call. A client starts its channels at once and sends "
        f"`kernel_info_request` every {p['poll_ms']:.0f} ms until one is answered "
        f"(zmq reconnect interval {p['reconnect_ivl_ms']} ms; requests are only sent once the "
        "shell socket is connected, so no backlog builds up), then sends "
        "`execute_request(\"pass\")`, as a frontend does after kernel_info.",
        f"- *Round trip*: one warm kernel each; `execute_request(\"pass\")` until both the "
        "shell `execute_reply` and the IOPub `idle` status parented to it have arrived, read "
        f"with `get_msg` on the sockets. {p['warmup']} warm-up runs, then {p['samples']} "
        f"samples, alternating kernels every {p['block']} samples. "
        f"`execute_interactive` ({p['interactive_samples']} samples) is shown for reference.",
        f"- *stdout throughput*: `for i in range({p['lines']}): print(i)` on the warm "
        "kernels, read by a client with jupyter_client's default settings (socket "
        "high-water marks included) until `idle`; every line is checked against the "
        f"expected sequence. {p['reps']} repetitions each.",
        "- *Memory*: RSS (psutil) of the kernel process and of its child processes "
        "(wrapperkernel's worker), idle, after startup and after the benchmarks. RSS counts "
        "shared pages (the Python binary, libraries) once per process.",
        "",
    ]
    return lines


def _launch_stats(results: dict[str, Any], name: str, key: str) -> dict[str, Any]:
    return summarize([s[key] for s in results["launch"].get(name, [])])


def _throughput_rates(results: dict[str, Any], name: str) -> list[float]:
    return [s["lines_expected"] / s["elapsed_s"] for s in results["throughput"].get(name, [])]


def _targets(results: dict[str, Any], a: str, b: str) -> list[str]:
    cand, base = results["candidate"], results["baseline"]
    rows: list[list[str]] = []
    missed: list[str] = []

    def check(title: str, va: float | None, vb: float | None, fmt: Callable[[float | None], str],
              want: str, ok: Callable[[float, float], bool]) -> None:
        r = ratio(va, vb)
        if va is None or vb is None:
            verdict = "not measured"
            missed.append(f"{title}: not measured (see findings)")
        elif ok(va, vb):
            verdict = "**pass**"
        else:
            verdict = "**FAIL**"
            missed.append(f"{title}: {fmt(va)} vs {fmt(vb)} ({times(r)}; required {want})")
        rows.append([title, fmt(va), fmt(vb), times(r), want, verdict])

    ka = _stat(_launch_stats(results, cand, "kernel_info_s"), "median")
    kb = _stat(_launch_stats(results, base, "kernel_info_s"), "median")
    check("launch → kernel_info_reply (median)", ka, kb, ms, f"≤ {STARTUP_TARGET_RATIO}×",
          lambda x, y: x <= STARTUP_TARGET_RATIO * y)
    ra = _stat(summarize(results["roundtrip"].get(cand, [])), "median")
    rb = _stat(summarize(results["roundtrip"].get(base, [])), "median")
    check("execute round trip (median)", ra, rb, ms, f"≤ {ROUND_TRIP_TARGET_RATIO}×",
          lambda x, y: x <= ROUND_TRIP_TARGET_RATIO * y)
    ta = _stat(summarize(_throughput_rates(results, cand)), "median")
    tb = _stat(summarize(_throughput_rates(results, base)), "median")
    lost = sum(s["lines_lost"] for s in results["throughput"].get(cand, []))

    def line_rate(value: float | None) -> str:
        return "—" if value is None else f"{count(value)} lines/s"

    check("stdout throughput (median lines/s)", ta, tb, line_rate, "≥ 1×", lambda x, y: x >= y)
    lost_ok = bool(results["throughput"].get(cand)) and lost == 0
    rows.append([f"stdout lines lost by {a} (all repetitions)",
                 count(lost) if results["throughput"].get(cand) else "—",
                 count(sum(s["lines_lost"] for s in results["throughput"].get(base, []))),
                 "", "0", "**pass**" if lost_ok else "**FAIL**"])
    if not lost_ok:
        missed.append(f"{a} lost {lost:,} stdout lines")
    out = ["### Targets", ""]
    out += markdown_table(["target", a, b, "ratio", "required", "result"], rows)
    out.append("")
    if missed:
        out.append("Missed in this run: " + "; ".join(missed) + ".")
    else:
        out.append("All targets met in this run.")
    out.append("")
    return out


def _side_by_side(results: dict[str, Any], a: str, b: str,
                  rows: list[tuple[str, float | None, float | None, Callable[[Any], str]]],
                  with_ratio: bool = True) -> list[str]:
    table_rows = []
    for title, va, vb, fmt in rows:
        row = [title, fmt(va), fmt(vb)]
        if with_ratio:
            row.append(times(ratio(va, vb)))
        table_rows.append(row)
    header = ["", a, b] + (["ratio"] if with_ratio else [])
    return markdown_table(header, table_rows)


def _startup(results: dict[str, Any], a: str, b: str) -> list[str]:
    cand, base = results["candidate"], results["baseline"]
    rows: list[tuple[str, float | None, float | None, Callable[[Any], str]]] = []
    for key, title in (("kernel_info_s", "launch → kernel_info_reply"),
                       ("first_execute_s", "launch → first execute_reply (`pass`)"),
                       ("start_call_s", "of which `km.start_kernel()` call")):
        sa, sb = _launch_stats(results, cand, key), _launch_stats(results, base, key)
        n = min(sa.get("n", 0), sb.get("n", 0)) or max(sa.get("n", 0), sb.get("n", 0))
        keys = ("median",) if key == "start_call_s" else ("median", "p90", "p99")
        for stat in keys:
            name = _p99_label(int(n)) if stat == "p99" else stat
            rows.append((f"{title}, {name}", _stat(sa, stat), _stat(sb, stat), ms))
    na = len(results["launch"].get(cand, []))
    nb = len(results["launch"].get(base, []))
    out = [f"### Startup ({na} / {nb} fresh kernels)", ""]
    out += _side_by_side(results, a, b, rows)
    out.append("")
    return out


def _round_trip(results: dict[str, Any], a: str, b: str) -> list[str]:
    cand, base = results["candidate"], results["baseline"]
    sa = summarize(results["roundtrip"].get(cand, []))
    sb = summarize(results["roundtrip"].get(base, []))
    ia = summarize(results["roundtrip_interactive"].get(cand, []))
    ib = summarize(results["roundtrip_interactive"].get(base, []))
    n = int(min(sa.get("n", 0), sb.get("n", 0)))
    rows: list[tuple[str, float | None, float | None, Callable[[Any], str]]] = [
        ("median", _stat(sa, "median"), _stat(sb, "median"), ms),
        (_p99_label(n), _stat(sa, "p99"), _stat(sb, "p99"), ms),
        ("mean", _stat(sa, "mean"), _stat(sb, "mean"), ms),
        ("min", _stat(sa, "min"), _stat(sb, "min"), ms),
        ("max", _stat(sa, "max"), _stat(sb, "max"), ms),
        ("`execute_interactive`, median (reference)", _stat(ia, "median"), _stat(ib, "median"), ms),
    ]
    out = [f"### execute_request(\"pass\") round trip ({int(sa.get('n', 0))} / "
           f"{int(sb.get('n', 0))} samples)", ""]
    out += _side_by_side(results, a, b, rows)
    out.append("")
    return out


def _throughput(results: dict[str, Any], a: str, b: str) -> list[str]:
    cand, base = results["candidate"], results["baseline"]
    lines = results["meta"]["params"]["lines"]
    ta, tb = results["throughput"].get(cand, []), results["throughput"].get(base, [])
    rate_a, rate_b = summarize(_throughput_rates(results, cand)), summarize(_throughput_rates(results, base))
    el_a = summarize([s["elapsed_s"] for s in ta])
    el_b = summarize([s["elapsed_s"] for s in tb])

    def per_rep(samples: list[dict[str, Any]], key: str) -> str:
        return ", ".join(f"{s[key]:,}" for s in samples) or "—"

    def ordered(samples: list[dict[str, Any]]) -> str:
        return ("yes" if all(s["in_order"] for s in samples) else "**no**") if samples else "—"

    table = [
        ["elapsed, median", ms(_stat(el_a, "median")), ms(_stat(el_b, "median")),
         times(ratio(_stat(el_a, "median"), _stat(el_b, "median")))],
        ["lines/s, median", count(_stat(rate_a, "median")), count(_stat(rate_b, "median")),
         times(ratio(_stat(rate_a, "median"), _stat(rate_b, "median")))],
        ["lines/s, min – max",
         f"{count(_stat(rate_a, 'min'))} – {count(_stat(rate_a, 'max'))}",
         f"{count(_stat(rate_b, 'min'))} – {count(_stat(rate_b, 'max'))}", ""],
        ["lines received, per repetition", per_rep(ta, "lines_received"), per_rep(tb, "lines_received"), ""],
        ["lines lost, per repetition", per_rep(ta, "lines_lost"), per_rep(tb, "lines_lost"), ""],
        ["all lines in order", ordered(ta), ordered(tb), ""],
        ["lines arriving after `idle`", per_rep(ta, "late_lines"), per_rep(tb, "late_lines"), ""],
        ["stream messages, per repetition", per_rep(ta, "stream_messages"),
         per_rep(tb, "stream_messages"), ""],
    ]
    out = [f"### stdout throughput ({lines:,} printed lines; {len(ta)} / {len(tb)} repetitions)", ""]
    out += markdown_table(["", a, b, "ratio"], table)
    out.append("")
    return out


def _memory(results: dict[str, Any], a: str, b: str) -> list[str]:
    cand, base = results["candidate"], results["baseline"]
    ma, mb = results["memory"].get(cand, {}), results["memory"].get(base, {})
    rows: list[tuple[str, float | None, float | None, Callable[[Any], str]]] = []
    for when, title in (("after_startup", "after startup"), ("after_bench", "after the benchmarks")):
        xa, xb = ma.get(when, {}), mb.get(when, {})
        rows.append((f"kernel process, {title}", xa.get("kernel_rss"), xb.get("kernel_rss"), mib))
        rows.append((f"child processes ({xa.get('children', '—')} / {xb.get('children', '—')}), {title}",
                     xa.get("children_rss"), xb.get("children_rss"), mib))
        ta = xa["kernel_rss"] + xa["children_rss"] if xa else None
        tb = xb["kernel_rss"] + xb["children_rss"] if xb else None
        rows.append((f"**total**, {title}", ta, tb, mib))
    out = ["### Resident memory (RSS, idle)", ""]
    out += _side_by_side(results, a, b, rows)
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
