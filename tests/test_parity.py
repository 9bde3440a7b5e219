"""What a frontend sees where ipykernel and wrapperkernel must agree (docs/ipykernel-parity.md):
the payloads of execute replies (``set_next_input`` from ``%load`` / ``%recall``,
``ask_exit`` from ``exit()``), the status of a cell whose value fails to display,
``connect_request``, IPython's debugger behind ``pdb.set_trace()``, ``breakpoint()`` and
``%debug``, and imports from the current directory.

Each test drives a real kernel through jupyter_client and checks the reply, its
payload and the cell's outputs; the debugger tests answer its prompts on stdin.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_helpers import KernelConnection, Message, Result, running_kernel

ANSI_ESCAPE = "\x1b["
IPDB_PROMPT = "ipdb> "


def payloads(result: Result, source: str) -> list[dict]:
    return [p for p in result.content["payload"] if p["source"] == source]


def shown_errors(result: Result) -> list[dict]:
    return [m["content"] for m in result.outputs if m["msg_type"] == "error"]


# ---------------------------------------------------------------------- set_next_input


def test_load_puts_the_file_into_the_next_cell(kernel: KernelConnection, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("answer = 6 * 7\nprint(answer)\n")

    result = kernel.run(f"%load {script}")

    assert result.status == "ok"
    [payload] = payloads(result, "set_next_input")
    assert payload["replace"] is True  # %load replaces the cell it was typed in
    assert payload["text"] == f"# %load {script}\nanswer = 6 * 7\nprint(answer)\n"


def test_recall_puts_an_earlier_input_into_the_next_cell(kernel: KernelConnection) -> None:
    earlier = kernel.run("recalled = 'from history'")
    number = earlier.content["execution_count"]

    result = kernel.run(f"%recall {number}")

    assert result.status == "ok"
    assert payloads(result, "set_next_input") == [
        {"source": "set_next_input", "text": "recalled = 'from history'", "replace": False},
    ]


def test_several_set_next_input_calls_in_a_cell_give_one_payload(kernel: KernelConnection) -> None:
    result = kernel.run("for i in range(3):\n    get_ipython().set_next_input(f'Hello {i}')")

    assert result.status == "ok"
    assert payloads(result, "set_next_input") == [
        {"source": "set_next_input", "text": "Hello 2", "replace": False},
    ]
    # The payload belongs to that cell only.
    assert kernel.run("pass").content["payload"] == []


# ---------------------------------------------------------------------- ask_exit


@pytest.mark.parametrize(("code", "keepkernel"), [
    ("exit()", False),
    ("quit", False),
    ("exit(keep_kernel=True)", True),
    ("quit(keep_kernel=True)", True),
])
def test_exit_asks_the_frontend_and_the_kernel_keeps_running(
    kernel: KernelConnection, code: str, keepkernel: bool
) -> None:
    assert kernel.run("kept = 'set before exit'").status == "ok"

    result = kernel.run(code)

    assert result.status == "ok"
    assert result.content["payload"] == [{"source": "ask_exit", "keepkernel": keepkernel}]
    # Closing is the frontend's decision: the kernel and the namespace are still there.
    after = kernel.run("print(kept)")
    assert after.status == "ok"
    assert after.stdout == "set before exit\n"


# ---------------------------------------------------------------------- display-formatter errors

FAILING_REPR = "class FailingRepr:\n    def __repr__(self):\n        return 1 / 0\n"
FAILING_HTML = "class FailingHtml:\n    def _repr_html_(self):\n        return 1 / 0\n"


def test_a_value_whose_repr_raises_makes_the_cell_an_error(kernel: KernelConnection) -> None:
    assert kernel.run(FAILING_REPR).status == "ok"

    result = kernel.run("FailingRepr()")

    assert result.status == "error"
    assert result.content["ename"] == "ZeroDivisionError"
    assert result.content["evalue"] == "division by zero"
    [shown] = shown_errors(result)
    assert shown["ename"] == "ZeroDivisionError"
    # The reply carries the traceback the user saw, which points into __repr__.
    assert result.content["traceback"] == shown["traceback"]
    assert "__repr__" in "".join(shown["traceback"])
    assert "execute_result" not in result.output_types


def test_a_display_hook_error_aborts_the_cells_queued_behind_it(kernel: KernelConnection) -> None:
    assert kernel.run(FAILING_REPR).status == "ok"
    # The sleep keeps the failing cell running until the next one is surely queued.
    failing = kernel.execute("import time\ntime.sleep(0.5)\nFailingRepr()")
    queued = kernel.execute("print('never printed')")

    assert kernel.result(failing).status == "error"
    aborted = kernel.result(queued)
    assert aborted.status == "aborted"
    assert aborted.stdout == ""


def test_a_failing_html_repr_makes_the_cell_an_error_and_text_is_still_shown(
    kernel: KernelConnection,
) -> None:
    assert kernel.run(FAILING_HTML).status == "ok"

    result = kernel.run("FailingHtml()")

    assert result.status == "error"
    assert result.content["ename"] == "ZeroDivisionError"
    assert "_repr_html_" in "".join(shown_errors(result)[0]["traceback"])
    [value] = [m["content"] for m in result.outputs if m["msg_type"] == "execute_result"]
    assert value["data"]["text/plain"].startswith("<__main__.FailingHtml")


def test_display_of_a_value_whose_repr_raises_shows_the_error_and_the_cell_is_ok(
    kernel: KernelConnection,
) -> None:
    # As in ipykernel: only the display hook (the cell's own value) fails the cell;
    # display() is a call in the cell that IPython answers with a shown traceback.
    assert kernel.run(FAILING_REPR).status == "ok"

    result = kernel.run("display(FailingRepr())\nprint('after display')")

    assert result.status == "ok"
    assert [e["ename"] for e in shown_errors(result)] == ["ZeroDivisionError"]
    assert result.stdout == "after display\n"


def test_a_cell_after_a_display_hook_error_is_ok_again(kernel: KernelConnection) -> None:
    assert kernel.run(FAILING_REPR).status == "ok"
    assert kernel.run("FailingRepr()").status == "error"

    result = kernel.run("41 + 1")

    assert result.status == "ok"
    [value] = [m["content"] for m in result.outputs if m["msg_type"] == "execute_result"]
    assert value["data"]["text/plain"] == "42"


def test_a_repr_that_escapes_the_formatters_does_not_fail_the_next_cell(
    kernel: KernelConnection,
) -> None:
    # KeyboardInterrupt is not caught by IPython's formatters: it leaves the display
    # hook unfinished and fails that cell, and only that cell.
    assert kernel.run(FAILING_REPR).status == "ok"
    assert kernel.run("class EscapingRepr:\n    def __repr__(self):\n"
                      "        raise KeyboardInterrupt\n").status == "ok"
    assert kernel.run("EscapingRepr()").content["ename"] == "KeyboardInterrupt"

    result = kernel.run("display(FailingRepr())")

    assert result.status == "ok"
    assert [e["ename"] for e in shown_errors(result)] == ["ZeroDivisionError"]


# ---------------------------------------------------------------------- connect_request


def test_connect_request_replies_with_the_kernels_ports(kernel: KernelConnection) -> None:
    result = kernel.request("connect_request", {})

    assert result.reply["msg_type"] == "connect_reply"
    info = kernel.km.get_connection_info()
    assert result.content == {
        "status": "ok",
        "shell_port": info["shell_port"],
        "iopub_port": info["iopub_port"],
        "stdin_port": info["stdin_port"],
        "control_port": info["control_port"],
        "hb_port": info["hb_port"],
    }
    assert [m["content"]["execution_state"] for m in result.iopub
            if m["msg_type"] == "status"] == ["busy", "idle"]


# ---------------------------------------------------------------------- IPython's debugger


@pytest.fixture
def own_kernel(kernel_env: object) -> Iterator[KernelConnection]:
    """A kernel for one debugger session: a test that fails at a prompt must not leave
    the shared kernel stuck."""
    with running_kernel() as connection:
        yield connection


class Debugging:
    """A cell at a debugger's prompt: its prompts, answered on stdin, and what it shows.

    The prompt (stdin) and the text before it (IOPub) travel on different sockets, so
    either may arrive first: ``shows`` waits for the text it expects.
    """

    def __init__(self, kernel: KernelConnection, code: str) -> None:
        self.kernel = kernel
        self.cell = kernel.execute(code, allow_stdin=True)
        self.answered = 0
        self.mark = 0  # where the output of the latest answer starts

    def prompt(self) -> str:
        """Wait for the next input_request and return its prompt."""
        wanted = self.answered + 1
        asked = self.kernel.wait_for("stdin", self.cell, lambda msgs: len(msgs) >= wanted,
                                     what="input_request")
        return asked[wanted - 1]["content"]["prompt"]

    def answer(self, line: str) -> None:
        self.mark = len(self.output())
        self.kernel.kc.input(line)
        self.answered += 1

    def shows(self, text: str) -> str:
        """Wait until the output since the latest answer contains ``text`` (colours
        aside); returns that output with its colours."""
        def seen(_: list[Message]) -> bool:
            return text in strip_ansi(self.output()[self.mark:])

        self.kernel.wait_for("iopub", self.cell, seen, what=f"output {text!r}")
        return self.output()[self.mark:]

    def output(self) -> str:
        return "".join(m["content"]["text"] for m in self.kernel.messages("iopub", self.cell)
                       if m["msg_type"] == "stream")


def test_debug_after_an_exception_shows_the_failing_line_and_prints_locals(
    own_kernel: KernelConnection,
) -> None:
    failed = own_kernel.run("def halve_difference(x):\n    y = x * 2\n    return 1 / (y - y)\n"
                            "halve_difference(21)")
    assert failed.content["ename"] == "ZeroDivisionError"

    session = Debugging(own_kernel, "%debug")

    assert session.prompt() == IPDB_PROMPT
    shown = session.shows("----> 3     return 1 / (y - y)")  # the failing line of the cell
    assert ANSI_ESCAPE in shown  # in IPython's colours
    session.answer("p y")
    session.shows("42\n")
    assert session.prompt() == IPDB_PROMPT
    session.answer("q")
    assert own_kernel.result(session.cell).status == "ok"


BREAKPOINT_CELL = """\
def compute():
    a = 5
    breakpoint()
    b = a + 1
    return b * 10
print('result', compute())
"""


def test_breakpoint_prompts_in_ipythons_debugger_and_steps_through_the_cell(
    own_kernel: KernelConnection,
) -> None:
    session = Debugging(own_kernel, BREAKPOINT_CELL)

    assert session.prompt() == IPDB_PROMPT
    # The cell's source around the line it stopped on, in IPython's colours.
    shown = session.shows("----> 4     b = a + 1")
    assert "      3     breakpoint()" in strip_ansi(shown)
    assert ANSI_ESCAPE in shown
    session.answer("n")
    session.shows("----> 5     return b * 10")
    assert session.prompt() == IPDB_PROMPT
    session.answer("p a, b")
    session.shows("(5, 6)\n")
    assert session.prompt() == IPDB_PROMPT
    session.answer("c")

    result = own_kernel.result(session.cell)
    assert result.status == "ok"
    assert result.stdout.endswith("result 60\n")


def test_pdb_set_trace_is_ipythons_debugger(own_kernel: KernelConnection) -> None:
    session = Debugging(own_kernel, "import pdb\nvalue = 'seen here'\npdb.set_trace()\nafter = 1")

    assert session.prompt() == IPDB_PROMPT
    session.shows("----> 3 pdb.set_trace()")
    session.answer("p value")
    session.shows("'seen here'\n")
    assert session.prompt() == IPDB_PROMPT
    session.answer("c")
    assert own_kernel.result(session.cell).status == "ok"


def test_pythonbreakpoint_still_chooses_what_breakpoint_does(kernel_env: object) -> None:
    # breakpoint() reaches IPython's debugger through Python's own hook, which reads
    # PYTHONBREAKPOINT at each call: 0 turns breakpoints off.
    with running_kernel(env={"PYTHONBREAKPOINT": "0"}) as kernel:
        result = kernel.run("breakpoint()\nprint('ran through')", allow_stdin=True)

        assert result.status == "ok"
        assert result.stdout == "ran through\n"
        assert kernel.messages("stdin", result.reply["parent_header"]["msg_id"]) == []


# ---------------------------------------------------------------------- sys.path


def test_import_finds_a_module_in_the_directory_the_cell_changed_to(
    kernel: KernelConnection, tmp_path: Path,
) -> None:
    (tmp_path / "parity_local_module.py").write_text("WHERE = 'next to the notebook'\n")

    result = kernel.run(
        "import os\nstarted_in = os.getcwd()\n"
        f"os.chdir({str(tmp_path)!r})\n"
        "try:\n    import parity_local_module\nfinally:\n    os.chdir(started_in)\n"
        "print(parity_local_module.WHERE)"
    )

    assert result.status == "ok", result.content.get("evalue")
    assert result.stdout == "next to the notebook\n"


def strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
