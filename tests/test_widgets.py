"""wrapperkernel.widgets against a real kernel, with the headless page playing the browser.

The kernel runs the cells through jupyter_client; ``HeadlessPage`` connects as the page
client does and sends the values a user would produce by moving a control. The tests
assert on what the user sees: the values the running cell gets, the values the page
gets, and the HTML of the outputs (first display and the re-renders that make a saved
notebook show the current state). The first part checks the pure parts without a kernel.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from headless_page import HeadlessPage
from kernel_helpers import KernelConnection, Message, running_kernel

from wrapperkernel import comms, widgets
from wrapperkernel.widgets._host import WidgetHost

WAIT_S = 20.0  # bound on every wait for the page or the kernel
REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.text = ""


class _Collector(HTMLParser):
    """Every element of an HTML fragment with its attributes and its own text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.elements.append(element)
        if tag not in ("input", "br", "img", "meta", "link"):
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1].text += data


def elements(html: str) -> list[Element]:
    parser = _Collector()
    parser.feed(html)
    parser.close()
    return parser.elements


def only(found: list[Element], what: str) -> Element:
    assert len(found) == 1, f"expected one {what}, found {len(found)}"
    return found[0]


def root_of(html: str) -> Element:
    return only([e for e in elements(html) if "data-wk-widget" in e.attrs], "widget root")


def control_of(html: str) -> Element:
    return only([e for e in elements(html) if "data-wk-control" in e.attrs], "control")


def label_of(html: str) -> Element:
    return only([e for e in elements(html) if e.tag == "label"], "label")


def persisted_value(html: str) -> Any:
    return json.loads(root_of(html).attrs["data-wk-value"] or "null")


def script_config(html: str) -> dict[str, Any]:
    """The config the page binder gets, read back from the output's script."""
    found = re.search(r"wrapperkernel_widgets\.bind\(document\.currentScript, (\{.*\})\);", html)
    assert found is not None, "no binder call in the output"
    return json.loads(found.group(1))


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON text: 0 is not 0.0, False is not 0."""
    return json.dumps(a) == json.dumps(b)


# --------------------------------------------------------------------------- without a kernel


def test_widget_html_has_label_control_and_current_value() -> None:
    slider = widgets.Slider(0, 10, value=5, label="Speed")
    html = slider._repr_html_()
    control, label = control_of(html), label_of(html)
    assert control.tag == "input" and control.attrs["type"] == "range"
    assert (control.attrs["min"], control.attrs["max"], control.attrs["step"]) == ("0", "10", "1")
    assert control.attrs["value"] == "5"
    assert label.attrs["for"] == control.attrs["id"] and label.text == "Speed"
    assert only([e for e in elements(html) if e.tag == "output"], "readout").text == "5"
    assert persisted_value(html) == 5
    assert script_config(html)["address"] == slider.address
    assert slider.address == f"/wrapperkernel/widgets/{root_of(html).attrs['data-wk-widget']}/value"
    assert "--jp-brand-color1" in html and "--jp-ui-font-color1" in html


@pytest.mark.parametrize(
    ("widget", "tag", "state"),
    [
        (widgets.Button("Go", value=0), "button", {"data-wk-clicks": "0"}),
        (widgets.Checkbox(False, label="On"), "input", {"type": "checkbox", "checked": None}),
        (widgets.Checkbox(True, label="On"), "input", {"type": "checkbox", "checked": True}),
        (widgets.Text("", label="Name"), "input", {"type": "text", "value": ""}),
        (widgets.Progress(0, max=10, label="Done"), "progress", {"value": "0", "max": "10"}),
        (widgets.Slider(0.0, 1.0, value=0.0, label="Alpha"), "input", {"value": "0.0"}),
    ],
    ids=["button", "checkbox-off", "checkbox-on", "text-empty", "progress-zero", "slider-zero"],
)
def test_falsy_values_are_rendered_as_values(
    widget: widgets.Widget, tag: str, state: dict[str, str | bool | None]
) -> None:
    """``state``: attribute -> value; True means present, None means absent."""
    html = widget._repr_html_()
    control = control_of(html)
    assert control.tag == tag
    for name, value in state.items():
        if value is None:
            assert name not in control.attrs
        elif value is True:
            assert name in control.attrs
        else:
            assert control.attrs.get(name) == value, name
    assert same_json(persisted_value(html), widget.value)
    assert same_json(script_config(html)["value"], widget.value)


def test_select_marks_the_selected_option_even_a_falsy_one() -> None:
    select = widgets.Select(["a", 0, False, "", None], value=False, label="Pick")
    html = select._repr_html_()
    options = [e for e in elements(html) if e.tag == "option"]
    assert [o.text for o in options] == ["a", "0", "False", "", "None"]
    assert [("selected" in o.attrs) for o in options] == [False, False, True, False, False]
    assert script_config(html)["options"] == ["a", 0, False, "", None]
    assert persisted_value(html) is False


def test_hostile_text_cannot_leave_the_script_or_the_attributes() -> None:
    evil = '</script><script>alert(1)</script>"><b>'
    text = widgets.Text(evil, label=evil)
    html = text._repr_html_()
    assert html.count("<script") == 1 and html.lower().count("</script") == 1
    assert control_of(html).attrs["value"] == evil
    assert label_of(html).text == evil
    assert script_config(html)["value"] == evil
    assert persisted_value(html) == evil


def test_values_are_checked_and_sliders_clamp_and_snap() -> None:
    slider = widgets.Slider(0, 10, value=5)
    slider.value = 42
    assert slider.value == 10
    slider.value = -3
    assert slider.value == 0
    with pytest.raises(ValueError, match="holds ints"):
        slider.value = 2.5
    with pytest.raises(TypeError):
        slider.value = True
    assert slider._from_page(3.6) == 4 and slider._from_page(11) == 10
    fine = widgets.Slider(0.0, 1.0, step=0.1)
    assert fine._from_page(0.30000000000000004) == 0.3
    assert isinstance(widgets.Slider(0, 10, 2.5).value, float)
    with pytest.raises(ValueError, match="less than max"):
        widgets.Slider(5, 5)
    with pytest.raises(ValueError, match="not one of the options"):
        widgets.Select(["a", "b"], value="c")
    with pytest.raises(ValueError, match="at least one option"):
        widgets.Select([])
    with pytest.raises(TypeError):
        widgets.Checkbox(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        widgets.Text(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        widgets.Button(value=-1)
    progress = widgets.Progress(5, max=10)
    progress.value = 11
    assert progress.value == 10
    progress.max = 4
    assert (progress.value, progress.max) == (4, 4)
    assert repr(widgets.Slider(0, 10, value=0, label="x")) == (
        "Slider(min=0, max=10, value=0, step=1, label='x')"
    )


def test_page_script_never_closes_its_element() -> None:
    source = (REPO_ROOT / "wrapperkernel" / "widgets" / "page.js").read_text()
    assert "</script" not in source.lower() and "<!--" not in source


def test_importing_widgets_does_not_import_ipython() -> None:
    code = "import sys, wrapperkernel.widgets; print('IPython' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert result.stdout.strip() == "False"


def test_changes_of_a_closed_widget_end_at_once() -> None:
    slider = widgets.Slider(0, 10)
    slider.close()
    changes = slider.changes()
    assert changes.closed
    assert list(changes) == []
    with pytest.raises(comms.CommsError, match="closed"):
        changes.get(timeout=0)


class FakeWidget:
    """A ``Rerenderable`` that records its re-renders; ``held`` plays the page's hold."""

    def __init__(self) -> None:
        self.held = False
        self.rerenders = 0

    def held_by_page(self) -> bool:
        return self.held

    def rerender(self) -> None:
        self.rerenders += 1


def test_host_flush_rerenders_pending_widgets_once_and_waits_for_a_held_one() -> None:
    # A debounce of an hour: only flush() (the post_execute hook) re-renders here.
    host = WidgetHost(debounce_s=3600)
    free, held, untouched = FakeWidget(), FakeWidget(), FakeWidget()
    held.held = True
    host.schedule(free)
    host.schedule(free)
    host.schedule(held)
    host.flush()
    assert (free.rerenders, held.rerenders, untouched.rerenders) == (1, 0, 0)
    host.flush()  # the held widget is still pending, the free one is not
    assert (free.rerenders, held.rerenders) == (1, 0)
    held.held = False
    host.flush()
    assert (free.rerenders, held.rerenders) == (1, 1)
    host.flush()
    assert (free.rerenders, held.rerenders) == (1, 1)


# --------------------------------------------------------------------------- with a kernel

@pytest.fixture(scope="module")
def page(kernel: KernelConnection) -> Iterator[HeadlessPage]:
    page = HeadlessPage(kernel.km.connection_file)
    yield page
    page.close()


def stdout_of(kernel: KernelConnection, msg_id: str) -> str:
    return "".join(
        m["content"]["text"]
        for m in kernel.messages("iopub", msg_id)
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )


def wait_line(kernel: KernelConnection, msg_id: str, tag: str) -> dict[str, Any]:
    """Wait for a line ``<tag> <json>`` printed by the cell; return the JSON."""
    kernel.wait_for_output(msg_id, f"{tag} ", timeout=WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while True:
        found = re.search(rf"^{tag} (.*)$", stdout_of(kernel, msg_id), re.MULTILINE)
        if found is not None:
            return json.loads(found.group(1))
        assert time.monotonic() < deadline, f"no complete {tag} line"
        time.sleep(0.05)


def widget_displays(msgs: list[Message], display_id: str, kind: str) -> list[str]:
    """The text/html of the ``kind`` messages (display_data/update_display_data) of a widget."""
    return [
        m["content"]["data"]["text/html"]
        for m in msgs
        if m["msg_type"] == kind and m["content"].get("transient", {}).get("display_id") == display_id
    ]


def page_values(page: HeadlessPage, address: str, count: int) -> list[Any]:
    """The next ``count`` values the page got for ``address`` (others are dropped)."""
    got: list[Any] = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the page got only {got} for {address}"
        try:
            seen_address, value = page.next_value(timeout=remaining)
        except queue.Empty as error:
            raise AssertionError(f"the page got only {got} for {address}") from error
        if seen_address == address:
            got.append(value)
    return got


PAGE_TO_PROGRAM = """
import json, time
from wrapperkernel import comms, widgets
from wrapperkernel.widgets._host import WidgetHost
w = {make}
seen = []
w.observe(seen.append)
w.display()
with w.changes() as changes:
    print("READY " + json.dumps({{"address": w.address, "display_id": w.display_id}}), flush=True)
    got = [changes.get(timeout=20) for _ in range({count})]
deadline = time.monotonic() + 5
while len(seen) < len(got) and time.monotonic() < deadline:
    time.sleep(0.01)
print("RESULT " + json.dumps({{"got": got, "value": w.value, "seen": seen}}), flush=True)
"""


@pytest.mark.parametrize(
    ("make", "sent", "expected"),
    [
        ('widgets.Button("Go")', [1, 2, 3], [1, 2, 3]),
        ('widgets.Slider(0, 10, value=5, label="Speed")', [0, 7, "x", 3.6, None, 11], [0, 7, 4, 10]),
        ("widgets.Slider(0.0, 1.0, step=0.1, value=0.5)", [0, 0.30000000000000004, 1], [0.0, 0.3, 1.0]),
        ('widgets.Select(["a", "b", 0, False, ""])', ["b", 0, "zzz", False, ""], ["b", 0, False, ""]),
        ("widgets.Checkbox(True)", [False, 1, True, False], [False, True, False]),
        ('widgets.Text("start")', ["", "hello", 5, "é </script>"], ["", "hello", "é </script>"]),
    ],
    ids=["button", "slider-int", "slider-float", "select", "checkbox", "text"],
)
def test_page_values_reach_value_observers_and_changes_while_the_cell_runs(
    kernel: KernelConnection, page: HeadlessPage, make: str, sent: list[Any], expected: list[Any]
) -> None:
    """``sent`` ends with a valid value: the cell stops at the last expected value, and
    values are handled in order, so every ignored one was reported in this cell."""
    msg_id = kernel.execute(PAGE_TO_PROGRAM.format(make=make, count=len(expected)))
    ready = wait_line(kernel, msg_id, "READY")
    for value in sent:
        page.send(ready["address"], value)
    result = wait_line(kernel, msg_id, "RESULT")
    assert same_json(result["got"], expected)
    assert same_json(result["seen"], expected)
    assert same_json(result["value"], expected[-1])
    cell = kernel.result(msg_id, timeout=WAIT_S)
    assert cell.status == "ok", cell.content
    ignored = len(sent) - len(expected)
    assert cell.stderr.count("ignored a value from the page") == ignored, cell.stderr
    # Persistence: right after the cell, its output was re-rendered with the last value.
    updates = widget_displays(cell.iopub, ready["display_id"], "update_display_data")
    assert updates, "no re-render after the cell"
    assert same_json(persisted_value(updates[-1]), expected[-1])


def test_button_on_click_gets_the_button_for_every_click(
    kernel: KernelConnection, page: HeadlessPage
) -> None:
    code = """
import json, threading
from wrapperkernel import comms, widgets
from wrapperkernel.widgets._host import WidgetHost
button = widgets.Button("Go")
calls = []
done = threading.Event()
@button.on_click
def clicked(b):
    calls.append((b is button, b.clicks))
    if len(calls) == 3:
        done.set()
button.display()
print("READY " + json.dumps({"address": button.address}), flush=True)
done.wait(20)
print("RESULT " + json.dumps({"calls": calls, "clicks": button.clicks, "value": button.value}))
"""
    msg_id = kernel.execute(code)
    ready = wait_line(kernel, msg_id, "READY")
    for clicks in (1, 2, 3):
        page.send(ready["address"], clicks)
    result = wait_line(kernel, msg_id, "RESULT")
    assert result == {"calls": [[True, 1], [True, 2], [True, 3]], "clicks": 3, "value": 3}


@pytest.mark.parametrize(
    ("make", "initial", "values", "expected"),
    [
        ("widgets.Button()", 0, [0, 3], [0, 3]),
        ("widgets.Slider(0, 10, value=5)", 5, [0, 7, 99], [0, 7, 10]),
        ('widgets.Select(["a", 0, False, ""])', "a", ["a", 0, False, ""], ["a", 0, False, ""]),
        ("widgets.Checkbox(True)", True, [True, False], [True, False]),
        ('widgets.Text("x")', "x", ["", "two words"], ["", "two words"]),
        ("widgets.Progress(5, max=10)", 5, [0, 2.5, 10, 11], [0, 2.5, 10, 10]),
    ],
    ids=["button", "slider", "select", "checkbox", "text", "progress"],
)
def test_setting_value_in_the_program_updates_the_page(
    kernel: KernelConnection,
    page: HeadlessPage,
    make: str,
    initial: Any,
    values: list[Any],
    expected: list[Any],
) -> None:
    code = f"""
import json
from wrapperkernel import comms, widgets
w = {make}
w.display()
for value in {values!r}:
    w.value = value
comms.sync()
print("RESULT " + json.dumps({{"address": w.address, "display_id": w.display_id, "value": w.value}}))
"""
    cell = kernel.run(code, timeout=WAIT_S)
    assert cell.status == "ok", cell.content
    result = wait_line(kernel, cell.reply["parent_header"]["msg_id"], "RESULT")
    assert same_json(page_values(page, result["address"], len(expected)), expected)
    assert same_json(result["value"], expected[-1])
    shown = widget_displays(cell.iopub, result["display_id"], "display_data")
    updates = widget_displays(cell.iopub, result["display_id"], "update_display_data")
    assert len(shown) == 1
    assert same_json(persisted_value(shown[0]), initial)
    # One re-render after the cell (the last value differs from the first), not one per set.
    assert len(updates) == 1
    assert same_json(persisted_value(updates[0]), expected[-1])


def test_displayed_output_names_the_widget_and_shows_its_label_and_value(
    kernel: KernelConnection, page: HeadlessPage
) -> None:
    code = """
import json
from wrapperkernel import comms, widgets
from wrapperkernel.widgets._host import WidgetHost
w = widgets.Slider(0, 10, value=0, label="Speed")
print("RESULT " + json.dumps({"address": w.address, "display_id": w.display_id}))
w
"""
    cell = kernel.run(code, timeout=WAIT_S)
    assert cell.status == "ok", cell.content
    result = wait_line(kernel, cell.reply["parent_header"]["msg_id"], "RESULT")
    # The bare last expression displays the widget (no execute_result, a display_data).
    assert "execute_result" not in cell.output_types
    shown = only_html(widget_displays(cell.iopub, result["display_id"], "display_data"))
    control, label = control_of(shown), label_of(shown)
    assert (control.tag, control.attrs["type"], control.attrs["value"]) == ("input", "range", "0")
    assert label.attrs["for"] == control.attrs["id"] and label.text == "Speed"
    assert persisted_value(shown) == 0
    assert script_config(shown)["address"] == result["address"]


def only_html(htmls: list[str]) -> str:
    assert len(htmls) == 1, f"expected one output, got {len(htmls)}"
    return htmls[0]


def _is_install(msg: Message) -> bool:
    html = msg["content"].get("data", {}).get("text/html", "")
    # The kernel's install call passes a literal config; widget outputs call the
    # installer too (after a page reload), with a variable.
    return msg["msg_type"] == "display_data" and "wrapperkernel_comm_install({" in html


def test_debounced_rerender_while_the_cell_runs_and_not_on_every_step(
    kernel: KernelConnection, page: HeadlessPage
) -> None:
    code = """
import json, time
from wrapperkernel import comms, widgets
from wrapperkernel.widgets._host import WidgetHost
w = widgets.Slider(0, 100, value=0)
w.display()
with w.changes() as changes:
    print("READY " + json.dumps({"address": w.address, "display_id": w.display_id}), flush=True)
    while changes.get(timeout=20) != 50:
        pass
print("GOT 50", flush=True)
time.sleep(2 * widgets.RERENDER_DEBOUNCE_S + 1)
print("SLEPT", flush=True)
"""
    msg_id = kernel.execute(code)
    ready = wait_line(kernel, msg_id, "READY")
    page.send_batch([(ready["address"], step) for step in range(1, 51)])
    cell = kernel.result(msg_id, timeout=WAIT_S)
    assert cell.status == "ok", cell.content
    updates = [
        (i, m) for i, m in enumerate(cell.iopub)
        if m["msg_type"] == "update_display_data"
        and m["content"]["transient"]["display_id"] == ready["display_id"]
    ]
    # 50 slider steps, one re-render: after the slider was still for the debounce time,
    # while the cell was still sleeping; nothing left to do after the cell.
    assert len(updates) == 1
    index, update = updates[0]
    assert persisted_value(update["content"]["data"]["text/html"]) == 50
    slept = next(
        i for i, m in enumerate(cell.iopub)
        if m["msg_type"] == "stream" and "SLEPT" in m["content"]["text"]
    )
    assert index < slept


def test_a_later_cell_rerenders_the_output_of_an_earlier_cell(
    kernel: KernelConnection, page: HeadlessPage
) -> None:
    first = kernel.run(
        "from wrapperkernel import widgets\nearlier = widgets.Checkbox(False, label='On')\n"
        "earlier.display()\nprint('ID', earlier.display_id)",
        timeout=WAIT_S,
    )
    display_id = first.stdout.split("ID ")[1].strip()
    assert widget_displays(first.iopub, display_id, "update_display_data") == []
    later = kernel.run("earlier.value = True", timeout=WAIT_S)
    updates = widget_displays(later.iopub, display_id, "update_display_data")
    assert len(updates) == 1 and persisted_value(updates[0]) is True
    assert "checked" in control_of(updates[0]).attrs
    # Nothing changed: the next cell re-renders nothing.
    quiet = kernel.run("earlier.value = True", timeout=WAIT_S)
    assert widget_displays(quiet.iopub, display_id, "update_display_data") == []


def test_page_changes_between_cells_are_rerendered_unless_the_page_holds_the_control(
    kernel: KernelConnection, page: HeadlessPage
) -> None:
    shown = kernel.run(
        "import json\nfrom wrapperkernel import widgets\nidle = widgets.Text('', label='T')\n"
        "idle.display()\nprint('ID', idle.display_id)",
        timeout=WAIT_S,
    )
    display_id = shown.stdout.split("ID ")[1].strip()
    config = script_config(only_html(widget_displays(shown.iopub, display_id, "display_data")))
    ids = {"display_id": display_id, "address": config["address"]}

    def rerendered_with(value: str, timeout: float) -> bool:
        try:
            kernel.find(
                "iopub",
                lambda m: m["msg_type"] == "update_display_data"
                and m["content"]["transient"].get("display_id") == ids["display_id"]
                and persisted_value(m["content"]["data"]["text/html"]) == value,
                timeout=timeout,
            )
        except AssertionError:
            return False
        return True

    # No cell runs: the re-render comes from the debounce alone.
    page.send(ids["address"], "typed while idle")
    assert rerendered_with("typed while idle", WAIT_S)
    # A held control (pointer down, input method composing) is not re-rendered ...
    page.send(config["events_address"], "hold")
    page.send(ids["address"], "composing")
    assert not rerendered_with("composing", 4 * widgets.RERENDER_DEBOUNCE_S)
    # ... until the page lets go.
    page.send(config["events_address"], "release")
    assert rerendered_with("composing", WAIT_S)
    value = kernel.run("print(idle.value)", timeout=WAIT_S)
    assert value.stdout == "composing\n"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("widgets.Slider(0, 10, value=0)", 0),
        ("widgets.Checkbox(False)", False),
        ('widgets.Text("")', ""),
        ("widgets.Progress(0, max=3)", 0),
    ],
    ids=["slider", "checkbox", "text", "progress"],
)
def test_a_rendering_that_binds_gets_the_programs_current_value(
    kernel: KernelConnection, page: HeadlessPage, make: str, expected: Any
) -> None:
    """A rendering that binds (first display, re-render, reloaded page) says "bound"; the
    program answers with its value on the widget's "current" address, so the page catches
    up with values that raced the output."""
    cell = kernel.run(f"from wrapperkernel import widgets\nw = {make}\nw.display()", timeout=WAIT_S)
    shown = [
        m["content"]["data"]["text/html"] for m in cell.outputs
        if m["msg_type"] == "display_data" and not _is_install(m)
    ]
    config = script_config(only_html(shown))
    page.send(config["events_address"], "bound")
    assert same_json(page_values(page, config["current_address"], 1), [expected])


def test_without_a_page_widgets_still_show_and_persist(kernel_env: Path) -> None:
    code = """
import time
from wrapperkernel import comms, widgets
from wrapperkernel.widgets._host import WidgetHost
started = time.monotonic()
a = widgets.Slider(0, 10, value=1)
a.display()
b = widgets.Progress(0, max=4)
b.display()
a.value = 0
b.value = 3
print("TOOK", round(time.monotonic() - started, 1))
"""
    with running_kernel() as kernel:
        cell = kernel.run(code, timeout=WAIT_S)
    assert cell.status == "ok", cell.content
    # One wait for a page that never connects (about 3 s), not one per widget.
    took = float(cell.stdout.split("TOOK ")[1])
    assert took < 6, took
    # The wait is said in the kernel's log, not in the user's output.
    assert "wrapperkernel.widgets" not in cell.stderr, cell.stderr
    # The page client's install script went out before the first widget's output.
    assert [m["msg_type"] for m in cell.outputs if m["msg_type"] == "display_data"][:1] == [
        "display_data"
    ]
    assert _is_install(next(m for m in cell.outputs if m["msg_type"] == "display_data"))
    shown = [m for m in cell.outputs if m["msg_type"] == "display_data" and not _is_install(m)]
    updates = [m for m in cell.outputs if m["msg_type"] == "update_display_data"]
    widget_ids = [m["content"]["transient"]["display_id"] for m in shown]
    assert len(widget_ids) == 2 and all(i.startswith("wrapperkernel-widget-") for i in widget_ids)
    persisted = {
        m["content"]["transient"]["display_id"]: persisted_value(m["content"]["data"]["text/html"])
        for m in updates
        if m["content"]["transient"]["display_id"] in widget_ids
    }
    assert persisted == {widget_ids[0]: 0, widget_ids[1]: 3}


def test_widgets_shown_before_any_page_follow_a_page_that_connects_later() -> None:
    """As in Voila, which runs the notebook before its page connects: the widgets'
    display() finds no page (the second widget of the cell does not wait again), and a
    page that connects afterwards steers the first and receives the second's values."""
    code = ("from wrapperkernel import widgets\n"
            "s = widgets.Slider(0, 10, value=1)\ns.display()\n"
            "t = widgets.Text('none')\nt.display()\nprint(s.value)")
    with running_kernel(env={"WRAPPERKERNEL_WAIT_FOR_CONNECTION_S": "0.5"}) as kernel:
        cell = kernel.run(code, timeout=WAIT_S)
        assert cell.status == "ok", cell.content
        assert cell.stdout == "1\n"
        assert "wrapperkernel.widgets" not in cell.stderr, cell.stderr
        shown = [m["content"]["data"]["text/html"] for m in cell.outputs
                 if m["msg_type"] == "display_data" and not _is_install(m)]
        slider, text = (script_config(html) for html in shown)
        page = HeadlessPage(kernel.km.connection_file)
        try:
            page.join(slider["client"]["kernel_id"])
            page.wait_connected(WAIT_S)
            page.send(slider["address"], 7)
            deadline = time.monotonic() + WAIT_S
            seen = None
            while time.monotonic() < deadline:
                seen = kernel.run("print(s.value)").stdout
                if seen == "7\n":
                    break
                time.sleep(0.1)
            assert seen == "7\n"
            assert kernel.run("t.value = f'saw {s.value}'").status == "ok"
            assert page_values(page, text["address"], 1) == ["saw 7"]
        finally:
            page.close()
