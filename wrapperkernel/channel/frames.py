"""Every frame that crosses the kernel<->worker channel, as pydantic models.

Both sides import these models, so a frame is validated once on the way in and dumped on
the way out. Frames that belong to a Jupyter request carry ``req``: the ``msg_id`` of that
request, which the kernel uses to parent the IOPub messages it publishes.

This module owns the shapes only. It must never do I/O or import either side's code.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator


def _is_positive_seconds(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return 0 < float(value) < math.inf
    except OverflowError:
        return False


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------- kernel -> worker


class ExecuteFrame(_Frame):
    type: Literal["execute"] = "execute"
    req: str
    code: str
    silent: bool = False
    store_history: bool = True
    user_expressions: dict[str, str] = Field(default_factory=dict)
    allow_stdin: bool = False


class CompleteFrame(_Frame):
    type: Literal["complete"] = "complete"
    req: str
    code: str
    cursor_pos: int


class InspectFrame(_Frame):
    type: Literal["inspect"] = "inspect"
    req: str
    code: str
    cursor_pos: int
    detail_level: int = 0


class HistoryFrame(_Frame):
    type: Literal["history"] = "history"
    req: str
    hist_access_type: Literal["tail", "range", "search"]
    output: bool = False
    raw: bool = True
    session: int = 0
    start: int = 0
    stop: int | None = None
    n: int | None = None
    pattern: str = "*"
    unique: bool = False


class InputReplyFrame(_Frame):
    """The frontend's answer to ``input()``; ``error`` says why its input_reply could not
    be used (``value`` is then empty), so that ``input()`` raises instead of waiting."""

    type: Literal["input_reply"] = "input_reply"
    req: str
    value: str
    error: str | None = None


class CommValueFrame(_Frame):
    """A value from the page for an address the program subscribed to."""

    type: Literal["comm_value"] = "comm_value"
    address: str
    value: Any = None


class CommReplyFrame(_Frame):
    """The answer to one ``CommRequestFrame`` of the program."""

    type: Literal["comm_reply"] = "comm_reply"
    request_id: str
    ok: bool
    value: Any = None
    error: str | None = None


class CommReadRequestFrame(_Frame):
    """The page asks for the program's current value of a subscribed address."""

    type: Literal["comm_read_request"] = "comm_read_request"
    address: str


class RelayCommFrame(_Frame):
    """A message of the standard ``comm`` package (ipywidgets, anywidget, ...) relayed
    between the page's own kernel connection and the worker, in either direction.
    ``buffers`` are base64 text: the channel carries JSON only."""

    type: Literal["relay_comm"] = "relay_comm"
    msg_type: Literal["comm_open", "comm_msg", "comm_close"]
    comm_id: str
    data: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    buffers: list[str] = Field(default_factory=list)
    target_name: str | None = None
    target_module: str | None = None


class ShutdownFrame(_Frame):
    type: Literal["shutdown"] = "shutdown"


# --------------------------------------------------------------------- worker -> kernel


class ReadyFrame(_Frame):
    type: Literal["ready"] = "ready"
    pid: int
    ipython_version: str


class StreamFrame(_Frame):
    type: Literal["stream"] = "stream"
    req: str
    name: Literal["stdout", "stderr"]
    text: str


class DisplayDataFrame(_Frame):
    type: Literal["display_data"] = "display_data"
    req: str
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)
    transient: dict[str, Any] = Field(default_factory=dict)
    update: bool = False


class ExecuteResultFrame(_Frame):
    type: Literal["execute_result"] = "execute_result"
    req: str
    execution_count: int
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)


class ErrorFrame(_Frame):
    type: Literal["error"] = "error"
    req: str
    ename: str
    evalue: str
    traceback: list[str]


class ClearOutputFrame(_Frame):
    type: Literal["clear_output"] = "clear_output"
    req: str
    wait: bool = False


class InputRequestFrame(_Frame):
    type: Literal["input_request"] = "input_request"
    req: str
    prompt: str
    password: bool = False


class ExecuteReplyFrame(_Frame):
    type: Literal["execute_reply"] = "execute_reply"
    req: str
    status: Literal["ok", "error"]
    execution_count: int
    # The count the next recorded cell will get (silent cells do not advance it).
    next_execution_count: int = 1
    user_expressions: dict[str, Any] = Field(default_factory=dict)
    payload: list[dict[str, Any]] = Field(default_factory=list)
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] | None = None


class ReplyFrame(_Frame):
    """The reply content of a complete/inspect/history request, in Jupyter's spelling."""

    type: Literal["reply"] = "reply"
    req: str
    content: dict[str, Any]


class CommRequestFrame(_Frame):
    """The program uses the address channel; answered by ``CommReplyFrame``."""

    type: Literal["comm_request"] = "comm_request"
    request_id: str
    op: Literal["start", "send", "read", "sync"]
    address: str | None = None
    value: Any = None

    @model_validator(mode="after")
    def _fits_its_op(self) -> CommRequestFrame:
        # Checked here, at the boundary, so the comm core never meets a request it
        # cannot carry out: a send or read names an address; a read's value is its
        # timeout; a start's value says whether it is an explicit retry.
        if self.op in ("send", "read") and not isinstance(self.address, str):
            raise ValueError(f"a {self.op!r} request needs a string address")
        if self.op == "read" and self.value is not None and not _is_positive_seconds(self.value):
            raise ValueError("a read's value is its timeout: a positive, finite number of seconds")
        if self.op == "start" and self.value not in (None, True):
            raise ValueError("a start's value is true (an explicit start) or null")
        return self


class CommSendManyFrame(_Frame):
    """Values the program sent, in order: ``[address, value, size_bytes]`` items, answered
    by one ``CommReplyFrame`` for them all. The worker batches ``comms.send`` calls into
    it; ``size_bytes`` is the item's JSON size on its way to the page (for pacing)."""

    type: Literal["comm_send_many"] = "comm_send_many"
    request_id: str
    items: list[tuple[str, Any, Annotated[int, Field(ge=0)]]]


class CommSubscriptionFrame(_Frame):
    """The first subscriber of an address appeared (``subscribed``) or the last one left."""

    type: Literal["comm_subscription"] = "comm_subscription"
    address: str
    subscribed: bool


KernelToWorker = Annotated[
    Union[
        ExecuteFrame,
        CompleteFrame,
        InspectFrame,
        HistoryFrame,
        InputReplyFrame,
        CommValueFrame,
        CommReplyFrame,
        CommReadRequestFrame,
        RelayCommFrame,
        ShutdownFrame,
    ],
    Field(discriminator="type"),
]

WorkerToKernel = Annotated[
    Union[
        ReadyFrame,
        StreamFrame,
        DisplayDataFrame,
        ExecuteResultFrame,
        ErrorFrame,
        ClearOutputFrame,
        InputRequestFrame,
        ExecuteReplyFrame,
        ReplyFrame,
        CommRequestFrame,
        CommSendManyFrame,
        CommSubscriptionFrame,
        RelayCommFrame,
    ],
    Field(discriminator="type"),
]

KERNEL_TO_WORKER: TypeAdapter[KernelToWorker] = TypeAdapter(KernelToWorker)
WORKER_TO_KERNEL: TypeAdapter[WorkerToKernel] = TypeAdapter(WorkerToKernel)
