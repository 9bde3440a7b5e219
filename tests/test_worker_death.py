"""A worker that dies mid-cell: the user gets an error saying what happened, a fresh worker
takes over, and the kernel keeps serving. A restart gives a clean namespace.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kernel_helpers import REPLY_TIMEOUT_S, KernelConnection, running_kernel

LOST = "All variables and imports are lost"

DEATHS = [
    pytest.param("import os; os._exit(3)", "exited with code 3", id="exit-code-3"),
    pytest.param("import os; os.kill(os.getpid(), 9)", "killed by signal 9 (SIGKILL)",
                 id="sigkill"),
    pytest.param("import ctypes; ctypes.string_at(0)", "killed by signal 11 (SIGSEGV)",
                 id="segfault"),
]


@pytest.fixture
def own_kernel(kernel_env: object) -> Iterator[KernelConnection]:
    """A kernel for one test: each death test starts from a kernel of its own, so a
    regression in recovery cannot spill into other tests."""
    with running_kernel() as connection:
        yield connection


@pytest.mark.parametrize(("code", "what"), DEATHS)
def test_worker_death_is_a_cell_error_saying_what_happened(
    own_kernel: KernelConnection, code: str, what: str
) -> None:
    assert own_kernel.run("doomed = 'set before the crash'").status == "ok"

    crash = own_kernel.run(code)

    assert crash.status == "error"
    assert crash.content["ename"] == "WorkerDied"
    assert what in crash.content["evalue"]
    assert LOST in crash.content["evalue"]
    # The notebook shows the error output, not only the reply.
    shown = [msg["content"] for msg in crash.outputs if msg["msg_type"] == "error"]
    assert len(shown) == 1
    assert what in shown[0]["evalue"]
    assert LOST in shown[0]["evalue"]


# The WorkerDied reply leaves before the new worker has started, so the next cell can
# arrive while there is no worker: the supervisor then holds its frame and writes it to
# the new worker once that one starts (f41454e; before, the frame went to the dead
# worker's socket and the cell never got a reply).
def test_next_cell_runs_on_a_fresh_worker(own_kernel: KernelConnection) -> None:
    assert own_kernel.run("doomed = 'set before the crash'").status == "ok"
    assert own_kernel.run("import os; os._exit(3)").content["ename"] == "WorkerDied"

    after = own_kernel.run("print(1+1)", timeout=REPLY_TIMEOUT_S)
    assert after.status == "ok"
    assert after.stdout == "2\n"
    assert after.content["execution_count"] == 1  # a fresh IPython counts from 1

    gone = own_kernel.run("doomed", timeout=REPLY_TIMEOUT_S)
    assert gone.status == "error"
    assert gone.content["ename"] == "NameError"
    assert "doomed" in gone.content["evalue"]


def test_requests_queued_behind_a_dying_cell_are_answered(own_kernel: KernelConnection) -> None:
    crash = own_kernel.execute("import os; os._exit(3)", stop_on_error=False)
    completion = own_kernel.send("complete_request", {"code": "zi", "cursor_pos": 2})
    queued = own_kernel.execute("print('queued ran')")

    assert own_kernel.result(crash).content["ename"] == "WorkerDied"
    reply = own_kernel.reply(completion)
    assert reply["content"]["status"] == "ok"
    assert "zip" in reply["content"]["matches"]
    result = own_kernel.result(queued)
    assert result.status == "ok"
    assert result.stdout == "queued ran\n"


def test_restart_gives_a_clean_namespace(kernel: KernelConnection) -> None:
    assert kernel.run("kept = 'before restart'; kept").status == "ok"

    kernel.km.restart_kernel(now=False)
    kernel.kc.wait_for_ready(timeout=60)

    gone = kernel.run("kept")
    assert gone.status == "error"
    assert gone.content["ename"] == "NameError"
    fresh = kernel.run("print('after restart')")
    assert fresh.stdout == "after restart\n"
    assert fresh.content["execution_count"] == 2
