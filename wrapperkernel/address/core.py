"""The address channel's connection state machine: events in, actions out, no I/O.

Owns the lifecycle of the one page client a kernel talks to (DESIGN.md, "The address
channel"): publishing the install script, accepting the page's ``comm_open``,
heartbeats, reinstalling after a stale connection, giving up on a page that never
connects; the program requests waiting for a connection; the reads waiting for the
page's answer; the set of addresses the program subscribed to; and the delivery of the
program's values, through the ``Outbox`` it owns, until the page acknowledges them.

Must never: touch a socket, read a clock, start a thread, use asyncio or logging, or
import another wrapperkernel module than ``comm.defaults`` (constants) and
``comm.outbox`` (pure). Time arrives on events (``now_s``); timeouts leave as
``StartTimer`` and come back as ``TimerFired``; log lines leave as ``Log``.

The delivery contract (docs/comms-api.md, "Delivery"): every value the program sends is
either handed to a live page connection or reported to the program as not delivered.
A send is answered ``ok`` once the page acknowledged the message carrying its last value
(``#ack`` with the message's ``seq``), or once the connection it was handed to is gone;
it is answered with an error (``value``: how many of its values were not delivered) when
no page connects in time. Values still queued when a page is replaced or goes away stay
queued, in order, for the next page, after its ack; nothing is published to a comm the
core knows is gone. The program bounds what it has unanswered (its send blocks past
the bound), so the kernel's queue to the page is bounded too.

Rule (after h11's ``_state.py``): everything that changes the connection state lives
in this file, and every state change goes through the ``TRANSITIONS`` table below. A
(state, trigger) pair missing from the table is *our* bug and raises
``AddressStateError``. Bad input from the page is the *peer's* mistake: it never raises,
it becomes a ``Log`` action and the machine carries on.

Effects that go with transitions are written out as code in ``AddressCore``:

- entering CONNECTING: publish the install script under a new display id, start the
  "connect" timer;
- entering PINGING: send ``#heartbeat/ping``, start the "heartbeat" timer;
- a valid comm_open (any state -> OPEN): cancel "connect" and "heartbeat", erase the
  install script, confirm what the previous comm had in flight, ack, ask again the reads
  asked on a previous comm, flush the queue;
- PONG_RECEIVED (or an #ack that advances: the page is handling our messages, and a
  pong queued behind a backlog of values could not come in time) while PINGING:
  cancel "heartbeat", flush the queue;
- entering FAILED: erase the install script, fail every waiting request and every value
  still queued;
- entering CLOSED: forget the comm; reads asked on it go back to the queue; what it had
  in flight is confirmed, the values queued for it wait for the next page.

One state-triggered rule: IDLE or CLOSED with requests or values still waiting (after a
close or a stale heartbeat) counts as a program use, so the script is reinstalled and
they are delivered after the reconnect or failed after the connect timeout. And one
timer-triggered one: values in flight with no word from the page for
``heartbeat_request_threshold_s`` count as a use after silence (a ping), so a page that
vanished without a comm_close cannot hold the program's sends for ever.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, TypeAlias

from wrapperkernel.address.defaults import (  # the timeouts' defaults, re-exported here
    HEARTBEAT_REQUEST_THRESHOLD_S,
    HEARTBEAT_TIMEOUT_S,
    PRIVATE_PREFIX,
    READ_TIMEOUT_S,
    WAIT_FOR_CONNECTION_S,
)
from wrapperkernel.address.outbox import Outbox

# --- protocol constants (DESIGN.md, "The address channel") -------------------------

COMM_TARGET_NAME = "wrapperkernel_comm"
ACK_ADDRESS = "#comm_open_ack"
PING_ADDRESS = "#heartbeat/ping"
PONG_ADDRESS = "#heartbeat/pong"
# Page -> kernel: the highest ``seq`` (comm_msg metadata) of the messages it handled.
RECEIVED_ADDRESS = "#ack"


TimerName: TypeAlias = str
CONNECT_TIMER: TimerName = "connect"
HEARTBEAT_TIMER: TimerName = "heartbeat"
FLUSH_TIMER: TimerName = "flush"  # the outbox's pacing lets the next message go
SILENCE_TIMER: TimerName = "silence"  # values in flight and the page quiet: check on it
READ_TIMER_PREFIX = "read:"
OWN_TIMERS = frozenset({CONNECT_TIMER, HEARTBEAT_TIMER, FLUSH_TIMER, SILENCE_TIMER})
_SILENCE_SLACK_S = 1e-6
# Messages on the comm that the page has not acknowledged yet, at most (values wait in
# the outbox meanwhile). Above the page's ack_every_msgs, so a page that acknowledges
# as it should never stalls the flow.
MAX_UNACKED_MSGS = 64


def read_timer(request_id: str) -> TimerName:
    """The timer bounding the wait for the page's answer to read request ``request_id``."""
    return READ_TIMER_PREFIX + request_id


@dataclass(frozen=True, slots=True)
class AddressTimings:
    """Timeouts of the lifecycle; defaults follow DESIGN.md, tests shrink or stretch them."""

    wait_for_connection_s: float = WAIT_FOR_CONNECTION_S
    heartbeat_request_threshold_s: float = HEARTBEAT_REQUEST_THRESHOLD_S
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    read_timeout_s: float = READ_TIMEOUT_S


class AddressStateError(Exception):
    """The kernel misused the core (our mistake): an event the adapter should never build.

    The core validates an event before changing anything, so after this exception the
    machine is exactly as it was before the offending event.
    """


# --- states and the transition table ----------------------------------------------


class State(Enum):
    IDLE = "idle"  # never installed; the next program use publishes the script
    CONNECTING = "connecting"  # script published, waiting for the page's comm_open
    OPEN = "open"  # comm_open acknowledged; requests go straight to the page
    PINGING = "pinging"  # open but silent too long; waiting for #heartbeat/pong
    CLOSED = "closed"  # page closed the comm, or it went stale; behaves like IDLE
    FAILED = "failed"  # no page connected in time; requests fail fast until one does


class Trigger(Enum):
    PROGRAM_STARTED = "program asked to start the channel"  # only clears a failure
    PROGRAM_USED = "program request needs the page"
    PROGRAM_USED_AFTER_SILENCE = "program request needs the page, which has been silent"
    PAGE_OPENED = "valid comm_open from the page"
    PAGE_CLOSED = "page closed the current comm"
    PONG_RECEIVED = "#heartbeat/pong on the current comm"
    CONNECT_TIMED_OUT = "connect timer fired"
    HEARTBEAT_TIMED_OUT = "heartbeat timer fired"
    WORKER_RESTARTED = "worker process replaced"


S, T = State, Trigger
TRANSITIONS: Mapping[State, Mapping[Trigger, State]] = {
    S.IDLE: {
        T.PROGRAM_STARTED: S.IDLE,
        T.PROGRAM_USED: S.CONNECTING,
        T.PAGE_OPENED: S.OPEN,
        T.WORKER_RESTARTED: S.IDLE,
    },
    S.CONNECTING: {
        T.PROGRAM_STARTED: S.CONNECTING,
        T.PROGRAM_USED: S.CONNECTING,
        T.PAGE_OPENED: S.OPEN,
        T.CONNECT_TIMED_OUT: S.FAILED,
        T.WORKER_RESTARTED: S.CONNECTING,
    },
    S.OPEN: {
        T.PROGRAM_STARTED: S.OPEN,
        T.PROGRAM_USED: S.OPEN,
        T.PROGRAM_USED_AFTER_SILENCE: S.PINGING,
        T.PAGE_OPENED: S.OPEN,  # a reloaded page replaces the old connection
        T.PAGE_CLOSED: S.CLOSED,
        T.PONG_RECEIVED: S.OPEN,
        T.WORKER_RESTARTED: S.OPEN,
    },
    S.PINGING: {
        T.PROGRAM_STARTED: S.PINGING,
        T.PROGRAM_USED: S.PINGING,
        T.PROGRAM_USED_AFTER_SILENCE: S.PINGING,
        T.PAGE_OPENED: S.OPEN,
        T.PAGE_CLOSED: S.CLOSED,
        T.PONG_RECEIVED: S.OPEN,
        T.HEARTBEAT_TIMED_OUT: S.CLOSED,  # stale: page reloaded or server restarted
        T.WORKER_RESTARTED: S.PINGING,
    },
    S.CLOSED: {
        T.PROGRAM_STARTED: S.CLOSED,
        T.PROGRAM_USED: S.CONNECTING,
        T.PAGE_OPENED: S.OPEN,
        T.WORKER_RESTARTED: S.CLOSED,
    },
    S.FAILED: {
        T.PROGRAM_STARTED: S.IDLE,  # an explicit start retries the install
        T.PROGRAM_USED: S.FAILED,  # fail fast with the same explanation
        T.PAGE_OPENED: S.OPEN,  # a late page still opens the channel normally
        T.WORKER_RESTARTED: S.IDLE,  # a new program gets a fresh attempt
    },
}
del S, T

# The comm to the page exists exactly in these states.
CONNECTED_STATES = frozenset({State.OPEN, State.PINGING})


# --- events: what happened (the adapter builds them) ------------------------------

Op: TypeAlias = Literal["start", "send", "send_many", "read", "sync"]
OPS: frozenset[str] = frozenset({"start", "send", "send_many", "read", "sync"})
LogLevel: TypeAlias = Literal["debug", "info", "warning"]


@dataclass(frozen=True, slots=True)
class Event:
    now_s: float


@dataclass(frozen=True, slots=True)
class ProgramRequested(Event):
    """The user program used the channel; answered by exactly one ``ReplyToProgram``.

    ``start``: make sure the page client is installed and connected (also retries after
    a failure). ``send``: ``value`` to ``address``. ``send_many``: ``value`` is a list of
    ``(address, value, size_bytes)`` items, sent in order, all or none; ``size_bytes`` is
    the item's JSON size as the program measured it, for pacing. ``read``: ask the page for the
    current value of ``address``; ``value`` is the timeout in seconds, or None for
    ``AddressTimings.read_timeout_s``. ``sync``: resolves once every request made before it
    has been handed to the page connection.
    """

    request_id: str
    op: Op
    address: str | None = None
    value: Any = None


@dataclass(frozen=True, slots=True)
class ProgramSubscribed(Event):
    address: str


@dataclass(frozen=True, slots=True)
class ProgramUnsubscribed(Event):
    address: str


@dataclass(frozen=True, slots=True)
class PageCommOpened(Event):
    comm_id: str
    target_name: str
    data: Any


@dataclass(frozen=True, slots=True)
class PageCommMsg(Event):
    comm_id: str
    data: Any


@dataclass(frozen=True, slots=True)
class PageCommClosed(Event):
    comm_id: str


@dataclass(frozen=True, slots=True)
class TimerFired(Event):
    timer: TimerName


@dataclass(frozen=True, slots=True)
class WorkerRestarted(Event):
    pass


# --- actions: what the adapter must do --------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    pass


@dataclass(frozen=True, slots=True)
class PublishInstallScript(Action):
    """Publish display_data holding the page client script under transient display_id."""

    display_id: str


@dataclass(frozen=True, slots=True)
class EraseInstallScript(Action):
    """update_display_data with empty data, so the script is never saved in the notebook."""

    display_id: str


@dataclass(frozen=True, slots=True)
class SendCommMsg(Action):
    """comm_msg to the page, now: ``data`` is one item or ``{"batch": [...]}``; ``seq``
    (1, 2, ... on each comm) goes in the message's metadata, for the page's ``#ack``."""

    comm_id: str
    data: dict[str, Any]
    seq: int


@dataclass(frozen=True, slots=True)
class SendCommClose(Action):
    comm_id: str


@dataclass(frozen=True, slots=True)
class StartTimer(Action):
    """Fire ``TimerFired(timer)`` after ``delay_s``. Starting a timer whose name is
    already running replaces it; a replaced or cancelled timer that still fires (a race
    in the adapter) is ignored by the core with a debug log."""

    timer: TimerName
    delay_s: float


@dataclass(frozen=True, slots=True)
class CancelTimer(Action):
    timer: TimerName


@dataclass(frozen=True, slots=True)
class DeliverToProgram(Action):
    """A page value for an address the program subscribed to."""

    address: str
    value: Any


@dataclass(frozen=True, slots=True)
class RelayReadRequest(Action):
    """The page asked for the current value of a subscribed address; the program
    answers with an ordinary ``send``."""

    address: str


@dataclass(frozen=True, slots=True)
class ReplyToProgram(Action):
    request_id: str
    ok: bool
    value: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Log(Action):
    level: LogLevel
    text: str


# --- page payloads (validated here, once) ------------------------------------------


@dataclass(frozen=True, slots=True)
class _PageValue:
    address: str
    value: Any


@dataclass(frozen=True, slots=True)
class _PageReadRequest:
    address: str


@dataclass(frozen=True, slots=True)
class _PageReadError:
    address: str
    error: str


_PageItem: TypeAlias = "_PageValue | _PageReadRequest | _PageReadError"
_ITEM_KINDS = ("value", "read_request", "read_error")

_preview = reprlib.Repr()
_preview.maxlevel = 3
_preview.maxstring = 80
_preview.maxother = 80


def _parse_item(raw: object) -> _PageItem | str:
    """One ``{address, value | read_request | read_error}`` item, or what is wrong with it."""
    if not isinstance(raw, dict):
        return f"expected an object, got {type(raw).__name__}"
    address = raw.get("address")
    if not isinstance(address, str):
        return "missing or non-string 'address'"
    kinds = [kind for kind in _ITEM_KINDS if kind in raw]
    if len(kinds) != 1:
        return f"expected exactly one of 'value', 'read_request', 'read_error', got {kinds}"
    if kinds[0] == "value":
        return _PageValue(address, raw["value"])  # null, 0, false and "" are values too
    if kinds[0] == "read_request":
        if raw["read_request"] is not True:
            return "'read_request' must be true"
        return _PageReadRequest(address)
    if not isinstance(raw["read_error"], str):
        return "'read_error' must be a string"
    return _PageReadError(address, raw["read_error"])


def _parse_page_data(data: object) -> tuple[list[_PageItem], list[str]]:
    """Items of a comm_msg in order, plus one problem text per item that was rejected."""
    if isinstance(data, dict) and "batch" in data:
        batch = data["batch"]
        if not isinstance(batch, list):
            return [], [f"'batch' must be a list, got {type(batch).__name__}"]
        items: list[_PageItem] = []
        problems: list[str] = []
        for index, raw in enumerate(batch):
            parsed = _parse_item(raw)
            if isinstance(parsed, str):
                problems.append(f"batch item {index}: {parsed}: {_preview.repr(raw)}")
            else:
                items.append(parsed)
        return items, problems
    parsed = _parse_item(data)
    if isinstance(parsed, str):
        return [], [f"{parsed}: {_preview.repr(data)}"]
    return [parsed], []


def _is_private(address: str) -> bool:
    return address.startswith(PRIVATE_PREFIX)


def _json_size(data: Any) -> int:
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False))


def _value_count(request: ProgramRequested) -> int:
    """How many values a request carries to the page."""
    if request.op == "send":
        return 1
    if request.op == "send_many":
        return len(request.value)
    return 0


def _is_item_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[0], str)
        and type(item[2]) is int and item[2] >= 0
        for item in value
    )


# --- the machine --------------------------------------------------------------------


class AddressCore:
    """The kernel's side of the address channel for one page connection at a time.

    ``handle(event)`` returns the actions to perform, in order. Deterministic: display
    ids come from the injected ``new_id``; time only from events.
    """

    def __init__(
        self,
        kernel_id: str,
        new_id: Callable[[], str],
        timings: AddressTimings | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._kernel_id = kernel_id
        self._new_id = new_id
        self._timings = timings if timings is not None else AddressTimings()
        self._state = State.IDLE
        self._comm_id: str | None = None
        self._last_heard_s = -math.inf
        self._display_id: str | None = None  # install script published, not yet erased
        self._failure: str | None = None  # the explanation repeated while FAILED
        self._ping_count = 0
        self._armed: set[TimerName] = set()
        self._subscriptions: set[str] = set()
        # Requests waiting for the connection, in the order the program made them.
        self._queue: deque[ProgramRequested] = deque()
        # Reads asked on the current comm, waiting for the page's answer.
        self._asked: dict[str, ProgramRequested] = {}
        # Every request accepted and not yet answered (queued, asked, or being handled).
        self._pending: set[str] = set()
        self._outbox = outbox if outbox is not None else Outbox()
        # Messages sent on the current comm (their seq) that carry the last value of a
        # send, waiting for the page's #ack: (seq, request ids).
        self._in_flight: deque[tuple[int, tuple[str, ...]]] = deque()
        self._seq = 0
        self._acked_seq = 0  # the highest seq the page acknowledged
        # Sends handed to the outbox and not answered yet, by request id.
        self._sending: dict[str, ProgramRequested] = {}
        self._actions: list[Action] = []
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            ProgramRequested: self._on_program_requested,
            ProgramSubscribed: self._on_program_subscribed,
            ProgramUnsubscribed: self._on_program_unsubscribed,
            PageCommOpened: self._on_page_comm_opened,
            PageCommMsg: self._on_page_comm_msg,
            PageCommClosed: self._on_page_comm_closed,
            TimerFired: self._on_timer_fired,
            WorkerRestarted: self._on_worker_restarted,
        }

    # --- public surface ---

    @property
    def state(self) -> State:
        return self._state

    @property
    def comm_id(self) -> str | None:
        """The open comm (for comm_info_reply), None unless OPEN or PINGING."""
        return self._comm_id

    @property
    def subscriptions(self) -> frozenset[str]:
        return frozenset(self._subscriptions)

    @property
    def armed_timers(self) -> frozenset[TimerName]:
        return frozenset(self._armed)

    @property
    def pending_request_ids(self) -> frozenset[str]:
        """Program requests that have not had their ``ReplyToProgram`` yet."""
        return frozenset(self._pending)

    @property
    def unconfirmed_request_ids(self) -> frozenset[str]:
        """Sends whose values are queued or in flight, not yet acknowledged by the page."""
        return frozenset(self._sending)

    @property
    def queued_values(self) -> bool:
        """Whether program values wait in the outbox."""
        return self._outbox.has_tagged()

    def handle(self, event: Event) -> list[Action]:
        handler = self._handlers.get(type(event))
        if handler is None:
            raise AddressStateError(f"not a comm core event: {event!r}")
        self._actions = []
        handler(event)
        self._pump(event.now_s)
        actions, self._actions = self._actions, []
        return actions

    # --- transitions ---

    def _fire(self, trigger: Trigger) -> State:
        try:
            new_state = TRANSITIONS[self._state][trigger]
        except KeyError:
            raise AddressStateError(
                f"no transition for {trigger.name} in state {self._state.name}"
            ) from None
        self._state = new_state
        return new_state

    # --- program events ---

    def _on_program_requested(self, event: ProgramRequested) -> None:
        read_timeout_s = self._validate_request(event)
        self._pending.add(event.request_id)  # removed by its one ReplyToProgram
        if event.op == "sync":
            if self._queue:
                self._queue.append(event)  # resolves when everything before it is out
            else:
                self._reply(event, ok=True)
            return
        private = [event.address] if event.op in ("send", "read") else []
        if event.op == "send_many":
            private = [item[0] for item in event.value]
        private = [address for address in private if _is_private(address)]
        if private:
            self._reply(
                event,
                ok=False,
                error=f"Address {private[0]!r} starts with '#', which is reserved for "
                "the wrapperkernel protocol; use an address without a leading '#'.",
            )
            return
        # Only an explicit start (comms.start(), %widgets: value True) retries after a
        # failure; the implicit start before a send or read fails fast while FAILED.
        if (
            event.op == "start"
            and event.value is True
            and self._fire(Trigger.PROGRAM_STARTED) is State.IDLE
        ):
            self._failure = None
        old_state = self._state
        silent = (
            self._comm_id is not None
            and event.now_s - self._last_heard_s > self._timings.heartbeat_request_threshold_s
        )
        trigger = Trigger.PROGRAM_USED_AFTER_SILENCE if silent else Trigger.PROGRAM_USED
        new_state = self._fire(trigger)
        if new_state is State.FAILED:
            self._reply(event, ok=False, value=_value_count(event) or None, error=self._failure)
            return
        if event.op == "read":
            self._start_timer(read_timer(event.request_id), read_timeout_s)
        if new_state is State.OPEN:
            self._perform(event)
            return
        self._queue.append(event)
        if new_state is not old_state:
            self._enter_waiting_state(new_state)

    def _validate_request(self, event: ProgramRequested) -> float:
        """Reject adapter mistakes before anything changes; returns the read timeout."""
        if not isinstance(event.request_id, str):
            raise AddressStateError(f"request_id must be a string: {event!r}")
        if event.request_id in self._pending:
            raise AddressStateError(f"request_id {event.request_id!r} is already pending")
        if event.op not in OPS:
            raise AddressStateError(f"unknown program op {event.op!r}")
        if event.op in ("send", "read") and not isinstance(event.address, str):
            raise AddressStateError(f"{event.op} needs a string address: {event!r}")
        if event.op == "send_many" and not _is_item_list(event.value):
            raise AddressStateError(
                f"send_many needs a list of (address, value, size_bytes) items: {event!r}")
        if event.op != "read" or event.value is None:
            return self._timings.read_timeout_s
        problem = AddressStateError(f"read timeout must be a positive number of seconds: {event!r}")
        if isinstance(event.value, bool) or not isinstance(event.value, (int, float)):
            raise problem
        try:
            timeout_s = float(event.value)
        except OverflowError:
            raise problem from None
        if not 0 < timeout_s < math.inf:
            raise problem
        return timeout_s

    def _on_program_subscribed(self, event: ProgramSubscribed) -> None:
        if not isinstance(event.address, str):
            raise AddressStateError(f"subscription address must be a string: {event!r}")
        if _is_private(event.address):
            self._log("warning", f"ignored subscription to private address {event.address!r}")
            return
        self._subscriptions.add(event.address)

    def _on_program_unsubscribed(self, event: ProgramUnsubscribed) -> None:
        if not isinstance(event.address, str):
            raise AddressStateError(f"subscription address must be a string: {event!r}")
        if event.address not in self._subscriptions:
            self._log("debug", f"unsubscribe from {event.address!r}, which had no subscriber")
        self._subscriptions.discard(event.address)

    def _on_worker_restarted(self, event: WorkerRestarted) -> None:
        self._subscriptions.clear()
        self._fail_all_waiting(
            "The Python worker process was restarted before this request completed; "
            "run the cell again."
        )
        self._fire(Trigger.WORKER_RESTARTED)
        if self._state is State.IDLE:
            self._failure = None

    # --- page events ---

    def _on_page_comm_opened(self, event: PageCommOpened) -> None:
        if event.target_name != COMM_TARGET_NAME:
            # The kernel answers comm_open for unknown targets with comm_close.
            self._actions.append(SendCommClose(event.comm_id))
            self._log(
                "warning",
                f"comm_open {event.comm_id!r} for unknown target {_preview.repr(event.target_name)}"
                " answered with comm_close",
            )
            return
        kernel_id = event.data.get("kernel_id") if isinstance(event.data, dict) else None
        if kernel_id != self._kernel_id:
            self._log(
                "warning",
                f"ignored comm_open {event.comm_id!r} for kernel id {_preview.repr(kernel_id)}"
                f" (this kernel is {self._kernel_id!r})",
            )
            return
        old_comm_id = self._comm_id
        if old_comm_id is not None:
            # No comm_close to the old comm: its page is gone or has replaced itself.
            self._log("info", f"comm {event.comm_id!r} replaces comm {old_comm_id!r}")
            self._requeue_asked_reads()
            self._leave_connection()
        self._fire(Trigger.PAGE_OPENED)
        self._comm_id = event.comm_id
        self._last_heard_s = event.now_s
        self._failure = None
        self._cancel_timer(CONNECT_TIMER)
        self._cancel_timer(HEARTBEAT_TIMER)
        self._erase_install_script()
        self._send({"address": ACK_ADDRESS, "value": True}, urgent=True)
        self._log("info", f"comm {event.comm_id!r} open")
        self._flush()

    def _on_page_comm_msg(self, event: PageCommMsg) -> None:
        if self._comm_id is None or event.comm_id != self._comm_id:
            self._log("info", f"ignored comm_msg for unknown or closed comm {event.comm_id!r}")
            return
        self._last_heard_s = event.now_s
        items, problems = _parse_page_data(event.data)
        for problem in problems:
            self._log("warning", f"ignored malformed comm_msg item from the page: {problem}")
        for item in items:
            if isinstance(item, _PageValue):
                self._on_page_value(item)
            elif isinstance(item, _PageReadRequest):
                self._on_page_read_request(item)
            else:
                self._on_page_read_error(item)

    def _on_page_value(self, item: _PageValue) -> None:
        if _is_private(item.address):
            if item.address == PING_ADDRESS:
                self._send({"address": PONG_ADDRESS, "value": item.value}, urgent=True)
            elif item.address == PONG_ADDRESS:
                self._on_pong(item.value)
            elif item.address == RECEIVED_ADDRESS:
                self._on_received(item.value)
            else:
                self._log("warning", f"ignored unknown private address {item.address!r}")
            return
        answered = self._complete_reads(item.address, ok=True, value=item.value)
        if item.address in self._subscriptions:
            self._actions.append(DeliverToProgram(item.address, item.value))
        elif not answered:
            # A choice, not a loss: only subscribed addresses reach the program.
            self._log("debug", f"value for {item.address!r} dropped: no subscriber")

    def _on_received(self, value: Any) -> None:
        """The page handled every message up to ``seq`` = ``value``: its sends are done."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self._log("warning", f"ignored #ack with a value that is not a seq: {_preview.repr(value)}")
            return
        if value > self._seq:
            self._log("warning", f"#ack for seq {value}, but only {self._seq} were sent: "
                                 "acknowledging those")
        advanced = value > self._acked_seq
        self._acked_seq = max(self._acked_seq, min(value, self._seq))
        while self._in_flight and self._in_flight[0][0] <= value:
            self._confirm(self._in_flight.popleft()[1])
        if not self._waits_on_page():
            self._cancel_timer(SILENCE_TIMER)
        if advanced and self._state is State.PINGING:
            self._on_pong(None, answered_by="#ack")

    def _on_pong(self, value: Any, answered_by: str = "pong") -> None:
        was_pinging = self._state is State.PINGING
        self._fire(Trigger.PONG_RECEIVED)
        if not was_pinging:
            self._log("debug", f"unsolicited pong {_preview.repr(value)}")
            return
        if answered_by != "pong":
            self._log("debug", f"ping {self._ping_count} answered by an {answered_by}")
        elif value != self._ping_count:
            self._log("debug", f"pong {_preview.repr(value)} for ping {self._ping_count}")
        self._cancel_timer(HEARTBEAT_TIMER)
        self._flush()

    def _on_page_read_request(self, item: _PageReadRequest) -> None:
        if _is_private(item.address):
            self._log("warning", f"ignored read_request for private address {item.address!r}")
        elif item.address in self._subscriptions:
            self._actions.append(RelayReadRequest(item.address))
        else:
            # Answer rather than let the page wait for its own timeout.
            self._send(
                {
                    "address": item.address,
                    "read_error": f"No program is subscribed to {item.address!r}.",
                }
            )

    def _on_page_read_error(self, item: _PageReadError) -> None:
        error = f"The page could not read {item.address!r}: {item.error}"
        if not self._complete_reads(item.address, ok=False, error=error):
            self._log("debug", f"read_error for {item.address!r} with no read pending")

    def _on_page_comm_closed(self, event: PageCommClosed) -> None:
        if self._comm_id is None or event.comm_id != self._comm_id:
            self._log("info", f"ignored comm_close for unknown or closed comm {event.comm_id!r}")
            return
        self._log("info", f"page closed comm {event.comm_id!r}")
        self._fire(Trigger.PAGE_CLOSED)
        self._lose_comm()

    # --- timers ---

    def _on_timer_fired(self, event: TimerFired) -> None:
        timer = event.timer
        is_read = isinstance(timer, str) and timer.startswith(READ_TIMER_PREFIX)
        if timer not in OWN_TIMERS and not is_read:
            raise AddressStateError(f"unknown timer {timer!r}")
        if timer not in self._armed:
            self._log("debug", f"ignored timer {timer!r}: cancelled or replaced")
            return
        if is_read:
            self._on_read_timed_out(timer[len(READ_TIMER_PREFIX) :])
            return
        self._armed.discard(timer)
        if timer == FLUSH_TIMER:
            return  # handle() pumps the outbox after every event
        if timer == SILENCE_TIMER:
            self._on_silence(event.now_s)
            return
        if timer == CONNECT_TIMER:
            self._fire(Trigger.CONNECT_TIMED_OUT)
            self._erase_install_script()
            self._failure = (
                "No page connected to the wrapperkernel comm channel within "
                f"{self._timings.wait_for_connection_s:g} s. The page client runs only in a "
                "notebook open in JupyterLab or Notebook 7 (not in nbclient, papermill or "
                "jupyter console). Open the notebook in a browser tab, then call "
                "wrapperkernel.comms.start() or restart the kernel to try again."
            )
            self._log("warning", self._failure)
            # Oldest first: the values in the outbox were sent before anything still in
            # the queue, a sync among them, whose failure must find them counted.
            self._drop_queued_values(self._failure)
            self._fail_all_waiting(self._failure)
        else:
            self._log("info", f"no pong from comm {self._comm_id!r}: connection is stale")
            self._fire(Trigger.HEARTBEAT_TIMED_OUT)
            self._lose_comm()

    def _on_silence(self, now_s: float) -> None:
        """Values wait on the page: ping it if it has said nothing for too long."""
        if not self._waits_on_page() or self._state is not State.OPEN:
            return  # all acknowledged meanwhile, or a ping is out already
        quiet_s = now_s - self._last_heard_s
        threshold_s = self._timings.heartbeat_request_threshold_s
        # A timer fires at (not after) its due time, where float round-off can leave
        # quiet_s a hair short of the threshold: that counts as silent too.
        if quiet_s >= threshold_s - _SILENCE_SLACK_S:
            self._log("info", f"no #ack from comm {self._comm_id!r} for {quiet_s:.1f} s: pinging")
            self._enter_waiting_state(self._fire(Trigger.PROGRAM_USED_AFTER_SILENCE))
        else:
            self._start_timer(SILENCE_TIMER, threshold_s - quiet_s)

    def _on_read_timed_out(self, request_id: str) -> None:
        request = self._asked.pop(request_id, None)
        if request is None:
            request = next((r for r in self._queue if r.request_id == request_id), None)
            if request is None:
                raise AddressStateError(f"read timer armed for unknown request {request_id!r}")
            self._queue.remove(request)
        self._armed.discard(read_timer(request_id))
        timeout_s = self._timings.read_timeout_s if request.value is None else request.value
        self._reply(
            request,
            ok=False,
            error=f"The page did not answer the read of {request.address!r} within "
            f"{timeout_s:g} s. Check that the notebook is open in a browser tab and that "
            "the page has a value for this address.",
        )
        self._release_leading_syncs()

    # --- effects ---

    def _enter_waiting_state(self, state: State) -> None:
        if state is State.CONNECTING:
            self._display_id = self._new_id()
            self._actions.append(PublishInstallScript(self._display_id))
            self._start_timer(CONNECT_TIMER, self._timings.wait_for_connection_s)
        elif state is State.PINGING:
            self._ping_count += 1
            self._send({"address": PING_ADDRESS, "value": self._ping_count}, urgent=True)
            self._start_timer(HEARTBEAT_TIMER, self._timings.heartbeat_timeout_s)
        else:
            raise AddressStateError(f"{state.name} is not a state that waits for the page")

    def _lose_comm(self) -> None:
        """Entering CLOSED: forget the comm; reinstall if requests or values still wait."""
        self._cancel_timer(HEARTBEAT_TIMER)
        self._requeue_asked_reads()
        self._leave_connection()
        self._comm_id = None
        if self._queue or self._outbox.has_tagged():
            self._enter_waiting_state(self._fire(Trigger.PROGRAM_USED))

    def _leave_connection(self) -> None:
        """The current comm is gone (closed, stale or replaced). What it had in flight was
        handed to it while it lived: those sends are done. What is still queued waits for
        the next comm, except protocol messages meant for this one."""
        while self._in_flight:
            self._confirm(self._in_flight.popleft()[1])
        self._outbox.forget_connection()
        self._seq = self._acked_seq = 0
        self._cancel_timer(FLUSH_TIMER)
        self._cancel_timer(SILENCE_TIMER)

    def _confirm(self, request_ids: tuple[str, ...]) -> None:
        for request_id in request_ids:
            request = self._sending.pop(request_id, None)
            if request is not None:
                self._reply(request, ok=True)

    def _drop_queued_values(self, error: str | None) -> None:
        """No page to take them: every send still queued fails, saying how many of its
        values were not delivered."""
        for request_id, count in self._outbox.clear().items():
            request = self._sending.pop(request_id, None)
            if request is not None:
                self._reply(request, ok=False, value=count, error=error)

    def _pump(self, now_s: float) -> None:
        """Send what the outbox's pacing allows now, on the current comm only."""
        comm_id = self._comm_id
        if comm_id is None:
            return
        # While pinging, values wait: the comm may be dead, and the ping goes first. And
        # at most MAX_UNACKED_MSGS messages wait at the page: its backlog stays short, so
        # a ping, a pong or a reinstall script is not held up behind it. (An empty
        # outbox, the common case of a page message, skips the pacing arithmetic.)
        messages, due_s = self._outbox.take(
            now_s, urgent_only=self._state is State.PINGING,
            max_messages=MAX_UNACKED_MSGS - (self._seq - self._acked_seq),
        ) if len(self._outbox) else ([], None)
        for message in messages:
            self._seq += 1
            self._actions.append(SendCommMsg(comm_id, message.data, self._seq))
            if message.done:
                self._in_flight.append((self._seq, message.done))
        if due_s is None:
            self._cancel_timer(FLUSH_TIMER)
        elif FLUSH_TIMER not in self._armed:
            self._start_timer(FLUSH_TIMER, max(0.0, due_s - now_s))
        if (self._waits_on_page() and SILENCE_TIMER not in self._armed
                and self._state is State.OPEN):
            self._start_timer(SILENCE_TIMER, self._timings.heartbeat_request_threshold_s)

    def _waits_on_page(self) -> bool:
        """Program values wait for the page to acknowledge what it was sent: values in
        flight, or values queued behind messages it has not acknowledged."""
        return bool(self._in_flight) or (
            self._seq > self._acked_seq and self._outbox.has_tagged())

    def _requeue_asked_reads(self) -> None:
        """Reads asked on a comm that is going away are asked again on the next one."""
        self._queue.extendleft(reversed(self._asked.values()))
        self._asked.clear()

    def _flush(self) -> None:
        while self._queue:
            self._perform(self._queue.popleft())

    def _perform(self, request: ProgramRequested) -> None:
        """Carry out a request on the open comm. Sends are answered when their values
        are acknowledged or their comm is gone (``_confirm``), or fail (``_drop_queued_values``)."""
        if request.op == "send":
            data = {"address": request.address, "value": request.value}
            self._open_comm(data)
            self._outbox.push(data, _json_size(data), tag=request.request_id)
            self._sending[request.request_id] = request
        elif request.op == "send_many":
            if not request.value:
                self._reply(request, ok=True)
                return
            self._open_comm()
            self._outbox.push_many([({"address": address, "value": value}, size_bytes)
                                    for address, value, size_bytes in request.value],
                                   tag=request.request_id)
            self._sending[request.request_id] = request
        elif request.op == "read":
            self._send({"address": request.address, "read_request": True})
            self._asked[request.request_id] = request
        else:  # start, sync
            self._reply(request, ok=True)

    def _complete_reads(
        self, address: str, *, ok: bool, value: Any = None, error: str | None = None
    ) -> bool:
        """Answer every pending read of ``address``; True if there was one."""
        waiting = [r for r in self._queue if r.op == "read" and r.address == address]
        asked = [r for r in self._asked.values() if r.address == address]
        for request in waiting:
            self._queue.remove(request)
        for request in asked:
            del self._asked[request.request_id]
        for request in waiting + asked:
            self._cancel_timer(read_timer(request.request_id))
            self._reply(request, ok=ok, value=value, error=error)
        if waiting:
            self._release_leading_syncs()
        return bool(waiting or asked)

    def _release_leading_syncs(self) -> None:
        while self._queue and self._queue[0].op == "sync":
            self._reply(self._queue.popleft(), ok=True)

    def _fail_all_waiting(self, error: str | None) -> None:
        requests = [*self._asked.values(), *self._queue]
        self._asked.clear()
        self._queue.clear()
        for request in requests:
            if request.op == "read":
                self._cancel_timer(read_timer(request.request_id))
            lost = _value_count(request)
            self._reply(request, ok=False, value=lost or None, error=error)

    def _erase_install_script(self) -> None:
        if self._display_id is not None:
            self._actions.append(EraseInstallScript(self._display_id))
            self._display_id = None

    def _send(self, data: dict[str, Any], *, urgent: bool = False) -> None:
        """A protocol message for the current comm (it is dropped if the comm goes)."""
        self._open_comm(data)
        self._outbox.push(data, _json_size(data), urgent=urgent)

    def _open_comm(self, data: Any = "values") -> str:
        if self._comm_id is None:
            raise AddressStateError(f"no open comm to send {data!r} to")
        return self._comm_id

    def _reply(
        self, request: ProgramRequested, *, ok: bool, value: Any = None, error: str | None = None
    ) -> None:
        self._pending.remove(request.request_id)
        self._actions.append(ReplyToProgram(request.request_id, ok, value, error))

    def _start_timer(self, timer: TimerName, delay_s: float) -> None:
        self._armed.add(timer)
        self._actions.append(StartTimer(timer, delay_s))

    def _cancel_timer(self, timer: TimerName) -> None:
        if timer in self._armed:
            self._armed.discard(timer)
            self._actions.append(CancelTimer(timer))

    def _log(self, level: LogLevel, text: str) -> None:
        self._actions.append(Log(level, text))
