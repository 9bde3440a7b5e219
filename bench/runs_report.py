"""Issue 13's targets against xeus-python over several full runs, side by side.

Each target is a ratio within one run, and the issue asks for at least three full runs.
This script reads the ``--json`` files of full runs of ``run_bench.py`` (launch, execute
round trip, stdout) and ``comm_bench.py`` (relayed comm echo, client -> kernel
comm_msgs/s), computes each run's targets exactly as that script's own report does, and
writes the ``three-kernel-runs`` section of docs/benchmarks.md: one column per run, and a
target holds only if it held in every run.

    .venv/bin/python bench/runs_report.py --kernel-runs a.json b.json c.json \\
        --comm-runs d.json e.json f.json [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import comm_report
import report
from comm_cells import B, K, X

SECTION = "three-kernel-runs"
REFERENCE_LABEL = "xeus-python"
COMM_LABELS = {K: "wrapperkernel", B: "ipykernel", X: REFERENCE_LABEL}


def kernel_targets(results: dict[str, Any]) -> report.Targets:
    return report.target_checks(results)


def comm_targets(data: dict[str, Any]) -> report.Targets:
    comms = data.get("comms")
    if not comms:
        raise SystemExit("a comm_bench JSON without its three-kernel phase ('comms')")
    ref = X if X in comms["kernels"] or X in comms["unsupported"]["frontend"] else None
    return comm_report.comm_targets(comms, COMM_LABELS, K, B, ref)


def run_heading(meta: dict[str, Any], script: str) -> str:
    machine = meta.get("machine", meta)
    dirty = " (uncommitted changes)" if machine.get("dirty") else ""
    return (f"{script} {machine.get('date_utc', '?')}, {machine.get('commit', '?')}{dirty}, "
            f"{meta.get('duration_s', 0):.0f} s")


def rows_of(targets: report.Targets) -> dict[str, list[str]]:
    """Rows against xeus-python, and the 'lost' rows, by title."""
    return {row[0]: row for row in targets.rows
            if row[2].startswith(REFERENCE_LABEL) or row[0].startswith(("stdout lines lost",
                                                                 "client→kernel comm_msgs lost"))}


def cell(row: list[str] | None) -> str:
    if row is None:
        return "not in this run"
    verdict = row[-1]
    if verdict.startswith("**"):
        mark = "pass" if "pass" in verdict else "**fail**"
        if row[4]:  # a ratio
            return f"{row[1]} vs {row[3]} = {row[4]}: {mark}"
        return f"{row[1]}: {mark}"
    if verdict.startswith(f"{REFERENCE_LABEL} cannot"):
        return f"{REFERENCE_LABEL} cannot (why: the comm-bench section)"
    return verdict  # why it could not be measured


def verdict(cells: list[list[str] | None]) -> str:
    if any(row is None for row in cells):
        return "not measured in every run"
    marks = [row[-1] for row in cells]  # type: ignore[index]
    if all(mark.startswith(f"{REFERENCE_LABEL} cannot") for mark in marks):
        return f"— ({REFERENCE_LABEL} cannot, every run)"
    if all(mark == "**pass**" for mark in marks):
        return "**pass** (every run)"
    if any(mark == "**FAIL**" for mark in marks):
        passed = sum(mark == "**pass**" for mark in marks)
        return f"**fail** (passed in {passed} of {len(marks)})"
    return "not measured (see the runs)"


def render(kernel_runs: list[dict[str, Any]], comm_runs: list[dict[str, Any]]) -> str:
    out = [f"<!-- {SECTION}:start -->", "",
           "## Issue 13's targets against xeus-python, run by run", "",
           f"Written by `bench/runs_report.py` from {len(kernel_runs)} full runs of "
           f"`bench/run_bench.py` and {len(comm_runs)} of `bench/comm_bench.py`, each target "
           "computed as that script's own report does (the sections below show the last run "
           "of each in full). A ratio is wrapperkernel's value over xeus-python's in the same "
           "run. A target holds only if it held in every run.", ""]
    for title, runs, checks in (("Launch, execute round trip, stdout (`run_bench.py`)",
                                 kernel_runs, kernel_targets),
                                ("Relayed comms (`comm_bench.py`)", comm_runs, comm_targets)):
        if not runs:
            continue
        per_run = [rows_of(checks(data)) for data in runs]
        titles: list[str] = []
        for rows in per_run:
            titles += [t for t in rows if t not in titles]
        out += [f"### {title}", ""]
        script = "run_bench" if checks is kernel_targets else "comm_bench"
        out += [f"- run {i}: {run_heading(data['meta'], script)}"
                for i, data in enumerate(runs, 1)] + [""]
        table = []
        for target in titles:
            cells = [rows.get(target) for rows in per_run]
            want = next((row[5] for row in cells if row is not None), "")
            table.append([target, want] + [cell(row) for row in cells] + [verdict(cells)])
        out += report.markdown_table(
            ["target", "required"] + [f"run {i}" for i in range(1, len(runs) + 1)]
            + ["over the runs"], table)
        out.append("")
    out.append(f"<!-- {SECTION}:end -->")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-runs", nargs="*", default=[], type=Path,
                        help="run_bench.py --json files of full runs")
    parser.add_argument("--comm-runs", nargs="*", default=[], type=Path,
                        help="comm_bench.py --json files of full runs")
    parser.add_argument("--out", default="-", help="the file whose section is replaced; '-' prints")
    args = parser.parse_args(argv)
    kernel_runs = [json.loads(p.read_text()) for p in args.kernel_runs]
    comm_runs = [json.loads(p.read_text()) for p in args.comm_runs]
    for path, data in zip(args.kernel_runs, kernel_runs, strict=True):
        if data.get("meta", {}).get("params", {}).get("quick") or \
                data.get("meta", {}).get("params", {}).get("headline"):
            raise SystemExit(f"{path}: not a full run (quick or headline mode)")
    section = render(kernel_runs, comm_runs)
    if args.out == "-":
        print(section)
    else:
        report.write_section(Path(args.out), section, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
