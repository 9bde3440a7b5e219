"""The worker's comms runtime and the ``wrapperkernel.comms`` API, against a fake kernel.

The fake kernel captures every frame the runtime sends and answers each
the request frames (``AddressStartFrame`` ... ``AddressSendManyFrame``) (a batch of ``send`` calls) from its own
thread, as the worker's reader thread would, by calling ``runtime.on_frame``. What it
answers is set per test, per op (``send_many`` for batches).
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import IPython
import pytest
import strategies
from fake_clock import FakeClock, FlusherStarts
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapperkernel import comms, comms_base
from wrapperkernel.address.defaults import READ_TIMEOUT_S
from wrapperkernel.comms import CommsError, Listener
from wrapperkernel.worker.address_runtime import AddressRuntime
from wrapperkernel.worker.send_batcher import BATCH_ITEMS, BURST_GAP_S
from wrapperkernel.workerlink import frames
from wrapperkernel.workerlink.framing import FrameDecoder, encode

NO_PAGE = "No page connected to the wrapperkernel comm channel within 3 s. Open the notebook."
WAIT_S = 5.0  # bound on every wait in these tests, so a bug fails instead of hanging

Request = frames.AddressRequestFrame
REQUEST_FRAMES = (frames.AddressStartFrame, frames.AddressSendFrame, frames.AddressReadFrame,
                  frames.AddressSyncFrame, frames.AddressSendManyFrame)
OPS = {frames.AddressStartFrame: "start", frames.AddressSendFrame: "send",
       frames.AddressReadFrame: "read", frames.AddressSyncFrame: "sync",
       frames.AddressSendManyFrame: "send_many"}
Answer = Callable[[Request], "frames.AddressReplyFrame | None"]


def ok(request: Request, value: Any = None) -> frames.AddressReplyFrame:
    return frames.AddressReplyFrame(request_id=request.request_id, ok=True, value=value)


def error(request: Request, text: str) -> frames.AddressReplyFrame:
    return frames.AddressReplyFrame(request_id=request.request_id, ok=False, error=text)


def op_of(request: Request) -> str:
    return OPS[type(request)]


def fields_of(request: Request) -> tuple[str, str | None, Any]:
    """(op, address, value) of a single request: a start's value says whether it was an
    explicit retry (True) or implicit (None); a read's is its timeout."""
    if isinstance(request, frames.AddressStartFrame):
        return "start", None, True if request.retry else None
    if isinstance(request, frames.AddressReadFrame):
        return "read", request.address, request.timeout_s
    if isinstance(request, frames.AddressSendFrame):
        return "send", request.address, request.value
    return op_of(request), None, None


def over_the_wire(frame: frames.Frame) -> Any:
    """The frame as the other side decodes it from the byte stream."""
    kernel_to_worker = isinstance(frame, (frames.AddressValueFrame, frames.AddressReplyFrame))
    decoder: FrameDecoder[Any] = FrameDecoder(
        frames.KERNEL_TO_WORKER if kernel_to_worker else frames.WORKER_TO_KERNEL)
    (decoded,) = decoder.feed(encode(frame))
    return decoded


class FakeKernel:
    """Answers the runtime's requests from another thread; records every frame it got."""

    def __init__(self, reply_wait_s: float = WAIT_S, **runtime_options: Any) -> None:
        self.frames: list[frames.Frame] = []
        self.logs: list[str] = []
        self.answers: dict[str, Answer] = {
            op: ok for op in ("start", "send", "send_many", "read", "sync")
        }
        self.answered = threading.Semaphore(0)  # released once per request handled
        self._inbox: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.runtime = AddressRuntime(self.send, log=self.logs.append, reply_wait_s=reply_wait_s,
                                      **runtime_options)
        self._thread = threading.Thread(target=self._serve, name="fake-kernel", daemon=True)
        self._thread.start()

    def send(self, frame: frames.Frame) -> None:
        wire = over_the_wire(frame)
        assert wire == frame
        with self._lock:
            self.frames.append(frame)
        if isinstance(frame, REQUEST_FRAMES):
            self._inbox.put(frame)

    def _serve(self) -> None:
        while (request := self._inbox.get()) is not None:
            reply = self.answers[op_of(request)](request)
            if reply is not None:
                self.runtime.on_frame(over_the_wire(reply))
            self.answered.release()

    def wait_answered(self, count: int) -> None:
        for _ in range(count):
            assert self.answered.acquire(timeout=WAIT_S), "the fake kernel did not answer"

    def requests(self, op: str | None = None) -> list[Request]:
        with self._lock:
            return [
                f
                for f in self.frames
                if isinstance(f, REQUEST_FRAMES)
                and (op is None or op_of(f) == op)
            ]

    def sent(self) -> list[tuple[str, Any]]:
        """Every (address, value) the program sent, in order, over all batches."""
        return [(a, v) for batch in self.requests("send_many") for a, v, _size in batch.items]

    def subscriptions(self) -> list[tuple[str, bool]]:
        with self._lock:
            return [
                (f.address, f.subscribed)
                for f in self.frames
                if isinstance(f, frames.AddressSubscriptionFrame)
            ]

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join(WAIT_S)


@pytest.fixture(autouse=True)
def no_installed_runtime() -> Iterator[None]:
    """A runtime installed by one test must not answer ``comms`` calls in the next."""
    comms_base.uninstall_backend()
    yield
    comms_base.uninstall_backend()


@pytest.fixture
def kernel() -> Iterator[FakeKernel]:
    fake = FakeKernel()
    yield fake
    fake.stop()


@pytest.fixture
def started(kernel: FakeKernel) -> FakeKernel:
    kernel.runtime.start()
    kernel.wait_answered(1)
    kernel.frames.clear()
    return kernel


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def flushers() -> FlusherStarts:
    return FlusherStarts()


@pytest.fixture
def started_in_still_time(clock: FakeClock, flushers: FlusherStarts) -> Iterator[FakeKernel]:
    """A started runtime whose send batcher sees time only as the test moves it, and
    whose flusher thread never runs (see tests/test_send_batcher.py)."""
    fake = FakeKernel(clock=clock, start_flusher=flushers)
    fake.runtime.start()
    fake.wait_answered(1)
    fake.frames.clear()
    yield fake
    fake.stop()


def value_frame(address: str, value: Any) -> frames.AddressValueFrame:
    return over_the_wire(frames.AddressValueFrame(address=address, value=value))


def wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# ---------------------------------------------------------------------- start


def test_start_ok_sends_one_start_request_and_marks_connected(kernel: FakeKernel) -> None:
    assert not kernel.runtime.connected
    kernel.runtime.start()
    assert [fields_of(r) for r in kernel.requests()] == [("start", None, True)]
    assert kernel.runtime.connected
    kernel.runtime.send("/a", 1)
    kernel.runtime.flush()
    assert [op_of(r) for r in kernel.requests()] == ["start", "send_many"]  # no second start


def test_start_error_carries_the_kernels_message(kernel: FakeKernel) -> None:
    kernel.answers["start"] = lambda r: error(r, NO_PAGE)
    with pytest.raises(CommsError) as raised:
        kernel.runtime.start()
    assert str(raised.value) == NO_PAGE
    assert not kernel.runtime.connected


def test_start_without_an_answer_ends_in_a_bounded_error(kernel: FakeKernel) -> None:
    kernel.answers["start"] = lambda r: None
    began = time.monotonic()
    with pytest.raises(
        CommsError, match=r"did not answer the program's 'start' request within 0.2 s"
    ):
        kernel.runtime.start(timeout_s=0.2)
    assert time.monotonic() - began < WAIT_S
    # The default bound applies to the implicit start of send too.
    short = FakeKernel(reply_wait_s=0.1)
    short.answers["start"] = lambda r: None
    try:
        with pytest.raises(CommsError, match="within 0.1 s"):
            short.runtime.send("/a", 1)
        short.runtime.flush()
        assert short.sent() == []
    finally:
        short.stop()


def test_a_late_reply_to_an_abandoned_request_is_logged_not_misread(kernel: FakeKernel) -> None:
    held: list[Request] = []
    kernel.answers["start"] = lambda r: held.append(r)  # type: ignore[func-returns-value]
    with pytest.raises(CommsError):
        kernel.runtime.start(timeout_s=0.05)
    kernel.wait_answered(1)
    kernel.runtime.on_frame(error(held[0], "late"))
    assert any("nobody waits for" in line for line in kernel.logs)
    kernel.answers["start"] = ok
    kernel.runtime.start()  # the late error was not recorded as a failed send
    assert kernel.runtime.connected


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, True, "1"])
def test_start_rejects_a_bad_timeout(kernel: FakeKernel, bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        kernel.runtime.start(timeout_s=bad)
    assert kernel.requests() == []


# ---------------------------------------------------------------------- send


def test_sends_are_fire_and_forget_and_batched_once_started(
    started_in_still_time: FakeKernel, flushers: FlusherStarts
) -> None:
    started = started_in_still_time
    held: queue.SimpleQueue[Request] = queue.SimpleQueue()
    started.answers["send_many"] = lambda r: held.put(r)  # type: ignore[func-returns-value]
    for i in range(2000):
        started.runtime.send("/points", i)  # would wait for each reply and time out if not
    started.runtime.flush()
    assert started.sent() == [("/points", i) for i in range(2000)]
    batches = started.requests("send_many")
    # A loop of sends goes out in batches, not as a frame and a reply per value: the
    # first at once (nothing was sent before it), then full batches, the rest by flush.
    assert [len(r.items) for r in batches] == [1, BATCH_ITEMS, 2000 - 1 - BATCH_ITEMS]
    assert len(flushers.loops) == 1
    assert len({r.request_id for r in batches}) == len(batches)
    started.wait_answered(len(batches))
    for _ in batches:
        started.runtime.on_frame(ok(held.get_nowait()))
    started.runtime.sync()  # the ok replies were consumed, nothing is raised
    assert started.logs == []


def test_a_send_after_a_pause_goes_out_without_waiting_for_a_flush(
    started_in_still_time: FakeKernel, clock: FakeClock, flushers: FlusherStarts
) -> None:
    started = started_in_still_time
    started.runtime.send("/a", 1)
    clock.advance(0.01)
    started.runtime.send("/a", 2)
    # Sent by the calling thread itself: both batches exist as soon as send returned.
    assert [[item[:2] for item in batch.items] for batch in started.requests("send_many")] == [
        [("/a", 1)], [("/a", 2)]]
    assert flushers.loops == []  # no flusher was needed
    clock.advance(BURST_GAP_S / 2)
    started.runtime.send("/a", 3)  # within the gap: a burst, left to the flusher
    assert len(started.requests("send_many")) == 2
    assert len(flushers.loops) == 1


def test_a_burst_is_handed_over_by_the_flusher_without_an_explicit_flush(
    started: FakeKernel,
) -> None:
    for i in range(50):
        started.runtime.send("/a", i)
    wait_until(lambda: len(started.sent()) == 50)
    assert started.sent() == [("/a", i) for i in range(50)]


def test_values_are_handed_over_before_a_later_request(started: FakeKernel) -> None:
    for i in range(10):
        started.runtime.send("/a", i)
    started.runtime.sync()
    ops = [op_of(r) for r in started.requests()]
    assert ops[-1] == "sync" and set(ops[:-1]) == {"send_many"}
    assert started.sent() == [("/a", i) for i in range(10)]


def test_a_failed_send_is_raised_by_the_next_call_then_start_again(started: FakeKernel) -> None:
    started.answers["send_many"] = lambda r: error(r, "the page connection failed")
    started.runtime.send("/a", 1)
    started.runtime.flush()
    started.wait_answered(1)
    assert not started.runtime.connected
    with pytest.raises(
        CommsError, match=r"1 value sent earlier \(the first to '/a'\) was not delivered: the page connection failed"
    ):
        started.runtime.send("/a", 2)
    started.runtime.flush()
    assert started.sent() == [("/a", 1)]  # the raising call sent nothing
    started.answers["send_many"] = ok
    started.runtime.send("/a", 3)
    started.runtime.flush()
    assert [op_of(r) for r in started.requests()] == ["send_many", "start", "send_many"]


def test_many_failed_sends_of_one_lost_connection_are_reported_once(started: FakeKernel) -> None:
    held: queue.SimpleQueue[Request] = queue.SimpleQueue()
    started.answers["send_many"] = lambda r: held.put(r)  # type: ignore[func-returns-value]
    for i in range(5):
        started.runtime.send("/a", i)
        started.runtime.flush()  # five batches, as five sends far apart would be
    started.wait_answered(5)
    started.runtime.on_frame(error(held.get_nowait(), NO_PAGE))
    with pytest.raises(CommsError, match="No page connected"):
        started.runtime.sync()
    for _ in range(4):
        started.runtime.on_frame(error(held.get_nowait(), NO_PAGE))
    started.answers["send_many"] = ok
    started.runtime.send("/a", 5)  # starts again, no second report of the same loss
    # One line for the four late failures of the same loss, not one per batch.
    assert sum("failed too" in line for line in started.logs) == 1


def test_send_error_is_raised_by_other_calls_too(started: FakeKernel) -> None:
    started.answers["send_many"] = lambda r: error(r, "gone")
    started.runtime.send("/a", 1)
    started.runtime.flush()
    started.wait_answered(1)
    with pytest.raises(CommsError, match="gone"):
        started.runtime.subscribe("/b", lambda a, v: None)
    assert started.subscriptions() == []


@pytest.mark.parametrize(
    ("address", "exception", "match"),
    [
        ("", ValueError, "non-empty"),
        ("#comm_open_ack", ValueError, "reserved"),
        (5, TypeError, "must be a str"),
        (None, TypeError, "must be a str"),
    ],
)
def test_send_rejects_bad_addresses_before_anything_is_sent(
    kernel: FakeKernel, address: Any, exception: type[Exception], match: str
) -> None:
    with pytest.raises(exception, match=match):
        kernel.runtime.send(address, 1)
    with pytest.raises(exception, match=match):
        kernel.runtime.subscribe(address, lambda a, v: None)
    with pytest.raises(exception, match=match):
        kernel.runtime.listen(address)
    with pytest.raises(exception, match=match):
        kernel.runtime.read_value(address)
    assert kernel.frames == []


@pytest.mark.parametrize(
    "value",
    # (bytes-like values are binary values now: tests/test_binary_values.py)
    [{1, 2}, object(), math.nan, math.inf, [math.inf], {"k": b"bytes", "x": object()},
     pytest.param(10**5000, id="int-of-5001-digits")],
)
def test_send_rejects_values_that_are_not_json(kernel: FakeKernel, value: Any) -> None:
    with pytest.raises(TypeError, match="'/a' is not JSON-serialisable"):
        kernel.runtime.send("/a", value)
    assert kernel.frames == []


# In Python "\ud83d\ude00" is two lone surrogates, not the emoji "😀" that JSON's escape
# pair stands for.
@pytest.mark.parametrize(
    "value", ["\ud800", ["ok", {"k": "x\udfffy"}], {"\ud83d": 1}, "\ud83d\ude00"]
)
def test_send_rejects_lone_surrogates_which_utf8_cannot_carry(
    started: FakeKernel, value: Any
) -> None:
    with pytest.raises(TypeError, match="'/a' holds a string with a lone surrogate"):
        started.runtime.send("/a", value)
    started.runtime.flush()
    assert started.sent() == []  # the batch frame stays valid JSON for the kernel


def test_scalars_are_sent_as_json_dumps_writes_them(started: FakeKernel) -> None:
    values = [0, -7, 2**70, 1.5, -0.0, 1e300, True, False, None, "x"]
    for value in values:
        started.runtime.send("/a", value)
    started.runtime.flush()
    assert [json.dumps(v) for _, v in started.sent()] == [json.dumps(v) for v in values]
    assert [type(v) for _, v in started.sent()] == [type(v) for v in values]


def test_surrogate_pairs_and_other_unicode_are_sent_unchanged(started: FakeKernel) -> None:
    values = ["😀", {"ключ": "値"}, "\u2028", "\U0001f600x"]
    for value in values:
        started.runtime.send("/a", value)
    started.runtime.send("/адрес", 1)
    started.runtime.flush()
    assert started.sent() == [("/a", value) for value in values] + [("/адрес", 1)]


def test_an_address_with_a_lone_surrogate_is_rejected(kernel: FakeKernel) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        kernel.runtime.send("/a\udc80", 1)
    assert kernel.frames == []


def test_circular_values_are_rejected(kernel: FakeKernel) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        kernel.runtime.send("/a", loop)


def test_subscribe_rejects_a_callback_that_is_not_callable(kernel: FakeKernel) -> None:
    with pytest.raises(TypeError, match="callable"):
        kernel.runtime.subscribe("/a", "print")  # type: ignore[arg-type]
    assert kernel.frames == []


# ---------------------------------------------------------------------- subscriptions


def test_subscription_frames_only_for_the_first_and_last_subscriber(started: FakeKernel) -> None:
    runtime = started.runtime
    first = runtime.subscribe("/a", lambda a, v: None)
    second = runtime.subscribe("/a", lambda a, v: None)
    listener = runtime.listen("/a")
    other = runtime.listen("/b")
    assert started.subscriptions() == [("/a", True), ("/b", True)]
    assert runtime.unsubscribe(first) is True
    assert runtime.unsubscribe(first) is False
    listener.close()
    listener.close()
    assert started.subscriptions() == [("/a", True), ("/b", True)]
    assert runtime.unsubscribe(second) is True
    with other:
        pass
    assert started.subscriptions() == [("/a", True), ("/b", True), ("/a", False), ("/b", False)]
    runtime.subscribe("/a", lambda a, v: None)
    assert started.subscriptions()[-1] == ("/a", True)
    assert runtime.unsubscribe(12345) is False


def test_subscribe_starts_the_channel_first(kernel: FakeKernel) -> None:
    kernel.runtime.subscribe("/a", lambda a, v: None)
    assert [type(f).__name__ for f in kernel.frames] == [
        "AddressStartFrame",
        "AddressSubscriptionFrame",
    ]
    assert op_of(kernel.requests()[0]) == "start"


def test_a_failed_start_registers_no_subscription(kernel: FakeKernel) -> None:
    kernel.answers["start"] = lambda r: error(r, NO_PAGE)
    with pytest.raises(CommsError, match="No page connected"):
        kernel.runtime.listen("/a")
    assert kernel.subscriptions() == []


def test_callbacks_run_in_order_on_one_thread_never_concurrently(started: FakeKernel) -> None:
    runtime = started.runtime
    calls: list[tuple[str, str, Any, int]] = []
    running = threading.Lock()
    overlaps: list[Any] = []
    done = threading.Event()

    def make(name: str) -> Callable[[str, Any], None]:
        def callback(address: str, value: Any) -> None:
            if not running.acquire(blocking=False):
                overlaps.append((name, value))
                return
            try:
                time.sleep(0)  # give another dispatcher, if there were one, a chance
                calls.append((name, address, value, threading.get_ident()))
                if value == ("end" if address == "/b" else None):
                    done.set()
            finally:
                running.release()

        return callback

    runtime.subscribe("/a", make("first"))
    runtime.subscribe("/a", make("second"))
    runtime.subscribe("/b", make("third"))
    sent: list[tuple[str, Any]] = [("/a" if i % 3 else "/b", i) for i in range(300)]
    sent.append(("/b", "end"))
    for address, value in sent:  # this thread plays the reader thread
        runtime.on_frame(value_frame(address, value))
    assert done.wait(WAIT_S)
    expected = []
    for address, value in sent:
        names = ["first", "second"] if address == "/a" else ["third"]
        expected += [(name, address, value) for name in names]
    assert [(n, a, v) for n, a, v, _ in calls] == expected
    assert overlaps == []
    threads = {ident for *_, ident in calls}
    assert len(threads) == 1
    assert threads != {threading.get_ident()}


def test_a_raising_callback_prints_its_traceback_and_delivery_goes_on(
    started: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    got: list[Any] = []
    done = threading.Event()

    def fragile(address: str, value: Any) -> None:
        got.append(value)
        if value == 2:
            raise ZeroDivisionError("boom in the callback")
        if value == 4:
            done.set()

    started.runtime.subscribe("/x", fragile)
    for value in range(5):
        started.runtime.on_frame(value_frame("/x", value))
    assert done.wait(WAIT_S)
    assert got == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "ZeroDivisionError: boom in the callback" in err
    assert "'/x'" in err and "fragile" in err
    assert "_dispatch_forever" not in err  # the traceback starts at the user's callback


def test_unsubscribed_callbacks_get_no_queued_values(started: FakeKernel) -> None:
    gate = threading.Event()
    got: list[Any] = []
    runtime = started.runtime

    def slow(address: str, value: Any) -> None:
        gate.wait(WAIT_S)
        got.append(("slow", value))

    def dropped(address: str, value: Any) -> None:
        got.append(("dropped", value))

    runtime.subscribe("/s", slow)
    dropped_id = runtime.subscribe("/d", dropped)
    runtime.on_frame(value_frame("/s", 1))
    runtime.on_frame(value_frame("/d", 2))  # queued behind the slow callback
    runtime.unsubscribe(dropped_id)
    gate.set()
    runtime.subscribe("/d", lambda a, v: got.append(("new", v)))
    runtime.on_frame(value_frame("/d", 3))
    wait_until(lambda: len(got) == 2)
    assert got == [("slow", 1), ("new", 3)]


def test_a_slow_callback_does_not_hold_up_listeners(started: FakeKernel) -> None:
    gate = threading.Event()
    started.runtime.subscribe("/a", lambda a, v: gate.wait(WAIT_S))
    with started.runtime.listen("/a") as listener:
        started.runtime.on_frame(value_frame("/a", "first"))
        started.runtime.on_frame(value_frame("/a", "second"))
        assert [listener.get(timeout=WAIT_S), listener.get(timeout=WAIT_S)] == ["first", "second"]
    gate.set()


# ---------------------------------------------------------------------- listen


def test_listener_yields_values_in_order_and_get_times_out(started: FakeKernel) -> None:
    listener = started.runtime.listen("/l")
    assert isinstance(listener, Listener)
    with pytest.raises(
        TimeoutError, match=r"No value for '/l' arrived from the page within 0.05 s"
    ):
        listener.get(timeout=0.05)
    for value in [0, False, "", None, {"k": []}]:
        started.runtime.on_frame(value_frame("/l", value))
    assert [listener.get(timeout=0) for _ in range(5)] == [0, False, "", None, {"k": []}]
    with pytest.raises(TimeoutError):
        listener.get(timeout=0)
    listener.close()
    assert listener.closed


def test_latest_only_keeps_the_newest_unread_value(started: FakeKernel) -> None:
    latest = started.runtime.listen("/slider", latest_only=True)
    every = started.runtime.listen("/slider")
    for value in range(10):
        started.runtime.on_frame(value_frame("/slider", value))
    assert latest.get(timeout=0) == 9
    with pytest.raises(TimeoutError):
        latest.get(timeout=0)
    started.runtime.on_frame(value_frame("/slider", None))
    assert latest.get(timeout=0) is None
    assert [every.get(timeout=0) for _ in range(11)] == [*range(10), None]


def test_close_ends_a_blocked_iteration_from_another_thread(started: FakeKernel) -> None:
    listener = started.runtime.listen("/it")
    seen: list[Any] = []
    finished = threading.Event()

    def consume() -> None:
        for value in listener:
            seen.append(value)
        finished.set()

    threading.Thread(target=consume, daemon=True).start()
    for value in ["a", 0, "b"]:
        started.runtime.on_frame(value_frame("/it", value))
    wait_until(lambda: len(seen) == 3)
    assert not finished.is_set()
    listener.close()
    assert finished.wait(WAIT_S)
    assert seen == ["a", 0, "b"]
    started.runtime.on_frame(value_frame("/it", "after close"))
    assert list(listener) == []
    with pytest.raises(CommsError, match="listener of '/it' is closed"):
        listener.get(timeout=0)
    assert started.subscriptions() == [("/it", True), ("/it", False)]


def test_listener_as_context_manager_closes_and_unsubscribes(started: FakeKernel) -> None:
    with started.runtime.listen("/ctx") as listener:
        started.runtime.on_frame(value_frame("/ctx", [1, 2]))
        assert next(iter(listener)) == [1, 2]
    assert listener.closed
    assert started.subscriptions() == [("/ctx", True), ("/ctx", False)]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_a_signal_interrupts_a_blocked_get_on_the_main_thread(started: FakeKernel) -> None:
    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(
        0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1)
    )
    try:
        listener = started.runtime.listen("/blocked")
        timer.start()
        with pytest.raises(Interrupted):
            listener.get()  # no timeout: only the signal can end this
        timer = threading.Timer(
            0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1)
        )
        timer.start()
        with pytest.raises(Interrupted):
            next(listener)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)


# ---------------------------------------------------------------------- read_value, sync


@pytest.mark.parametrize("page_value", [0, False, "", None, [1, {"a": None}]])
def test_read_value_returns_the_pages_value(started: FakeKernel, page_value: Any) -> None:
    started.answers["read"] = lambda r: ok(r, page_value)
    assert started.runtime.read_value("/slider", timeout=1.5) == page_value
    [read] = started.requests("read")
    assert (read.address, read.timeout_s) == ("/slider", 1.5)


def test_read_value_error_is_raised(started: FakeKernel) -> None:
    message = "The page could not read '/nope': the page has no synced variable for \"/nope\""
    started.answers["read"] = lambda r: error(r, message)
    with pytest.raises(CommsError) as raised:
        started.runtime.read_value("/nope")
    assert str(raised.value) == message
    assert started.runtime.connected  # a failed read says nothing about the connection
    with pytest.raises(ValueError, match="timeout"):
        started.runtime.read_value("/nope", timeout=0)


def test_the_read_timeout_setting_is_what_a_read_without_a_timeout_carries_and_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """WRAPPERKERNEL_READ_TIMEOUT_S, inherited from the kernel, is the default of
    read_value: on the read frame (the kernel's bound) and in the worker's own wait."""
    monkeypatch.setenv("WRAPPERKERNEL_READ_TIMEOUT_S", "0.2")
    fake = FakeKernel(reply_wait_s=0.1)
    try:
        comms_base.install_backend(fake.runtime)
        fake.answers["read"] = lambda r: ok(r, "v")
        assert fake.runtime.read_value("/a") == "v"
        assert comms.read_value("/a") == "v"
        assert fake.runtime.read_value("/a", timeout=1.5) == "v"
        assert [r.timeout_s for r in fake.requests("read")] == [0.2, 0.2, 1.5]
        fake.answers["read"] = lambda r: None
        with pytest.raises(CommsError, match=r"'read' request within 0\.3 s"):  # 0.2 + 0.1
            comms.read_value("/a")
    finally:
        fake.stop()


@pytest.mark.parametrize("text", ["soon", "0", "-1", "nan", "inf", ""])
def test_a_bad_read_timeout_setting_is_logged_and_the_default_kept(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("WRAPPERKERNEL_READ_TIMEOUT_S", text)
    fake = FakeKernel()
    try:
        assert fake.logs == [
            f"ignored WRAPPERKERNEL_READ_TIMEOUT_S={text!r}: expected a positive number of seconds"]
        fake.answers["read"] = lambda r: ok(r, 1)
        fake.runtime.read_value("/a")
        assert [r.timeout_s for r in fake.requests("read")] == [READ_TIMEOUT_S]
    finally:
        fake.stop()


def test_read_value_starts_the_channel_first(kernel: FakeKernel) -> None:
    kernel.answers["read"] = lambda r: ok(r, 7)
    assert kernel.runtime.read_value("/a") == 7
    assert [op_of(r) for r in kernel.requests()] == ["start", "read"]


def test_sync_ok_and_error(started: FakeKernel) -> None:
    started.runtime.sync()
    assert [op_of(r) for r in started.requests()] == ["sync"]
    started.answers["sync"] = lambda r: error(r, NO_PAGE)
    with pytest.raises(CommsError, match="No page connected"):
        started.runtime.sync()
    started.answers["sync"] = lambda r: None
    with pytest.raises(CommsError, match="'sync' request within 0.1 s"):
        started.runtime.sync(timeout_s=0.1)


def test_sync_raises_an_earlier_send_failure(started: FakeKernel) -> None:
    started.answers["send_many"] = lambda r: error(r, "connection failed")
    started.runtime.send("/a", 1)
    # The send's reply comes before the sync's: sync raises without waiting for a next call.
    with pytest.raises(
        CommsError, match=r"1 value sent earlier \(the first to '/a'\) was not delivered: connection failed"
    ):
        started.runtime.sync()
    started.answers["send_many"] = ok
    started.runtime.sync()


def test_a_sync_failed_with_the_sends_before_it_says_how_many_values_were_lost(
    started: FakeKernel,
) -> None:
    """No page connected in time: the kernel fails the queued sends (counting their
    values), then the sync behind them. The sync's error is the counted one."""
    held: queue.SimpleQueue[Request] = queue.SimpleQueue()
    started.answers["send_many"] = lambda r: held.put(r)  # type: ignore[func-returns-value]

    def fail_everything(sync: Request) -> frames.AddressReplyFrame:
        batch = held.get(timeout=WAIT_S)
        started.runtime.on_frame(over_the_wire(frames.AddressReplyFrame(
            request_id=batch.request_id, ok=False, value=3, error=NO_PAGE)))
        return error(sync, NO_PAGE)

    started.answers["sync"] = fail_everything
    for i in range(3):
        started.runtime.send("/a", i)
    with pytest.raises(CommsError, match=r"^3 values sent earlier \(the first to '/a'\) were "
                                         r"not delivered: No page connected"):
        started.runtime.sync()


# ---------------------------------------------------------------------- read requests


@pytest.mark.parametrize("value", [0, False, "", None, [], {}])
def test_a_page_read_request_is_answered_with_the_last_value_sent(
    started: FakeKernel, value: Any
) -> None:
    started.runtime.send("/v", "older")
    started.runtime.send("/v", value)
    started.runtime.on_frame(frames.AddressReadRequestFrame(address="/v"))
    answer = started.requests("send")[-1]
    assert (answer.address, answer.value) == ("/v", value)
    assert type(answer.value) is type(value)


@pytest.mark.parametrize("value", [0, False, "", None])
def test_a_page_read_request_is_answered_with_the_last_value_received(
    started: FakeKernel, value: Any
) -> None:
    started.runtime.send("/v", "sent first")
    started.runtime.listen("/v")
    started.runtime.on_frame(value_frame("/v", value))
    started.runtime.on_frame(frames.AddressReadRequestFrame(address="/v"))
    answer = started.requests("send")[-1]
    assert (answer.address, answer.value) == ("/v", value)
    assert type(answer.value) is type(value)


def test_the_answer_is_a_snapshot_of_the_value_when_sent(started: FakeKernel) -> None:
    points = [1, 2]
    started.runtime.send("/p", points)
    points.append(3)
    started.runtime.on_frame(frames.AddressReadRequestFrame(address="/p"))
    assert started.requests("send")[-1].value == [1, 2]


def test_a_read_request_for_an_unknown_value_is_logged_not_answered(started: FakeKernel) -> None:
    started.runtime.on_frame(frames.AddressReadRequestFrame(address="/unknown"))
    assert started.requests() == []
    assert any("'/unknown'" in line and "not answered" in line for line in started.logs)


def test_a_failed_answer_is_logged_not_raised_at_the_user(started: FakeKernel) -> None:
    started.runtime.send("/v", 1)
    started.runtime.flush()
    started.wait_answered(1)
    started.answers["send"] = lambda r: error(r, "page gone")
    started.runtime.on_frame(frames.AddressReadRequestFrame(address="/v"))
    started.wait_answered(1)
    started.answers["send"] = ok
    started.runtime.send("/v", 2)  # nothing raised
    assert any("page gone" in line for line in started.logs)


# ---------------------------------------------------------------------- JSON values

json_values = strategies.json_values(keys=st.text(max_size=8), max_size=5, max_leaves=20)


def same_json(a: Any, b: Any) -> bool:
    """Equal and of the same JSON kinds throughout (so False != 0, 1.0 != 1)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=150, deadline=None)
@given(value=json_values)
def test_json_values_round_trip_unchanged(value: Any) -> None:
    fake = FakeKernel()
    try:
        runtime = fake.runtime
        runtime.send("/json", value)
        runtime.flush()
        assert fake.sent()[-1][0] == "/json"
        assert same_json(fake.sent()[-1][1], value)
        listener = runtime.listen("/json")
        runtime.on_frame(value_frame("/json", value))
        assert same_json(listener.get(timeout=WAIT_S), value)
        runtime.on_frame(frames.AddressReadRequestFrame(address="/json"))
        assert same_json(fake.requests("send")[-1].value, value)
        got: queue.SimpleQueue[Any] = queue.SimpleQueue()
        runtime.subscribe("/json", lambda a, v: got.put(v))
        runtime.on_frame(value_frame("/json", value))
        assert same_json(got.get(timeout=WAIT_S), value)
        assert same_json(listener.get(timeout=WAIT_S), value)
    finally:
        fake.stop()


# ---------------------------------------------------------------------- the comms module


def test_comms_outside_the_kernel_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    calls: list[Callable[[], Any]] = [
        lambda: comms.send("/a", 1),
        lambda: comms.subscribe("/a", print),
        lambda: comms.unsubscribe(1),
        lambda: comms.listen("/a"),
        lambda: comms.read_value("/a"),
        comms.start,
        comms.sync,
    ]
    for call in calls:
        with pytest.raises(CommsError, match="works only in code run by the wrapperkernel kernel"):
            call()


def test_comms_module_uses_the_shells_runtime(
    kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FakeShell:
        def __init__(self) -> None:
            self.magics: dict[str, Callable[..., Any]] = {}

        def register_magic_function(self, func: Any, magic_kind: str, magic_name: str) -> None:
            self.magics[f"{magic_kind}:{magic_name}"] = func

    shell = FakeShell()
    kernel.runtime.install(shell)
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    assert shell.wrapperkernel_comms is kernel.runtime  # type: ignore[attr-defined]
    kernel.answers["read"] = lambda r: ok(r, False)
    comms.start(timeout_s=1)
    comms.send("/a", 0)
    got: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sub = comms.subscribe("/a", lambda a, v: got.put((a, v)))
    with comms.listen("/a", latest_only=True) as listener:
        kernel.runtime.on_frame(value_frame("/a", ""))
        assert listener.get(timeout=WAIT_S) == ""
    assert got.get(timeout=WAIT_S) == ("/a", "")
    assert comms.unsubscribe(sub) is True
    assert comms.read_value("/a", timeout=2) is False
    comms.sync()
    assert [
        fields_of(r) if not isinstance(r, frames.AddressSendManyFrame)
        else [item[:2] for item in r.items]
        for r in kernel.requests()
    ] == [
        ("start", None, True),
        [("/a", 0)],
        ("read", "/a", 2.0),
        ("sync", None, None),
    ]
    assert kernel.subscriptions() == [("/a", True), ("/a", False)]
    shell.magics["line:widgets"]("")
    assert op_of(kernel.requests()[-1]) == "start"


def test_widgets_magic_in_a_real_shell(kernel: FakeKernel) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        kernel.runtime.install(shell)
        assert shell.run_line_magic("widgets", "") is None
        assert [op_of(r) for r in kernel.requests()] == ["start"]
        kernel.answers["start"] = lambda r: error(r, NO_PAGE)
        with pytest.raises(CommsError, match="No page connected"):
            shell.run_line_magic("widgets", "")
    finally:
        InteractiveShell.clear_instance()


def test_importing_comms_is_cheap() -> None:
    code = (
        "import sys, wrapperkernel.comms; "
        "print(sorted(m for m in ('IPython', 'pydantic', 'zmq') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert result.stdout.strip() == "[]"
