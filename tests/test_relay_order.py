"""Comm messages that reach the kernel before a cell are handled before that cell runs.

Relayed comm messages are handled on the worker's dispatcher thread and cells on its
main thread; without a barrier a cell could read a widget value from before an update
the page sent first (ipykernel, handling everything in order, never does).
"""

from __future__ import annotations

from kernel_helpers import KernelConnection

UPDATES = 10


def test_a_widget_update_sent_before_a_cell_is_applied_when_it_runs(
    kernel: KernelConnection,
) -> None:
    # A slow observer makes each update take a while on the dispatcher thread, so a cell
    # that did not wait for it would print the previous value.
    created = kernel.run("import time, ipywidgets as w\ns = w.IntSlider(value=0, max=10**9)\n"
                         "s.observe(lambda change: time.sleep(0.05), 'value')")
    [comm_id] = [
        m["content"]["comm_id"] for m in created.iopub
        if m["msg_type"] == "comm_open"
        and m["content"]["data"].get("state", {}).get("_model_name") == "IntSliderModel"
    ]
    seen = []
    for value in range(1, UPDATES + 1):
        # Same client, same socket: the kernel receives the update before the cell.
        kernel.send("comm_msg", {"comm_id": comm_id, "data": {
            "method": "update", "state": {"value": value}, "buffer_paths": []}})
        seen.append(kernel.run("print(s.value)").stdout.strip())
    assert seen == [str(value) for value in range(1, UPDATES + 1)]
