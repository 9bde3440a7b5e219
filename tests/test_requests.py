"""Each kind of request a frontend sends, checked on what the user sees: outputs, reply
contents, ordering, and exactly one reply with busy/idle around it.
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from kernel_helpers import KernelConnection, Message, running_kernel


def texts(result_outputs: list[Message], msg_type: str) -> list[dict]:
    return [m["content"] for m in result_outputs if m["msg_type"] == msg_type]


# ---------------------------------------------------------------------- stop_on_error


def test_stop_on_error_aborts_the_cells_queued_behind_a_failure(kernel: KernelConnection) -> None:
    # The sleep keeps the failing cell running until the other two are surely queued.
    failing = kernel.execute("import time; time.sleep(0.5); raise ValueError('boom')")
    second = kernel.execute("print('x')")
    third = kernel.execute("print('y')")

    first = kernel.result(failing)
    assert first.status == "error"
    assert first.content["ename"] == "ValueError"
    for msg_id in (second, third):
        aborted = kernel.result(msg_id)
        assert aborted.status == "aborted"
        assert aborted.stdout == ""
        assert "execute_input" not in [m["msg_type"] for m in aborted.iopub]


def test_without_stop_on_error_the_queued_cells_run(kernel: KernelConnection) -> None:
    failing = kernel.execute("import time; time.sleep(0.5); raise ValueError('boom')",
                             stop_on_error=False)
    second = kernel.execute("print('x')")
    third = kernel.execute("print('y')")

    assert kernel.result(failing).status == "error"
    assert kernel.result(second).stdout == "x\n"
    assert kernel.result(third).stdout == "y\n"


# ---------------------------------------------------------------------- stdin


@pytest.mark.parametrize(("code", "password"), [
    ("value = input('name? ')", False),
    ("import getpass; value = getpass.getpass('secret? ')", True),
], ids=["input", "getpass"])
def test_input_is_asked_on_stdin_and_the_answer_reaches_the_cell(
    kernel: KernelConnection, code: str, password: bool
) -> None:
    cell = kernel.execute(code + "\nprint('got', value)", allow_stdin=True)
    asked = kernel.wait_for("stdin", cell, lambda msgs: len(msgs) > 0, what="input_request")[0]
    assert asked["msg_type"] == "input_request"
    assert asked["content"]["password"] is password
    assert asked["content"]["prompt"] in ("name? ", "secret? ")

    kernel.kc.input("abc")

    result = kernel.result(cell)
    assert result.status == "ok"
    assert result.stdout.endswith("got abc\n")


def test_input_without_stdin_support_is_a_clear_error(kernel: KernelConnection) -> None:
    result = kernel.run("value = input('name? ')", allow_stdin=False)

    assert result.status == "error"
    assert result.content["ename"] == "StdinNotImplementedError"
    assert kernel.messages("stdin", result.reply["parent_header"]["msg_id"]) == []


# ---------------------------------------------------------------------- execute options


def test_silent_execution_publishes_nothing_and_keeps_the_count(kernel: KernelConnection) -> None:
    before = kernel.run("'before'").content["execution_count"]

    silent = kernel.run("print('quiet'); 'silent value'", silent=True)

    assert silent.status == "ok"
    types = [m["msg_type"] for m in silent.iopub]
    assert "execute_input" not in types
    assert "execute_result" not in types
    assert silent.stdout == "quiet\n"  # stream output is still shown, as in ipykernel

    after = kernel.run("'after'")
    assert after.content["execution_count"] == before + 1
    result = texts(after.outputs, "execute_result")
    assert result[0]["execution_count"] == before + 1


@pytest.mark.parametrize("options", [{"silent": True}, {"store_history": False}],
                         ids=["silent", "no-history"])
def test_execute_input_count_matches_the_reply_after_an_unrecorded_cell(
    kernel: KernelConnection, options: dict
) -> None:
    kernel.run("'before'")
    kernel.run("'unrecorded'", **options)

    after = kernel.run("'after'")

    shown = texts(after.iopub, "execute_input")
    assert [s["execution_count"] for s in shown] == [after.content["execution_count"]]


def test_store_history_false_leaves_history_and_count_alone(kernel: KernelConnection) -> None:
    marker = f"not_recorded_{uuid.uuid4().hex}"
    before = kernel.run("'before'").content["execution_count"]

    result = kernel.run(f"{marker} = 1", store_history=False)

    assert result.status == "ok"
    found = kernel.request("history_request", {"hist_access_type": "search",
                                               "pattern": f"*{marker}*"}).content
    assert found["status"] == "ok"
    assert found["history"] == []
    assert kernel.run("'after'").content["execution_count"] == before + 1


def test_user_expressions_are_evaluated_after_the_cell(kernel: KernelConnection) -> None:
    result = kernel.run("base = 40", user_expressions={"ok": "base + 2", "bad": "1/0"})

    expressions = result.content["user_expressions"]
    assert expressions["ok"]["status"] == "ok"
    assert expressions["ok"]["data"]["text/plain"] == "42"
    assert expressions["bad"]["status"] == "error"
    assert expressions["bad"]["ename"] == "ZeroDivisionError"


# ---------------------------------------------------------------------- history

SYNC_PROBE = (
    "hm = get_ipython().history_manager\n"
    "hm.writeout_cache()\n"
    "print(type(hm).__name__, hm.db.execute('PRAGMA synchronous').fetchone()[0])"
)


def test_history_reaches_the_database_file_without_an_fsync_per_cell(
    kernel: KernelConnection, kernel_env: Path,
) -> None:
    marker = f"durable_{uuid.uuid4().hex[:8]} = 1"
    kernel.run(marker)

    # synchronous=OFF is 0: SQLite hands each commit to the OS without waiting for the disk.
    assert kernel.run(SYNC_PROBE).stdout.split() == ["WorkerHistory", "0"]
    # Another process reading the file (as a new IPython session would) finds the cell.
    database = kernel.run("print(get_ipython().history_manager.hist_file)").stdout.strip()
    assert database.startswith(str(kernel_env.parent))  # the tests' own IPython directory
    with closing(sqlite3.connect(database)) as db:
        rows = db.execute("SELECT source FROM history WHERE source = ?", (marker,)).fetchall()
    assert rows == [(marker,)]


def test_history_sync_full_restores_ipythons_fsync_per_cell(kernel_env: Path) -> None:
    with running_kernel(env={"WRAPPERKERNEL_HISTORY_SYNC": "full"}) as kernel:
        # 2 is FULL, SQLite's default: IPython's own behaviour.
        assert kernel.run(SYNC_PROBE).stdout.split() == ["WorkerHistory", "2"]



def test_history_tail_range_and_search(kernel: KernelConnection) -> None:
    marker = f"hist_{uuid.uuid4().hex[:8]}"
    first, second = f"{marker}_a = 1", f"{marker}_b = 2"
    kernel.run(first)
    kernel.run(second)

    tail = kernel.request("history_request", {"hist_access_type": "tail", "n": 2}).content
    assert tail["status"] == "ok"
    assert [entry[2] for entry in tail["history"]] == [first, second]
    session, line = tail["history"][0][:2]

    ranged = kernel.request("history_request", {
        "hist_access_type": "range", "session": session, "start": line, "stop": line + 2,
    }).content
    assert ranged["history"] == [[session, line, first], [session, line + 1, second]]

    with_output = kernel.request("history_request", {
        "hist_access_type": "range", "session": session, "start": line, "stop": line + 1,
        "output": True,
    }).content
    assert with_output["history"][0][2][0] == first

    found = kernel.request("history_request", {
        "hist_access_type": "search", "pattern": f"{marker}_b*",
    }).content
    assert [entry[2] for entry in found["history"]] == [second]


# ---------------------------------------------------------------------- unknown and comms


def test_unknown_request_gets_an_error_reply_with_busy_and_idle(kernel: KernelConnection) -> None:
    result = kernel.request("foo_request", {})

    assert result.reply["msg_type"] == "foo_reply"
    assert result.status == "error"
    assert [(m["msg_type"], m["content"].get("execution_state")) for m in result.iopub] == [
        ("status", "busy"), ("status", "idle")]
    assert kernel.run("print('still serving')").stdout == "still serving\n"


def test_comm_open_for_an_unknown_target_is_closed(kernel: KernelConnection) -> None:
    comm_id = uuid.uuid4().hex
    kernel.send("comm_open", {"comm_id": comm_id, "target_name": "no_such_target", "data": {}})

    closed = kernel.find("iopub", lambda m: m["msg_type"] == "comm_close"
                         and m["content"]["comm_id"] == comm_id, what="comm_close")
    assert closed["content"]["comm_id"] == comm_id
    listed = kernel.request("comm_info_request", {}).content
    assert comm_id not in listed["comms"]


@pytest.mark.parametrize("key", ["target_name", "target"])
def test_comm_info_filters_by_target(kernel: KernelConnection, key: str) -> None:
    comms = kernel.request("comm_info_request", {key: "no_such_target"}).content

    assert comms == {"status": "ok", "comms": {}}


# ---------------------------------------------------------------------- output


def test_a_200000_line_print_arrives_complete_and_in_order(kernel: KernelConnection) -> None:
    result = kernel.run("for i in range(200000):\n    print(i)")

    assert result.status == "ok"
    lines = result.stdout.splitlines()
    assert len(lines) == 200000
    assert lines == [str(i) for i in range(200000)]


def test_stdout_and_stderr_keep_their_order(kernel: KernelConnection) -> None:
    result = kernel.run(
        "import sys\nprint('one')\nprint('two', file=sys.stderr)\nprint('three')"
    )

    # What a frontend shows: consecutive stream messages of one name run together. The
    # worker's output flusher may send one print() as two messages ("two", then "\n")
    # when the machine is loaded (it did in a CI run); the order of the streams is what
    # must hold.
    streams: list[tuple[str, str]] = []
    for m in result.outputs:
        if m["msg_type"] != "stream":
            continue
        name, text = m["content"]["name"], m["content"]["text"]
        if streams and streams[-1][0] == name:
            streams[-1] = (name, streams[-1][1] + text)
        else:
            streams.append((name, text))
    assert streams == [("stdout", "one\n"), ("stderr", "two\n"), ("stdout", "three\n")]


def test_display_update_display_and_clear_output(kernel: KernelConnection) -> None:
    result = kernel.run(
        "from IPython.display import HTML, clear_output, display, update_display\n"
        "display(HTML('<b>first</b>'), display_id='d1')\n"
        "update_display(HTML('<b>second</b>'), display_id='d1')\n"
        "clear_output(wait=True)\n"
    )

    assert result.output_types == ["display_data", "update_display_data", "clear_output"]
    shown, updated, cleared = (m["content"] for m in result.outputs)
    assert shown["data"]["text/html"] == "<b>first</b>"
    assert shown["transient"] == {"display_id": "d1"}
    assert updated["data"]["text/html"] == "<b>second</b>"
    assert updated["transient"] == {"display_id": "d1"}
    assert cleared == {"wait": True}


def test_line_magic_and_shell_escape(kernel: KernelConnection) -> None:
    timed = kernel.run("%timeit -n1 -r1 sum(range(10))")
    assert timed.status == "ok"
    assert "per loop" in timed.stdout

    echoed = kernel.run("!echo hi")
    assert echoed.status == "ok"
    assert echoed.stdout.splitlines() == ["hi"]


def test_matplotlib_inline_figure_is_a_png(kernel: KernelConnection) -> None:
    result = kernel.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")

    assert result.status == "ok"
    images = [m["content"]["data"] for m in result.outputs if m["msg_type"] == "display_data"]
    assert len(images) == 1
    assert "image/png" in images[0]
    assert images[0]["image/png"].startswith("iVBORw0KGgo")  # base64 of the PNG signature


# ---------------------------------------------------------------------- one reply each


def test_every_request_gets_one_reply_parented_to_it_with_busy_and_idle(
    kernel: KernelConnection,
) -> None:
    requests = {
        kernel.send("kernel_info_request", {}): "kernel_info_reply",
        kernel.send("comm_info_request", {}): "comm_info_reply",
        kernel.send("is_complete_request", {"code": "x ="}): "is_complete_reply",
        kernel.send("complete_request", {"code": "pri", "cursor_pos": 3}): "complete_reply",
        kernel.send("inspect_request", {"code": "len", "cursor_pos": 3}): "inspect_reply",
        kernel.send("history_request", {"hist_access_type": "tail", "n": 1}): "history_reply",
        kernel.execute("print('one reply')"): "execute_reply",
        kernel.send("foo_request", {}): "foo_reply",
    }
    for msg_id in requests:
        kernel.reply(msg_id)
        kernel.iopub(msg_id)
    # A last queued request: once its idle arrived, everything published before it did too.
    marker = kernel.execute("pass")
    kernel.result(marker)

    for msg_id, reply_type in requests.items():
        replies = kernel.messages("shell", msg_id)
        assert [r["msg_type"] for r in replies] == [reply_type]
        assert replies[0]["parent_header"]["msg_id"] == msg_id
        assert "status" in replies[0]["content"]
        statuses = [m["content"]["execution_state"] for m in kernel.messages("iopub", msg_id)
                    if m["msg_type"] == "status"]
        # A request answered while a queued one runs publishes busy again for the running
        # one after its own idle (see kernel.Kernel._status): busy may repeat, idle never.
        assert statuses[-1] == "idle" and set(statuses[:-1]) == {"busy"}, (reply_type, statuses)
        published = kernel.messages("iopub", msg_id)
        assert published[0]["content"] == {"execution_state": "busy"}
        assert published[-1]["content"] == {"execution_state": "idle"}


def test_a_burst_of_requests_larger_than_one_drain_is_answered_in_order(
    kernel: KernelConnection,
) -> None:
    # More than Transport's DRAIN_MAX queued at once: read partly without the asyncio
    # socket, then through it again; none may be left waiting for another message.
    sent = [kernel.send("is_complete_request", {"code": f"x = {n}"}) for n in range(250)]
    replies = [kernel.reply(msg_id) for msg_id in sent]
    assert [r["content"]["status"] for r in replies] == ["complete"] * 250
    arrival = sorted(replies, key=lambda r: r["header"]["date"])
    assert [r["parent_header"]["msg_id"] for r in arrival] == sent
