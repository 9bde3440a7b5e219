"""widgets.Chart: the points a page gets, how many messages carry them, what is saved.

Without a kernel: the point buffer under a stepped clock (how many messages a burst of
appends becomes, the window bound), the chart's checks of what it is given, its HTML
(the saved picture's data), and chart.js's merge run in Node on the program's own
messages, delivered in the orders the channel can produce. With a kernel and the
headless page: a loop's appends arrive as few messages that rebuild the program's
window exactly, a binding page gets the window, ``clear()`` reaches the page, and the
output re-rendered after the cell carries the last points.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from headless_page import HeadlessPage
from kernel_helpers import KernelConnection, running_kernel
from test_widgets import (
    WAIT_S,
    elements,
    page_values,
    persisted_value,
    script_config,
    wait_line,
    widget_displays,
)

from wrapperkernel import widgets
from wrapperkernel.widgets._chart import MIN_SEND_INTERVAL_S, PointBuffer

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART_JS = REPO_ROOT / "wrapperkernel" / "widgets" / "chart.js"


def delivered(messages: list[dict[str, Any]], window: int) -> dict[str, list[list[Any]]]:
    """What a page holds after ``messages`` in order, if none of them crossed: the last
    ``window`` points of each series, as [x, y]."""
    held: dict[str, list[list[Any]]] = {}
    for message in messages:
        if message["reset"]:
            held = {s["name"]: [] for s in message["series"]}
        for series in message["series"]:
            points = held.setdefault(series["name"], [])
            xs, ys = column(series["x"]), column(series["y"])
            points.extend([x, y] for x, y in zip(xs, ys, strict=True))
            del points[:-window]
    return held


def column(values: Any) -> list[Any]:
    """A message column as a list, as chart.js reads it: a JSON list as it is, packed
    little-endian float64 (the flusher's binary messages) with NaN as a gap (None)."""
    if isinstance(values, list):
        return values
    assert isinstance(values, bytes) and len(values) % 8 == 0, type(values)
    numbers = struct.unpack(f"<{len(values) // 8}d", values)
    return [None if math.isnan(v) else v for v in numbers]


def as_lists(value: dict[str, list[tuple[Any, Any]]]) -> dict[str, list[list[Any]]]:
    return {name: [list(point) for point in points] for name, points in value.items()}


# --------------------------------------------------------------------------- without a kernel


def test_a_burst_of_appends_becomes_one_message_per_interval_and_loses_nothing() -> None:
    buffer = PointBuffer(window=20_000, names=["loss"])
    series = buffer.get("loss")
    messages = []
    # 10,000 points over one second, the buffer asked after every one of them.
    for i in range(10_000):
        now = i * 1e-4
        buffer.add(series, None, float(i))
        message = buffer.take(now)
        if message is not None:
            messages.append(message)
    tail = buffer.take(1.0 + MIN_SEND_INTERVAL_S)
    assert tail is not None
    messages.append(tail)
    assert buffer.take(2.0) is None  # nothing new: nothing sent
    # One message at t=0, then one per interval: 30 in the second, and the tail.
    assert len(messages) == 31
    ys = [y for m in messages for s in m["series"] for y in s["y"]]
    assert ys == [float(i) for i in range(10_000)]
    assert [m["series"][0]["count"] for m in messages][-1] == 10_000
    assert all(not m["reset"] for m in messages)


def test_the_window_bounds_the_kept_points_and_a_message() -> None:
    buffer = PointBuffer(window=100, names=["a", "b"])
    for i in range(2_000):
        buffer.add(buffer.get("a"), None, float(i))
    buffer.add(buffer.get("b"), 5, 1.5)
    message = buffer.take(0.0)
    assert message is not None
    a, b = message["series"]
    assert (a["name"], a["count"], a["x"][0], a["x"][-1], len(a["y"])) == ("a", 2000, 1900, 1999, 100)
    assert (b["name"], b["count"], b["x"], b["y"]) == ("b", 1, [5], [1.5])
    snapshot = buffer.snapshot()
    assert snapshot["reset"] is True
    assert [len(s["x"]) for s in snapshot["series"]] == [100, 1]
    chart = widgets.Chart("y", window=3)
    chart.extend(range(10))
    assert chart.points() == [(7, 7.0), (8, 8.0), (9, 9.0)]


def test_append_and_extend_forms_and_running_indexes() -> None:
    chart = widgets.Chart(("loss", "val"))
    chart.append(0.5)
    chart.append(10, 0.25)
    chart.append(0.75, series="val")
    chart.append({"loss": 0.125, "val": 1})
    chart.append(20, {"val": 2})
    chart.extend([1.0, 2.0], series="val")
    chart.extend([30, 31], {"loss": [3, 4], "acc": (0.9, 0.95)})
    assert chart.series == ("loss", "val", "acc")
    assert chart.value == {
        "loss": [(0, 0.5), (10, 0.25), (2, 0.125), (30, 3.0), (31, 4.0)],
        "val": [(0, 0.75), (1, 1.0), (20, 2.0), (3, 1.0), (4, 2.0)],
        "acc": [(30, 0.9), (31, 0.95)],
    }
    chart.clear()
    assert chart.value == {"loss": [], "val": [], "acc": []}
    chart.append(7.0)
    assert chart.points("loss") == [(0, 7.0)]  # running indexes start again after clear()
    assert repr(chart) == "Chart(series=('loss', 'val', 'acc'), window=500, points=1, title='')"


def test_gaps_and_extreme_values_stay_json() -> None:
    chart = widgets.Chart("y")
    chart.extend([1.0, math.nan, math.inf, -math.inf, None, 10**400, 1e308, -1e308, 2])
    assert [y for _, y in chart.points()] == [1.0, None, None, None, None, None, 1e308, -1e308, 2.0]
    html = chart._repr_html_()
    config = script_config(html)  # parsed with json.loads: no NaN or Infinity in it
    assert config["value"]["series"][0]["y"] == [1.0, None, None, None, None, None, 1e308, -1e308, 2.0]
    json.dumps(config, allow_nan=False)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda c: c.append("0.5"), TypeError, "real number"),
        (lambda c: c.append(True), TypeError, "real number"),
        (lambda c: c.append(math.nan, 1.0), ValueError, "x must be finite"),
        (lambda c: c.append(10**400, 1.0), ValueError, "float's range"),
        (lambda c: c.append(1, 2, 3), TypeError, r"\(y\) or \(x, y\)"),
        (lambda c: c.append({"a": 1}, series="a"), TypeError, "not both"),
        (lambda c: c.append(1.0, series=3), TypeError, "name must be a str"),
        (lambda c: c.extend([1, 2], [1.0]), ValueError, "2 xs but 1 ys"),
        (lambda c: c.extend("123"), TypeError, "sequence of numbers"),
        (lambda c: c.extend(5), TypeError, "sequence of numbers"),
        (lambda c: c.points("nope"), ValueError, "not a series"),
        (lambda c: setattr(c, "value", 1), AttributeError, "setter|can't set"),
    ],
    ids=["str-y", "bool-y", "nan-x", "huge-x", "three-args", "dict-and-series", "series-type",
         "lengths", "str-column", "not-a-column", "unknown-series", "set-value"],
)
def test_wrong_input_says_what_is_wrong_and_changes_nothing(call: Any, error: type, match: str) -> None:
    chart = widgets.Chart("y")
    chart.append(1.0)
    with pytest.raises(error, match=match):
        call(chart)
    assert chart.value == {"y": [(0, 1.0)]}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"window": 0}, ValueError),
        ({"window": 2.5}, TypeError),
        ({"series": ("a", "a")}, ValueError),
        ({"series": [""]}, TypeError),
        ({"series": [f"s{i}" for i in range(17)]}, ValueError),
        ({"y_range": (1, 0)}, ValueError),
        ({"y_range": (0, math.inf)}, TypeError),
        ({"height": 10}, ValueError),
        ({"x_label": 3}, TypeError),
        ({"title": None}, TypeError),
    ],
)
def test_wrong_options_are_refused(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        widgets.Chart(**options)


def test_the_saved_html_carries_the_window_the_legend_and_the_last_points() -> None:
    evil = '</script><b>"x'
    chart = widgets.Chart(("loss", evil), window=4, title="Training", y_range=(0, 2),
                          x_label="step", y_label="loss")
    chart.extend(range(6), [1.0, 0.8, 0.6, 0.5, 0.45, 0.4])
    chart.append(1.5, series=evil)
    html = chart._repr_html_()
    assert html.count("<script") == 1 and html.lower().count("</script") == 1
    config = script_config(html)
    assert config["kind"] == "chart" and config["window"] == 4
    assert (config["y_range"], config["x_label"], config["y_label"]) == ([0, 2], "step", "loss")
    assert config["value"] == {"epoch": 0, "reset": True, "series": [
        {"name": "loss", "index": 0, "count": 6, "x": [2, 3, 4, 5], "y": [0.6, 0.5, 0.45, 0.4]},
        {"name": evil, "index": 1, "count": 1, "x": [0], "y": [1.5]},
    ]}
    assert persisted_value(html) == {"loss": [5, 0.4], evil: [0, 1.5]}
    keys = [e for e in elements(html) if "data-wk-series" in e.attrs]
    assert [k.attrs["data-wk-series"] for k in keys] == ["loss", evil]
    lasts = [e.text for e in elements(html) if e.attrs.get("class") == "wk-chart-last"]
    assert lasts == ["0.4", "1.5"]
    canvas = next(e for e in elements(html) if e.tag == "canvas")
    assert "data-wk-control" in canvas.attrs and canvas.attrs["role"] == "img"
    assert "Training" in (canvas.attrs["aria-label"] or "")
    assert 'registerView("chart"' in html
    # The other widgets do not carry the chart's script.
    assert 'registerView("chart"' not in widgets.Slider(0, 1)._repr_html_()


def test_chart_script_never_closes_its_element() -> None:
    source = CHART_JS.read_text()
    assert "</script" not in source.lower() and "<!--" not in source


NODE_MERGE = textwrap.dedent(
    """
    const vm = require("node:vm");
    const input = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
    const views = {};
    const sandbox = {wrapperkernel_widgets: {registerView: (kind, view) => { views[kind] = view; }}};
    sandbox.globalThis = sandbox;
    vm.runInNewContext(input.source, sandbox);
    const view = views.chart;
    const out = [];
    for (const run of input.runs) {
      let state;
      for (const message of run) state = view.merge(state, message, {window: input.window});
      const held = {};
      for (const s of state.series) held[s.name] = s.x.map((x, i) => [x, s.y[i]]);
      out.push(held);
    }
    console.log(JSON.stringify(out));
    """
)


def node_merge(runs: list[list[Any]], window: int) -> list[dict[str, list[list[Any]]]]:
    if shutil.which("node") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not installed; CI needs it for the page scripts' tests")
        pytest.skip("node is not installed")
    result = subprocess.run(
        ["node", "-e", NODE_MERGE],
        input=json.dumps({"source": CHART_JS.read_text(), "runs": runs, "window": window}),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_page_rebuilds_the_programs_window_whatever_order_snapshots_and_deltas_take() -> None:
    window = 8
    buffer = PointBuffer(window=window, names=["loss", "val"])
    config = buffer.snapshot()  # what the rendering carries: empty
    for i in range(3):
        buffer.add(buffer.get("loss"), None, float(i))
    first = buffer.take(0.0)  # delta: loss 0..2
    for i in range(3, 9):
        buffer.add(buffer.get("loss"), None, float(i))
    buffer.add(buffer.get("val"), 100, -1.0)
    bound = buffer.snapshot()  # the answer to "bound", taken now ...
    second = buffer.take(1.0)  # ... while the flusher took this delta (loss 3..8, val)
    buffer.add(buffer.get("loss"), None, 9.0)
    third = buffer.take(2.0)
    before_clear = {name: [[x, y] for x, y in zip(s.xs, s.ys, strict=True)]
                    for name, s in buffer.series.items()}
    assert before_clear == {"loss": [[x, float(x)] for x in range(2, 10)], "val": [[100, -1.0]]}
    buffer.clear()
    buffer.add(buffer.get("val"), None, 7.0)
    cleared = buffer.take(3.0)  # a reset: the clear and what came after it
    buffer.add(buffer.get("val"), None, 8.0)
    fourth = buffer.take(4.0)
    after_clear = {"loss": [], "val": [[0, 7.0], [1, 8.0]]}
    crossings = [
        [config, first, second, third],
        [config, first, bound, second, third],  # the snapshot, then a delta it covers
        [config, first, second, bound, third],  # the delta, then the snapshot
        [config, first, second, third, bound],  # an older snapshot, late
        [bound, third],  # a page that binds late: the window, then what follows
        [config, bound, first, second, third],  # deltas older than the snapshot
    ]
    through_clear = [
        [config, first, second, third, cleared, fourth],
        [config, first, second, third, cleared, bound, fourth],  # from before the clear
        [config, first, bound, second, cleared, third, fourth],  # a delta from before it
    ]
    got = node_merge(crossings + through_clear, window)
    for index, held in enumerate(got):
        expected = before_clear if index < len(crossings) else after_clear
        assert held == expected, f"run {index}: {held}"
    assert delivered([config, first, second, third], window) == before_clear


# --------------------------------------------------------------------------- with a kernel


@pytest.fixture(scope="module")
def page(kernel: KernelConnection) -> Iterator[HeadlessPage]:
    page = HeadlessPage(kernel.km.connection_file)
    yield page
    page.close()


LOOP = """
import json, time
from wrapperkernel import comms, widgets
chart = widgets.Chart(("loss", "acc"), window={window}, title="Training")
chart.display()
started = time.monotonic()
for step in range({steps}):
    chart.append({{"loss": 1 / (1 + step), "acc": step / {steps}}})
    if step % 1000 == 999:
        chart.append(float("nan"), series="loss")
chart.extend([1e308, -1e308], series="acc")
took = time.monotonic() - started
time.sleep(0.2)  # the last message leaves within one interval
comms.sync()
print("RESULT " + json.dumps({{"address": chart.address, "display_id": chart.display_id,
    "window": chart.value, "took": took, "wall": time.monotonic() - started}}), flush=True)
"""


def test_a_loop_of_appends_reaches_the_page_in_few_messages_and_is_saved(
    kernel: KernelConnection, page: HeadlessPage
) -> None:
    window, steps = 300, 20_000
    since = len(page.history)
    cell = kernel.run(LOOP.format(window=window, steps=steps), timeout=WAIT_S * 3)
    assert cell.status == "ok", cell.content
    result = wait_line(kernel, cell.reply["parent_header"]["msg_id"], "RESULT")
    messages = [value for _, address, value in page.history[since:] if address == result["address"]]
    # 40,020 appends; at most one message per interval of the time the sends took,
    # plus the first one and the tail.
    bound = math.floor(result["wall"] / MIN_SEND_INTERVAL_S) + 2
    assert 1 <= len(messages) <= bound, (len(messages), result["wall"])
    print(f"{2 * steps + 22} appends in {result['took']:.3f} s -> {len(messages)} messages")
    program_window = {name: [list(p) for p in points] for name, points in result["window"].items()}
    assert delivered(messages, window) == program_window
    # The loop's messages carried their columns as binary buffers, 8 bytes a number.
    packed = [s for m in messages for s in m["series"] if isinstance(s["x"], bytes)]
    assert packed and all(len(s["x"]) == len(s["y"]) for s in packed)
    assert len(program_window["loss"]) == window
    assert program_window["acc"][-2:] == [[20_000, 1e308], [20_001, -1e308]]
    assert None in [y for _, y in program_window["loss"]]  # the gap travelled
    # The output re-rendered after the cell carries the window: the saved picture.
    updates = widget_displays(cell.iopub, result["display_id"], "update_display_data")
    assert updates, "no re-render after the cell"
    saved = script_config(updates[-1])["value"]
    assert delivered([saved], window) == program_window
    assert persisted_value(updates[-1]) == {name: points[-1] for name, points in program_window.items()}


def test_a_binding_page_gets_the_window_and_clear_reaches_the_page(
    kernel: KernelConnection, page: HeadlessPage
) -> None:
    code = """
import json
from wrapperkernel import comms, widgets
chart = widgets.Chart("y", window=4)
chart.extend([1.0, 2.0, 3.0, 4.0, 5.0])
chart.display()
print("RESULT " + json.dumps({"address": chart.address, "display_id": chart.display_id}))
"""
    cell = kernel.run(code, timeout=WAIT_S)
    assert cell.status == "ok", cell.content
    ids = wait_line(kernel, cell.reply["parent_header"]["msg_id"], "RESULT")
    shown = widget_displays(cell.iopub, ids["display_id"], "display_data")
    config = script_config(shown[0])
    page.send(config["events_address"], "bound")
    [answer] = page_values(page, config["current_address"], 1)
    assert answer["reset"] is True and answer["epoch"] == 0
    assert delivered([answer], 4) == {"y": [[1, 2.0], [2, 3.0], [3, 4.0], [4, 5.0]]}

    since = len(page.history)
    later = kernel.run("chart.clear()\nchart.append(9.0)\nimport time; time.sleep(0.2)\ncomms.sync()",
                       timeout=WAIT_S)
    assert later.status == "ok", later.content
    messages = [v for _, a, v in page.history[since:] if a == ids["address"]]
    assert messages and messages[0]["reset"] is True and messages[0]["epoch"] == 1
    assert delivered(messages, 4) == {"y": [[0, 9.0]]}
    updates = widget_displays(later.iopub, ids["display_id"], "update_display_data")
    assert updates and delivered([script_config(updates[-1])["value"]], 4) == {"y": [[0, 9.0]]}


def test_many_appends_between_cells_are_still_few_messages(
    kernel: KernelConnection, page: HeadlessPage
) -> None:
    code = """
import json, time
from wrapperkernel import comms, widgets
chart = widgets.Chart("y", window=50)
chart.display()
started = time.monotonic()
for i in range(3000):
    chart.append(i)
    time.sleep(0.0002)
time.sleep(0.2)
comms.sync()
print("RESULT " + json.dumps({"address": chart.address, "wall": time.monotonic() - started}))
"""
    since = len(page.history)
    cell = kernel.run(code, timeout=WAIT_S * 2)
    assert cell.status == "ok", cell.content
    result = wait_line(kernel, cell.reply["parent_header"]["msg_id"], "RESULT")
    messages = [v for _, a, v in page.history[since:] if a == result["address"]]
    assert 1 <= len(messages) <= math.floor(result["wall"] / MIN_SEND_INTERVAL_S) + 2
    assert delivered(messages, 50) == {"y": [[i, float(i)] for i in range(2950, 3000)]}


def test_without_a_page_the_chart_still_shows_and_saves_its_points(kernel_env: Path) -> None:
    code = """
from wrapperkernel import widgets
chart = widgets.Chart("y", window=3)
chart.display()
for i in range(10):
    chart.append(i / 10)
print("ID", chart.display_id)
"""
    with running_kernel() as kernel:
        cell = kernel.run(code, timeout=WAIT_S)
    assert cell.status == "ok", cell.content
    display_id = cell.stdout.split("ID ")[1].strip()
    updates = widget_displays(cell.iopub, display_id, "update_display_data")
    assert updates, "no re-render after the cell"
    assert delivered([script_config(updates[-1])["value"]], 3) == {
        "y": [[7, 0.7], [8, 0.8], [9, 0.9]]}
