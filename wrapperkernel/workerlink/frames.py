"""Every frame that crosses the kernel<->worker link, as pydantic models.

Both sides import these models, so a frame is validated once on the way in and dumped on
the way out. Frames that belong to a Jupyter request carry ``req``: the ``msg_id`` of that
request, which the kernel uses to parent the IOPub messages it publishes.

This module owns the shapes only. It must never do I/O or import either side's code.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    TypeAdapter,
    model_validator,
)


def _is_positive_seconds(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return 0 < float(value) < math.inf
    except OverflowError:
        return False


class Frame(BaseModel):
    """The base of every frame: unknown fields are an error, and a frame never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BinaryFrame(Frame):
    """A frame whose value may hold binary buffers (wrapperkernel/buffers.py): the JSON has
    null at each of ``buffer_paths``, and ``buffers`` (bytes-like, in the same order)
    travel after the JSON, as they are (framing.py). ``buffers`` is not part of the JSON."""

    buffer_paths: list[list[str | int]] = Field(default_factory=list)
    buffers: list[Any] = Field(default_factory=list, exclude=True, repr=False)


# --------------------------------------------------------------------- kernel -> worker


class ExecuteFrame(Frame):
    type: Literal["execute"] = "execute"
    req: str
    subshell: str | None = None  # the subshell that serves it; None: the main shell
    code: str
    silent: bool = False
    store_history: bool = True
    user_expressions: dict[str, str] = Field(default_factory=dict)
    allow_stdin: bool = False


class CompleteFrame(Frame):
    type: Literal["complete"] = "complete"
    req: str
    subshell: str | None = None  # the subshell that serves it; None: the main shell
    code: str
    cursor_pos: int


class InspectFrame(Frame):
    type: Literal["inspect"] = "inspect"
    req: str
    subshell: str | None = None  # the subshell that serves it; None: the main shell
    code: str
    cursor_pos: int
    detail_level: int = 0


class HistoryFrame(Frame):
    type: Literal["history"] = "history"
    req: str
    subshell: str | None = None  # the subshell that serves it; None: the main shell
    hist_access_type: Literal["tail", "range", "search"]
    output: bool = False
    raw: bool = True
    session: int = 0
    start: int = 0
    stop: int | None = None
    n: int | None = None
    pattern: str = "*"
    unique: bool = False


class InputReplyFrame(Frame):
    """The frontend's answer to ``input()``; ``error`` says why its input_reply could not
    be used (``value`` is then empty), so that ``input()`` raises instead of waiting."""

    type: Literal["input_reply"] = "input_reply"
    req: str
    value: str
    error: str | None = None


class AddressValueFrame(BinaryFrame):
    """A value from the page for an address the program subscribed to."""

    type: Literal["address_value"] = "address_value"
    address: str
    value: Any = None


class AddressReplyFrame(BinaryFrame):
    """The answer to one request of the program (``AddressStartFrame`` ... ``AddressSendManyFrame``)."""

    type: Literal["address_reply"] = "address_reply"
    request_id: str
    ok: bool
    value: Any = None
    error: str | None = None


class AddressReadRequestFrame(Frame):
    """The page asks for the program's current value of a subscribed address."""

    type: Literal["address_read_request"] = "address_read_request"
    address: str


class RelayCommFrame(Frame):
    """A message of the standard ``comm`` package (ipywidgets, anywidget, ...) relayed
    between the page's own kernel connection and the worker, in either direction.
    ``buffers`` are base64 text: the link carries JSON only."""

    type: Literal["relay_comm"] = "relay_comm"
    msg_type: Literal["comm_open", "comm_msg", "comm_close"]
    comm_id: str
    data: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    buffers: list[str] = Field(default_factory=list)
    target_name: str | None = None
    target_module: str | None = None


class ShutdownFrame(Frame):
    type: Literal["shutdown"] = "shutdown"


class SubshellCreateFrame(Frame):
    """Start a subshell (JEP 91): a thread of the worker that serves the requests whose
    frames carry this ``subshell``, in the same namespace as the main shell."""

    type: Literal["subshell_create"] = "subshell_create"
    subshell: str


class SubshellDeleteFrame(Frame):
    """End a subshell's thread once its running request, if any, is over."""

    type: Literal["subshell_delete"] = "subshell_delete"
    subshell: str


class DebuggerStartFrame(Frame):
    """Debug from now on: connect debugpy (the first time) to the kernel's listener on
    127.0.0.1 at ``port``; pydevd proves itself with ``client_token`` (kernel/debugger.py)."""

    type: Literal["debugger_start"] = "debugger_start"
    port: int
    client_token: str


class DebuggerStopFrame(Frame):
    """The frontend's debug session ended (DAP ``disconnect``): cells compile as usual again."""

    type: Literal["debugger_stop"] = "debugger_stop"


DebugQueryCommand = Literal["inspectVariables", "variables", "richInspectVariables", "modules"]


class DebugQueryFrame(Frame):
    """A debug request about the program's namespace while no thread is stopped (then
    the debugger has no frame to ask): answered in the worker, also while a cell runs."""

    type: Literal["debug_query"] = "debug_query"
    req: str
    command: DebugQueryCommand
    arguments: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------- worker -> kernel


class ReadyFrame(Frame):
    type: Literal["ready"] = "ready"
    pid: int
    ipython_version: str


class StreamFrame(Frame):
    type: Literal["stream"] = "stream"
    req: str
    name: Literal["stdout", "stderr"]
    text: str


class DisplayDataFrame(Frame):
    type: Literal["display_data"] = "display_data"
    req: str
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)
    transient: dict[str, Any] = Field(default_factory=dict)
    update: bool = False


class ExecuteResultFrame(Frame):
    type: Literal["execute_result"] = "execute_result"
    req: str
    execution_count: int
    data: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)


class ErrorFrame(Frame):
    type: Literal["error"] = "error"
    req: str
    ename: str
    evalue: str
    traceback: list[str]


class ClearOutputFrame(Frame):
    type: Literal["clear_output"] = "clear_output"
    req: str
    wait: bool = False


class InputRequestFrame(Frame):
    type: Literal["input_request"] = "input_request"
    req: str
    prompt: str
    password: bool = False


class ExecuteReplyFrame(Frame):
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


class ReplyFrame(Frame):
    """The reply content of a complete/inspect/history request, in Jupyter's spelling."""

    type: Literal["reply"] = "reply"
    req: str
    content: dict[str, Any]


class AddressStartFrame(Frame):
    """The program wants a page connected (``comms.start()``, or implicitly before its
    first use); ``retry`` marks an explicit start, which tries the install again after a
    failure. Answered, like every request below, by one ``AddressReplyFrame``."""

    type: Literal["address_start"] = "address_start"
    request_id: str
    retry: StrictBool = False


class AddressSendFrame(BinaryFrame):
    """One value for the page, sent on its own (the answer to a read request of the
    page); the program's ``comms.send`` calls travel batched in ``AddressSendManyFrame``."""

    type: Literal["address_send"] = "address_send"
    request_id: str
    address: str
    value: Any = None


class AddressReadFrame(Frame):
    """The program asks the page for its current value of ``address``; the reply's value
    is the page's answer. ``timeout_s`` bounds the wait (None: the kernel's default)."""

    type: Literal["address_read"] = "address_read"
    request_id: str
    address: str
    timeout_s: StrictFloat | None = None

    @model_validator(mode="after")
    def _positive_timeout(self) -> AddressReadFrame:
        # Checked here, at the boundary, so the core never meets a read it cannot bound.
        if self.timeout_s is not None and not _is_positive_seconds(self.timeout_s):
            raise ValueError("a read's timeout_s is a positive, finite number of seconds")
        return self


class AddressSyncFrame(Frame):
    """Answered once every request the program made before it has been answered."""

    type: Literal["address_sync"] = "address_sync"
    request_id: str


class AddressSendManyFrame(BinaryFrame):
    """Values the program sent, in order: ``[address, value, size_bytes]`` items, answered
    by one ``AddressReplyFrame`` for them all. The worker batches ``comms.send`` calls into
    it; ``size_bytes`` is the item's JSON size on its way to the page (for pacing)."""

    type: Literal["address_send_many"] = "address_send_many"
    request_id: str
    items: list[tuple[str, Any, Annotated[int, Field(ge=0)]]]


# Every request of the program, each answered by one ``AddressReplyFrame``.
AddressRequestFrame = Union[AddressStartFrame, AddressSendFrame, AddressReadFrame,
                            AddressSyncFrame, AddressSendManyFrame]


class DebuggerStartedFrame(Frame):
    """The answer to ``DebuggerStartFrame``: ``error`` says why debugging cannot start."""

    type: Literal["debugger_started"] = "debugger_started"
    error: str | None = None


class DebugQueryReplyFrame(Frame):
    type: Literal["debug_query_reply"] = "debug_query_reply"
    req: str
    success: bool
    body: dict[str, Any] = Field(default_factory=dict)
    message: str = ""


class AddressSubscriptionFrame(Frame):
    """The first subscriber of an address appeared (``subscribed``) or the last one left."""

    type: Literal["address_subscription"] = "address_subscription"
    address: str
    subscribed: bool


KernelToWorker = Annotated[
    Union[
        ExecuteFrame,
        CompleteFrame,
        InspectFrame,
        HistoryFrame,
        InputReplyFrame,
        AddressValueFrame,
        AddressReplyFrame,
        AddressReadRequestFrame,
        RelayCommFrame,
        ShutdownFrame,
        SubshellCreateFrame,
        SubshellDeleteFrame,
        DebuggerStartFrame,
        DebuggerStopFrame,
        DebugQueryFrame,
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
        AddressStartFrame,
        AddressSendFrame,
        AddressReadFrame,
        AddressSyncFrame,
        AddressSendManyFrame,
        AddressSubscriptionFrame,
        RelayCommFrame,
        DebuggerStartedFrame,
        DebugQueryReplyFrame,
    ],
    Field(discriminator="type"),
]

# pydantic's JSON parser keeps, by default, up to 16,384 of the short strings it has read
# (one cache for every parse in the process); frame values (request ids, output, addresses)
# rarely repeat, so that cache would only hold memory (up to about 2 MB per process, filling
# during the first minutes of a session). Keys repeat: those are cached.
_LINK_CONFIG = ConfigDict(cache_strings="keys")
KERNEL_TO_WORKER: TypeAdapter[KernelToWorker] = TypeAdapter(KernelToWorker, config=_LINK_CONFIG)
WORKER_TO_KERNEL: TypeAdapter[WorkerToKernel] = TypeAdapter(WorkerToKernel, config=_LINK_CONFIG)
