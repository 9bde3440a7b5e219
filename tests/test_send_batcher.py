"""The worker's send batcher, driven by a fake clock: which values go in which batch,
when the tail of a burst goes, and how a sender waits at the queue bound.

The runtime around the batcher is played by ``Harness``: it registers each batch (as
``AddressRuntime._open_batch`` does), records every write in order, and answers batches
when the test says so. Time passes only when the test moves the clock, and the flusher
thread never runs: the test calls ``flush_if_due``, which is what that thread does when
it wakes, so every assertion is exact.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import pytest
from fake_clock import FakeClock, FlusherStarts

from wrapperkernel.comms_base import CommsError
from wrapperkernel.worker.send_batcher import (
    BATCH_BYTES,
    BATCH_ITEMS,
    BURST_GAP_S,
    DEFAULT_QUEUE_BYTES,
    FLUSH_DELAY_S,
    QUEUE_BYTES_VARIABLE,
    ROOM_POLL_S,
    Binary,
    SendBatcher,
    queue_bytes_from_environment,
)
from wrapperkernel.workerlink import frames
from wrapperkernel.workerlink.framing import FrameDecoder

WAIT_S = 5.0  # bound on every real wait in these tests, so a bug fails instead of hanging


def item_bytes(address: str, value: Any) -> int:
    """The bytes one value adds to a batch: its ``[address, value, size]`` item."""
    address_json, value_json = json.dumps(address), json.dumps(value)
    size = len(address_json) + len(value_json) + len('{"address":,"value":}')
    return len(f"[{address_json},{value_json},{size}]")


class Harness:
    """The batcher's runtime and kernel: registers, records and (on demand) answers."""

    def __init__(self, *, queue_bytes: int = DEFAULT_QUEUE_BYTES, stall_s: float = 1.0,
                 now_s: float = 0.0) -> None:
        self.clock = FakeClock(now_s)
        self.flushers = FlusherStarts()
        self.writes: list[Any] = []  # batches as lists of (address, value), other frames
        self.request_ids: list[str] = []
        self.unanswered: dict[str, int] = {}  # request id -> its bytes
        self.failure: str | None = None
        self.latest: dict[str, Any] = {}
        self.logs: list[str] = []
        self.logged = threading.Event()
        self.wrote = threading.Event()  # set by each write after the first
        self.fail_writes = 0  # how many of the next writes raise
        self.batcher = SendBatcher(
            self.writes.append, self.write,
            open_batch=self.open_batch,
            abandon_batch=lambda request_id: self.unanswered.pop(request_id, None) is not None,
            failed=lambda: self.failure is not None,
            raise_failure=self.raise_failure,
            log=self.log,
            latest=self.latest,
            queue_bytes=queue_bytes,
            stall_s=stall_s,
            clock=self.clock,
            start_flusher=self.flushers,
        )

    def open_batch(self, address: str, size_bytes: int, count: int) -> str:
        request_id = f"r{len(self.request_ids) + 1}"
        self.request_ids.append(request_id)
        self.unanswered[request_id] = size_bytes
        return request_id

    def log(self, line: str) -> None:
        self.logs.append(line)
        self.logged.set()

    def write(self, data: bytes) -> None:
        if self.fail_writes:
            self.fail_writes -= 1
            raise OSError("the link broke")
        frame = frames.WORKER_TO_KERNEL.validate_json(data[4:])
        assert isinstance(frame, frames.AddressSendManyFrame)
        size = sum(item_bytes(address, value) for address, value, _ in frame.items)
        assert self.unanswered[frame.request_id] == size  # the bytes counted are the item's
        if self.writes:
            self.wrote.set()
        self.writes.append([(address, value) for address, value, _ in frame.items])

    def raise_failure(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise CommsError(failure)

    def answer(self, request_id: str | None = None) -> None:
        """The kernel answers a batch: the oldest unanswered one unless told which."""
        request_id = request_id or next(iter(self.unanswered))
        self.batcher.answered(self.unanswered.pop(request_id))

    def add(self, address: str, value: Any) -> None:
        self.batcher.add(address, json.dumps(value))

    def batches(self) -> list[list[tuple[str, Any]]]:
        return [w for w in self.writes if isinstance(w, list)]


# ---------------------------------------------------------------------- batching


def test_a_loop_of_sends_goes_in_full_batches_the_first_value_at_once() -> None:
    """Time stands still, as in a tight loop: the first value follows a pause (none was
    sent before), so it goes at once; the others fill batches of BATCH_ITEMS, and the
    rest waits for a flush. One flusher is started, for the burst."""
    h = Harness()
    for i in range(2000):
        h.add("/points", i)
    assert [len(b) for b in h.batches()] == [1, BATCH_ITEMS]
    h.batcher.flush()
    assert [len(b) for b in h.batches()] == [1, BATCH_ITEMS, 2000 - 1 - BATCH_ITEMS]
    assert [v for b in h.batches() for _, v in b] == list(range(2000))
    assert len(h.flushers.loops) == 1
    assert h.clock.sleeps == [] and h.clock.waits == []


def test_a_batch_goes_once_it_holds_batch_bytes() -> None:
    h = Harness(queue_bytes=16 * BATCH_BYTES)
    h.add("/a", 0)  # at once
    big = "x" * (BATCH_BYTES // 4)
    full_after = math.ceil(BATCH_BYTES / item_bytes("/a", big))
    for _ in range(full_after - 1):
        h.add("/a", big)
    assert len(h.batches()) == 1
    h.add("/a", big)
    assert [len(b) for b in h.batches()] == [1, full_after]


def test_a_value_after_a_pause_longer_than_the_burst_gap_goes_at_once() -> None:
    h = Harness()
    h.add("/a", 1)  # at time 0: at once (nothing was sent before)
    h.clock.time_s = BURST_GAP_S  # exactly the gap since that flush: still a burst
    h.add("/a", 2)
    assert h.batches() == [[("/a", 1)]]
    h.batcher.flush()  # at BURST_GAP_S
    h.clock.time_s = math.nextafter(2 * BURST_GAP_S, math.inf)  # just past the gap since
    h.add("/a", 3)
    assert h.batches() == [[("/a", 1)], [("/a", 2)], [("/a", 3)]]


def test_the_tail_of_a_burst_goes_flush_delay_after_its_batch_began() -> None:
    h = Harness()
    h.add("/a", 0)
    h.clock.advance(BURST_GAP_S / 2)
    began_s = h.clock.time_s
    for i in range(1, 50):
        h.add("/a", i)
    h.clock.advance(BURST_GAP_S / 4)  # later values do not move the batch's due time
    h.add("/a", 50)
    assert h.batches() == [[("/a", 0)]]
    assert len(h.flushers.loops) == 1  # the flusher is asked to wake for the batch
    h.clock.time_s = math.nextafter(began_s + FLUSH_DELAY_S, 0)
    assert h.batcher.flush_if_due() is False
    assert len(h.batches()) == 1
    h.clock.time_s = began_s + FLUSH_DELAY_S
    assert h.batcher.flush_if_due() is True
    assert h.batches() == [[("/a", 0)], [("/a", i) for i in range(1, 51)]]
    assert h.batcher.flush_if_due() is False  # nothing left to hand over


def test_the_flusher_is_started_once_for_all_bursts() -> None:
    h = Harness()
    for burst in range(3):
        h.clock.advance(1.0)
        h.add("/a", (burst, 0))  # after a pause: at once
        h.add("/a", (burst, 1))  # a burst: waits for the flusher
        h.clock.advance(FLUSH_DELAY_S)
        assert h.batcher.flush_if_due() is True
    assert len(h.flushers.loops) == 1
    assert len(h.batches()) == 6


def test_a_frame_goes_after_the_values_batched_before_it() -> None:
    h = Harness()
    h.add("/a", 1)
    h.add("/a", 2)  # joins a batch
    sync = frames.AddressSyncFrame(request_id="s1")
    h.batcher.send_frame(sync)
    assert h.writes == [[("/a", 1)], [("/a", 2)], sync]


def test_latest_follows_the_batch_as_json_text() -> None:
    h = Harness()
    points = [1, 2]
    h.add("/p", points)
    points.append(3)
    h.add("/q", "text")
    assert h.latest == {"/p": "[1, 2]", "/q": '"text"'}


def test_a_batch_that_could_not_be_written_is_abandoned_and_frees_its_bytes() -> None:
    bound = 3 * item_bytes("/a", 1)
    h = Harness(queue_bytes=bound)
    h.fail_writes = 1
    with pytest.raises(OSError, match="the link broke"):
        h.add("/a", 1)
    assert h.unanswered == {}  # taken back from the runtime
    for value in (2, 3, 4):  # the lost batch's bytes no longer count against the bound
        h.add("/a", value)
    h.batcher.flush()
    assert h.batches() == [[("/a", 2), ("/a", 3), ("/a", 4)]]
    assert h.clock.waits == []


def test_the_flusher_sleeps_until_the_batch_is_due_and_survives_a_failed_write() -> None:
    """The flusher loop itself, on a thread, with the fake clock: its sleep is recorded
    (and moves the time), a write that fails is logged, and the loop keeps serving."""
    h = Harness()
    h.add("/a", 0)
    h.clock.advance(BURST_GAP_S / 2)
    began_s = h.clock.time_s
    h.add("/a", 1)
    h.fail_writes = 1
    [loop] = h.flushers.loops
    threading.Thread(target=loop, name="test-flusher", daemon=True).start()
    assert h.logged.wait(WAIT_S)
    assert h.logs == ["sent values could not be handed to the kernel: OSError('the link broke')"]
    assert h.clock.sleeps == [(began_s + FLUSH_DELAY_S) - began_s]
    assert h.unanswered == {"r1": item_bytes("/a", 0)}  # the failed batch was taken back
    h.add("/a", 2)  # a new burst: the loop, parked or about to park, hands it over
    assert h.wrote.wait(WAIT_S)
    assert h.batches() == [[("/a", 0)], [("/a", 2)]]


# ---------------------------------------------------------------------- the queue bound


def fill_the_bound(h: Harness, count: int) -> None:
    """``count`` values, each in its own batch (each after a pause)."""
    for value in range(count):
        h.clock.advance(1.0)
        h.add("/a", value)


def test_a_send_that_does_not_fit_waits_until_an_answer_makes_room() -> None:
    unit = item_bytes("/a", 0)
    h = Harness(queue_bytes=3 * unit)
    h.add("/a", 0)  # at once
    h.add("/a", 1)
    h.add("/a", 2)  # joined a batch: 3 units outstanding or batched, the bound
    blocked = threading.Event()

    def wait_for_real(condition: threading.Condition, seconds: float) -> None:
        blocked.set()
        assert condition.wait(WAIT_S), "nobody made room"

    h.clock.on_wait = wait_for_real
    sender = threading.Thread(target=h.add, args=("/a", 3))
    sender.start()
    assert blocked.wait(WAIT_S)
    # The batch was handed over before the wait (its bytes count from then on), and the
    # waiting value is neither batched nor the latest yet.
    assert h.batches() == [[("/a", 0)], [("/a", 1), ("/a", 2)]]
    assert h.latest["/a"] == "2"
    assert sender.is_alive()
    h.answer()  # frees one unit: the waiting value fits
    sender.join(WAIT_S)
    assert not sender.is_alive()
    h.batcher.flush()
    assert h.batches() == [[("/a", 0)], [("/a", 1), ("/a", 2)], [("/a", 3)]]
    assert h.clock.waits == [ROOM_POLL_S]


def test_a_value_larger_than_the_bound_goes_once_nothing_is_outstanding() -> None:
    h = Harness(queue_bytes=4096)
    fill_the_bound(h, 2)
    answered: list[str] = []

    def answer_one(condition: threading.Condition, seconds: float) -> None:
        # Answer from another thread (the reader's), which needs the lock this wait frees.
        request_id = h.request_ids[len(answered)]
        answered.append(request_id)
        threading.Thread(target=h.answer, args=(request_id,)).start()
        assert condition.wait(WAIT_S)

    h.clock.on_wait = answer_one
    huge = "x" * 5000
    h.add("/a", huge)
    h.batcher.flush()
    assert answered == ["r1", "r2"]  # it waited for both, one poll each
    assert h.batches()[-1] == [("/a", huge)]


def test_a_sender_at_the_bound_gives_up_once_the_kernel_answers_nothing_for_stall_s() -> None:
    unit = item_bytes("/a", 0)
    h = Harness(queue_bytes=2 * unit, stall_s=0.25)
    fill_the_bound(h, 2)
    with pytest.raises(CommsError) as raised:
        h.add("/a", 2)
    assert str(raised.value) == (
        "The kernel answered none of the 2 batches of values sent earlier within 0.25 s, so "
        "send() gave up waiting. The page may have stopped reading; reload it, or restart "
        "the kernel if this keeps happening.")
    # Polls of ROOM_POLL_S until more than 0.25 s passed without an answer: 0.1, 0.2, 0.3.
    assert h.clock.waits == [ROOM_POLL_S] * 3
    assert h.batches() == [[("/a", 0)], [("/a", 1)]] and h.latest["/a"] == "1"


def test_an_answer_while_waiting_restarts_the_stall_bound() -> None:
    unit = item_bytes("/a", 0)
    h = Harness(queue_bytes=3 * unit, stall_s=0.25)
    fill_the_bound(h, 3)

    def answer_on_the_first_poll(condition: threading.Condition, seconds: float) -> None:
        if len(h.clock.waits) == 1:
            threading.Thread(target=h.answer).start()
            assert condition.wait(WAIT_S)
        h.clock.advance(seconds)

    h.clock.on_wait = answer_on_the_first_poll
    with pytest.raises(CommsError, match="none of the 2 batches .* within 0.25 s"):
        h.add("/a", "a value of three units or more")
    # Progress at the first poll (0.1 s) moves the bound: given up at 0.4 s, not 0.3 s.
    assert h.clock.waits == [ROOM_POLL_S] * 4


def test_a_failed_send_ends_the_wait_for_room_with_its_error() -> None:
    unit = item_bytes("/a", 0)
    h = Harness(queue_bytes=unit)
    fill_the_bound(h, 1)

    def fail(condition: threading.Condition, seconds: float) -> None:
        h.failure = "1 value sent earlier (the first to '/a') was not delivered: gone"
        h.clock.advance(seconds)

    h.clock.on_wait = fail
    with pytest.raises(CommsError, match="was not delivered: gone"):
        h.add("/a", 1)
    assert h.clock.waits == [ROOM_POLL_S]  # seen at the next look, not after a stall
    assert h.batches() == [[("/a", 0)]] and h.latest["/a"] == "0"


def test_wait_until_answered_returns_at_once_when_nothing_is_outstanding() -> None:
    h = Harness()
    h.batcher.wait_until_answered(1.0)
    fill_the_bound(h, 1)
    h.answer()
    h.batcher.wait_until_answered(1.0)
    assert h.clock.waits == []


def test_wait_until_answered_waits_through_a_failure_and_gives_up_on_a_stall() -> None:
    h = Harness(stall_s=10.0)
    fill_the_bound(h, 2)

    def fail_then_answer_one(condition: threading.Condition, seconds: float) -> None:
        if len(h.clock.waits) == 1:
            h.failure = "gone"  # a sync still waits: the error must count every value
            threading.Thread(target=h.answer).start()
            assert condition.wait(WAIT_S)
        h.clock.advance(seconds)

    h.clock.on_wait = fail_then_answer_one
    with pytest.raises(CommsError, match=r"none of the 1 batches .* within 0.15 s, so sync\(\)"):
        h.batcher.wait_until_answered(0.15)
    assert h.clock.waits == [ROOM_POLL_S] * 3


# ---------------------------------------------------------------------- the setting


def test_the_queue_bound_comes_from_the_environment() -> None:
    logs: list[str] = []
    assert queue_bytes_from_environment(logs.append, {}) == DEFAULT_QUEUE_BYTES
    assert queue_bytes_from_environment(logs.append, {QUEUE_BYTES_VARIABLE: "2048"}) == 2048
    assert logs == []


@pytest.mark.parametrize("text", ["1023", "0", "-5", "lots", "1.5e6", ""])
def test_a_bad_queue_bound_is_logged_and_the_default_kept(text: str) -> None:
    logs: list[str] = []
    assert queue_bytes_from_environment(logs.append, {QUEUE_BYTES_VARIABLE: text}) == (
        DEFAULT_QUEUE_BYTES)
    assert logs == [f"ignored {QUEUE_BYTES_VARIABLE}={text!r}: expected a whole number of "
                    "bytes, at least 1024"]


# ---------------------------------------------------------------------- binary values


def test_a_binary_value_carries_its_buffers_and_counts_them_against_the_bound_only() -> None:
    harness = Harness()
    written: list[frames.AddressSendManyFrame] = []

    def write(data: bytes) -> None:
        decoder: FrameDecoder[Any] = FrameDecoder(frames.WORKER_TO_KERNEL)
        written.extend(decoder.feed(data))

    harness.batcher._send_encoded = write  # the harness's decoder reads JSON frames only
    blob = memoryview(b"\x07" * 100_000)
    latest = object()
    harness.batcher.add("/blob", '{"data":null,"n":1}', Binary([["data"]], [blob], latest))
    (frame,) = written
    assert frame.items == [("/blob", {"data": None, "n": 1}, item_size("/blob", '{"data":null,"n":1}'))]
    assert frame.buffer_paths == [[0, "data"]]
    assert [bytes(b) for b in frame.buffers] == [bytes(blob)]
    # The bound counts the buffer (memory); the item's size, used to pace what the page
    # parses as JSON, does not.
    (counted,) = harness.unanswered.values()
    assert counted == len(f'["/blob",{{"data":null,"n":1}},{frame.items[0][2]}]') + 100_000
    assert harness.latest["/blob"] is latest


def item_size(address: str, json_text: str) -> int:
    return len(json.dumps(address)) + len(json_text) + len('{"address":,"value":}')
