"""The browser benchmark's markdown section and its latency plot.

Every number comes from the results ``browser_bench.py`` measured in this run. A path
that could not be measured keeps its row, saying why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from report import markdown_table  # noqa: E402
from summary import summarize  # noqa: E402

SECTION = "browser-bench"
FLOOR_RATIO_GOAL = 2.0
P99_GOAL_MS = 20.0
GOAL_PATH = "wk-widgets"


def _cell_safe(text: str, limit: int = 240) -> str:
    """One line, no table separators."""
    return " ".join(text.split()).replace("|", "/")[:limit]


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def _acks(row: dict[str, Any]) -> list[float]:
    return [s["ackMs"] for s in row.get("samples", [])]


def _floor(row: dict[str, Any], key: str) -> list[float]:
    return [s[key] for s in row.get("floor_ms", []) if s.get(key) is not None]


def _halves(row: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(page -> loop, loop -> page) per event, from the loop's time.time() and the page's
    performance.timeOrigin-based clock."""
    seen = {int(value): at * 1000 for value, at in row.get("seen_at", [])}
    there, back = [], []
    for sample in row.get("samples", []):
        at = seen.get(int(sample["value"]))
        if at is not None:
            there.append(at - sample["epochMs"])
            back.append(sample["epochMs"] + sample["ackMs"] - at)
    return there, back


def _stat(samples: list[float], key: str) -> float | None:
    return summarize(samples).get(key) if samples else None


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**pass**" if ok else "**FAIL**")


def _seen_cell(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"error: {_cell_safe(row['error'])}"
    seen, sent = len(row.get("samples", [])), row.get("sent", 0)
    text = f"{seen} / {sent}"
    if row.get("stopped"):
        text += f" ({row['stopped']})"
    return text


def _after_cell(row: dict[str, Any]) -> str:
    after = row.get("after_cell")
    if after is None:
        return "—"
    value = after.rsplit(" ", 1)[-1]
    return f"slider.value = {value} in the next cell"


def _latency_table(rows: list[dict[str, Any]]) -> list[str]:
    table = []
    for row in rows:
        path = row["path"]
        acks = _acks(row)
        there, back = _halves(row)
        frames = [s["frameMs"] for s in row.get("samples", [])]
        wire = row.get("wire", {})
        table.append([
            path["label"], f"`{path['kernel']}`", f"`{path['comms_over_subshells']}`",
            _seen_cell(row), _ms(_stat(acks, "median")), _ms(_stat(acks, "p90")),
            _ms(_stat(acks, "p99")), _ms(_stat(acks, "max")), _ms(_stat(frames, "median")),
            _ms(_stat(there, "median")), _ms(_stat(back, "median")), _after_cell(row),
            f"{wire.get('to_subshell', '—')} / {wire.get('comm_msgs_sent', '—')}",
        ])
    return markdown_table(
        ["path", "kernelspec", "commsOverSubshells", "acks seen / events sent", "median",
         "p90", "p99", "max", "next frame, median", "page → loop, median",
         "loop → page, median", "after the cell", "page comm_msgs to a subshell"], table)


def _floor_table(rows: list[dict[str, Any]]) -> list[str]:
    table = []
    for row in rows:
        reply, done = _floor(row, "replyMs"), _floor(row, "doneMs")
        note = row.get("floor_error", "")
        table.append([row["path"]["label"], f"`{row['path']['kernel']}`", str(len(done)),
                      _ms(_stat(reply, "median")), _ms(_stat(reply, "p99")),
                      _ms(_stat(done, "median")), _ms(_stat(done, "p99")), note or ""])
    return markdown_table(["notebook of path", "kernelspec", "samples", "reply, median",
                           "reply, p99", "reply + idle, median", "reply + idle, p99", "note"],
                          table)


def _cpu(cpu: dict[str, float] | None, wall: float | None) -> str:
    if not cpu or not wall:
        return "—"
    order = sorted(cpu.items(), key=lambda item: -item[1])
    return "; ".join(f"{name} {seconds:.1f} s" for name, seconds in order if seconds >= 0.05) + \
        f" (wall {wall:.1f} s)"


def _throughput_rows(p2p: dict[str, Any], label: str) -> list[list[str]]:
    tp = p2p.get("throughput")
    if tp is None:
        return [[label, f"not measured: {_cell_safe(p2p.get('error', 'no result'))}"] + [""] * 6]
    if "error" in tp and "count" not in tp:
        return [[label, f"error: {_cell_safe(tp['error'])}"] + [""] * 6]
    span_s = (tp["last"] - tp["first"]) / 1000 if tp.get("first") is not None else None
    rate = (tp["count"] - 1) / span_s if span_s else None
    cell = dict(zip(tp["cell"].split()[::2], tp["cell"].split()[1::2], strict=False))
    sync_s = float(cell.get("sync_s", "nan"))
    return [[label, f"{tp['sent']:,}", f"{tp['count']:,}", f"{tp['sent'] - tp['count']:,}",
             f"{tp['outOfOrder']:,}", "—" if rate is None else f"{rate:,.0f}",
             f"{tp['sent'] / sync_s:,.0f}", _cpu(tp.get("cpu_s"), tp.get("wall_s"))]]


def _animation_rows(p2p: dict[str, Any], label: str) -> list[list[str]]:
    out = []
    for key, kind in (("animation", "JSON `{seq, x}`"), ("binary", "1 MiB RGBA frame (binary)")):
        stats = p2p.get(key)
        if stats is None or "sent" not in stats:
            reason = (stats or {}).get("error") or p2p.get("error") or "no result"
            out.append([label, kind, f"not measured: {_cell_safe(reason)}"] + [""] * 9)
            continue
        cell = dict(zip(stats.get("cell", "").split()[::2], stats.get("cell", "").split()[1::2],
                        strict=False))
        span = stats.get("arrival_span_ms")
        mib_s = (stats["bytes"] / 2**20) / (span / 1000) if span and stats["bytes"] else None
        raf = _stat(stats["raf_interval_ms"], "median")
        gaps = stats["arrival_gap_ms"]
        send_s = cell.get("send_s")
        out.append([
            label, kind, str(stats["sent"]), str(stats["received"]), str(stats["never_drawn"]),
            f"{stats['empty_frames']} of {stats['frames_in_window']}",
            "—" if raf is None else f"{1000 / raf:.1f} fps",
            f"{_ms(_stat(gaps, 'median'))} / {_ms(_stat(gaps, 'p99'))}",
            "—" if send_s is None else f"{float(send_s):.1f} s ({cell.get('late', '?')} late)",
            "—" if mib_s is None else f"{mib_s:.1f}",
            _cpu(stats.get("cpu_s"), stats.get("wall_s")),
            _cell_safe(stats.get("error", "")),
        ])
    return out


def _goals(results: dict[str, Any]) -> list[str]:
    rows = {row["path"]["key"]: row for row in results["latency"]}
    goal = rows.get(GOAL_PATH, {})
    acks = _acks(goal)
    floor = _floor(goal, "doneMs")
    median, p99 = _stat(acks, "median"), _stat(acks, "p99")
    floor_median = _stat(floor, "median")
    measured = bool(acks) and floor_median is not None and len(acks) == goal.get("sent")
    ratio = median / floor_median if measured and median is not None and floor_median else None
    diag = {row["path"]["key"]: row for row in results.get("nodelay", {}).get("latency", [])}
    diag_goal = diag.get(GOAL_PATH, {})
    diag_median = _stat(_acks(diag_goal), "median")
    diag_floor = _stat(_floor(diag_goal, "doneMs"), "median")
    diag_ratio = diag_median / diag_floor if diag_median and diag_floor else None
    p2p = results["program_to_page"]
    tp = p2p.get("throughput", {})
    lost = tp["sent"] - tp["count"] if "count" in tp else None
    anim = p2p.get("animation", {})
    binary = p2p.get("binary", {})
    table = [
        ["`wrapperkernel.widgets` latency median ≤ 2× the floor (page's kernel_info, reply + idle)",
         f"{_ms(median)} vs {_ms(floor_median)} ({'—' if ratio is None else f'{ratio:.2f}×'})",
         _verdict(None if ratio is None else ratio <= FLOOR_RATIO_GOAL)],
        ["the same, both on the TCP_NODELAY server (diagnosis: the floor without the ~40 ms "
         "Nagle stall)",
         f"{_ms(diag_median)} vs {_ms(diag_floor)} "
         f"({'—' if diag_ratio is None else f'{diag_ratio:.2f}×'})",
         _verdict(None if diag_ratio is None else diag_ratio <= FLOOR_RATIO_GOAL)],
        ["`wrapperkernel.widgets` latency p99 ≤ 20 ms", _ms(p99),
         _verdict(None if not measured or p99 is None else p99 <= P99_GOAL_MS)],
        ["every event seen by the running loop (`wrapperkernel.widgets`)",
         f"{len(acks)} / {goal.get('sent', 0)}",
         _verdict(None if not goal else len(acks) == goal.get("sent") and not goal.get("missed"))],
        ["program → page values lost = 0", "—" if lost is None else f"{lost:,}",
         _verdict(None if lost is None else lost == 0 and tp.get("outOfOrder") == 0)],
        ["60 fps animation (JSON): 0 frames dropped",
         "—" if "never_drawn" not in anim else
         f"{anim['never_drawn']} values never drawn, {anim['empty_frames']} frames without a new value",
         _verdict(None if "never_drawn" not in anim else
                  anim["never_drawn"] == 0 and anim["empty_frames"] == 0)],
        ["60 fps animation (1 MiB binary): 0 frames dropped",
         "—" if "never_drawn" not in binary else
         f"{binary['never_drawn']} values never drawn, {binary['empty_frames']} frames without a new value",
         _verdict(None if "never_drawn" not in binary else
                  binary["never_drawn"] == 0 and binary["empty_frames"] == 0)],
    ]
    return markdown_table(["goal", "measured", "result"], table)


def _intro(results: dict[str, Any], plot_link: str) -> list[str]:
    meta = results["meta"]
    machine = meta["machine"]
    versions = {**machine["versions"], **meta.get("versions", {})}
    sizes = meta["sizes"]
    commit = machine["commit"] + (" with uncommitted changes under wrapperkernel/"
                                  if machine["dirty"] else "")
    load = ", ".join(f"{x:.2f}" for x in machine["loadavg_at_start"])
    load_end = ", ".join(f"{x:.2f}" for x in meta.get("loadavg_at_end", ()))
    return [
        f"Generated by `bench/browser_bench.py{' --quick' if meta['quick'] else ''}` on "
        f"{machine['date_utc']} ({'quick' if meta['quick'] else 'full'} mode, "
        f"{meta['duration_s']:.0f} s in all), wrapperkernel at `{commit}`.",
        "",
        f"**Machine.** {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"{machine['ram_bytes'] / 2**30:.1f} GiB RAM; {machine['platform']}; Python "
        f"{machine['python']}. Chromium {meta.get('chromium', '?')} (headless, Playwright "
        f"{versions.get('playwright')}), JupyterLab {versions.get('jupyterlab')}, Jupyter "
        f"Server {versions.get('jupyter_server')} (tornado {versions.get('tornado')}), "
        f"ipykernel {versions.get('ipykernel')}, ipywidgets {versions.get('ipywidgets')}, "
        f"jupyter-ui-poll {versions.get('jupyter-ui-poll')}. Load average (1, 5, 15 min) at "
        f"the start {load}; at the end {load_end}. Everything (server, kernels, Chromium, "
        "this script) shares the 2 cores.",
        "",
        "**How.**",
        "",
        "- One Jupyter Server with JupyterLab on 127.0.0.1 (the browser tests' "
        "`start_lab_server`, `--LabApp.expose_app_in_browser` so the page can reach its "
        "kernel connection), one headless Chromium. Each path gets a fresh browser context, "
        "JupyterLab's `commsOverSubshells` set through the settings API (then a reload), and "
        "a new notebook; its kernel is shut down afterwards.",
        f"- *Latency*: a setup cell shows a slider and an ack; a second cell runs a loop that "
        f"reads the slider's value every turn (`time.sleep(0.001)` per turn; jupyter-ui-poll's "
        "loop also calls `poll(10)` inside `with ui_events() as poll`) and, on a new value, "
        "writes it into the ack. `wrapperkernel.widgets`: `widgets.Slider`, read as "
        "`slider.value`; the ack is `comms.send(\"/bench/ack\", value)`, which a script in the "
        "cell's output subscribes to (`wrapperkernel_comm.subscribe`) and writes into a "
        "`<div>`. ipywidgets: `IntSlider`, read as `slider.value`; the ack is a `Label` "
        "whose value the loop sets. One page script does every event: it sets the range "
        "input's value and dispatches `input` (wrapperkernel.widgets), or dispatches an "
        "ArrowRight `keydown` on noUiSlider's handle (ipywidgets' keyboard support: one step), "
        "starts the clock (`performance.now()`) at the dispatch and stops it when a "
        "MutationObserver sees the ack's text change to that value (the DOM update); "
        "*next frame* is the following `requestAnimationFrame`. Then a random 5–25 ms "
        f"pause. {sizes['events']} events per path. The first event waits at most 5 s, later "
        "ones 2 s; a loop that sees nothing ends by itself 8 s after its last change, and the "
        "next cell prints `slider.value` (*after the cell*: the value reached the kernel only "
        "then). *page → loop* / *loop → page* split each round trip at the loop's "
        "`time.time()` when it saw the value (the page's clock is `performance.timeOrigin` + "
        "`performance.now()`; both read the system clock, so the split is good to about a "
        "millisecond). The page's kernel websocket messages are recorded, to count the "
        "`comm_msg`s JupyterLab sent to a subshell.",
        f"- *Floor*: {sizes['kernel_infos']} `kernel_info` round trips from the page over the "
        "notebook's own kernel connection (`sessionContext.session.kernel.requestKernelInfo()`, "
        "5–25 ms apart, kernel idle), on each path's notebook: *reply* is the arrival of the "
        "`kernel_info_reply` (`kernel.anyMessage`), *reply + idle* the resolved promise "
        "(JupyterLab waits for the idle status too).",
        f"- *Program → page* (wrapperkernel's address channel): a page subscriber counts the "
        f"values of `for i in range({sizes['throughput_values']:,}): comms.send(\"/bench/tp\", i)` "
        "(then `comms.sync()`), checks their order, and times the first to the last arrival. "
        f"*Animation*: a cell sends one value per frame at 60 fps for {sizes['animation_s']:g} s "
        f"({sizes['binary_s']:g} s for the binary run), "
        "paced by `time.perf_counter()` (a late frame is sent at once, never skipped); a "
        "`requestAnimationFrame` loop draws the newest value on a canvas (a bar; for the "
        "binary run, the 512×512 RGBA frame with `putImageData`). *never drawn*: sequence "
        "numbers no frame drew (overwritten by a newer value, or lost); *frames without a "
        "new value*: frames between the first and the last draw that had nothing new. "
        "CPU seconds of each process group over the run (psutil). These runs are measured "
        "in a Chromium driven over the DevTools protocol with only `Target` and `Runtime` "
        "(`bench/browser_cdp.py`; cells run through JupyterLab's own "
        "`notebook:run-cell-and-insert-below`), because Playwright enables the `Network` "
        "domain, so Chromium copies every websocket frame it receives to Playwright "
        "(base64 for binary frames) and Playwright's driver passes it on to this script; "
        "the same runs under Playwright are shown beside them for the share of that cost.",
        "- *Diagnosis*: the wrapperkernel paths and the program → page runs again on a second "
        "server whose kernel websockets have TCP_NODELAY (`bench/browser_nodelay.py`, a server "
        "extension loaded for this run only): Jupyter Server never sets it, and tornado turns "
        "it off after the websocket upgrade, so a small frame that follows another one waits "
        "for the browser's delayed ACK (~40 ms).",
        "",
        f"![Latency distributions per path]({plot_link})",
        "",
    ]


def render(results: dict[str, Any], plot_path: Path, out_path: Path) -> str:
    base = out_path.parent if str(out_path) != "-" else Path.cwd()
    plot_link = os.path.relpath(plot_path, base)
    nodelay = results.get("nodelay", {})
    lines = [f"<!-- {SECTION}:start -->", "",
             "## Browser: a slider to a running loop and back, values to a canvas", ""]
    lines += _intro(results, plot_link)
    lines += ["### Goals (last run)", ""] + _goals(results) + [""]
    lines += ["### Latency: slider input event → running loop → ack in the page", ""]
    lines += _latency_table(results["latency"]) + [""]
    lines += ["### Floor: the page's own kernel_info round trip", ""]
    lines += _floor_table(results["latency"]) + [""]
    p2p_header = ["server; browser", "values sent", "received", "lost", "out of order",
                  "values/s (page, first → last)", "values/s (cell, to `sync()`)", "CPU"]
    anim_header = ["server; browser", "values", "sent", "received", "never drawn",
                   "frames without a new value", "page frame rate", "arrival gap median / p99",
                   "cell's send time", "MiB/s (page)", "CPU", "error"]
    sources = [
        (results.get("program_to_page", {}), "as shipped; Chromium without Playwright"),
        (results.get("program_to_page_playwright", {}), "as shipped; Chromium under Playwright"),
        (nodelay.get("program_to_page", {}), "TCP_NODELAY (diagnosis); without Playwright"),
    ]
    tp_rows, anim_rows = [], []
    for p2p, label in sources:
        if p2p:
            tp_rows += _throughput_rows(p2p, label)
            anim_rows += _animation_rows(p2p, label)
    lines += ["### Program → page throughput (wrapperkernel)", ""]
    lines += markdown_table(p2p_header, tp_rows) + [""]
    lines += ["### Animation at 60 fps, drawn on a canvas (wrapperkernel)", ""]
    lines += markdown_table(anim_header, anim_rows) + [""]
    if nodelay.get("latency"):
        lines += ["### Diagnosis: the same server with TCP_NODELAY on kernel websockets", ""]
        lines += _latency_table(nodelay["latency"]) + [""]
        lines += _floor_table(nodelay["latency"]) + [""]
    findings = []
    blocks = (("", results, "program_to_page"), ("under Playwright: ", results,
              "program_to_page_playwright"), ("TCP_NODELAY server: ", nodelay, "program_to_page"))
    for scope, block, p2p_key in blocks:
        for row in block.get("latency", []) if p2p_key == "program_to_page" else []:
            if "error" in row:
                findings.append(f"{scope}{row['path']['label']}: {_cell_safe(row['error'], 400)}")
        p2p = block.get(p2p_key, {})
        for key in ("throughput", "animation", "binary"):
            if "error" in p2p.get(key, {}):
                findings.append(f"{scope}{key}: {_cell_safe(p2p[key]['error'], 400)}")
        if "error" in p2p:
            findings.append(f"{scope}program → page: {_cell_safe(p2p['error'], 400)}")
    if findings:
        lines += ["### Findings during this run", ""] + [f"- {f}" for f in findings] + [""]
    lines.append(f"<!-- {SECTION}:end -->")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """ECDF of each path's latency (log x), the floors dashed; paths with no sample are
    named in the legend."""
    figure, axes = plt.subplots(figsize=(10, 7.5), dpi=110)
    series = [(row, "") for row in results["latency"]]
    series += [(row, " [TCP_NODELAY]") for row in results.get("nodelay", {}).get("latency", [])]
    for row, suffix in series:
        acks = sorted(_acks(row))
        label = row["path"]["label"] + suffix
        if not acks:
            seen = "error" if "error" in row else f"{len(acks)} of {row.get('sent', 0)} events seen"
            axes.plot([], [], " ", label=f"{label}: not seen while the cell ran ({seen})")
            continue
        ys = [(i + 1) / len(acks) for i in range(len(acks))]
        axes.step(acks, ys, where="post", linestyle="-" if not suffix else ":",
                  label=f"{label} (n={len(acks)}, median {acks[len(acks) // 2]:.1f} ms)")
    floors = [(row, "") for row in results["latency"] if row["path"]["key"] == GOAL_PATH]
    floors += [(row, " [TCP_NODELAY]") for row in results.get("nodelay", {}).get("latency", [])
               if row["path"]["key"] == GOAL_PATH]
    for row, suffix in floors:
        done = sorted(_floor(row, "doneMs"))
        if done:
            ys = [(i + 1) / len(done) for i in range(len(done))]
            axes.step(done, ys, where="post", color="black" if suffix else "grey",
                      linestyle=":" if suffix else "--",
                      label=f"floor: the page's kernel_info, reply + idle (wrapperkernel){suffix}")
    axes.axvline(P99_GOAL_MS, color="red", linewidth=0.8, linestyle="-.", label="20 ms (p99 goal)")
    axes.set_xscale("log")
    axes.set_xlabel("slider input event → ack in the page DOM (ms, log scale)")
    axes.set_ylabel("fraction of events")
    axes.set_title("Slider → running loop → page, JupyterLab in headless Chromium")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2,
                frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
