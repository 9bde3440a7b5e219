"""The address core's vocabulary: what its adapters and tests say to it, and what it says back.

Owns the words both sides of ``AddressCore.handle(event) -> list[Action]`` share:
the events (what happened, past tense: built by the kernel's adapter), the actions
(what to do, imperative: carried out by the adapter), the timer names, the protocol's
own addresses and comm target (DESIGN.md, "The address channel"), the timeouts
(``AddressTimings``), and the one exception the core raises (``AddressStateError``).

Must never: hold state, decide anything, do I/O, or import another wrapperkernel module
than ``address.defaults`` (constants). The state machine that gives these words their
meaning is ``address.core``; the parsing of what the page sends is ``address.payloads``.

The program's requests arrive as one event class per request, already validated: the
kernel<->worker frames they come from are checked by pydantic when the kernel reads
them (``workerlink.frames``), so an event's fields have the types written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from wrapperkernel.address.defaults import (
    HEARTBEAT_REQUEST_THRESHOLD_S,
    HEARTBEAT_TIMEOUT_S,
    READ_TIMEOUT_S,
    WAIT_FOR_CONNECTION_S,
)

# --- protocol constants (DESIGN.md, "The address channel") -------------------------

COMM_TARGET_NAME = "wrapperkernel_comm"
OPEN_ACK_ADDRESS = "#comm_open_ack"
PING_ADDRESS = "#heartbeat/ping"
PONG_ADDRESS = "#heartbeat/pong"
# Page -> kernel: the highest ``seq`` (comm_msg metadata) of the messages it handled.
ACK_ADDRESS = "#ack"


# --- timers ---------------------------------------------------------------------------

TimerName: TypeAlias = str
CONNECT_TIMER: TimerName = "connect"
FLUSH_TIMER: TimerName = "flush"  # the outbox's pacing lets the next message go
OWN_TIMERS = frozenset({CONNECT_TIMER, FLUSH_TIMER})
# Timers of one page or one request: the prefix, then the page's comm id or the request id.
HEARTBEAT_TIMER_PREFIX = "heartbeat:"
SILENCE_TIMER_PREFIX = "silence:"
READ_TIMER_PREFIX = "read:"
TIMER_PREFIXES = (HEARTBEAT_TIMER_PREFIX, SILENCE_TIMER_PREFIX, READ_TIMER_PREFIX)


def heartbeat_timer(comm_id: str) -> TimerName:
    """The timer bounding the wait for the pong of the page on comm ``comm_id``."""
    return HEARTBEAT_TIMER_PREFIX + comm_id


def silence_timer(comm_id: str) -> TimerName:
    """The timer that checks on the page on comm ``comm_id`` when values wait on it and
    it has said nothing for a while."""
    return SILENCE_TIMER_PREFIX + comm_id


def read_timer(request_id: str) -> TimerName:
    """The timer bounding the wait for the pages' answer to read request ``request_id``."""
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


# --- events: what happened (the adapter builds them) ------------------------------

LogLevel: TypeAlias = Literal["debug", "info", "warning"]


@dataclass(frozen=True, slots=True)
class Event:
    now_s: float


@dataclass(frozen=True, slots=True)
class ProgramRequest(Event):
    """What the five request events below share; each is answered by exactly one
    ``ReplyToProgram`` with its ``request_id``. Not an event of its own."""

    request_id: str


@dataclass(frozen=True, slots=True)
class StartRequested(ProgramRequest):
    """Make sure the page client is installed and connected. ``retry``: an explicit
    start (``comms.start()``, ``%widgets``), which tries the install again after a
    failure; the implicit start before a program's first use fails fast instead."""

    retry: bool = False


@dataclass(frozen=True, slots=True)
class SendRequested(ProgramRequest):
    """``value`` for the page at ``address``."""

    address: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class SendManyRequested(ProgramRequest):
    """Values for the page, in order, all or none: ``(address, value, size_bytes)``
    items, where ``size_bytes`` is the item's JSON size as the program measured it (for
    the outbox's pacing)."""

    items: Sequence[tuple[str, Any, int]]


@dataclass(frozen=True, slots=True)
class ReadRequested(ProgramRequest):
    """Ask the pages for their current value of ``address``; ``timeout_s`` bounds the
    wait for the first answer (None: ``AddressTimings.read_timeout_s``)."""

    address: str
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class SyncRequested(ProgramRequest):
    """Resolves once every request made before it has been handed to the page connections."""


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
    """comm_msg to the page on ``comm_id``, now: ``data`` is one item or
    ``{"batch": [...]}``; ``seq`` (1, 2, ... on each comm) goes in the message's
    metadata, for the page's ``#ack``."""

    comm_id: str
    data: dict[str, Any]
    seq: int


@dataclass(frozen=True, slots=True)
class SendCommClose(Action):
    """comm_close to a comm: a comm_open the kernel refuses, or a page dropped as stale."""

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
