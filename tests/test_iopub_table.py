"""The table of worker frames that become IOPub messages (wrapperkernel/kernel/iopub.py).

Each output frame must become the message the messaging spec names, with exactly the
content fields the spec lists: the expected contents are written out by hand here, and
also checked against jupyter_kernel_test's message schemas (read for protocol 5.1, where
they refuse any field they do not know). Every frame the worker can send is either in
the table or one of the frames the kernel handles itself, so a new frame type cannot be
dropped by forgetting it. No kernel is started: the kernel's frame handler runs against
a recording transport.
"""

from __future__ import annotations

import typing
from typing import Any

import pytest
from jupyter_kernel_test.msgspec_v5 import get_msg_content_validator

from wrapperkernel.kernel import iopub
from wrapperkernel.kernel.kernel import Kernel
from wrapperkernel.workerlink import frames

REQ = "request-1"

# frame -> (msg_type, content), the content spelt out field by field as in the spec.
CASES: dict[str, tuple[frames.Frame, str, dict[str, Any]]] = {
    "stream-stdout": (
        frames.StreamFrame(req=REQ, name="stdout", text="hello\n"),
        "stream", {"name": "stdout", "text": "hello\n"}),
    "stream-stderr": (
        frames.StreamFrame(req=REQ, name="stderr", text="warning\n"),
        "stream", {"name": "stderr", "text": "warning\n"}),
    "display_data": (
        frames.DisplayDataFrame(req=REQ, data={"text/plain": "x", "text/html": "<b>x</b>"},
                                metadata={"text/html": {"isolated": True}},
                                transient={"display_id": "d1"}),
        "display_data", {"data": {"text/plain": "x", "text/html": "<b>x</b>"},
                         "metadata": {"text/html": {"isolated": True}},
                         "transient": {"display_id": "d1"}}),
    "display_data-defaults": (
        frames.DisplayDataFrame(req=REQ, data={"text/plain": "0"}),
        "display_data", {"data": {"text/plain": "0"}, "metadata": {}, "transient": {}}),
    "update_display_data": (
        frames.DisplayDataFrame(req=REQ, data={"text/plain": "y"}, transient={"display_id": "d1"},
                                update=True),
        "update_display_data", {"data": {"text/plain": "y"}, "metadata": {},
                                "transient": {"display_id": "d1"}}),
    "execute_result": (
        frames.ExecuteResultFrame(req=REQ, execution_count=7, data={"text/plain": "42"},
                                  metadata={"a": 1}),
        "execute_result", {"execution_count": 7, "data": {"text/plain": "42"},
                           "metadata": {"a": 1}}),
    "error": (
        frames.ErrorFrame(req=REQ, ename="ZeroDivisionError", evalue="division by zero",
                          traceback=["Traceback ...", "ZeroDivisionError: division by zero"]),
        "error", {"ename": "ZeroDivisionError", "evalue": "division by zero",
                  "traceback": ["Traceback ...", "ZeroDivisionError: division by zero"]}),
    "clear_output": (
        frames.ClearOutputFrame(req=REQ, wait=True),
        "clear_output", {"wait": True}),
    "clear_output-default": (
        frames.ClearOutputFrame(req=REQ),
        "clear_output", {"wait": False}),
}

# The worker's frames that are not plain publications: the kernel handles them itself.
HANDLED_BY_THE_KERNEL = {
    frames.ReadyFrame, frames.InputRequestFrame, frames.ExecuteReplyFrame, frames.ReplyFrame,
    frames.AddressStartFrame, frames.AddressSendFrame, frames.AddressReadFrame,
    frames.AddressSyncFrame, frames.AddressSendManyFrame, frames.AddressSubscriptionFrame,
    frames.RelayCommFrame, frames.DebuggerStartedFrame, frames.DebugQueryReplyFrame,
}


def _worker_frame_classes() -> set[type]:
    union, _discriminator = typing.get_args(frames.WorkerToKernel)
    return set(typing.get_args(union))


@pytest.mark.parametrize(("frame", "msg_type", "content"), CASES.values(), ids=CASES.keys())
def test_each_output_frame_becomes_the_message_the_spec_names(
    frame: frames.Frame, msg_type: str, content: dict[str, Any]
) -> None:
    published = iopub.publication(frame)

    assert published == (msg_type, content)


@pytest.mark.parametrize(("frame", "msg_type", "content"), CASES.values(), ids=CASES.keys())
def test_each_published_content_passes_the_spec_schema(
    frame: frames.Frame, msg_type: str, content: dict[str, Any]
) -> None:
    published = iopub.publication(frame)
    assert published is not None

    # Minor version 1: the schema then rejects fields it does not list.
    get_msg_content_validator(published[0], 1).validate(published[1])


def test_every_output_frame_type_has_a_case_here() -> None:
    assert {type(frame) for frame, _t, _c in CASES.values()} == set(iopub.PUBLICATIONS)


def test_every_worker_frame_is_published_or_handled_by_the_kernel() -> None:
    published = set(iopub.PUBLICATIONS)

    assert published.isdisjoint(HANDLED_BY_THE_KERNEL)
    assert published | HANDLED_BY_THE_KERNEL == _worker_frame_classes()


@pytest.mark.parametrize("frame", [
    frames.ReadyFrame(pid=1, ipython_version="9"),
    frames.InputRequestFrame(req=REQ, prompt="name? "),
    frames.ExecuteReplyFrame(req=REQ, status="ok", execution_count=1),
    frames.ReplyFrame(req=REQ, content={"status": "ok"}),
    frames.AddressSyncFrame(request_id="r1"),
    frames.RelayCommFrame(msg_type="comm_msg", comm_id="c1"),
    frames.DebuggerStartedFrame(),
    frames.DebugQueryReplyFrame(req=REQ, success=True),
], ids=lambda frame: frame.type)
def test_frames_that_start_answer_or_route_are_not_publications(frame: frames.Frame) -> None:
    assert iopub.publication(frame) is None


class RecordingTransport:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []

    def publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None,
                **_: Any) -> None:
        self.published.append((msg_type, content, parent))


@pytest.mark.parametrize(("frame", "msg_type", "content"), CASES.values(), ids=CASES.keys())
def test_the_kernel_publishes_the_table_entry_parented_to_the_request(
    frame: frames.Frame, msg_type: str, content: dict[str, Any]
) -> None:
    transport = RecordingTransport()
    kernel = Kernel(transport, worker=None)  # type: ignore[arg-type]
    header = {"msg_id": REQ, "msg_type": "execute_request", "session": "s"}
    kernel.parents[REQ] = header

    kernel.on_worker_frame(frame)  # type: ignore[arg-type]

    assert transport.published == [(msg_type, content, header)]


def test_output_of_a_forgotten_request_is_published_without_a_parent() -> None:
    transport = RecordingTransport()
    kernel = Kernel(transport, worker=None)  # type: ignore[arg-type]

    kernel.on_worker_frame(frames.StreamFrame(req="long-gone", name="stdout", text="late\n"))

    assert transport.published == [("stream", {"name": "stdout", "text": "late\n"}, {})]
