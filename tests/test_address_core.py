"""The address core: lifecycle tables, every state x every event, and a lifecycle model."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import math
import pathlib
from collections import Counter

import pydantic
import pytest
import strategies
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import wrapperkernel.address
from wrapperkernel.address.core import (
    CONNECTED_STATES,
    MAX_UNACKED_MSGS,
    PAGE_TRANSITIONS,
    REQUEST_TRANSITIONS,
    TRANSITIONS,
    AddressCore,
    PageState,
    PageTrigger,
    RequestState,
    RequestTrigger,
    State,
    Trigger,
    next_page_state,
    next_request_state,
)
from wrapperkernel.address.events import (
    ACK_ADDRESS,
    COMM_TARGET_NAME,
    CONNECT_TIMER,
    FLUSH_TIMER,
    OPEN_ACK_ADDRESS,
    PING_ADDRESS,
    PONG_ADDRESS,
    Action,
    AddressStateError,
    AddressTimings,
    CancelTimer,
    DeliverToProgram,
    EraseInstallScript,
    Event,
    Log,
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
    WorkerRestarted,
    heartbeat_timer,
    read_timer,
    silence_timer,
)
from wrapperkernel.address.outbox import Outbox
from wrapperkernel.kernel.address_adapter import AddressAdapter
from wrapperkernel.workerlink import frames

KERNEL_ID = "kernel-1"


def make_core(timings: AddressTimings | None = None) -> AddressCore:
    ids = itertools.count(1)
    return AddressCore(KERNEL_ID, lambda: f"display-{next(ids)}", timings)


def opened(now_s: float, comm_id: str) -> PageCommOpened:
    return PageCommOpened(now_s, comm_id, COMM_TARGET_NAME, {"kernel_id": KERNEL_ID})


def ack(comm_id: str, seq: int = 1) -> SendCommMsg:
    return SendCommMsg(comm_id, {"address": OPEN_ACK_ADDRESS, "value": True}, seq)


def value_msg(comm_id: str, address: str, value: object, seq: int) -> SendCommMsg:
    return SendCommMsg(comm_id, {"address": address, "value": value}, seq)


def received(now_s: float, comm_id: str, seq: int) -> PageCommMsg:
    """The page's acknowledgement of every message up to ``seq``."""
    return PageCommMsg(now_s, comm_id, {"address": ACK_ADDRESS, "value": seq})


HEARTBEAT_TIMER = heartbeat_timer("c1")  # the timers of the first page's comm
SILENCE_TIMER = silence_timer("c1")
WATCH_SILENCE = StartTimer(SILENCE_TIMER, 1.0)


def watch_silence(comm_id: str) -> StartTimer:
    return StartTimer(silence_timer(comm_id), 1.0)


# The expected state of a step: the channel's, or the channel's and each page's.
PINGING_C1 = (State.OPEN, {"c1": PageState.PINGING})


def ok(request_id: str, value: object = None) -> ReplyToProgram:
    return ReplyToProgram(request_id, True, value)


def without_logs(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Log)]


def run(core: AddressCore, steps) -> None:
    """Each step's actions and state; a plain OPEN state means every page is OPEN."""
    for number, (event, expected_actions, expected_state) in enumerate(steps):
        actions = core.handle(event)
        assert without_logs(actions) == expected_actions, f"step {number}: {event}"
        if isinstance(expected_state, tuple):
            expected_state, pages = expected_state
        else:
            pages = {comm_id: PageState.OPEN for comm_id in core.comm_ids}
        assert core.state is expected_state, f"step {number}: {event}"
        assert core.page_states == pages, f"step {number}: {event}"


# --- lifecycle tables ----------------------------------------------------------------

HAPPY_PATH = [
    (
        StartRequested(0.0, "r1"),
        [PublishInstallScript("display-1"), StartTimer(CONNECT_TIMER, 3.0)],
        State.CONNECTING,
    ),
    (SendRequested(0.1, "r2", "/a", 0), [], State.CONNECTING),
    (
        opened(0.5, "c1"),
        [
            CancelTimer(CONNECT_TIMER),
            EraseInstallScript("display-1"),
            ok("r1"),
            ack("c1", 1),
            value_msg("c1", "/a", 0, 2),
            WATCH_SILENCE,
        ],
        State.OPEN,
    ),
    # The send is done when the page has acknowledged the message carrying it.
    (received(0.55, "c1", 2), [ok("r2"), CancelTimer(SILENCE_TIMER)], State.OPEN),
    (ProgramSubscribed(0.6, "/slider"), [], State.OPEN),
    (
        PageCommMsg(0.7, "c1", {"address": "/slider", "value": False}),
        [DeliverToProgram("/slider", False)],
        State.OPEN,
    ),
    (
        ReadRequested(0.8, "r3", "/slider"),
        [
            StartTimer("read:r3", 3.0),
            SendCommMsg("c1", {"address": "/slider", "read_request": True}, 3),
        ],
        State.OPEN,
    ),
    (
        PageCommMsg(0.9, "c1", {"address": "/slider", "value": 7}),
        [CancelTimer("read:r3"), ok("r3", 7), DeliverToProgram("/slider", 7)],
        State.OPEN,
    ),
    (
        PageCommMsg(1.0, "c1", {"address": PING_ADDRESS, "value": "p"}),
        [SendCommMsg("c1", {"address": PONG_ADDRESS, "value": "p"}, 4)],
        State.OPEN,
    ),
    # Silent for more than 1 s before the program uses the channel: ping first.
    (
        SendRequested(5.0, "r4", "/a", None),
        [
            StartTimer(HEARTBEAT_TIMER, 0.5),
            SendCommMsg("c1", {"address": PING_ADDRESS, "value": 1}, 5),
        ],
        PINGING_C1,
    ),
    (
        PageCommMsg(5.1, "c1", {"address": PONG_ADDRESS, "value": 1}),
        [CancelTimer(HEARTBEAT_TIMER), value_msg("c1", "/a", None, 6), WATCH_SILENCE],
        State.OPEN,
    ),
    (received(5.2, "c1", 6), [ok("r4"), CancelTimer(SILENCE_TIMER)], State.OPEN),
    (
        SendRequested(9.0, "r5", "/a", ""),
        [
            StartTimer(HEARTBEAT_TIMER, 0.5),
            SendCommMsg("c1", {"address": PING_ADDRESS, "value": 2}, 7),
        ],
        PINGING_C1,
    ),
    # No pong: the page reloaded. Its comm is closed, and as it was the only page the
    # script is reinstalled; the send stays queued.
    (
        TimerFired(9.5, HEARTBEAT_TIMER),
        [SendCommClose("c1"), PublishInstallScript("display-2"),
         StartTimer(CONNECT_TIMER, 3.0)],
        State.CONNECTING,
    ),
    (PageCommMsg(9.6, "c1", {"address": "/slider", "value": 1}), [], State.CONNECTING),
    (
        opened(10.0, "c2"),
        [
            CancelTimer(CONNECT_TIMER),
            EraseInstallScript("display-2"),
            ack("c2", 1),
            value_msg("c2", "/a", "", 2),
            watch_silence("c2"),
        ],
        State.OPEN,
    ),
    (received(10.1, "c2", 2), [ok("r5"), CancelTimer(silence_timer("c2"))], State.OPEN),
]


def test_happy_path():
    run(make_core(), HAPPY_PATH)


def test_no_page_fails_after_the_wait_then_fails_fast_then_recovers_on_open():
    core = make_core()
    run(
        core,
        [
            (
                SendRequested(0.0, "r1", "/a", 1),
                [PublishInstallScript("display-1"), StartTimer(CONNECT_TIMER, 3.0)],
                State.CONNECTING,
            ),
            (
                ReadRequested(0.5, "r2", "/a"),
                [StartTimer("read:r2", 3.0)],
                State.CONNECTING,
            ),
        ],
    )
    actions = without_logs(core.handle(TimerFired(3.0, CONNECT_TIMER)))
    assert core.state is State.FAILED
    assert actions[0] == EraseInstallScript("display-1")
    assert [(a.request_id, a.ok) for a in actions[1:] if isinstance(a, ReplyToProgram)] == [
        ("r1", False),
        ("r2", False),
    ]
    assert CancelTimer("read:r2") in actions
    error = actions[1].error
    assert "No page connected" in error and "3 s" in error
    assert "JupyterLab" in error and "comms.start()" in error
    run(
        core,
        [
            (
                SendRequested(4.0, "r3", "/a", 2),
                [ReplyToProgram("r3", False, value=1, error=error)],
                State.FAILED,
            ),
            (
                ReadRequested(4.1, "r4", "/a"),
                [ReplyToProgram("r4", False, error=error)],
                State.FAILED,
            ),
            (SyncRequested(4.2, "r5"), [ok("r5")], State.FAILED),
            (opened(5.0, "c1"), [ack("c1")], State.OPEN),
            (
                SendRequested(5.1, "r6", "/a", 3),
                [value_msg("c1", "/a", 3, 2), WATCH_SILENCE],
                State.OPEN,
            ),
            (received(5.2, "c1", 2), [ok("r6"), CancelTimer(SILENCE_TIMER)], State.OPEN),
        ],
    )


def test_implicit_start_after_a_failure_fails_fast():
    core = make_core()
    core.handle(StartRequested(0.0, "r1"))
    core.handle(TimerFired(3.0, CONNECT_TIMER))
    actions = without_logs(core.handle(StartRequested(4.0, "r2")))
    assert len(actions) == 1 and isinstance(actions[0], ReplyToProgram)
    assert actions[0].ok is False and "No page connected" in actions[0].error
    assert core.state is State.FAILED


def test_explicit_start_after_a_failure_retries_the_install():
    core = make_core()
    core.handle(StartRequested(0.0, "r1"))
    core.handle(TimerFired(3.0, CONNECT_TIMER))
    run(
        core,
        [
            (
                StartRequested(4.0, "r2", retry=True),
                [PublishInstallScript("display-2"), StartTimer(CONNECT_TIMER, 3.0)],
                State.CONNECTING,
            ),
            (
                opened(4.5, "c1"),
                [CancelTimer(CONNECT_TIMER), EraseInstallScript("display-2"), ok("r2"), ack("c1")],
                State.OPEN,
            ),
        ],
    )


def test_timings_are_configurable():
    timings = AddressTimings(
        wait_for_connection_s=10.0,
        heartbeat_request_threshold_s=2.0,
        heartbeat_timeout_s=0.25,
        read_timeout_s=1.5,
    )
    core = make_core(timings)
    assert core.handle(StartRequested(0.0, "r1"))[1] == StartTimer(CONNECT_TIMER, 10.0)
    core.handle(opened(0.1, "c1"))
    assert core.handle(ReadRequested(0.2, "r2", "/a"))[0] == StartTimer("read:r2", 1.5)
    assert core.handle(SendRequested(1.5, "r3", "/a", 1)) == [
        value_msg("c1", "/a", 1, 3),
        StartTimer(SILENCE_TIMER, 2.0),
    ]
    assert core.handle(SendRequested(2.3, "r4", "/a", 2))[0] == StartTimer(
        HEARTBEAT_TIMER, 0.25
    )


def open_core(*subscriptions: str) -> AddressCore:
    core = make_core()
    core.handle(opened(0.0, "c1"))
    for address in subscriptions:
        core.handle(ProgramSubscribed(0.0, address))
    return core


def test_comm_open_for_another_target_is_answered_with_comm_close():
    core = make_core()
    actions = core.handle(PageCommOpened(0.0, "x1", "jupyter.widget", {"kernel_id": KERNEL_ID}))
    assert actions[0] == SendCommClose("x1")
    assert isinstance(actions[1], Log) and actions[1].level == "warning"
    assert core.state is State.IDLE and core.comm_ids == ()


@pytest.mark.parametrize("data", [{"kernel_id": "another-kernel"}, {}, None, [KERNEL_ID]])
def test_comm_open_for_another_kernel_is_ignored(data):
    core = make_core()
    core.handle(StartRequested(0.0, "r1"))
    actions = core.handle(PageCommOpened(0.1, "x1", COMM_TARGET_NAME, data))
    assert [type(a) for a in actions] == [Log]
    assert core.state is State.CONNECTING and core.comm_ids == ()


def test_falsy_values_round_trip_and_batches_are_unpacked_in_order():
    core = open_core("/a", "/b")
    batch = {
        "batch": [
            {"address": "/a", "value": 0},
            {"address": "/b", "value": False},
            "garbage",
            {"address": "/a", "value": ""},
            {"address": "/c", "value": "nobody listens"},
            {"address": "/b", "value": None},
            {"address": "/a", "value": []},
        ]
    }
    actions = core.handle(PageCommMsg(0.1, "c1", batch))
    assert [a for a in actions if isinstance(a, DeliverToProgram)] == [
        DeliverToProgram("/a", 0),
        DeliverToProgram("/b", False),
        DeliverToProgram("/a", ""),
        DeliverToProgram("/b", None),
        DeliverToProgram("/a", []),
    ]
    logs = [a for a in actions if isinstance(a, Log)]
    assert any(log.level == "warning" and "batch item 2" in log.text for log in logs)
    assert any(log.level == "debug" and "'/c'" in log.text for log in logs)


def test_unsubscribed_address_is_logged_not_delivered():
    core = open_core("/a")
    core.handle(ProgramUnsubscribed(0.1, "/a"))
    actions = core.handle(PageCommMsg(0.2, "c1", {"address": "/a", "value": 1}))
    assert [(type(a), a.level) for a in actions] == [(Log, "debug")]


@pytest.mark.parametrize(
    "data",
    [
        None,
        42,
        "text",
        [],
        {},
        {"address": 3, "value": 1},
        {"address": "/a"},
        {"address": "/a", "value": 1, "read_request": True},
        {"address": "/a", "read_request": "yes"},
        {"address": "/a", "read_error": 5},
        {"batch": "not a list"},
        {"batch": [{"batch": [{"address": "/a", "value": 1}]}]},
    ],
)
def test_malformed_page_data_becomes_a_warning(data):
    core = open_core("/a")
    actions = core.handle(PageCommMsg(0.1, "c1", data))
    assert actions and all(isinstance(a, Log) and a.level == "warning" for a in actions)
    assert core.state is State.OPEN


def test_private_addresses_never_reach_the_program():
    core = open_core("#secret")
    actions = core.handle(PageCommMsg(0.1, "c1", {"address": "#secret", "value": 1}))
    assert [type(a) for a in actions] == [Log]
    assert core.subscriptions == frozenset()
    reply = core.handle(SendRequested(0.2, "r1", "#secret", 1))
    assert [(a.ok, "reserved" in a.error) for a in reply] == [(False, True)]


def test_send_many_sends_every_pair_in_order_with_one_reply():
    core = open_core()
    actions = core.handle(SendManyRequested(0.1, "r1",
                                            [("/a", 0, 24), ("/b", None, 27), ("/a", {"x": [1]}, 32)]))
    assert actions == [
        SendCommMsg("c1", {"batch": [{"address": "/a", "value": 0},
                                     {"address": "/b", "value": None},
                                     {"address": "/a", "value": {"x": [1]}}]}, 2),
        WATCH_SILENCE,
    ]
    assert core.unconfirmed_request_ids == {"r1"}
    assert core.handle(received(0.2, "c1", 1)) == []  # the ack, not the values
    assert core.handle(received(0.2, "c1", 2)) == [ok("r1"), CancelTimer(SILENCE_TIMER)]
    assert core.unconfirmed_request_ids == frozenset()


def test_send_many_with_a_private_address_sends_nothing():
    core = open_core()
    actions = core.handle(SendManyRequested(0.1, "r1", [("/a", 1, 24), ("#heartbeat/ping", 2, 35)]))
    assert [type(a) for a in actions] == [ReplyToProgram]
    assert not actions[0].ok and "'#heartbeat/ping'" in actions[0].error


def test_read_error_and_read_timeout_complete_the_read_with_an_error():
    core = open_core()
    core.handle(ReadRequested(0.1, "r1", "/a"))
    core.handle(ReadRequested(0.1, "r2", "/b", 0.25))
    actions = core.handle(PageCommMsg(0.2, "c1", {"address": "/a", "read_error": "no such"}))
    assert actions == [
        CancelTimer("read:r1"),
        ReplyToProgram("r1", False, error="The page could not read '/a': no such"),
    ]
    [reply] = core.handle(TimerFired(0.35, read_timer("r2")))
    assert reply.request_id == "r2" and not reply.ok
    assert "did not answer the read of '/b' within 0.25 s" in reply.error
    assert core.pending_request_ids == frozenset()


def test_page_read_request_is_relayed_when_subscribed_and_answered_otherwise():
    core = open_core("/a")
    assert core.handle(PageCommMsg(0.1, "c1", {"address": "/a", "read_request": True})) == [
        RelayReadRequest("/a")
    ]
    assert core.handle(PageCommMsg(0.2, "c1", {"address": "/z", "read_request": True})) == [
        SendCommMsg("c1", {"address": "/z", "read_error": "No program is subscribed to '/z'."}, 2)
    ]


def test_closed_comm_is_ignored_and_the_next_use_reinstalls():
    core = open_core("/a")
    core.handle(PageCommClosed(0.1, "c1"))
    assert core.state is State.CLOSED and core.comm_ids == ()
    assert [
        type(a) for a in core.handle(PageCommMsg(0.2, "c1", {"address": "/a", "value": 1}))
    ] == [Log]
    assert core.handle(SendRequested(0.3, "r1", "/a", 1)) == [
        PublishInstallScript("display-1"),
        StartTimer(CONNECT_TIMER, 3.0),
    ]


def test_reads_asked_on_a_closed_comm_are_asked_again_on_the_next_one():
    core = open_core()
    core.handle(ReadRequested(0.1, "r1", "/a"))
    assert core.handle(PageCommClosed(0.2, "c1"))[1:] == [
        PublishInstallScript("display-1"),
        StartTimer(CONNECT_TIMER, 3.0),
    ]
    assert without_logs(core.handle(opened(0.3, "c2")))[-1] == SendCommMsg(
        "c2", {"address": "/a", "read_request": True}, 2
    )
    assert core.handle(PageCommMsg(0.4, "c2", {"address": "/a", "value": 5})) == [
        CancelTimer("read:r1"),
        ok("r1", 5),
    ]


def test_a_new_comm_open_joins_beside_the_open_connection():
    # Issue 10: a second page (a tab, a collaborator) used to replace the first one's
    # connection; now it joins, and both pages stay connected.
    core = open_core("/a")
    core.handle(ReadRequested(0.1, "r1", "/b"))
    actions = without_logs(core.handle(opened(0.2, "c2")))
    # The read still waiting is asked of the new page too.
    assert actions == [ack("c2"), SendCommMsg("c2", {"address": "/b", "read_request": True}, 2)]
    assert core.comm_ids == ("c1", "c2") and core.state is State.OPEN
    # A value from either page reaches the program, and goes on to the other page.
    assert core.handle(PageCommMsg(0.3, "c1", {"address": "/a", "value": 1})) == [
        DeliverToProgram("/a", 1), value_msg("c2", "/a", 1, 3)]
    assert core.handle(PageCommMsg(0.3, "c2", {"address": "/a", "value": 2})) == [
        DeliverToProgram("/a", 2), value_msg("c1", "/a", 2, 3)]
    # The program's values go to both pages; the send is done when both acknowledged.
    assert core.handle(SendRequested(0.4, "r2", "/a", 3)) == [
        value_msg("c1", "/a", 3, 4), value_msg("c2", "/a", 3, 4),
        WATCH_SILENCE, watch_silence("c2")]
    assert core.handle(received(0.5, "c1", 4)) == [CancelTimer(SILENCE_TIMER)]
    assert core.handle(received(0.5, "c2", 4)) == [ok("r2"), CancelTimer(silence_timer("c2"))]


def test_sync_resolves_after_everything_queued_before_it():
    core = make_core()
    core.handle(SyncRequested(0.0, "s0"))  # nothing queued: resolves at once
    core.handle(SendRequested(0.0, "r1", "/a", 1))
    assert core.handle(SyncRequested(0.1, "s1")) == []
    core.handle(SendRequested(0.2, "r2", "/a", 2))
    actions = without_logs(core.handle(opened(0.3, "c1")))
    # The sync is answered once its sends are with the page connection; the program
    # then waits for their acknowledgement itself (address_runtime).
    assert actions[2:] == [
        ok("s1"),
        ack("c1"),
        SendCommMsg("c1", {"batch": [{"address": "/a", "value": 1},
                                     {"address": "/a", "value": 2}]}, 2),
        WATCH_SILENCE,
    ]
    assert core.handle(received(0.4, "c1", 2)) == [ok("r1"), ok("r2"),
                                                    CancelTimer(SILENCE_TIMER)]


def test_sync_behind_an_answered_read_resolves_with_it():
    core = open_core()
    core.handle(ReadRequested(5.0, "r1", "/a"))  # silent: pings, read queued
    assert core.page_states == {"c1": PageState.PINGING}
    core.handle(SyncRequested(5.1, "s1"))
    assert core.handle(PageCommMsg(5.2, "c1", {"address": "/a", "value": 1})) == [
        CancelTimer("read:r1"),
        ok("r1", 1),
        ok("s1"),
    ]


def test_worker_restart_clears_subscriptions_and_fails_pending_requests():
    core = open_core("/a")
    core.handle(ReadRequested(0.1, "r1", "/a"))
    actions = core.handle(WorkerRestarted(0.2))
    assert actions[0] == CancelTimer("read:r1")
    assert actions[1].request_id == "r1" and not actions[1].ok
    assert "worker process was restarted" in actions[1].error
    assert core.subscriptions == frozenset() and core.pending_request_ids == frozenset()
    assert core.state is State.OPEN


def test_worker_restart_forgets_a_failure():
    core = make_core()
    core.handle(StartRequested(0.0, "r1"))
    core.handle(TimerFired(3.0, CONNECT_TIMER))
    core.handle(WorkerRestarted(4.0))
    assert core.state is State.IDLE
    assert core.handle(SendRequested(5.0, "r2", "/a", 1))[0] == PublishInstallScript(
        "display-2"
    )


def test_a_cancelled_timer_that_still_fires_is_ignored():
    core = make_core()
    core.handle(StartRequested(0.0, "r1"))
    core.handle(opened(0.1, "c1"))
    actions = core.handle(TimerFired(3.0, CONNECT_TIMER))
    assert [(type(a), a.level) for a in actions] == [(Log, "debug")]
    assert core.state is State.OPEN


@pytest.mark.parametrize(
    "event",
    [
        StartRequested(0.0, "r1"),  # duplicate of the pending r1
        SendRequested(0.0, "r1", "/a", 1),  # another kind of request, the same pending id
        ProgramRequest(0.0, "r9"),  # what the requests share, not a request of its own
        TimerFired(0.0, "bogus"),
        Event(0.0),
    ],
)
def test_internal_misuse_raises_and_changes_nothing(event):
    core = make_core()
    core.handle(StartRequested(0.0, "r1"))
    before = snapshot(core)
    with pytest.raises(AddressStateError):
        core.handle(event)
    assert snapshot(core) == before


# Requests the core once checked itself (an unknown op, a send without an address, a
# read timeout that is not a positive finite number, a malformed batch): they cannot
# become core events now, since the frames they would come from fail validation when
# the kernel reads them (and the worker is replaced, as for a corrupt frame).
@pytest.mark.parametrize(
    "fields",
    [
        {"type": "shout"},
        {"type": "address_send", "address": None, "value": 1},
        {"type": "address_read", "address": "/a", "timeout_s": -1},
        {"type": "address_read", "address": "/a", "timeout_s": True},
        {"type": "address_read", "address": "/a", "timeout_s": math.inf},
        {"type": "address_send_many", "items": [["/a", 1]]},
        {"type": "address_send_many", "items": [[1, 1, 24]]},
        {"type": "address_send_many", "items": [["/a", 1, -1]]},
        {"type": "address_send_many", "items": [["/a", 1, 2.5]]},
        {"type": "address_send_many", "items": "/a"},
    ],
)
def test_requests_the_core_cannot_take_are_rejected_at_the_boundary(fields):
    with pytest.raises(pydantic.ValidationError):
        frames.WORKER_TO_KERNEL.validate_python({"request_id": "r9", **fields})


class RecordingCore:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, event: Event) -> list[Action]:
        self.events.append(event)
        return []


@pytest.mark.parametrize(
    ("frame", "event"),
    [
        (frames.AddressStartFrame(request_id="r1"), StartRequested(7.0, "r1")),
        (frames.AddressStartFrame(request_id="r1", retry=True),
         StartRequested(7.0, "r1", retry=True)),
        (frames.AddressSendFrame(request_id="r1", address="/a", value=0),
         SendRequested(7.0, "r1", "/a", 0)),
        (frames.AddressSendManyFrame(request_id="r1", items=[("/a", None, 27)]),
         SendManyRequested(7.0, "r1", [("/a", None, 27)])),
        (frames.AddressReadFrame(request_id="r1", address="/a"), ReadRequested(7.0, "r1", "/a")),
        (frames.AddressReadFrame(request_id="r1", address="/a", timeout_s=0.25),
         ReadRequested(7.0, "r1", "/a", 0.25)),
        (frames.AddressSyncFrame(request_id="r1"), SyncRequested(7.0, "r1")),
        (frames.AddressSubscriptionFrame(address="/a", subscribed=True),
         ProgramSubscribed(7.0, "/a")),
        (frames.AddressSubscriptionFrame(address="/a", subscribed=False),
         ProgramUnsubscribed(7.0, "/a")),
    ],
)
def test_the_adapter_turns_each_worker_frame_into_one_event(frame, event):
    adapter = AddressAdapter(transport=None, worker=None, kernel_id=KERNEL_ID,
                             clock=lambda: 7.0)
    adapter.core = RecordingCore()
    adapter.on_worker_frame(frame)
    assert adapter.core.events == [event]


def test_transition_table_covers_every_state():
    assert set(TRANSITIONS) == set(State)
    for state, row in TRANSITIONS.items():
        assert all(isinstance(t, Trigger) and isinstance(s, State) for t, s in row.items())
        # Every state answers the program and accepts a page.
        assert {Trigger.PROGRAM_STARTED, Trigger.PROGRAM_USED, Trigger.PAGE_OPENED} <= set(row)
        assert row[Trigger.PAGE_OPENED] is State.OPEN, state


# --- the request lifecycle table ----------------------------------------------------------


# Each table of request or page states, with the function that reads it.
STATE_TABLES = [(REQUEST_TRANSITIONS, next_request_state, RequestState, RequestTrigger),
                (PAGE_TRANSITIONS, next_page_state, PageState, PageTrigger)]


@pytest.mark.parametrize(("table", "next_state", "state", "trigger"), [
    (table, next_state, state, trigger) for table, next_state, states, triggers in STATE_TABLES
    for state in states for trigger in triggers])
def test_every_request_or_page_state_x_every_trigger_transitions_or_raises(
        table, next_state, state, trigger):
    row = table[state]
    if trigger in row:
        assert next_state(state, trigger) is row[trigger]
    else:
        with pytest.raises(AddressStateError, match=f"{trigger.name} in state {state.name}"):
            next_state(state, trigger)


def test_request_table_covers_every_state_and_every_request_is_answered():
    assert set(REQUEST_TRANSITIONS) == set(RequestState)
    assert REQUEST_TRANSITIONS[RequestState.ANSWERED] == {}  # terminal
    # A request enters only by being made, and only a new id can be made.
    assert REQUEST_TRANSITIONS[RequestState.NEW] == {RequestTrigger.MADE: RequestState.RECEIVED}
    assert all(RequestTrigger.MADE not in row for state, row in REQUEST_TRANSITIONS.items()
               if state is not RequestState.NEW)
    # Every state is reachable from NEW, and ANSWERED from every state after it: no
    # request is stuck, each gets its one reply.
    reachable = {RequestState.NEW}
    while True:
        grown = reachable | {new for state in reachable
                             for new in REQUEST_TRANSITIONS[state].values()}
        if grown == reachable:
            break
        reachable = grown
    assert reachable == set(RequestState)
    for state in set(RequestState) - {RequestState.NEW, RequestState.ANSWERED}:
        assert RequestState.ANSWERED in REQUEST_TRANSITIONS[state].values(), state
    # Every trigger is used somewhere.
    assert {t for row in REQUEST_TRANSITIONS.values() for t in row} == set(RequestTrigger)


# A request left in each state by a known event sequence: (setup events, its id).
REQUEST_SETUPS: dict[RequestState, list[Event]] = {
    RequestState.QUEUED: [SendRequested(0.0, "r1", "/a", 1)],  # no page yet
    RequestState.ASKED: [opened(0.0, "c1"), ReadRequested(0.1, "r1", "/a")],
    RequestState.SENDING: [opened(0.0, "c1"), SendRequested(0.1, "r1", "/a", 1)],
}


@pytest.mark.parametrize("state", list(REQUEST_SETUPS))
def test_a_request_id_still_pending_cannot_be_made_again(state):
    core = make_core()
    for event in REQUEST_SETUPS[state]:
        core.handle(event)
    assert core.request_states == {"r1": state}
    before = snapshot(core)
    for again in [StartRequested(0.2, "r1"), SendRequested(0.2, "r1", "/b", 2),
                  SendManyRequested(0.2, "r1", []), ReadRequested(0.2, "r1", "/b"),
                  SyncRequested(0.2, "r1")]:
        with pytest.raises(AddressStateError, match="MADE in state"):
            core.handle(again)
        assert snapshot(core) == before


def test_an_answered_request_id_is_forgotten_and_may_be_used_again():
    core = open_core()
    core.handle(SendRequested(0.1, "r1", "/a", 1))
    core.handle(received(0.2, "c1", 2))
    assert core.request_states == {}
    assert core.handle(SyncRequested(0.3, "r1")) == [ok("r1")]


def test_a_read_goes_queued_asked_queued_asked_answered():
    core = make_core()
    core.handle(ReadRequested(0.0, "r1", "/a"))
    assert core.request_states == {"r1": RequestState.QUEUED}
    core.handle(opened(0.1, "c1"))
    assert core.request_states == {"r1": RequestState.ASKED}
    core.handle(PageCommClosed(0.2, "c1"))  # asked on a comm that went away: asked again
    assert core.request_states == {"r1": RequestState.QUEUED}
    core.handle(opened(0.3, "c2"))
    assert core.request_states == {"r1": RequestState.ASKED}
    assert core.handle(PageCommMsg(0.4, "c2", {"address": "/a", "value": 3}))[-1] == ok("r1", 3)
    assert core.request_states == {}


# --- every state x every event ---------------------------------------------------------


def snapshot(core: AddressCore):
    return (
        core.state,
        core.comm_ids,
        core.page_states,
        core.pending_request_ids,
        core.subscriptions,
        core.armed_timers,
        core.request_states,
    )


# How to reach each state by a known event sequence: the channel's state, and each
# page's (one page pinging; two pages, one of them pinging).
SETUPS: dict[str, tuple[list[Event], State]] = {
    "idle": ([], State.IDLE),
    "connecting": ([StartRequested(0.0, "r0")], State.CONNECTING),
    "open": ([StartRequested(0.0, "r0"), opened(0.1, "c1")], State.OPEN),
    "pinging": ([StartRequested(0.0, "r0"), opened(0.1, "c1"), SendRequested(5.0, "r1", "/a", 1)],
                State.OPEN),
    "two pages": ([StartRequested(0.0, "r0"), opened(0.1, "c1"), opened(0.2, "c2")], State.OPEN),
    "two pages, one pinging": ([StartRequested(0.0, "r0"), opened(0.1, "c1"),
                                opened(4.5, "c2"), SendRequested(5.0, "r1", "/a", 1)],
                               State.OPEN),
    "closed": ([opened(0.1, "c1"), PageCommClosed(0.2, "c1")], State.CLOSED),
    "failed": ([StartRequested(0.0, "r0"), TimerFired(3.0, CONNECT_TIMER)], State.FAILED),
}
SETUP_END_S = 5.0

# What a page could send: also infinities (Python's json module parses them), and objects whose
# keys are the protocol's own, so that malformed payloads look almost right.
json_values = strategies.json_values(
    scalars=st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=5),
    keys=st.sampled_from(
        ["address", "value", "batch", "read_request", "read_error", "kernel_id", "x"]),
    max_size=3, max_leaves=10)
addresses = st.sampled_from(["/a", "/b", "", "#x", PING_ADDRESS, PONG_ADDRESS, OPEN_ACK_ADDRESS])
page_items = st.one_of(
    st.builds(lambda a, v: {"address": a, "value": v}, addresses, json_values),
    st.builds(lambda a: {"address": a, "read_request": True}, addresses),
    st.builds(lambda a, e: {"address": a, "read_error": e}, addresses, st.text(max_size=5)),
)
page_data = st.one_of(
    json_values,
    page_items,
    st.builds(lambda items: {"batch": items}, st.lists(page_items | json_values, max_size=4)),
)
comm_ids = st.sampled_from(["c1", "c2", "c3"])
request_ids = st.sampled_from(["r0", "r1", "r2", "r3"])
timer_names = st.sampled_from(
    [CONNECT_TIMER, HEARTBEAT_TIMER, FLUSH_TIMER, SILENCE_TIMER, heartbeat_timer("c2"),
     silence_timer("c2"), "heartbeat:zz", "silence:zz", "read:r0", "read:r1", "read:r2",
     "read:zz", "heartbeat", "silence", "bogus", ""]
)

# The program's requests as the frames they come from allow (malformed ones never get
# past the boundary: test_requests_the_core_cannot_take_are_rejected_at_the_boundary);
# their ids are few, so that a pending id is often made again.
read_timeouts = st.none() | st.floats(min_value=0, max_value=5, exclude_min=True)
program_requests = st.one_of(
    st.builds(StartRequested, st.just(0.0), request_ids, st.booleans()),
    st.builds(SendRequested, st.just(0.0), request_ids, addresses, json_values),
    # Batches of sends, possibly with a private address, possibly empty.
    st.builds(SendManyRequested, st.just(0.0), request_ids,
              st.lists(st.tuples(addresses, json_values, st.integers(0, 99)), max_size=3)),
    st.builds(ReadRequested, st.just(0.0), request_ids, addresses, read_timeouts),
    st.builds(SyncRequested, st.just(0.0), request_ids),
)

events = st.one_of(
    program_requests,
    st.builds(ProgramSubscribed, st.just(0.0), addresses),
    st.builds(ProgramUnsubscribed, st.just(0.0), addresses),
    st.builds(
        PageCommOpened,
        st.just(0.0),
        comm_ids,
        st.sampled_from([COMM_TARGET_NAME, "jupyter.widget"]),
        st.fixed_dictionaries({"kernel_id": st.sampled_from([KERNEL_ID, "other"])}) | json_values,
    ),
    st.builds(PageCommMsg, st.just(0.0), comm_ids, page_data),
    # The pages' protocol messages, often enough to matter.
    st.builds(
        lambda comm_id, address, value: PageCommMsg(0.0, comm_id,
                                                    {"address": address, "value": value}),
        st.sampled_from(["c1", "c2"]),
        st.sampled_from([PING_ADDRESS, PONG_ADDRESS, ACK_ADDRESS, "/a"]),
        st.integers(-1, 5) | st.booleans() | st.none(),
    ),
    st.builds(PageCommClosed, st.just(0.0), comm_ids),
    st.builds(TimerFired, st.just(0.0), timer_names),
    st.builds(WorkerRestarted, st.just(0.0)),
)


def is_misuse(core: AddressCore, event: Event) -> bool:
    """Independent statement of what counts as the adapter's mistake."""
    if isinstance(event, ProgramRequest):
        return event.request_id in core.pending_request_ids
    if isinstance(event, TimerFired):
        own = (CONNECT_TIMER, FLUSH_TIMER)
        prefixes = ("heartbeat:", "silence:", "read:")
        return event.timer not in own and not event.timer.startswith(prefixes)
    return False


@settings(max_examples=400, deadline=None)
@given(
    start=st.sampled_from(list(SETUPS)),
    steps=st.lists(st.tuples(st.floats(min_value=0, max_value=4), events), max_size=25),
)
def test_every_state_handles_every_event(start, steps):
    core = make_core()
    setup, state = SETUPS[start]
    for event in setup:
        core.handle(event)
    assert core.state is state
    assert ("pinging" in start) == (PageState.PINGING in core.page_states.values())
    now_s = SETUP_END_S
    for delay_s, template in steps:
        now_s += delay_s
        event = dataclasses.replace(template, now_s=now_s)
        before = snapshot(core)
        misuse = is_misuse(core, event)
        try:
            actions = core.handle(event)
        except AddressStateError:
            assert misuse, f"AddressStateError for valid input {event}"
            assert snapshot(core) == before
            continue
        assert not misuse, f"accepted misuse {event}"
        check_step(core, event, before, actions)


def check_state_invariants(core: AddressCore) -> None:
    # Pages are connected exactly while the channel is open; timers match the states
    # that own them.
    pages = core.page_states
    assert bool(pages) == (core.state in CONNECTED_STATES)
    assert set(pages.values()) <= {PageState.OPEN, PageState.PINGING}
    assert (CONNECT_TIMER in core.armed_timers) == (core.state is State.CONNECTING)
    heartbeats = {t for t in core.armed_timers if t.startswith("heartbeat:")}
    assert heartbeats == {heartbeat_timer(c) for c, state in pages.items()
                          if state is PageState.PINGING}
    # Pacing and the watch on silence exist only for live comms.
    silences = {t for t in core.armed_timers if t.startswith("silence:")}
    assert silences <= {silence_timer(c) for c in pages}
    if not pages:
        assert FLUSH_TIMER not in core.armed_timers
    # A send is unconfirmed exactly while it waits for the pages; it is still pending.
    assert core.unconfirmed_request_ids <= core.pending_request_ids
    # Each pending request has a state of the request table: between events none is
    # being routed still, and none is kept once answered.
    states = core.request_states
    assert set(states) == core.pending_request_ids
    assert set(states.values()) <= {RequestState.QUEUED, RequestState.ASKED, RequestState.SENDING}
    assert core.unconfirmed_request_ids == {
        request_id for request_id, state in states.items() if state is RequestState.SENDING}
    # Reads are asked only of live comms; requests wait only while the core waits for a
    # page (a connection, or a pong when every page is being pinged).
    if RequestState.ASKED in states.values():
        assert core.state in CONNECTED_STATES
    if RequestState.QUEUED in states.values():
        assert core.state is State.CONNECTING or (
            pages and set(pages.values()) == {PageState.PINGING})


def check_step(core: AddressCore, event: Event, before, actions: list[Action]) -> None:
    assert all(isinstance(a, Action) for a in actions)
    check_state_invariants(core)
    # Only connected comms are written to, and the kernel closes only a comm it refuses
    # (an unknown target) or a page it drops as stale.
    assert all(a.comm_id in core.comm_ids for a in actions if isinstance(a, SendCommMsg))
    closed = {a.comm_id for a in actions if isinstance(a, SendCommClose)}
    if isinstance(event, PageCommOpened):
        assert not closed or (closed == {event.comm_id} and event.target_name != COMM_TARGET_NAME)
    else:
        assert closed <= set(before[1]) - set(core.comm_ids)
        assert not closed or isinstance(event, TimerFired)
    # Exactly-once replies: only pending requests are answered, and answered ones are done.
    pending_before = before[3]
    replied = [a.request_id for a in actions if isinstance(a, ReplyToProgram)]
    assert len(replied) == len(set(replied))
    new_ids = {event.request_id} if isinstance(event, ProgramRequest) else set()
    assert set(replied) <= pending_before | new_ids
    assert not set(replied) & core.pending_request_ids
    # Nothing silently dropped: every request still pending or just answered.
    assert pending_before | new_ids <= core.pending_request_ids | set(replied)
    # Private addresses never reach the program.
    assert not any(isinstance(a, DeliverToProgram) and a.address.startswith("#") for a in actions)


# --- the lifecycle model ---------------------------------------------------------------


def values_of(request: ProgramRequest) -> list[object]:
    """The values a request carries to the page, in order."""
    if isinstance(request, SendRequested):
        return [request.value]
    if isinstance(request, SendManyRequested):
        return [value for _, value, _ in request.items]
    return []


@dataclasses.dataclass
class PageModel:
    """What one page (a tab, a collaborator) has seen on its comm."""

    comm_id: str
    seq: int = 0  # the last seq it received
    reads_seen: list[str] = dataclasses.field(default_factory=list)  # not answered yet
    program_values: list[int] = dataclasses.field(default_factory=list)  # serials, in order
    asked: set[str] = dataclasses.field(default_factory=set)  # addresses it may owe answers for


def serial_of(value: object) -> int | None:
    """The serial of a program value (``{"program": n}``), None for a page's value."""
    if isinstance(value, dict) and set(value) == {"program"}:
        return value["program"]
    return None


class CommLifecycle(RuleBasedStateMachine):
    """Pages (tabs, collaborators: several at once) and a program drive the core and the
    outboxes it owns; the model predicts the connections and checks the delivery
    contract (docs/comms-api.md, "Delivery"): nothing is written to a comm the kernel
    knows is gone, each page gets the program's values in order (after its ack), and no
    value is lost silently: each value reaches each page that was connected when it left
    the kernel's queue (when it was first sent to a page), unless that page went away
    first, or its request is pending, or the program is told how many of its values
    were not delivered (those no page was sent)."""

    paced = False  # see PacedCommLifecycle

    def __init__(self) -> None:
        super().__init__()
        ids = itertools.count(1)
        outbox = Outbox(max_items_per_msg=2, max_msgs_per_s=2.0, burst_s=1.0) if self.paced else None
        self.core = AddressCore(KERNEL_ID, lambda: f"display-{next(ids)}", outbox=outbox)
        self.now_s = 0.0
        self.deadlines: dict[str, float] = {}
        self.connected: list[str] = []  # the comms the core should hold, oldest first
        self.pages: dict[str, PageModel] = {}  # every connected page, zombies too
        self.zombies: set[str] = set()  # gone without a word (a reload): the core cannot know
        self.dead_comms: set[str] = set()  # closed by the page, or by the kernel
        self.comm_serial = itertools.count(1)
        self.request_serial = itertools.count(1)
        self.value_serial = itertools.count(1)
        self.requests: dict[str, ProgramRequest] = {}
        self.replies: Counter[str] = Counter()
        self.subscribed: set[str] = set()
        self.scripts_on_display: set[str] = set()
        self.messages_on: Counter[str] = Counter()  # comm -> messages received
        self.undelivered: dict[str, int] = {}  # failed send -> values it says were lost
        # Per program value (its serial) that left the kernel's queue (was sent to a page):
        # the pages it is meant for (connected then), and those still owing it.
        self.targets: dict[int, set[str]] = {}
        self.owners: dict[int, set[str]] = {}
        self._sent_now: list[tuple[str, int]] = []
        self._ok_now: list[str] = []

    # --- plumbing ---

    def live_pages(self) -> list[str]:
        return [comm_id for comm_id in self.connected if comm_id not in self.zombies]

    def apply(self, event: Event, *, joining: str | None = None,
              leaving: str | None = None) -> list[Action]:
        """Hand ``event`` to the core and check its actions; ``joining``: the page whose
        comm_open this is, ``leaving``: the page whose comm_close this is."""
        connected_before = list(self.connected)
        if joining is not None:
            self.connected.append(joining)
            # The reads still waiting are asked of a page that joins.
            pending = self.core.pending_request_ids
            self.pages[joining] = PageModel(joining, asked={
                r.address for r in self.requests.values()
                if isinstance(r, ReadRequested) and r.request_id in pending})
        if leaving is not None:
            self.forget_page(leaving)
        dropped = None
        if isinstance(event, TimerFired):
            was_armed = self.deadlines.pop(event.timer, None) is not None
            if event.timer.startswith("heartbeat:") and was_armed:
                dropped = event.timer[len("heartbeat:"):]
                self.forget_page(dropped)  # the core gives up on a silent page
        self._sent_now, self._ok_now = [], []
        actions = self.core.handle(event)
        for action in actions:
            self.observe(action)
        if dropped is not None:
            assert SendCommClose(dropped) in actions, "a stale page's comm is closed"
        self.after(connected_before)
        return actions

    def forget_page(self, comm_id: str) -> None:
        self.connected.remove(comm_id)
        del self.pages[comm_id]
        self.zombies.discard(comm_id)
        self.dead_comms.add(comm_id)

    def after(self, connected_before: list[str]) -> None:
        """The model's bookkeeping of an event, once all its actions were seen."""
        for comm_id in set(connected_before) - set(self.connected):  # a page went away
            for owners in self.owners.values():
                owners.discard(comm_id)
        for comm_id, serial in self._sent_now:
            if serial not in self.targets:
                # It leaves the kernel's queue now: for every page connected.
                self.targets[serial] = set(self.connected)
                self.owners[serial] = set(self.connected)
            # A page that connected later gets only what had not left the queue.
            assert comm_id in self.targets[serial], (comm_id, serial, self.targets[serial])
            self.owners[serial].discard(comm_id)
        for request_id in self._ok_now:
            # ok: every value reached a page, and every page meant for it, or went away.
            request = self.requests[request_id]
            serials = [serial_of(value) for value in values_of(request)]
            assert all(serial in self.targets and not self.owners[serial]
                       for serial in serials), (request, self.owners)

    def observe(self, action: Action) -> None:
        if isinstance(action, StartTimer):
            self.deadlines[action.timer] = self.now_s + action.delay_s
        elif isinstance(action, CancelTimer):
            assert self.deadlines.pop(action.timer, None) is not None, action
        elif isinstance(action, SendCommClose):
            assert action.comm_id in self.dead_comms, action  # the page the kernel just dropped
        elif isinstance(action, SendCommMsg):
            assert action.comm_id not in self.dead_comms, action
            assert action.comm_id in self.connected, action
            self.messages_on[action.comm_id] += 1
            # Messages are numbered from 1 on each comm, and the ack comes first: values
            # waiting for a page reach the next one after its ack.
            assert action.seq == self.messages_on[action.comm_id], action
            if action.seq == 1:
                assert action.data == {"address": OPEN_ACK_ADDRESS, "value": True}, action
            page = self.pages[action.comm_id]
            page.seq = action.seq
            items = action.data["batch"] if "batch" in action.data else [action.data]
            assert items, "an empty batch"
            for data in items:
                serial = serial_of(data.get("value"))
                if "value" in data and serial is not None:
                    page.program_values.append(serial)
                    self._sent_now.append((action.comm_id, serial))
                if data.get("read_request") is True and action.comm_id not in self.zombies:
                    page.reads_seen.append(data["address"])
        elif isinstance(action, ReplyToProgram):
            assert action.request_id in self.requests, action
            self.replies[action.request_id] += 1
            assert self.replies[action.request_id] == 1, f"second reply {action}"
            request = self.requests[action.request_id]
            values = values_of(request)
            if action.ok:
                self._ok_now.append(action.request_id)
            elif values and action.value is not None:
                # An error says how many values were not delivered: those that never
                # left the kernel's queue.
                unsent = [v for v in values if serial_of(v) not in self.targets]
                assert action.value == len(unsent), (action, unsent)
                self.undelivered[action.request_id] = action.value
            elif values:  # refused as a whole
                assert all(serial_of(v) not in self.targets for v in values), action
        elif isinstance(action, PublishInstallScript):
            assert action.display_id not in self.scripts_on_display
            self.scripts_on_display.add(action.display_id)
        elif isinstance(action, EraseInstallScript):
            self.scripts_on_display.remove(action.display_id)

    def request(self, kind: type[ProgramRequest], *fields: object):
        request = kind(self.now_s, f"r{next(self.request_serial)}", *fields)
        self.requests[request.request_id] = request
        if isinstance(request, ReadRequested):
            for page in self.pages.values():
                page.asked.add(request.address)
        return self.apply(request)

    def fire_due_timers(self, until_s: float) -> None:
        while self.deadlines:
            timer, due_s = min(self.deadlines.items(), key=lambda item: item[1])
            if due_s > until_s:
                break
            self.now_s = max(self.now_s, due_s)
            self.apply(TimerFired(self.now_s, timer))
        if until_s < math.inf:
            self.now_s = max(self.now_s, until_s)

    def page_at(self, index: int) -> str:
        live = self.live_pages()
        return live[index % len(live)]

    def program_value(self) -> dict[str, int]:
        return {"program": next(self.value_serial)}

    # --- the program ---

    @rule(explicit=st.booleans())
    def program_starts(self, explicit):
        self.request(StartRequested, explicit)

    @rule(address=st.sampled_from(["/a", "/b"]))
    def program_sends(self, address):
        self.request(SendRequested, address, self.program_value())

    @rule(addresses=st.lists(st.sampled_from(["/a", "/b", "#x"]), max_size=4))
    def program_sends_many(self, addresses):
        self.request(SendManyRequested, [(a, self.program_value(), 30) for a in addresses])

    @rule(address=st.sampled_from(["/a", "/b"]))
    def program_reads(self, address):
        self.request(ReadRequested, address)

    @rule()
    def program_syncs(self):
        self.request(SyncRequested)

    @rule(address=st.sampled_from(["/a", "/b", "#x"]))
    def program_subscribes(self, address):
        self.apply(ProgramSubscribed(self.now_s, address))
        if not address.startswith("#"):
            self.subscribed.add(address)

    @rule(address=st.sampled_from(["/a", "/b"]))
    def program_unsubscribes(self, address):
        self.apply(ProgramUnsubscribed(self.now_s, address))
        self.subscribed.discard(address)

    @rule()
    def worker_restarts(self):
        self.apply(WorkerRestarted(self.now_s))
        self.subscribed.clear()

    # --- the pages ---

    def open_page(self) -> str:
        comm_id = f"c{next(self.comm_serial)}"
        actions = self.apply(opened(self.now_s, comm_id), joining=comm_id)
        # Paced, the ack may wait for the message budget; it is still the comm's first
        # message (observe checks that).
        assert self.paced or actions.count(ack(comm_id)) == 1
        assert self.core.state is State.OPEN
        return comm_id

    @precondition(lambda self: len(self.connected) < 3)
    @rule()
    def page_opens(self):  # a first page, or another tab, window or collaborator
        self.open_page()

    @precondition(lambda self: self.live_pages())
    @rule(index=st.integers(0, 2))
    def page_reloads(self, index):
        # The old page is gone without a comm_close (the kernel finds out by its
        # silence); the reloaded page's client opens a new comm.
        self.zombies.add(self.page_at(index))
        self.open_page()

    @rule(kernel_id=st.sampled_from(["another-kernel", None]))
    def page_of_another_kernel_opens(self, kernel_id):
        before = snapshot(self.core)
        actions = self.apply(
            PageCommOpened(self.now_s, "stranger", COMM_TARGET_NAME, {"kernel_id": kernel_id})
        )
        assert [type(a) for a in actions] == [Log]
        assert snapshot(self.core) == before

    @precondition(lambda self: self.live_pages())
    @rule(
        index=st.integers(0, 2),
        values=st.lists(
            st.tuples(st.sampled_from(["/a", "/b", "/c", "#x"]), json_values),
            min_size=1,
            max_size=4,
        ),
    )
    def page_sends_values(self, index, values):
        comm_id = self.page_at(index)
        if len(values) == 1:
            data = {"address": values[0][0], "value": values[0][1]}
        else:
            data = {"batch": [{"address": a, "value": v} for a, v in values]}
        actions = self.apply(PageCommMsg(self.now_s, comm_id, data))
        delivered = [(a.address, a.value) for a in actions if isinstance(a, DeliverToProgram)]
        expected = [(a, v) for a, v in values if a in self.subscribed]
        if not {a for a, _ in values} & self.pages[comm_id].asked:
            assert delivered == expected
        else:
            # A page's answer to a read that another page answered first is dropped, and
            # the page cannot tell its answers from its values: a subsequence.
            rest = iter(expected)
            assert all(item in rest for item in delivered), (delivered, expected)

    @precondition(lambda self: any(self.pages[c].reads_seen for c in self.live_pages()))
    @rule(index=st.integers(0, 2), answer=st.booleans(), value=json_values)
    def page_answers_a_read(self, index, answer, value):
        asked = [c for c in self.live_pages() if self.pages[c].reads_seen]
        comm_id = asked[index % len(asked)]
        address = self.pages[comm_id].reads_seen.pop(0)
        kind = {"value": value} if answer else {"read_error": "unknown"}
        actions = self.apply(PageCommMsg(self.now_s, comm_id, {"address": address, **kind}))
        for reply in actions:
            request = self.requests.get(getattr(reply, "request_id", ""))
            if isinstance(reply, ReplyToProgram) and isinstance(request, ReadRequested):
                # The first value answers; an error only once no page asked can answer.
                assert reply.ok == answer
                if reply.ok:
                    assert reply.value == value

    @precondition(lambda self: self.live_pages())
    @rule(index=st.integers(0, 2), value=json_values)
    def page_pings(self, index, value):
        comm_id = self.page_at(index)
        actions = self.apply(
            PageCommMsg(self.now_s, comm_id, {"address": PING_ADDRESS, "value": value})
        )
        pongs = [a.data for a in actions if isinstance(a, SendCommMsg) and a.comm_id == comm_id]
        # Paced, the pong may wait for the message budget.
        assert self.paced or {"address": PONG_ADDRESS, "value": value} in pongs

    @precondition(lambda self: any(self.pages[c].seq > 0 for c in self.live_pages()))
    @rule(index=st.integers(0, 2), behind=st.integers(0, 2))
    def page_acknowledges(self, index, behind):
        heard = [c for c in self.live_pages() if self.pages[c].seq > 0]
        comm_id = heard[index % len(heard)]
        seq = max(0, self.pages[comm_id].seq - behind)
        actions = self.apply(received(self.now_s, comm_id, seq))
        confirmed = [a for a in actions if isinstance(a, ReplyToProgram)]
        assert all(a.ok for a in confirmed), actions

    @precondition(lambda self: self.live_pages())
    @rule(index=st.integers(0, 2))
    def page_pongs(self, index):
        comm_id = self.page_at(index)
        self.apply(PageCommMsg(self.now_s, comm_id, {"address": PONG_ADDRESS, "value": 1}))
        assert self.core.page_states[comm_id] is PageState.OPEN

    @precondition(lambda self: self.live_pages())
    @rule(index=st.integers(0, 2))
    def page_closes(self, index):
        comm_id = self.page_at(index)
        actions = self.apply(PageCommClosed(self.now_s, comm_id), leaving=comm_id)
        assert SendCommClose(comm_id) not in actions  # the page closed it itself

    @precondition(lambda self: self.dead_comms)
    @rule(data=page_data)
    def dead_page_talks(self, data):
        comm_id = sorted(self.dead_comms)[0]
        before = snapshot(self.core)
        actions = self.apply(PageCommMsg(self.now_s, comm_id, data))
        assert [type(a) for a in actions] == [Log]
        assert snapshot(self.core) == before

    # --- time ---

    @rule(delay_s=st.sampled_from([0.1, 0.6, 1.1, 3.5]))
    def time_passes(self, delay_s):
        self.fire_due_timers(self.now_s + delay_s)

    @rule()
    def pages_go_silent_until_every_request_is_answered(self):
        self.fire_due_timers(math.inf)
        assert not self.deadlines
        assert self.core.pending_request_ids == frozenset()
        assert all(self.replies[request_id] == 1 for request_id in self.requests)

    # --- invariants ---

    @invariant()
    def model_agrees_with_core(self):
        assert self.core.comm_ids == tuple(self.connected)
        assert self.core.armed_timers == set(self.deadlines)
        assert self.core.subscriptions == self.subscribed

    @invariant()
    def state_owns_its_comms_and_timers(self):
        check_state_invariants(self.core)

    @invariant()
    def program_values_reach_each_page_in_order(self):
        for page in self.pages.values():
            values = page.program_values
            assert all(earlier < later for earlier, later in itertools.pairwise(values))

    @invariant()
    def every_value_is_delivered_pending_or_reported(self):
        # Nothing lost without a word: each value reached each page it was meant for
        # (or that page went away), or its request is still pending, or the program was
        # told how many of its values were not delivered.
        for request_id, request in self.requests.items():
            values = values_of(request)
            if not values or request_id in self.core.pending_request_ids:
                continue
            if isinstance(request, SendManyRequested) and any(
                    a.startswith("#") for a, _, _ in request.items):
                continue  # refused as a whole, said so in its reply
            unsent = [v for v in values if serial_of(v) not in self.targets]
            assert all(not self.owners[serial_of(v)] for v in values if v not in unsent), request
            assert self.undelivered.get(request_id, 0) == len(unsent), request

    @invariant()
    def every_request_is_pending_or_answered_once(self):
        for request_id in self.requests:
            pending = request_id in self.core.pending_request_ids
            assert self.replies[request_id] + pending == 1, request_id

    def teardown(self):
        self.pages_go_silent_until_every_request_is_answered()


CommLifecycle.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestCommLifecycle = CommLifecycle.TestCase


class PacedCommLifecycle(CommLifecycle):
    """The same model with an outbox that lets out two messages of at most two items a
    second, shared by every page: values are still queued in the kernel when pages come
    and go, time passes between a value's queueing and its sending, the pages share the
    budget, and the pacing timer is in play."""

    paced = True


PacedCommLifecycle.TestCase.settings = settings(max_examples=200, stateful_step_count=40,
                                                deadline=None)
TestPacedCommLifecycle = PacedCommLifecycle.TestCase


# The pure modules of the address package may import each other, and the constants;
# each one is tested here to import no I/O itself. (page_script is not pure: it reads
# the page client's JS file.) wrapperkernel.buffers is pure too (binary values).
PURE_MODULES = ["events", "payloads", "core", "outbox"]
PURE_NEIGHBOURS = {"wrapperkernel.address.defaults", "wrapperkernel.buffers",
                   *(f"wrapperkernel.address.{module}" for module in PURE_MODULES)}


@pytest.mark.parametrize("module", PURE_MODULES)
def test_core_modules_import_no_io(module):
    path = pathlib.Path(wrapperkernel.address.__file__).with_name(f"{module}.py")
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module not in PURE_NEIGHBOURS:
            imported.add((node.module or ".").split(".")[0])
    forbidden = {"asyncio", "zmq", "threading", "logging", "time", "socket", "wrapperkernel", "."}
    assert imported and not imported & forbidden


# --- the page's window and a slow page --------------------------------------------------


def test_at_most_max_unacked_msgs_wait_at_the_page_and_an_ack_lets_more_out():
    core = AddressCore(KERNEL_ID, lambda: "d", outbox=Outbox(max_items_per_msg=1))
    core.handle(opened(0.0, "c1"))  # the ack is message 1
    items = [("/a", n, 24) for n in range(MAX_UNACKED_MSGS + 10)]
    sent = [a for a in core.handle(SendManyRequested(0.1, "r1", items))
            if isinstance(a, SendCommMsg)]
    assert [a.seq for a in sent] == list(range(2, MAX_UNACKED_MSGS + 1))
    more = [a for a in core.handle(received(0.2, "c1", 5)) if isinstance(a, SendCommMsg)]
    # Five acknowledged: five more go (values 63..67, messages 65..69).
    assert [a.data["value"] for a in more] == list(range(MAX_UNACKED_MSGS - 1,
                                                         MAX_UNACKED_MSGS + 4))
    rest = core.handle(received(0.3, "c1", MAX_UNACKED_MSGS + 4))
    values = [a.data["value"] for a in rest if isinstance(a, SendCommMsg)]
    assert values == list(range(MAX_UNACKED_MSGS + 4, MAX_UNACKED_MSGS + 10))
    assert ok("r1") not in rest  # its last value is not acknowledged yet
    assert ok("r1") in core.handle(received(0.4, "c1", MAX_UNACKED_MSGS + 11))


def test_a_slow_page_whose_acks_advance_answers_the_ping_without_its_pong():
    """A ping waits behind the values already sent to the page: a slow page answers it
    late, but its advancing #ack shows it is alive and reading, so it is not stale."""
    core = open_core()
    core.handle(SendRequested(0.1, "r1", "/a", 1))  # message 2
    actions = core.handle(TimerFired(1.1, SILENCE_TIMER))  # no #ack for 1 s: ping
    assert core.page_states == {"c1": PageState.PINGING}
    assert StartTimer(HEARTBEAT_TIMER, 0.5) in actions
    actions = core.handle(received(1.3, "c1", 2))
    assert core.page_states == {"c1": PageState.OPEN}
    assert ok("r1") in actions and CancelTimer(HEARTBEAT_TIMER) in actions
    # An #ack that does not advance proves nothing: the ping still waits for its answer.
    core.handle(SendRequested(1.4, "r2", "/a", 2))
    core.handle(TimerFired(2.4, SILENCE_TIMER))
    assert core.page_states == {"c1": PageState.PINGING}
    core.handle(received(2.5, "c1", 2))
    assert core.page_states == {"c1": PageState.PINGING}
    stale = core.handle(TimerFired(2.9, HEARTBEAT_TIMER))
    # Stale: its comm is closed. The value in flight was handed to the page while it
    # lived: done.
    assert core.state is State.CLOSED and ok("r2") in stale and SendCommClose("c1") in stale


def test_a_silent_page_holding_the_window_with_a_large_send_is_pinged():
    """No message in flight carries a send's last value (one large send fills the
    window), yet the program waits on the page: its silence is noticed all the same."""
    core = AddressCore(KERNEL_ID, lambda: "d", outbox=Outbox(max_items_per_msg=1))
    core.handle(opened(0.0, "c1"))
    items = [("/a", n, 24) for n in range(MAX_UNACKED_MSGS * 2)]
    assert WATCH_SILENCE in core.handle(SendManyRequested(0.1, "r1", items))
    actions = core.handle(TimerFired(1.1, SILENCE_TIMER))
    assert core.page_states == {"c1": PageState.PINGING}
    assert StartTimer(HEARTBEAT_TIMER, 0.5) in actions


def test_when_no_page_comes_back_the_values_fail_before_the_requests_queued_after_them():
    """Oldest first: values still in the outbox, then the queue (a sync among it), so a
    program's sync finds every lost value counted when its own error arrives."""
    core = AddressCore(KERNEL_ID, lambda: "d", outbox=Outbox(max_msgs_per_s=1.0, burst_s=1.0))
    core.handle(opened(0.0, "c1"))  # the ack takes the one message of the burst
    core.handle(SendRequested(0.1, "r1", "/a", 1))  # waits for the budget
    core.handle(PageCommClosed(0.2, "c1"))
    assert core.state is State.CONNECTING and core.queued_values
    core.handle(SendRequested(0.3, "r2", "/a", 2))
    core.handle(SyncRequested(0.4, "s1"))
    replies = [a for a in core.handle(TimerFired(3.2, CONNECT_TIMER))
               if isinstance(a, ReplyToProgram)]
    assert [(r.request_id, r.ok, r.value) for r in replies] == [
        ("r1", False, 1), ("r2", False, 1), ("s1", False, None)]


# --- several pages at once (issue 10) ----------------------------------------------------


def test_page_table_covers_every_state_and_every_page_can_go():
    assert set(PAGE_TRANSITIONS) == set(PageState)
    assert PAGE_TRANSITIONS[PageState.GONE] == {}  # terminal
    assert PAGE_TRANSITIONS[PageState.NEW] == {PageTrigger.OPENED: PageState.OPEN}
    for state in (PageState.OPEN, PageState.PINGING):
        assert PAGE_TRANSITIONS[state][PageTrigger.CLOSED] is PageState.GONE
    # Only a page that was pinged can be found stale.
    assert [s for s, row in PAGE_TRANSITIONS.items()
            if PageTrigger.HEARTBEAT_TIMED_OUT in row] == [PageState.PINGING]
    assert {t for row in PAGE_TRANSITIONS.values() for t in row} == set(PageTrigger)


def two_page_core(*subscriptions: str, outbox: Outbox | None = None) -> AddressCore:
    core = AddressCore(KERNEL_ID, lambda: "d", outbox=outbox)
    core.handle(opened(0.0, "c1"))
    core.handle(opened(0.0, "c2"))
    for address in subscriptions:
        core.handle(ProgramSubscribed(0.0, address))
    return core


def sent_to(actions: list[Action], comm_id: str) -> list[object]:
    """The items of every message the actions put on ``comm_id``."""
    items: list[object] = []
    for action in actions:
        if isinstance(action, SendCommMsg) and action.comm_id == comm_id:
            items.extend(action.data.get("batch", [action.data]))
    return items


def test_values_sent_while_no_page_is_connected_go_to_the_first_page_and_not_to_later_ones():
    core = make_core()
    core.handle(SendRequested(0.0, "r1", "/a", 1))
    first = core.handle(opened(0.1, "c1"))
    assert sent_to(first, "c1") == [{"address": OPEN_ACK_ADDRESS, "value": True},
                                    {"address": "/a", "value": 1}]
    second = core.handle(opened(0.2, "c2"))
    assert sent_to(second, "c2") == [{"address": OPEN_ACK_ADDRESS, "value": True}]
    # The send went to c1 alone: c1's #ack completes it.
    assert ok("r1") in core.handle(received(0.3, "c1", 2))
    later = core.handle(SendRequested(0.4, "r2", "/a", 2))
    assert sent_to(later, "c1") == sent_to(later, "c2") == [{"address": "/a", "value": 2}]


def test_a_read_error_from_one_page_waits_for_the_other_and_its_value_answers():
    core = two_page_core()
    actions = core.handle(ReadRequested(0.1, "r1", "/a"))
    assert sent_to(actions, "c1") == sent_to(actions, "c2") == [
        {"address": "/a", "read_request": True}]
    assert core.handle(PageCommMsg(0.2, "c1", {"address": "/a", "read_error": "none"})) == []
    assert core.request_states == {"r1": RequestState.ASKED}
    assert core.handle(PageCommMsg(0.3, "c2", {"address": "/a", "value": 5})) == [
        CancelTimer("read:r1"), ok("r1", 5)]


def test_a_read_fails_once_every_page_asked_has_answered_with_an_error():
    core = two_page_core()
    core.handle(ReadRequested(0.1, "r1", "/a"))
    core.handle(PageCommMsg(0.2, "c2", {"address": "/a", "read_error": "none here"}))
    assert core.handle(PageCommMsg(0.3, "c1", {"address": "/a", "read_error": "nor here"})) == [
        CancelTimer("read:r1"),
        ReplyToProgram("r1", False, error="The page could not read '/a': nor here")]


def test_the_first_value_answers_a_read_and_the_other_pages_late_answers_are_dropped():
    core = two_page_core("/a")
    core.handle(ReadRequested(0.1, "r1", "/a"))
    # c1 answers first: the program gets its value, and c2 is shown it.
    assert core.handle(PageCommMsg(0.2, "c1", {"address": "/a", "value": 1})) == [
        CancelTimer("read:r1"), ok("r1", 1), DeliverToProgram("/a", 1),
        SendCommMsg("c2", {"address": "/a", "value": 1}, 3)]
    # c2's answer to the same read changes neither the program nor c1.
    late = core.handle(PageCommMsg(0.3, "c2", {"address": "/a", "value": 2}))
    assert without_logs(late) == []
    assert [a.level for a in late] == ["debug"]
    # A value c2 sends after that is a value like any other.
    assert core.handle(PageCommMsg(0.4, "c2", {"address": "/a", "value": 3})) == [
        DeliverToProgram("/a", 3), SendCommMsg("c1", {"address": "/a", "value": 3}, 3)]


def test_a_page_that_joins_is_asked_the_reads_still_waiting():
    core = open_core()
    core.handle(ReadRequested(0.1, "r1", "/a"))
    joined = core.handle(opened(0.3, "c2"))
    assert sent_to(joined, "c2")[1:] == [{"address": "/a", "read_request": True}]
    # c1 has no value; c2, which joined while the read waited, answers it.
    assert core.handle(PageCommMsg(0.4, "c1", {"address": "/a", "read_error": "none"})) == []
    assert core.handle(PageCommMsg(0.5, "c2", {"address": "/a", "value": "here"}))[-1] == \
        ok("r1", "here")


def test_a_stale_page_is_closed_and_dropped_while_the_other_keeps_working():
    core = two_page_core("/a")
    core.handle(PageCommMsg(0.9, "c2", {"address": ACK_ADDRESS, "value": 1}))  # c2 is heard
    # At 1.5 s c1 has been silent for more than 1 s: it is pinged; c2 gets the value at
    # once, c1's lane holds it until c1 answers.
    actions = core.handle(SendRequested(1.5, "r1", "/a", 1))
    assert core.page_states == {"c1": PageState.PINGING, "c2": PageState.OPEN}
    assert sent_to(actions, "c1") == [{"address": PING_ADDRESS, "value": 1}]
    assert sent_to(actions, "c2") == [{"address": "/a", "value": 1}]
    assert core.handle(received(1.6, "c2", 2)) == [CancelTimer(silence_timer("c2"))]
    stale = core.handle(TimerFired(2.0, HEARTBEAT_TIMER))
    # c1's comm is closed; the send is done (c2 has it, c1 went away); no reinstall.
    assert without_logs(stale) == [SendCommClose("c1"), ok("r1")]
    assert core.comm_ids == ("c2",) and core.state is State.OPEN
    assert core.handle(PageCommMsg(2.1, "c2", {"address": "/a", "value": 7})) == [
        DeliverToProgram("/a", 7)]
    assert [type(a) for a in core.handle(PageCommMsg(2.2, "c1", {"address": "/a",
                                                                   "value": 8}))] == [Log]


def test_requests_wait_only_while_every_page_is_being_pinged():
    core = two_page_core()
    actions = core.handle(SendRequested(5.0, "r1", "/a", 1))  # both silent: both pinged
    assert core.page_states == {"c1": PageState.PINGING, "c2": PageState.PINGING}
    assert core.request_states == {"r1": RequestState.QUEUED}
    assert [item for c in ("c1", "c2") for item in sent_to(actions, c)] == [
        {"address": PING_ADDRESS, "value": 1}] * 2
    # c2 answers: the send goes to both lanes, and out on c2's only.
    pong = core.handle(PageCommMsg(5.1, "c2", {"address": PONG_ADDRESS, "value": 1}))
    assert sent_to(pong, "c2") == [{"address": "/a", "value": 1}] and not sent_to(pong, "c1")
    assert core.request_states == {"r1": RequestState.SENDING}
    # c1 answers late: its lane lets the value go.
    pong = core.handle(PageCommMsg(5.2, "c1", {"address": PONG_ADDRESS, "value": 1}))
    assert sent_to(pong, "c1") == [{"address": "/a", "value": 1}]


def test_when_the_last_page_goes_its_queued_values_wait_for_the_next_page():
    paced = Outbox(max_msgs_per_s=1.0, burst_s=2.0)  # two messages: the two acks
    core = two_page_core(outbox=paced)
    core.handle(SendRequested(0.1, "r1", "/a", 1))  # waits in both lanes for the budget
    core.handle(PageCommClosed(0.2, "c1"))
    assert core.request_states == {"r1": RequestState.SENDING}  # c2 still owes it
    closing = core.handle(PageCommClosed(0.3, "c2"))
    assert PublishInstallScript("d") in closing and core.queued_values
    joined = core.handle(opened(1.5, "c3"))
    assert sent_to(joined, "c3") == [{"address": OPEN_ACK_ADDRESS, "value": True}]
    later = core.handle(TimerFired(2.5, FLUSH_TIMER))
    assert sent_to(later, "c3") == [{"address": "/a", "value": 1}]
    assert ok("r1") in core.handle(received(2.6, "c3", 2))


def test_pages_share_the_pacing_budget_in_turn():
    paced = Outbox(max_items_per_msg=1, max_msgs_per_s=1.0, burst_s=2.0)
    core = two_page_core(outbox=paced)  # the acks took the burst
    core.handle(SendManyRequested(0.1, "r1", [("/a", n, 24) for n in range(3)]))
    order = []
    now_s = 0.1
    for _ in range(6):
        now_s += 1.0
        order += [(a.comm_id, a.data["value"]) for a in core.handle(TimerFired(now_s, FLUSH_TIMER))
                  if isinstance(a, SendCommMsg)]
        if FLUSH_TIMER not in core.armed_timers:
            break
    # One message a second in all, the two pages in turn.
    assert order == [("c1", 0), ("c2", 0), ("c1", 1), ("c2", 1), ("c1", 2), ("c2", 2)]


def test_a_second_comm_open_on_an_open_comm_is_ignored():
    core = two_page_core()
    before = snapshot(core)
    actions = core.handle(opened(0.5, "c1"))
    assert [(type(a), a.level) for a in actions] == [(Log, "warning")]
    assert snapshot(core) == before


def test_a_page_that_joins_gets_the_values_no_page_has_been_sent_yet():
    # A reload whose old comm died without a word: the old page holds values it will never
    # be sent (its lane waits for the budget); the reloaded page joins and gets them.
    paced = Outbox(max_msgs_per_s=1.0, burst_s=1.0)  # one message: the ack
    core = AddressCore(KERNEL_ID, lambda: "d", outbox=paced)
    core.handle(opened(0.0, "c1"))
    core.handle(SendRequested(0.1, "r1", "/a", 1))
    core.handle(SendRequested(0.2, "r2", "/a", 2))
    core.handle(opened(0.5, "c2"))
    sent = core.handle(TimerFired(1.0, FLUSH_TIMER))  # one message: c1's turn
    assert sent_to(sent, "c1") == [{"address": "/a", "value": 1}, {"address": "/a", "value": 2}]
    # Once c1 was sent them, they left the kernel's queue: a page joining now gets none.
    core.handle(opened(1.1, "c3"))
    later = []
    for now_s in (2.0, 3.0, 4.0, 5.0):  # one message a second
        later += core.handle(TimerFired(now_s, FLUSH_TIMER))
    assert FLUSH_TIMER not in core.armed_timers
    assert sent_to(later, "c2") == [{"address": OPEN_ACK_ADDRESS, "value": True},
                                    {"address": "/a", "value": 1}, {"address": "/a", "value": 2}]
    assert sent_to(later, "c3") == [{"address": OPEN_ACK_ADDRESS, "value": True}]
    # c2's #ack leaves the sends to c1's.
    assert without_logs(core.handle(received(5.1, "c2", 2))) == [
        CancelTimer(silence_timer("c2"))]
    assert without_logs(core.handle(received(5.2, "c1", 2))) == [
        ok("r1"), ok("r2"), CancelTimer(SILENCE_TIMER)]
