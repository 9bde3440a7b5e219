"""The address channel's state machine: events in, actions out, no I/O.

Owns the lifecycle of the page clients a kernel talks to (DESIGN.md, "The address
channel"; "Many pages, not one"): publishing the install script, accepting each page's
``comm_open``, a heartbeat per page, dropping a stale page (its comm closed) without
disturbing the others, reinstalling once no page is left, giving up when no page
connects; the lifecycle of each program request (waiting for a connection, asked of the
pages, sending, answered); the set of addresses the program subscribed to; and the
delivery of the program's values to every connected page, through the outboxes it owns
(one lane per page, one for values waiting for a page), until each page acknowledged
them or went away.

Must never: touch a socket, read a clock, start a thread, use asyncio or logging, or
import another wrapperkernel module than ``address.events`` (its vocabulary),
``address.payloads`` (parsing of what the page sends), ``address.outbox`` (pacing) and
``address.defaults`` (constants), all pure. Time arrives on events (``now_s``); timeouts
leave as ``StartTimer`` and come back as ``TimerFired``; log lines leave as ``Log``.

The delivery contract (docs/comms-api.md, "Delivery"), per page. The kernel's queue is
the values no page has been sent yet; a value leaves it when the first page is sent it,
and goes, in order, to every page connected then (each page's lane holds the values it
still has to be sent). A page that connects gets the values still in the queue, after
its ack, and everything sent after: never a value that had left the queue before. A
send is answered ``ok`` once every page it went to acknowledged the message carrying
its last value (``#ack`` with the message's ``seq``) or went away (closed its comm, or
went stale); it is answered with an error (``value``: how many of its values were not
delivered, those still in the queue) when no page connects in time. So a value either
reached a page or is reported; values queued while no page is connected, or still in
the queue when the last page goes away, wait for the next page. Nothing is published to
a comm the core knows is gone. The program bounds what it has unanswered (its send
blocks past the bound), so the kernel's queues to the pages are bounded too.

Pages: a value from any page reaches the program (if it subscribed to the address), and
the core passes it on to the other pages as if the program had sent it, so every page
shows what the program last received (a widget moved in one tab moves in the others). A
read is asked of every connected page, and of pages that connect while it waits; the
first value answers it; a ``read_error`` ends it only once every page asked has answered
with one or gone (a page without that value must not hide one that has it). The answers
of the other pages to a read already answered are dropped, so they change neither the
program nor the pages. Messages to all pages share one pacing budget: IOPub is
broadcast, so every page's websocket carries every page's messages.

Rule (after h11's ``_state.py``): everything that changes the channel's state, a page's
state or a request's state lives in this file, and every such change goes through one
of three tables below: ``TRANSITIONS`` for the channel, ``PAGE_TRANSITIONS`` for each
page connection, ``REQUEST_TRANSITIONS`` for each program request. A (state, trigger)
pair missing from a table is *our* bug and raises ``AddressStateError``. Bad input from
a page is the *peer's* mistake: it never raises, it becomes a ``Log`` action and the
machine carries on.

Effects that go with transitions are written out as code in ``AddressCore``:

- channel entering CONNECTING: publish the install script under a new display id, start
  the "connect" timer;
- a valid comm_open (channel: any state -> OPEN; page: NEW -> OPEN): cancel "connect",
  erase the install script, ack, give the new page the values no page has been sent
  (those that waited for a page, or still wait in the other pages' lanes), ask it the
  reads still waiting, flush the queue;
- page entering PINGING (the program needs the pages, and this one has been silent; or
  values wait on it and it is silent): send it ``#heartbeat/ping``, start its heartbeat
  timer; its lane lets only protocol messages out meanwhile;
- page PONG_RECEIVED (or an #ack that advances: the page is handling our messages, and a
  pong queued behind a backlog of values could not come in time) while PINGING: cancel
  its heartbeat timer, flush the queue;
- page entering GONE (closed by the page, or stale: then the kernel closes its comm):
  forget it; what it had in flight is confirmed for it; reads asked of it alone go back
  to the queue; if it was the last page, the channel moves to CLOSED and the values no
  page has been sent wait for the next page;
- channel entering FAILED: erase the install script, fail every waiting request and
  every value still waiting for a page.

One state-triggered rule: IDLE or CLOSED with requests or values still waiting (after
the last page closed or went stale) counts as a program use, so the script is
reinstalled and they are delivered after the reconnect or failed after the connect
timeout. And one timer-triggered one: values waiting on a page with no word from it for
``heartbeat_request_threshold_s`` count as a use after silence (a ping), so a page that
vanished without a comm_close cannot hold the program's sends for ever.

Each request state has one container, which ``_move`` keeps in step with the table: a
QUEUED request is in ``_queue`` (in the program's order), an ASKED read in ``_asked``
(with the pages that still owe it an answer), a SENDING send in ``_sending`` (with the
pages that still owe it a confirmation); an ANSWERED request is forgotten, so its id may
be used again.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from wrapperkernel.address.defaults import PRIVATE_PREFIX
from wrapperkernel.address.events import (
    ACK_ADDRESS,
    COMM_TARGET_NAME,
    CONNECT_TIMER,
    FLUSH_TIMER,
    HEARTBEAT_TIMER_PREFIX,
    OPEN_ACK_ADDRESS,
    OWN_TIMERS,
    PING_ADDRESS,
    PONG_ADDRESS,
    READ_TIMER_PREFIX,
    SILENCE_TIMER_PREFIX,
    TIMER_PREFIXES,
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
    heartbeat_timer,
    read_timer,
    silence_timer,
)
from wrapperkernel.address.outbox import Outbox, push_to_lanes
from wrapperkernel.address.payloads import (
    PageReadError,
    PageReadRequest,
    PageValue,
    kernel_id_of,
    parse_ack_seq,
    parse_page_data,
    preview,
)
from wrapperkernel.buffers import as_buffer

_SILENCE_SLACK_S = 1e-6
# Messages on a comm that its page has not acknowledged yet, at most (values wait in
# its lane meanwhile). Above the page's ack_every_msgs, so a page that acknowledges as
# it should never stalls the flow.
MAX_UNACKED_MSGS = 64


# --- the channel: states and the transition table ----------------------------------


class State(Enum):
    IDLE = "idle"  # never installed; the next program use publishes the script
    CONNECTING = "connecting"  # script published, waiting for a page's comm_open
    OPEN = "open"  # at least one page connected; requests go to the pages
    CLOSED = "closed"  # the last page closed its comm or went stale; behaves like IDLE
    FAILED = "failed"  # no page connected in time; requests fail fast until one does


class Trigger(Enum):
    PROGRAM_STARTED = "program asked to start the channel"  # only clears a failure
    PROGRAM_USED = "program request needs a page"
    PAGE_OPENED = "valid comm_open from a page"
    LAST_PAGE_LEFT = "the last connected page closed its comm or went stale"
    CONNECT_TIMED_OUT = "connect timer fired"
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
        T.PAGE_OPENED: S.OPEN,  # another page joins: a tab, a window, a collaborator
        T.LAST_PAGE_LEFT: S.CLOSED,
        T.WORKER_RESTARTED: S.OPEN,
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

# Pages are connected exactly in these states.
CONNECTED_STATES = frozenset({State.OPEN})


# --- a page connection: states and the transition table ----------------------------


class PageState(Enum):
    NEW = "new"  # no page has this comm: never opened, or gone and forgotten
    OPEN = "open"  # acknowledged, and heard from recently enough
    PINGING = "pinging"  # silent too long; waiting for #heartbeat/pong
    GONE = "gone"  # closed by the page, or dropped as stale; terminal


class PageTrigger(Enum):
    OPENED = "a valid comm_open on this comm"
    USED_AFTER_SILENCE = "the program needs the pages, or values wait on this one, which is silent"
    PONG_RECEIVED = "#heartbeat/pong on this comm, or an #ack that advances"
    CLOSED = "the page closed its comm"
    HEARTBEAT_TIMED_OUT = "no pong in time: the page is stale (reloaded, server restarted)"


P, PT = PageState, PageTrigger
PAGE_TRANSITIONS: Mapping[PageState, Mapping[PageTrigger, PageState]] = {
    # A comm already connected cannot be OPENED again: not in the table.
    P.NEW: {PT.OPENED: P.OPEN},
    P.OPEN: {
        PT.USED_AFTER_SILENCE: P.PINGING,
        PT.PONG_RECEIVED: P.OPEN,
        PT.CLOSED: P.GONE,
    },
    P.PINGING: {
        PT.USED_AFTER_SILENCE: P.PINGING,  # one ping at a time
        PT.PONG_RECEIVED: P.OPEN,
        PT.CLOSED: P.GONE,
        PT.HEARTBEAT_TIMED_OUT: P.GONE,
    },
    P.GONE: {},
}
del P, PT


# --- a program request: states and the transition table ----------------------------


class RequestState(Enum):
    NEW = "new"  # no pending request has this id: never made, or answered and forgotten
    RECEIVED = "received"  # accepted; routed before the event that brought it is done
    QUEUED = "queued"  # waits for a page (or, a sync, for what is queued before it)
    ASKED = "asked"  # a read asked of the connected pages, waiting for an answer
    SENDING = "sending"  # values with the pages' lanes or the pages, waiting for #acks
    ANSWERED = "answered"  # its one ReplyToProgram is out; terminal


class RequestTrigger(Enum):
    MADE = "the program made the request"
    DEFERRED = ("it needs a page that is not there yet or not known to be alive, or a "
                "sync waits its turn")
    PAGE_ASKED = "its read_request went to the connected pages"
    HANDED_OVER = "its values went to the lanes of the connected pages"
    DONE = "nothing to wait for: a start or sync whose turn came, an empty send_many"
    REFUSED = "it uses an address reserved for the protocol"
    FAILED = "no page connected in time, or the worker was restarted"
    PAGE_ANSWERED = ("a page sent a value for the address read, or every page asked "
                     "answered with a read_error")
    READ_TIMED_OUT = "its read timer fired"
    COMM_LOST = "every page its read was asked of went away without an answer"
    VALUES_CONFIRMED = ("every page it went to acknowledged its last value, or went "
                        "away")
    VALUES_DROPPED = "no page connected in time to take the values still waiting"


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
        # A read waiting for a page can be answered all the same: by a value a page
        # sends on its own, or by its timer.
        RT.PAGE_ANSWERED: R.ANSWERED,
        RT.READ_TIMED_OUT: R.ANSWERED,
        RT.FAILED: R.ANSWERED,
    },
    R.ASKED: {
        RT.PAGE_ANSWERED: R.ANSWERED,
        RT.READ_TIMED_OUT: R.ANSWERED,
        RT.COMM_LOST: R.QUEUED,  # asked again of the next page
        RT.FAILED: R.ANSWERED,
    },
    # Values handed over are answered by the pages' #acks (or their comms' end), or by
    # the connect timeout; a worker restart leaves them to finish.
    R.SENDING: {
        RT.VALUES_CONFIRMED: R.ANSWERED,
        RT.VALUES_DROPPED: R.ANSWERED,
    },
    R.ANSWERED: {},
}
del R, RT


def _look_up(table: Mapping[Any, Mapping[Any, Any]], kind: str, state: Enum,
              trigger: Enum) -> Any:
    try:
        return table[state][trigger]
    except KeyError:
        raise AddressStateError(
            f"no {kind} transition for {trigger.name} in state {state.name}"
        ) from None


def next_request_state(state: RequestState, trigger: RequestTrigger) -> RequestState:
    """The state a request in ``state`` moves to on ``trigger``; AddressStateError if the
    table has no such transition (the core's own mistake)."""
    return _look_up(REQUEST_TRANSITIONS, "request", state, trigger)


def next_page_state(state: PageState, trigger: PageTrigger) -> PageState:
    """The state a page in ``state`` moves to on ``trigger``; AddressStateError if the
    table has no such transition (the core's own mistake)."""
    return _look_up(PAGE_TRANSITIONS, "page", state, trigger)


# --- helpers ----------------------------------------------------------------------------


def _is_private(address: str) -> bool:
    return address.startswith(PRIVATE_PREFIX)


def _json_size(data: Any) -> int:
    """The bytes of a payload's JSON, what the pacing counts (the page parses them). Binary
    buffers (a page's binary value passed on to the other pages) count as their null:
    the page copies them, it does not parse them."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                          default=_buffer_as_null))


def _buffer_as_null(obj: Any) -> None:
    if as_buffer(obj) is None:
        raise TypeError(f"{type(obj).__name__} in a payload is neither JSON nor bytes-like")
    return None


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


@dataclass(eq=False)
class _Page:
    """One page connection: its comm, its lane of the outbox, and its acknowledgements."""

    comm_id: str
    lane: Outbox
    last_heard_s: float
    state: PageState = PageState.OPEN
    ping_count: int = 0
    seq: int = 0  # the last seq sent on this comm
    acked_seq: int = 0  # the highest seq the page acknowledged
    # Messages sent that carry the last value of a send, waiting for the page's #ack:
    # (seq, request ids).
    in_flight: deque[tuple[int, tuple[str, ...]]] = field(default_factory=deque)
    # Answers this page owes to reads another page answered first, per address: the
    # page answers every read_request it gets, in order, and those answers are dropped.
    void_answers: Counter[str] = field(default_factory=Counter)


# A SENDING request's values wait in the kernel for the next page (no page connected).
_WAITING = None


# --- the machine --------------------------------------------------------------------


class AddressCore:
    """The kernel's side of the address channel, for every page connected to it.

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
        # The connected pages, oldest first; a page is removed when it goes.
        self._pages: dict[str, _Page] = {}
        self._display_id: str | None = None  # install script published, not yet erased
        self._failure: str | None = None  # the explanation repeated while FAILED
        self._armed: set[TimerName] = set()
        self._subscriptions: set[str] = set()
        # Every request accepted and not yet answered, and where it is in its lifecycle.
        self._requests: dict[str, RequestState] = {}
        # QUEUED requests, in the order the program made them.
        self._queue: deque[ProgramRequest] = deque()
        # ASKED reads, by request id, with the pages that still owe them an answer and
        # the last read_error one of them sent.
        self._asked: dict[str, ReadRequested] = {}
        self._asked_of: dict[str, set[str]] = {}
        self._read_errors: dict[str, str] = {}
        # SENDING sends, by request id, with the pages (comm ids) that still owe them a
        # confirmation, or _WAITING while their values wait for a page.
        self._sending: dict[str, ProgramRequest] = {}
        self._owed_by: dict[str, set[str | None]] = {}
        # The values waiting for a page while none is connected; every page's lane is
        # made from it and shares its pacing.
        self._waiting = outbox if outbox is not None else Outbox()
        self._next_lane = 0  # where the next pump starts, so lanes share the budget fairly
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
    def comm_ids(self) -> tuple[str, ...]:
        """The connected pages' comms, oldest first (for comm_info_reply); empty unless OPEN."""
        return tuple(self._pages)

    @property
    def page_states(self) -> Mapping[str, PageState]:
        """Each connected page's state, by comm id (a copy)."""
        return {comm_id: page.state for comm_id, page in self._pages.items()}

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
        """Sends whose values are queued or in flight, not yet confirmed by every page."""
        return frozenset(self._sending)

    @property
    def queued_values(self) -> bool:
        """Whether program values wait in the kernel: in a page's lane, or for a page."""
        return self._waiting.has_tagged() or any(
            page.lane.has_tagged() for page in self._pages.values())

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

    def _fire_page(self, page: _Page, trigger: PageTrigger) -> PageState:
        page.state = next_page_state(page.state, trigger)
        return page.state

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
            del self._asked_of[request_id]
            self._read_errors.pop(request_id, None)
        elif old is RequestState.SENDING:
            del self._sending[request_id]
            del self._owed_by[request_id]
        if new is RequestState.QUEUED:
            if to_front:
                self._queue.appendleft(request)
            else:
                self._queue.append(request)
        elif new is RequestState.ASKED:
            assert isinstance(request, ReadRequested)  # only reads are asked: the table's rule
            self._asked[request_id] = request
            self._asked_of[request_id] = set()
        elif new is RequestState.SENDING:
            self._sending[request_id] = request
            self._owed_by[request_id] = set()
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
        new_state = self._fire(Trigger.PROGRAM_USED)
        if new_state is State.FAILED:
            self._answer(event, RequestTrigger.FAILED, ok=False,
                         value=_value_count(event) or None, error=self._failure)
            return
        if isinstance(event, ReadRequested):
            self._start_timer(read_timer(event.request_id), self._read_timeout_s(event))
        if new_state is State.OPEN:
            # Every page silent for too long is pinged first; the request goes at once
            # if a page is known to be alive (the pinged pages' lanes hold it until their
            # pong), and waits for a pong otherwise.
            for page in self._pages.values():
                if event.now_s - page.last_heard_s > self._timings.heartbeat_request_threshold_s:
                    self._ping(page)
            if self._has_live_page():
                self._perform(event)
                return
        self._move(event, RequestTrigger.DEFERRED)
        if new_state is not old_state:
            self._enter_connecting()

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
        if event.comm_id in self._pages:
            # The page client never reuses a comm id: this page is confused, and its
            # connection stays as it is.
            self._log("warning", f"ignored a second comm_open on the open comm {event.comm_id!r}")
            return
        others = list(self._pages.values())
        first = not others
        page = _Page(event.comm_id, self._waiting.lane(), last_heard_s=event.now_s,
                     state=next_page_state(PageState.NEW, PageTrigger.OPENED))
        self._pages[event.comm_id] = page
        self._fire(Trigger.PAGE_OPENED)
        self._failure = None
        self._cancel_timer(CONNECT_TIMER)
        self._erase_install_script()
        self._send_to(page, {"address": OPEN_ACK_ADDRESS, "value": True}, urgent=True)
        self._log("info", f"comm {event.comm_id!r} open" + (
            "" if first else f" beside {len(self._pages) - 1} other page(s)"))
        if first:
            # The values that waited for a page go to this one, after its ack.
            page.lane.adopt(self._waiting)
            for owed in self._owed_by.values():
                if _WAITING in owed:
                    owed.discard(_WAITING)
                    owed.add(page.comm_id)
        else:
            # The values no page has been sent yet are still the kernel's queue: this page
            # gets them too. (Every lane holds them all, the newest last.)
            for request_id in page.lane.copy_unsent(others[0].lane):
                self._owed_by[request_id].add(page.comm_id)
        # Reads waiting for an answer are asked of the new page too.
        for request_id, request in self._asked.items():
            self._ask(page, request_id, request.address)
        self._flush()

    def _on_page_comm_msg(self, event: PageCommMsg) -> None:
        page = self._pages.get(event.comm_id)
        if page is None:
            self._log("info", f"ignored comm_msg for unknown or closed comm {event.comm_id!r}")
            return
        page.last_heard_s = event.now_s
        items, problems = parse_page_data(event.data)
        for problem in problems:
            self._log("warning", f"ignored malformed comm_msg item from the page: {problem}")
        for item in items:
            if isinstance(item, PageValue):
                self._on_page_value(page, item)
            elif isinstance(item, PageReadRequest):
                self._on_page_read_request(page, item)
            else:
                self._on_page_read_error(page, item)

    def _on_page_value(self, page: _Page, item: PageValue) -> None:
        address = item.address
        if _is_private(address):
            if address == PING_ADDRESS:
                self._send_to(page, {"address": PONG_ADDRESS, "value": item.value}, urgent=True)
            elif address == PONG_ADDRESS:
                self._on_pong(page, item.value)
            elif address == ACK_ADDRESS:
                self._on_ack(page, item.value)
            else:
                self._log("warning", f"ignored unknown private address {address!r}")
            return
        if page.void_answers[address] > 0:
            page.void_answers[address] -= 1
            self._log("debug", f"answer of comm {page.comm_id!r} for {address!r} dropped: "
                               "another page answered that read first")
            return
        # This page answers the oldest read of the address it was asked (a value it sends
        # on its own while asked counts as that answer: the page cannot tell them apart).
        request_id = self._oldest_read_asked_of(page, address)
        if request_id is not None:
            self._asked_of[request_id].discard(page.comm_id)
        answered = self._complete_reads(address, ok=True, value=item.value)
        if address in self._subscriptions:
            self._actions.append(DeliverToProgram(address, item.value))
            # The other pages show what the program received, as if it had sent it.
            data = {"address": address, "value": item.value}
            for other in self._pages.values():
                if other is not page:
                    self._send_to(other, data, watched=True)
        elif not answered:
            # A choice, not a loss: only subscribed addresses reach the program.
            self._log("debug", f"value for {address!r} dropped: no subscriber")

    def _on_ack(self, page: _Page, raw: Any) -> None:
        """The page handled every message up to ``seq`` = ``value``: its sends are done."""
        value = parse_ack_seq(raw)
        if value is None:
            self._log("warning", f"ignored #ack with a value that is not a seq: {preview(raw)}")
            return
        if value > page.seq:
            self._log("warning", f"#ack for seq {value} on comm {page.comm_id!r}, but only "
                                 f"{page.seq} were sent: acknowledging those")
        advanced = value > page.acked_seq
        page.acked_seq = max(page.acked_seq, min(value, page.seq))
        while page.in_flight and page.in_flight[0][0] <= value:
            self._confirm(page.comm_id, page.in_flight.popleft()[1])
        if not self._waits_on(page):
            self._cancel_timer(silence_timer(page.comm_id))
        if advanced and page.state is PageState.PINGING:
            self._on_pong(page, None, answered_by="#ack")

    def _on_pong(self, page: _Page, value: Any, answered_by: str = "pong") -> None:
        was_pinging = page.state is PageState.PINGING
        self._fire_page(page, PageTrigger.PONG_RECEIVED)
        if not was_pinging:
            self._log("debug", f"unsolicited pong {preview(value)} on comm {page.comm_id!r}")
            return
        if answered_by != "pong":
            self._log("debug", f"ping {page.ping_count} answered by an {answered_by}")
        elif value != page.ping_count:
            self._log("debug", f"pong {preview(value)} for ping {page.ping_count}")
        self._cancel_timer(heartbeat_timer(page.comm_id))
        self._flush()

    def _on_page_read_request(self, page: _Page, item: PageReadRequest) -> None:
        if _is_private(item.address):
            self._log("warning", f"ignored read_request for private address {item.address!r}")
        elif item.address in self._subscriptions:
            self._actions.append(RelayReadRequest(item.address))
        else:
            # Answer rather than let the page wait for its own timeout.
            self._send_to(page, {
                "address": item.address,
                "read_error": f"No program is subscribed to {item.address!r}.",
            })

    def _on_page_read_error(self, page: _Page, item: PageReadError) -> None:
        address = item.address
        if page.void_answers[address] > 0:
            page.void_answers[address] -= 1
            return  # another page answered that read first
        request_id = self._oldest_read_asked_of(page, address)
        if request_id is None:
            self._log("debug", f"read_error for {address!r} with no read pending")
            return
        self._asked_of[request_id].discard(page.comm_id)
        self._read_errors[request_id] = f"The page could not read {address!r}: {item.error}"
        self._end_read_if_unanswerable(request_id)

    def _on_page_comm_closed(self, event: PageCommClosed) -> None:
        page = self._pages.get(event.comm_id)
        if page is None:
            self._log("info", f"ignored comm_close for unknown or closed comm {event.comm_id!r}")
            return
        self._log("info", f"page closed comm {event.comm_id!r}")
        self._lose_page(page, PageTrigger.CLOSED)

    # --- timers ---

    def _on_timer_fired(self, event: TimerFired) -> None:
        timer = event.timer
        prefix = next((p for p in TIMER_PREFIXES if isinstance(timer, str) and timer.startswith(p)),
                      None)
        if timer not in OWN_TIMERS and prefix is None:
            raise AddressStateError(f"unknown timer {timer!r}")
        if timer not in self._armed:
            self._log("debug", f"ignored timer {timer!r}: cancelled or replaced")
            return
        if prefix == READ_TIMER_PREFIX:
            self._on_read_timed_out(timer[len(prefix):])
            return
        page = self._pages.get(timer[len(prefix):]) if prefix is not None else None
        if prefix is not None and page is None:
            raise AddressStateError(f"timer {timer!r} armed for no connected page")
        self._armed.discard(timer)
        if timer == FLUSH_TIMER:
            return  # handle() pumps the outbox after every event
        if page is not None:
            if prefix == SILENCE_TIMER_PREFIX:
                self._on_silence(page, event.now_s)
            else:
                assert prefix == HEARTBEAT_TIMER_PREFIX
                self._log("info", f"no pong from comm {page.comm_id!r}: the page is stale, "
                                  "closing its comm")
                self._lose_page(page, PageTrigger.HEARTBEAT_TIMED_OUT)
            return
        # The connect timer.
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
        # Oldest first: the values waiting were sent before anything still in the
        # queue, a sync among them, whose failure must find them counted.
        self._drop_waiting_values(self._failure)
        self._fail_all_waiting(self._failure)

    def _on_silence(self, page: _Page, now_s: float) -> None:
        """Values wait on the page: ping it if it has said nothing for too long."""
        if not self._waits_on(page) or page.state is not PageState.OPEN:
            return  # all acknowledged meanwhile, or a ping is out already
        quiet_s = now_s - page.last_heard_s
        threshold_s = self._timings.heartbeat_request_threshold_s
        # A timer fires at (not after) its due time, where float round-off can leave
        # quiet_s a hair short of the threshold: that counts as silent too.
        if quiet_s >= threshold_s - _SILENCE_SLACK_S:
            self._log("info", f"no #ack from comm {page.comm_id!r} for {quiet_s:.1f} s: pinging")
            self._ping(page)
        else:
            self._start_timer(silence_timer(page.comm_id), threshold_s - quiet_s)

    def _on_read_timed_out(self, request_id: str) -> None:
        request: ProgramRequest | None = self._asked.get(request_id)
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

    def _enter_connecting(self) -> None:
        if self._state is not State.CONNECTING:
            raise AddressStateError(f"{self._state.name} does not publish the install script")
        self._display_id = self._new_id()
        self._actions.append(PublishInstallScript(self._display_id))
        self._start_timer(CONNECT_TIMER, self._timings.wait_for_connection_s)

    def _ping(self, page: _Page) -> None:
        """The page has been silent too long: ask it for a pong (once at a time)."""
        if page.state is PageState.PINGING:
            self._fire_page(page, PageTrigger.USED_AFTER_SILENCE)
            return
        self._fire_page(page, PageTrigger.USED_AFTER_SILENCE)
        page.ping_count += 1
        self._send_to(page, {"address": PING_ADDRESS, "value": page.ping_count}, urgent=True)
        self._start_timer(heartbeat_timer(page.comm_id), self._timings.heartbeat_timeout_s)

    def _lose_page(self, page: _Page, trigger: PageTrigger) -> None:
        """The page closed its comm, or went stale (then the kernel closes it): forget it.

        What it had in flight was handed to it while it lived: done for it. Its reads are
        no longer awaited from it. The values still in its lane are dropped for it; if it
        was the last page, those no page has been sent wait for the next one (the others
        reached a page that has gone too).
        """
        self._fire_page(page, trigger)
        comm_id = page.comm_id
        del self._pages[comm_id]
        self._cancel_timer(heartbeat_timer(comm_id))
        self._cancel_timer(silence_timer(comm_id))
        if trigger is PageTrigger.HEARTBEAT_TIMED_OUT:
            # If the page still lives (a slow one, a network back), its client learns that
            # it is disconnected instead of talking into the void.
            self._actions.append(SendCommClose(comm_id))
        while page.in_flight:
            self._confirm(comm_id, page.in_flight.popleft()[1])
        last = not self._pages
        page.lane.forget_connection()
        # The values no page has been sent wait for the next page.
        waiting = self._waiting.adopt(page.lane) if last else set()
        for request_id, owed in list(self._owed_by.items()):
            if comm_id in owed:
                owed.discard(comm_id)
                if request_id in waiting:
                    owed.add(_WAITING)
                elif not owed:
                    self._answer(self._sending[request_id], RequestTrigger.VALUES_CONFIRMED,
                                 ok=True)
        # Reads that no page is left to answer: asked again of the next page, first, in
        # the order they were asked; or failed with a read_error a page sent.
        lost: list[ReadRequested] = []
        for request_id in list(self._asked):
            asked_of = self._asked_of[request_id]
            if comm_id in asked_of:
                asked_of.discard(comm_id)
                if not asked_of and request_id not in self._read_errors:
                    lost.append(self._asked[request_id])
                else:
                    self._end_read_if_unanswerable(request_id)
        for request in reversed(lost):
            self._move(request, RequestTrigger.COMM_LOST, to_front=True)
        if last:
            self._fire(Trigger.LAST_PAGE_LEFT)
            self._cancel_timer(FLUSH_TIMER)
            if self._queue or self._waiting.has_tagged():
                self._fire(Trigger.PROGRAM_USED)
                self._enter_connecting()
        else:
            self._flush()

    def _confirm(self, comm_id: str, request_ids: tuple[str, ...]) -> None:
        """The page on ``comm_id`` has these sends' last values (or is gone)."""
        for request_id in request_ids:
            owed = self._owed_by.get(request_id)
            if owed is None:
                continue
            owed.discard(comm_id)
            if not owed:
                self._answer(self._sending[request_id], RequestTrigger.VALUES_CONFIRMED, ok=True)

    def _drop_waiting_values(self, error: str | None) -> None:
        """No page to take them: every send whose values still wait fails, saying how
        many of its values were not delivered."""
        for request_id, count in self._waiting.clear().items():
            request = self._sending.get(request_id)
            if request is not None:
                self._answer(request, RequestTrigger.VALUES_DROPPED, ok=False, value=count,
                             error=error)

    def _pump(self, now_s: float) -> None:
        """Send what the pacing allows now, to the connected pages only, one message per
        page in turn, so that pages share the budget."""
        lanes = [page for page in self._pages.values() if len(page.lane)]
        due: float | None = None
        if lanes:
            count = len(lanes)
            index = self._next_lane % count
            idle = 0  # lanes in a row that could send nothing more now
            while idle < count:
                page = lanes[index]
                index = (index + 1) % count
                if not len(page.lane):
                    idle += 1
                    continue
                # While pinging, values wait: the comm may be dead, and the ping goes
                # first. And at most MAX_UNACKED_MSGS messages wait at a page: its
                # backlog stays short, so a ping, a pong or a reinstall is not held up.
                window = MAX_UNACKED_MSGS - (page.seq - page.acked_seq)
                messages, due_s = page.lane.take(
                    now_s, urgent_only=page.state is PageState.PINGING,
                    max_messages=min(window, 1))
                for message in messages:
                    page.seq += 1
                    self._actions.append(SendCommMsg(page.comm_id, message.data, page.seq))
                    if message.done:
                        page.in_flight.append((page.seq, message.done))
                if due_s is not None:
                    due = due_s if due is None else min(due, due_s)
                idle = 0 if messages and due_s is None else idle + 1
            self._next_lane = index
        if due is None:
            self._cancel_timer(FLUSH_TIMER)
        elif FLUSH_TIMER not in self._armed:
            self._start_timer(FLUSH_TIMER, max(0.0, due - now_s))
        for page in self._pages.values():
            timer = silence_timer(page.comm_id)
            if self._waits_on(page) and timer not in self._armed \
                    and page.state is PageState.OPEN:
                self._start_timer(timer, self._timings.heartbeat_request_threshold_s)

    def _waits_on(self, page: _Page) -> bool:
        """Values wait for the page to acknowledge what it was sent: program values in
        flight, or values queued behind messages it has not acknowledged."""
        return bool(page.in_flight) or (page.seq > page.acked_seq and page.lane.has_watched())

    def _has_live_page(self) -> bool:
        return any(page.state is PageState.OPEN for page in self._pages.values())

    def _flush(self) -> None:
        """Carry out the queued requests, in order, while a page is known to be alive."""
        while self._queue and self._has_live_page():
            self._perform(self._queue[0])

    def _perform(self, request: ProgramRequest) -> None:
        """Carry out a request (RECEIVED or QUEUED) on every connected page. Sends are
        answered when each page acknowledged their values or went away (``_confirm``,
        ``_lose_page``), or fail (``_drop_waiting_values``)."""
        pages = self._connected_pages(request)
        if isinstance(request, SendRequested):
            data = {"address": request.address, "value": request.value}
            push_to_lanes([page.lane for page in pages], [(data, _json_size(data))],
                          request.request_id)
            self._move(request, RequestTrigger.HANDED_OVER)
            self._owed_by[request.request_id].update(page.comm_id for page in pages)
        elif isinstance(request, SendManyRequested):
            if not request.items:
                self._answer(request, RequestTrigger.DONE, ok=True)
                return
            items = [({"address": address, "value": value}, size_bytes)
                     for address, value, size_bytes in request.items]
            push_to_lanes([page.lane for page in pages], items, request.request_id)
            self._move(request, RequestTrigger.HANDED_OVER)
            self._owed_by[request.request_id].update(page.comm_id for page in pages)
        elif isinstance(request, ReadRequested):
            self._move(request, RequestTrigger.PAGE_ASKED)
            for page in pages:
                self._ask(page, request.request_id, request.address)
        else:  # start, sync
            self._answer(request, RequestTrigger.DONE, ok=True)

    def _oldest_read_asked_of(self, page: _Page, address: str) -> str | None:
        """The first read of ``address`` still waiting for this page's answer."""
        return next((request_id for request_id, request in self._asked.items()
                     if request.address == address and page.comm_id in self._asked_of[request_id]),
                    None)

    def _ask(self, page: _Page, request_id: str, address: str) -> None:
        self._send_to(page, {"address": address, "read_request": True})
        self._asked_of[request_id].add(page.comm_id)

    def _complete_reads(self, address: str, *, ok: bool, value: Any = None) -> bool:
        """A page's value answers every pending read of ``address``; True if there was
        one. The other pages asked will answer too: those answers are dropped."""
        waiting = [r for r in self._queue if isinstance(r, ReadRequested) and r.address == address]
        asked = [r for r in self._asked.values() if r.address == address]
        for request in waiting + asked:
            for comm_id in self._asked_of.get(request.request_id, ()):
                page = self._pages.get(comm_id)
                if page is not None:
                    page.void_answers[address] += 1
            self._cancel_timer(read_timer(request.request_id))
            self._answer(request, RequestTrigger.PAGE_ANSWERED, ok=ok, value=value)
        if waiting:
            self._release_leading_syncs()
        return bool(waiting or asked)

    def _end_read_if_unanswerable(self, request_id: str) -> None:
        """Every page asked has answered with a read_error, or gone after one did."""
        if self._asked_of[request_id]:
            return
        request = self._asked[request_id]
        self._cancel_timer(read_timer(request_id))
        self._answer(request, RequestTrigger.PAGE_ANSWERED, ok=False,
                     error=self._read_errors[request_id])

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

    def _send_to(self, page: _Page, data: dict[str, Any], *, urgent: bool = False,
                 watched: bool = False) -> None:
        """A message for one page (it is dropped if the page goes)."""
        if self._pages.get(page.comm_id) is not page:
            raise AddressStateError(f"no open comm {page.comm_id!r} to send {data!r} to")
        page.lane.push(data, _json_size(data), urgent=urgent, watched=watched)

    def _connected_pages(self, request: ProgramRequest) -> list[_Page]:
        if not self._pages:
            raise AddressStateError(f"no page connected to carry out {request!r}")
        return list(self._pages.values())

    def _start_timer(self, timer: TimerName, delay_s: float) -> None:
        self._armed.add(timer)
        self._actions.append(StartTimer(timer, delay_s))

    def _cancel_timer(self, timer: TimerName) -> None:
        if timer in self._armed:
            self._armed.discard(timer)
            self._actions.append(CancelTimer(timer))

    def _log(self, level: LogLevel, text: str) -> None:
        self._actions.append(Log(level, text))
