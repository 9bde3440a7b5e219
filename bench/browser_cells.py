"""The code the browser benchmark runs in notebook cells, one setup and one loop per path.

Each latency path shows a slider and an ack the page can see, then runs a loop that
reads the slider's value the way a user would write it and, on every change, writes
the value into the ack. The page (``browser_pages.py``) moves the slider and times the
ack's DOM update. Values are integers; the loop ends when it has seen ``last`` or when
nothing changed for ``idle_s`` (so a kernel whose loop never sees the page cannot hang
the run); it then prints ``seen <count> last <value>`` and, on a line
``seen_at <json>``, the ``time.time()`` at which it saw each value (to split the page's
round trip into its two halves; the page's clock is ``performance.timeOrigin``).

The ack's text is ``ack <value>`` (``ack ready`` once the loop runs), so the page can
tell a fresh ack from an old one.

Nothing here imports the benchmark's own modules: it is only text for cells.
"""

from __future__ import annotations

from dataclasses import dataclass

# The loop's turn: a short sleep, as a loop doing real work between reads would leave
# the CPU now and then. jupyter-ui-poll's loop spends its turn in poll(10) instead.
TURN_SLEEP_S = 0.001
ACK_ADDRESS = "/bench/ack"
SLIDER_MAX = 100_000


@dataclass(frozen=True)
class LatencyCells:
    setup: str
    loop: str  # format with last=, idle_s=


# --- wrapperkernel.widgets ----------------------------------------------------------------
# The slider is a wrapperkernel widget; the loop reads slider.value. The ack goes back
# with comms.send to an address that a script in the cell's output subscribes to and
# draws into a <div>: the page-side half of the address channel (docs/comms-api.md).

WK_WIDGETS_SETUP = f"""\
import json
import time
from IPython.display import HTML, display
from wrapperkernel import comms, widgets
slider = widgets.Slider(0, {SLIDER_MAX}, value=0, label="bench")
slider.display()
display(HTML('''<div class="wk-bench-ack">ack -</div>
<script>
(async () => {{
  const comm = globalThis.wrapperkernel_comm;
  await comm.ready;
  comm.subscribe("{ACK_ADDRESS}", (address, value) => {{
    for (const el of document.querySelectorAll(".wk-bench-ack")) el.textContent = "ack " + value;
  }});
  comm.send("{ACK_ADDRESS}/subscribed", true);
}})();
</script>'''))
comms.listen("{ACK_ADDRESS}/subscribed").get(timeout=15)
print("setup done")"""



# --- ipywidgets -----------------------------------------------------------------------------
# An IntSlider read by the loop (slider.value), and a Label the loop sets: JupyterLab's
# widget manager draws it. The same cells on every kernel; jupyter-ui-poll's variant
# calls poll(10) each turn, as its README shows.

IPYWIDGETS_SETUP = f"""\
import json
import time
import ipywidgets as w
from IPython.display import display
slider = w.IntSlider(value=0, min=0, max={SLIDER_MAX}, description="bench")
ack = w.Label(value="ack -")
ack.add_class("wk-bench-ack")
display(slider, ack)
print("setup done")"""

def _loop(indent: str, poll: str, ack: str) -> str:
    """The loop body at ``indent``: ``poll`` starts each turn (or nothing), ``ack`` tells
    the page about ``value``."""
    body = f"""\
value = slider.value
if value != last_seen:
    seen_at.append((value, time.time()))
    last_seen = value
    {ack}
    seen += 1
    idle_until = time.monotonic() + {{idle_s}}
    if value == {{last}}:
        break
elif time.monotonic() > idle_until:
    break
time.sleep({TURN_SLEEP_S})"""
    lines = ([poll] if poll else []) + body.splitlines()
    return "\n".join(indent + line for line in lines)


_IPYWIDGETS_ACK = 'ack.value = f"ack {{value}}"'

IPYWIDGETS_LOOP = f"""\
ack.value = "ack ready"
last_seen, seen, seen_at = slider.value, 0, []
idle_until = time.monotonic() + {{idle_s}}
while True:
{_loop("    ", "", _IPYWIDGETS_ACK)}
print("seen", seen, "last", last_seen)
print("seen_at", json.dumps(seen_at))"""

UI_POLL_LOOP = f"""\
from jupyter_ui_poll import ui_events
ack.value = "ack ready"
last_seen, seen, seen_at = slider.value, 0, []
idle_until = time.monotonic() + {{idle_s}}
with ui_events() as poll:
    while True:
{_loop("        ", "poll(10)", _IPYWIDGETS_ACK)}
print("seen", seen, "last", last_seen)
print("seen_at", json.dumps(seen_at))"""

WK_WIDGETS_LOOP = f"""\
comms.send("{ACK_ADDRESS}", "ready")
last_seen, seen, seen_at = slider.value, 0, []
idle_until = time.monotonic() + {{idle_s}}
while True:
{_loop("    ", "", f'comms.send("{ACK_ADDRESS}", value)')}
comms.sync()
print("seen", seen, "last", last_seen)
print("seen_at", json.dumps(seen_at))"""

WK_WIDGETS = LatencyCells(WK_WIDGETS_SETUP, WK_WIDGETS_LOOP)
IPYWIDGETS = LatencyCells(IPYWIDGETS_SETUP, IPYWIDGETS_LOOP)
IPYWIDGETS_UI_POLL = LatencyCells(IPYWIDGETS_SETUP, UI_POLL_LOOP)

# After the loop: did the page's change reach the kernel once the cell had ended?
AFTER_LOOP = "print('after the cell', slider.value)"


# --- program -> page (wrapperkernel's address channel) --------------------------------------

COMMS_START = """\
import time
import numpy as np
from wrapperkernel import comms
comms.start()
comms.listen("/bench/page-ready").get(timeout=15)
print("setup done")"""

THROUGHPUT = """\
started = time.perf_counter()
for i in range({count}):
    comms.send("/bench/tp", i)
sent = time.perf_counter()
comms.sync()
print("send_s", sent - started, "sync_s", time.perf_counter() - started)"""

# One value per frame, at the frame's time on the perf_counter clock; a late frame is sent
# at once (never skipped), so every sequence number is sent.
ANIMATION = """\
period = 1 / {fps}
{prepare}
started = time.perf_counter()
late = 0
for seq in range({frames}):
    wait = started + seq * period - time.perf_counter()
    if wait > 0:
        time.sleep(wait)
    elif wait < -period:
        late += 1
    {update}
    comms.send("/bench/frame", {value})
sent = time.perf_counter()
comms.sync()
print("send_s", sent - started, "sync_s", time.perf_counter() - started, "late", late)"""

ANIMATION_JSON = {"prepare": "", "update": "pass", "value": '{"seq": seq, "x": (seq % 600) / 600}'}
# 512 x 512 RGBA = 1 MiB, drawn with putImageData; the first 4 bytes carry seq, so each
# frame differs (send() snapshots the bytes at the call).
BINARY_SIDE = 512
ANIMATION_BINARY = {
    "prepare": f"pixels = np.full(({BINARY_SIDE}, {BINARY_SIDE}, 4), 255, dtype=np.uint8)",
    "update": "pixels.reshape(-1)[:4] = np.frombuffer(np.uint32(seq).tobytes(), np.uint8)",
    "value": '{"seq": seq, "pixels": pixels}',
}
