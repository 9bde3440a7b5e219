"""The address channel's state machine: events in, actions out, no I/O.

Owns the lifecycle of the one page client a kernel talks to (DESIGN.md, "The address
channel"): publishing the install script, accepting the page's ``comm_open``,
heartbeats, reinstalling after a stale connection, giving up on a page that never
connects; the lifecycle of each program request (waiting for a connection, asked of
the page, sending, answered); the set of addresses the program subscribed to; and the
delivery of the program's values, through the ``Outbox`` it owns, until the page
acknowledges them.

Must never: touch a socket, read a clock, start a thread, use asyncio or logging, or
import another wrapperkernel module than ``address.events`` (its vocabulary),
``address.payloads`` (parsing of what the page sends), ``address.outbox`` (pacing) and
``address.defaults`` (constants), all pure. Time arrives on events (``now_s``); timeouts leave as ``StartTimer``
and come back as ``TimerFired``; log lines leave as ``Log``.

The delivery contract (docs/comms-api.md, "Delivery"): every value the program sends is
either handed to a live page connection or reported to the program as not delivered.
A send is answered ``ok`` once the page acknowledged the message carrying its last value
(``#ack`` with the message's ``seq``), or once the connection it was handed to is gone;
it is answered with an error (``value``: how many of its values were not delivered) when
no page connects in time. Values still queued when a page is replaced or goes away stay
queued, in order, for the next page, after its ack; nothing is published to a comm the
core knows is gone. The program bounds what it has unanswered (its send blocks past
the bound), so the kernel's queue to the page is bounded too.

Rule (after h11's ``_state.py``): everything that changes the connection's state or a
request's state lives in this file, and every such change goes through one of two
tables below: ``TRANSITIONS`` for the connection, ``REQUEST_TRANSITIONS`` for each
program request. A (state, trigger) pair missing from a table is *our* bug and raises
``AddressStateError``. Bad input from the page is the *peer's* mistake: it never raises,
it becomes a ``Log`` action and the machine carries on.

Effects that go with connection transitions are written out as code in ``AddressCore``:

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

Each request state has one container, which ``_move`` keeps in step with the table: a
QUEUED request is in ``_queue`` (in the program's order), an ASKED read in ``_asked``,
a SENDING send in ``_sending``; an ANSWERED request is forgotten, so its id may be used
again.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

from wrapperkernel.address.defaults import PRIVATE_PREFIX
from wrapperkernel.address.events import (
    ACK_ADDRESS,
    COMM_TARGET_NAME,
    CONNECT_TIMER,
    FLUSH_TIMER,
    HEARTBEAT_TIMER,
    OPEN_ACK_ADDRESS,
    OWN_TIMERS,
    PING_ADDRESS,
    PONG_ADDRESS,
    READ_TIMER_PREFIX,
    SILENCE_TIMER,
    Action,
    AddressStateError,
    AddressTimings,
    CancelTimer,
    DeliverToProgram,
    EraseInstallScript,
    Event,
    Log,
    LogLevel,
    PageCommClosed,
    PageCommMsg,
    PageCommOpened,
    ProgramRequest,
    ProgramSubscribed,
    ProgramUnsubscribed,
    PublishInstallScript,
    ReadRequested,
    RelayReadRequest,
    ReplyToProgram,
    SendCommClose,
    SendCommMsg,
    SendManyRequested,
    SendRequested,
    StartRequested,
    StartTimer,
    SyncRequested,
    TimerFired,
    TimerName,
    WorkerRestarted,
    read_timer,
)
from wrapperkernel.address.outbox import Outbox
from wrapperkernel.address.payloads import (
    PageReadError,
    PageReadRequest,
    PageValue,
    kernel_id_of,
    parse_ack_seq,
    parse_page_data,
    preview,
)

_SILENCE_SLACK_S = 1e-6
# Messages on the comm that the page has not acknowledged yet, at most (values wait in
# the outbox meanwhile). Above the page's ack_every_msgs, so a page that acknowledges
# as it should never stalls the flow.
MAX_UNACKED_MSGS = 64


# --- the connection: states and the transition table -------------------------------


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


# --- a program request: states and the transition table ----------------------------


class RequestState(Enum):
    NEW = "new"  # no pending request has this id: never made, or answered and forgotten
    RECEIVED = "received"  # accepted; routed before the event that brought it is done
    QUEUED = "queued"  # waits for the connection (or, a sync, for what is queued before it)
    ASKED = "asked"  # a read asked on the current comm, waiting for the page's answer
    SENDING = "sending"  # values with the outbox or the page, waiting for the page's #ack
    ANSWERED = "answered"  # its one ReplyToProgram is out; terminal


class RequestTrigger(Enum):
    MADE = "the program made the request"
    DEFERRED = "it needs a connection that is not there yet, or a sync waits its turn"
    PAGE_ASKED = "its read_request went to the page"
    HANDED_OVER = "its values went to the outbox, for the page connection"
    DONE = "nothing to wait for: a start or sync whose turn came, an empty send_many"
    REFUSED = "it uses an address reserved for the protocol"
    FAILED = "no page connected in time, or the worker was restarted"
    PAGE_ANSWERED = "the page sent a value or a read_error for the address read"
    READ_TIMED_OUT = "its read timer fired"
    COMM_LOST = "the comm its read was asked on closed, went stale or was replaced"
    VALUES_CONFIRMED = "the page acknowledged its last value, or the comm it went to is gone"
    VALUES_DROPPED = "no page connected in time to take the values still in the outbox"


R, RT = RequestState, RequestTrigger
REQUEST_TRANSITIONS: Mapping[RequestState, Mapping[RequestTrigger, RequestState]] = {
    # A request whose id is still pending cannot be MADE again: not in the table.
    R.NEW: {RT.MADE: R.RECEIVED},
    R.RECEIVED: {
        RT.DEFERRED: R.QUEUED,
        RT.PAGE_ASKED: R.ASKED,
        RT.HANDED_OVER: R.SENDING,
        RT.DONE: R.ANSWERED,
        RT.REFUSED: R.ANSWERED,
        RT.FAILED: R.ANSWERED,  # the connection has failed: fail fast
    },
    R.QUEUED: {
        RT.PAGE_ASKED: R.ASKED,
        RT.HANDED_OVER: R.SENDING,
        RT.DONE: R.ANSWERED,
        # A read waiting for the connection can be answered all the same: by a value
        # the page sends on its own, or by its timer.
        RT.PAGE_ANSWERED: R.ANSWERED,
        RT.READ_TIMED_OUT: R.ANSWERED,
        RT.FAILED: R.ANSWERED,
    },
    R.ASKED: {
        RT.PAGE_ANSWERED: R.ANSWERED,
        RT.READ_TIMED_OUT: R.ANSWERED,
        RT.COMM_LOST: R.QUEUED,  # asked again on the next comm
        RT.FAILED: R.ANSWERED,
    },
    # Values handed over are answered by the page's #ack (or their comm's end), or by
    # the connect timeout; a worker restart leaves them to finish.
    R.SENDING: {
        RT.VALUES_CONFIRMED: R.ANSWERED,
        RT.VALUES_DROPPED: R.ANSWERED,
    },
    R.ANSWERED: {},
}
del R, RT


def next_request_state(state: RequestState, trigger: RequestTrigger) -> RequestState:
    """The state a request in ``state`` moves to on ``trigger``; AddressStateError if the
    table has no such transition (the core's own mistake)."""
    try:
        return REQUEST_TRANSITIONS[state][trigger]
    except KeyError:
        raise AddressStateError(
            f"no request transition for {trigger.name} in state {state.name}"
        ) from None


# --- helpers ----------------------------------------------------------------------------


def _is_private(address: str) -> bool:
    return address.startswith(PRIVATE_PREFIX)


def _json_size(data: Any) -> int:
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False))


def _addresses(request: ProgramRequest) -> Sequence[str]:
    """The addresses a request names."""
    if isinstance(request, (SendRequested, ReadRequested)):
        return [request.address]
    if isinstance(request, SendManyRequested):
        return [address for address, _, _ in request.items]
    return []


def _value_count(request: ProgramRequest) -> int:
    """How many values a request carries to the page."""
    if isinstance(request, SendRequested):
        return 1
    if isinstance(request, SendManyRequested):
        return len(request.items)
    return 0


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
        # Every request accepted and not yet answered, and where it is in its lifecycle.
        self._requests: dict[str, RequestState] = {}
        # QUEUED requests, in the order the program made them.
        self._queue: deque[ProgramRequest] = deque()
        # ASKED reads, by request id.
        self._asked: dict[str, ProgramRequest] = {}
        # SENDING sends (values with the outbox or the page), by request id.
        self._sending: dict[str, ProgramRequest] = {}
        self._outbox = outbox if outbox is not None else Outbox()
        # Messages sent on the current comm (their seq) that carry the last value of a
        # send, waiting for the page's #ack: (seq, request ids).
        self._in_flight: deque[tuple[int, tuple[str, ...]]] = deque()
        self._seq = 0
        self._acked_seq = 0  # the highest seq the page acknowledged
        self._actions: list[Action] = []
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            StartRequested: self._on_program_requested,
            SendRequested: self._on_program_requested,
            SendManyRequested: self._on_program_requested,
            ReadRequested: self._on_program_requested,
            SyncRequested: self._on_program_requested,
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
        return frozenset(self._requests)

    @property
    def request_states(self) -> Mapping[str, RequestState]:
        """Where each pending request is in its lifecycle (a copy)."""
        return dict(self._requests)

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

    def _move(
        self, request: ProgramRequest, trigger: RequestTrigger, *, to_front: bool = False
    ) -> RequestState:
        """Move ``request`` through ``REQUEST_TRANSITIONS`` and between the containers of
        its old and new state (``to_front``: back to the head of the queue). Checks the
        table before changing anything."""
        request_id = request.request_id
        old = self._requests.get(request_id, RequestState.NEW)
        new = next_request_state(old, trigger)
        if old is RequestState.QUEUED:
            if self._queue[0] is request:
                self._queue.popleft()  # the common case: the queue is served in order
            else:
                self._queue.remove(request)
        elif old is RequestState.ASKED:
            del self._asked[request_id]
        elif old is RequestState.SENDING:
            del self._sending[request_id]
        if new is RequestState.QUEUED:
            if to_front:
                self._queue.appendleft(request)
            else:
                self._queue.append(request)
        elif new is RequestState.ASKED:
            self._asked[request_id] = request
        elif new is RequestState.SENDING:
            self._sending[request_id] = request
        if new is RequestState.ANSWERED:
            del self._requests[request_id]
        else:
            self._requests[request_id] = new
        return new

    def _answer(
        self,
        request: ProgramRequest,
        trigger: RequestTrigger,
        *,
        ok: bool,
        value: Any = None,
        error: str | None = None,
    ) -> None:
        """The request's one reply, and its move to ANSWERED."""
        self._move(request, trigger)
        self._actions.append(ReplyToProgram(request.request_id, ok, value, error))

    # --- program events ---

    def _on_program_requested(self, event: ProgramRequest) -> None:
        # First, so that a request id still pending raises before anything changes.
        self._move(event, RequestTrigger.MADE)
        if isinstance(event, SyncRequested):
            if self._queue:
                # Resolves when everything before it is out.
                self._move(event, RequestTrigger.DEFERRED)
            else:
                self._answer(event, RequestTrigger.DONE, ok=True)
            return
        private = [address for address in _addresses(event) if _is_private(address)]
        if private:
            self._answer(
                event,
                RequestTrigger.REFUSED,
                ok=False,
                error=f"Address {private[0]!r} starts with '#', which is reserved for "
                "the wrapperkernel protocol; use an address without a leading '#'.",
            )
            return
        # Only an explicit start (comms.start(), %widgets) retries after a failure; the
        # implicit start before a send or read fails fast while FAILED.
        if (
            isinstance(event, StartRequested)
            and event.retry
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
            self._answer(event, RequestTrigger.FAILED, ok=False,
                         value=_value_count(event) or None, error=self._failure)
            return
        if isinstance(event, ReadRequested):
            self._start_timer(read_timer(event.request_id), self._read_timeout_s(event))
        if new_state is State.OPEN:
            self._perform(event)
            return
        self._move(event, RequestTrigger.DEFERRED)
        if new_state is not old_state:
            self._enter_waiting_state(new_state)

    def _read_timeout_s(self, request: ReadRequested) -> float:
        if request.timeout_s is None:
            return self._timings.read_timeout_s
        return float(request.timeout_s)

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
                f"comm_open {event.comm_id!r} for unknown target {preview(event.target_name)}"
                " answered with comm_close",
            )
            return
        kernel_id = kernel_id_of(event.data)
        if kernel_id != self._kernel_id:
            self._log(
                "warning",
                f"ignored comm_open {event.comm_id!r} for kernel id {preview(kernel_id)}"
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
        self._send({"address": OPEN_ACK_ADDRESS, "value": True}, urgent=True)
        self._log("info", f"comm {event.comm_id!r} open")
        self._flush()

    def _on_page_comm_msg(self, event: PageCommMsg) -> None:
        if self._comm_id is None or event.comm_id != self._comm_id:
            self._log("info", f"ignored comm_msg for unknown or closed comm {event.comm_id!r}")
            return
        self._last_heard_s = event.now_s
        items, problems = parse_page_data(event.data)
        for problem in problems:
            self._log("warning", f"ignored malformed comm_msg item from the page: {problem}")
        for item in items:
            if isinstance(item, PageValue):
                self._on_page_value(item)
            elif isinstance(item, PageReadRequest):
                self._on_page_read_request(item)
            else:
                self._on_page_read_error(item)

    def _on_page_value(self, item: PageValue) -> None:
        if _is_private(item.address):
            if item.address == PING_ADDRESS:
                self._send({"address": PONG_ADDRESS, "value": item.value}, urgent=True)
            elif item.address == PONG_ADDRESS:
                self._on_pong(item.value)
            elif item.address == ACK_ADDRESS:
                self._on_ack(item.value)
            else:
                self._log("warning", f"ignored unknown private address {item.address!r}")
            return
        answered = self._complete_reads(item.address, ok=True, value=item.value)
        if item.address in self._subscriptions:
            self._actions.append(DeliverToProgram(item.address, item.value))
        elif not answered:
            # A choice, not a loss: only subscribed addresses reach the program.
            self._log("debug", f"value for {item.address!r} dropped: no subscriber")

    def _on_ack(self, raw: Any) -> None:
        """The page handled every message up to ``seq`` = ``value``: its sends are done."""
        value = parse_ack_seq(raw)
        if value is None:
            self._log("warning", f"ignored #ack with a value that is not a seq: {preview(raw)}")
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
            self._log("debug", f"unsolicited pong {preview(value)}")
            return
        if answered_by != "pong":
            self._log("debug", f"ping {self._ping_count} answered by an {answered_by}")
        elif value != self._ping_count:
            self._log("debug", f"pong {preview(value)} for ping {self._ping_count}")
        self._cancel_timer(HEARTBEAT_TIMER)
        self._flush()

    def _on_page_read_request(self, item: PageReadRequest) -> None:
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

    def _on_page_read_error(self, item: PageReadError) -> None:
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
        request = self._asked.get(request_id)
        if request is None:
            request = next((r for r in self._queue if r.request_id == request_id), None)
        if not isinstance(request, ReadRequested):
            raise AddressStateError(f"read timer armed for unknown request {request_id!r}")
        self._armed.discard(read_timer(request_id))
        timeout_s = self._read_timeout_s(request)
        self._answer(
            request,
            RequestTrigger.READ_TIMED_OUT,
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
            request = self._sending.get(request_id)
            if request is not None:
                self._answer(request, RequestTrigger.VALUES_CONFIRMED, ok=True)

    def _drop_queued_values(self, error: str | None) -> None:
        """No page to take them: every send still queued fails, saying how many of its
        values were not delivered."""
        for request_id, count in self._outbox.clear().items():
            request = self._sending.get(request_id)
            if request is not None:
                self._answer(request, RequestTrigger.VALUES_DROPPED, ok=False, value=count,
                             error=error)

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
        """Reads asked on a comm that is going away are asked again on the next one,
        first, in the order they were asked."""
        for request in reversed(list(self._asked.values())):
            self._move(request, RequestTrigger.COMM_LOST, to_front=True)

    def _flush(self) -> None:
        while self._queue:
            self._perform(self._queue[0])

    def _perform(self, request: ProgramRequest) -> None:
        """Carry out a request (RECEIVED or QUEUED) on the open comm. Sends are answered
        when their values are acknowledged or their comm is gone (``_confirm``), or fail
        (``_drop_queued_values``)."""
        if isinstance(request, SendRequested):
            data = {"address": request.address, "value": request.value}
            self._open_comm(data)
            self._outbox.push(data, _json_size(data), tag=request.request_id)
            self._move(request, RequestTrigger.HANDED_OVER)
        elif isinstance(request, SendManyRequested):
            if not request.items:
                self._answer(request, RequestTrigger.DONE, ok=True)
                return
            self._open_comm()
            self._outbox.push_many([({"address": address, "value": value}, size_bytes)
                                    for address, value, size_bytes in request.items],
                                   tag=request.request_id)
            self._move(request, RequestTrigger.HANDED_OVER)
        elif isinstance(request, ReadRequested):
            self._send({"address": request.address, "read_request": True})
            self._move(request, RequestTrigger.PAGE_ASKED)
        else:  # start, sync
            self._answer(request, RequestTrigger.DONE, ok=True)

    def _complete_reads(
        self, address: str, *, ok: bool, value: Any = None, error: str | None = None
    ) -> bool:
        """Answer every pending read of ``address``; True if there was one."""
        waiting = [r for r in self._queue if isinstance(r, ReadRequested) and r.address == address]
        asked = [r for r in self._asked.values()
                 if isinstance(r, ReadRequested) and r.address == address]
        for request in waiting + asked:
            self._cancel_timer(read_timer(request.request_id))
            self._answer(request, RequestTrigger.PAGE_ANSWERED, ok=ok, value=value, error=error)
        if waiting:
            self._release_leading_syncs()
        return bool(waiting or asked)

    def _release_leading_syncs(self) -> None:
        while self._queue and isinstance(self._queue[0], SyncRequested):
            self._answer(self._queue[0], RequestTrigger.DONE, ok=True)

    def _fail_all_waiting(self, error: str | None) -> None:
        for request in [*self._asked.values(), *self._queue]:
            if isinstance(request, ReadRequested):
                self._cancel_timer(read_timer(request.request_id))
            lost = _value_count(request)
            self._answer(request, RequestTrigger.FAILED, ok=False, value=lost or None,
                         error=error)

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

    def _start_timer(self, timer: TimerName, delay_s: float) -> None:
        self._armed.add(timer)
        self._actions.append(StartTimer(timer, delay_s))

    def _cancel_timer(self, timer: TimerName) -> None:
        if timer in self._armed:
            self._armed.discard(timer)
            self._actions.append(CancelTimer(timer))

    def _log(self, level: LogLevel, text: str) -> None:
        self._actions.append(Log(level, text))
