"""Protocol conformance through ``jupyter_kernel_test``, with the very samples that
jupyter_kernel_test's own ``test_ipykernel.py`` uses for ipykernel.

Nothing here may be skipped: every sample attribute is set, and history covers all three
access types (ipykernel's example leaves ``range`` out; wrapperkernel supports it).
"""

from __future__ import annotations

import jupyter_kernel_test as jkt
import pytest
import zmq
from jupyter_client.session import Session
from kernel_helpers import KernelConnection

pytestmark = pytest.mark.usefixtures("kernel_env")


class WrapperKernelTests(jkt.KernelTests):
    kernel_name = "wrapperkernel"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
    ]
    code_display_data = [
        {
            "code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))",
            "mime": "text/html",
        },
        {
            "code": "from IPython.display import Math, display; display(Math('\\frac{1}{2}'))",
            "mime": "text/latex",
        },
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"


class WrapperKernelIopubWelcomeTests(jkt.IopubWelcomeTests):
    kernel_name = "wrapperkernel"
    support_iopub_welcome = True


SUBSCRIBERS = 12
FIRST_MESSAGE_TIMEOUT_MS = 10_000


def first_iopub_message_type(info: dict) -> str:
    """Subscribe a fresh client to IOPub and return the type of the first message it gets."""
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    try:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(f"tcp://127.0.0.1:{info['iopub_port']}")
        assert sock.poll(FIRST_MESSAGE_TIMEOUT_MS), "no IOPub message at all"
        # A Session per client: one Session would reject the same message seen twice.
        session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
        _, parts = session.feed_identities(sock.recv_multipart())
        return session.deserialize(parts)["msg_type"]
    finally:
        sock.close()


@pytest.mark.xfail(strict=False, reason=(
    "known limit: zmq applies an IOPub subscription at once, before the kernel reads it "
    "and publishes iopub_welcome, so a client joining while a cell floods output gets some "
    "of that output first. XPUB_MANUAL would order them but delayed new subscribers for "
    "seconds under load, which is worse for clients than a late welcome"))
def test_iopub_welcome_is_the_first_message_of_a_client_joining_mid_output(
    kernel: KernelConnection,
) -> None:
    info = kernel.km.get_connection_info()
    cell = kernel.execute("from IPython.display import display\nwhile True:\n    display('tick')")
    kernel.wait_for("iopub", cell, lambda msgs: any(m["msg_type"] == "display_data"
                                                    for m in msgs), what="display_data")
    firsts = []
    try:
        # One after the other, so each is an independent chance to see the race.
        for _ in range(SUBSCRIBERS):
            firsts.append(first_iopub_message_type(info))
    finally:
        kernel.km.interrupt_kernel()
        assert kernel.result(cell, timeout=60).status == "error"

    assert firsts == ["iopub_welcome"] * SUBSCRIBERS
