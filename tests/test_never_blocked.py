"""The kernel answers while a cell runs, and an interrupt ends the cell, not the session.

A cell that sleeps 30 s or spins forever is shown to be still running by its missing
execute_reply at the moment the other replies arrive; an interrupt then ends it fast.
"""

from __future__ import annotations

import signal

import pytest
from kernel_helpers import KernelConnection

SLEEPING_CELL = "import time\nprint('cell started', flush=True)\ntime.sleep(30)"
SPINNING_CELL = "print('cell started', flush=True)\nwhile True:\n    pass"

CELLS = [
    pytest.param(SLEEPING_CELL, id="sleep"),
    pytest.param(SPINNING_CELL, id="busy-loop"),
]


def interrupt(kernel: KernelConnection, mode: str) -> None:
    if mode == "signal":
        # interrupt_mode "signal" (the kernelspec's): jupyter_client sends SIGINT.
        kernel.km.interrupt_kernel()
    else:
        # interrupt_mode "message": an interrupt_request on the control channel.
        reply = kernel.request("interrupt_request", {}, channel="control").reply
        assert reply["msg_type"] == "interrupt_reply"
        assert reply["content"]["status"] == "ok"


def start_running_cell(kernel: KernelConnection, code: str) -> str:
    assert kernel.run("survivor = 'set before the cell'").status == "ok"
    cell = kernel.execute(code)
    kernel.wait_for_output(cell, "cell started")
    return cell


@pytest.mark.parametrize("code", CELLS)
@pytest.mark.parametrize("mode", ["signal", "message"])
def test_requests_are_answered_while_a_cell_runs_and_interrupt_ends_it(
    kernel: KernelConnection, code: str, mode: str
) -> None:
    cell = start_running_cell(kernel, code)

    info = kernel.request("kernel_info_request", {}).content
    comms = kernel.request("comm_info_request", {}).content
    incomplete = kernel.request("is_complete_request", {"code": "for i in range(3):"}).content
    complete = kernel.request("is_complete_request", {"code": "x = 1"}).content

    # All answered while the cell is demonstrably still running.
    assert kernel.replies(cell) == []
    assert info["status"] == "ok"
    assert info["implementation"] == "wrapperkernel"
    assert info["language_info"]["name"] == "python"
    assert comms["status"] == "ok"
    assert isinstance(comms["comms"], dict)
    assert incomplete == {"status": "incomplete", "indent": "    "}
    assert complete["status"] == "complete"

    interrupt(kernel, mode)

    result = kernel.result(cell)
    assert result.status == "error"
    assert result.content["ename"] == "KeyboardInterrupt"
    shown = [m["content"] for m in result.outputs if m["msg_type"] == "error"]
    assert [s["ename"] for s in shown] == ["KeyboardInterrupt"]
    assert "KeyboardInterrupt" in "".join(shown[0]["traceback"])

    after = kernel.run("print(survivor)")
    assert after.status == "ok"
    assert after.stdout == "set before the cell\n"


def test_busy_indicator_stays_busy_while_other_requests_are_answered(
    kernel: KernelConnection,
) -> None:
    """JupyterLab shows the last status message: after a request answered mid-cell the
    kernel must say ``busy`` again, or the notebook would look idle while the cell runs."""
    cell = start_running_cell(kernel, SLEEPING_CELL)
    info = kernel.send("kernel_info_request", {})
    kernel.reply(info)
    kernel.iopub(info)
    kernel.wait_for(
        "iopub", cell,
        lambda msgs: any(m["msg_type"] == "status" for m in msgs[1:]), what="second busy",
    )

    statuses = [
        (m["parent_header"].get("msg_id"), m["content"]["execution_state"])
        for m in kernel.arrivals["iopub"]
        if m["msg_type"] == "status" and m["parent_header"].get("msg_id") in (cell, info)
    ]
    idle_of_info = statuses.index((info, "idle"))
    assert statuses[idle_of_info + 1] == (cell, "busy")
    assert kernel.replies(cell) == []

    kernel.km.interrupt_kernel()
    assert kernel.result(cell).content["ename"] == "KeyboardInterrupt"


def test_interrupt_with_no_cell_running_changes_nothing(kernel: KernelConnection) -> None:
    assert kernel.run("calm = 1").status == "ok"

    interrupt(kernel, "message")
    kernel.km.interrupt_kernel()

    after = kernel.run("print(calm + 1)")
    assert after.status == "ok"
    assert after.stdout == "2\n"


def test_a_sigint_interrupts_the_cell_that_ran_when_it_arrived_only() -> None:
    """The kernel's SIGINT handler, without a process: a signal that arrives while no cell
    runs does not interrupt a cell whose request the kernel starts before it gets to the
    signal (CI once saw the next cell fail with KeyboardInterrupt)."""
    from wrapperkernel.kernel.kernel import Job, Kernel, sigint_handler
    from wrapperkernel.workerlink import frames

    class Worker:
        interrupts = 0

        def interrupt(self) -> None:
            self.interrupts += 1

    class Loop:  # the loop's callbacks, run when the test says
        def __init__(self) -> None:
            self.callbacks: list = []

        def call_soon_threadsafe(self, callback, *args) -> None:
            self.callbacks.append((callback, args))

        def run_callbacks(self) -> None:
            callbacks, self.callbacks = self.callbacks, []
            for callback, args in callbacks:
                callback(*args)

    loop = Loop()
    worker = Worker()
    kernel = Kernel(transport=None, worker=worker)
    on_sigint = sigint_handler(loop, kernel)  # type: ignore[arg-type]
    on_sigint(signal.SIGINT, None)  # idle
    kernel.current = Job(None, frames.ExecuteFrame(req="next", code="print(1)"))
    loop.run_callbacks()  # the next cell started before the loop got to the signal
    assert worker.interrupts == 0
    on_sigint(signal.SIGINT, None)  # while the cell runs
    loop.run_callbacks()
    assert worker.interrupts == 1
