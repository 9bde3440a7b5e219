"""The address runtime's way out to the kernel: every frame it writes, and the batching
of ``comms.send`` calls into ``AddressSendManyFrame``s.

Owns, for one worker process:
- the batch of sent values not yet handed to the kernel, and when it goes: at once after
  a pause (``BURST_GAP_S``), when it is full (``BATCH_ITEMS``, ``BATCH_BYTES``), or by the
  flusher thread ``FLUSH_DELAY_S`` after it began, for the tail of a burst;
- the lock under which every frame of the runtime is written, so that a batch always
  goes out before the frames that follow it (a sync, a read, a subscription);
- the bound on the values handed to the kernel and not answered yet
  (``WRAPPERKERNEL_COMM_QUEUE_BYTES``), and the waits on it: a sender blocked at the
  bound, and ``sync`` waiting for every batch to be answered.

Time comes from an injected ``Clock`` (the time, a sleep, a wait on a condition) and the
flusher thread from an injected starter, so that tests step time exactly instead of
sleeping.

Must never: decide what a reply means (request ids, error epochs and the count of values
lost are the runtime's; it opens each batch's request through ``open_batch`` and reports
the bytes an answer freed through ``answered``), call user code, hold its lock while it
waits for room, or wait without a bound: a wait ends in ``CommsError`` once the kernel
answered nothing for ``stall_s``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from wrapperkernel.comms_base import CommsError
from wrapperkernel.settings import whole_number_from_environment
from wrapperkernel.threads import internal_thread
from wrapperkernel.workerlink import frames
from wrapperkernel.workerlink.framing import FrameDecoder, encode_body

# A value sent after a pause longer than BURST_GAP_S goes to the kernel at once, by the
# calling thread. One sent sooner (a loop) joins a batch, which the calling thread hands
# over once it holds BATCH_ITEMS values or BATCH_BYTES, and the flusher thread
# FLUSH_DELAY_S after it began. A loop of sends then costs a few microseconds a value
# instead of a frame and a reply each, and no thread hand-over per batch.
BURST_GAP_S = 0.0002
BATCH_ITEMS = 1000
BATCH_BYTES = 1024 * 1024
FLUSH_DELAY_S = 0.001
ITEM_ENVELOPE_BYTES = len('{"address":,"value":}')
# The most bytes of sent values (their JSON) that may be unanswered by the kernel: queued
# there for the page, or sent and not yet acknowledged by it.
DEFAULT_QUEUE_BYTES = 1024 * 1024
QUEUE_BYTES_VARIABLE = "WRAPPERKERNEL_COMM_QUEUE_BYTES"
# How often a sender blocked at the bound looks at the clock (the wait itself ends as
# soon as the kernel answers).
ROOM_POLL_S = 0.1


class Binary(NamedTuple):
    """A sent value's buffers (wrapperkernel/buffers.py), and what the runtime keeps as
    the address's latest value."""

    paths: list[list[str | int]]
    buffers: list[memoryview]
    latest: Any


def queue_bytes_from_environment(
    log: Callable[[str], None], environ: Mapping[str, str] = os.environ
) -> int:
    """The bound of ``QUEUE_BYTES_VARIABLE``, or the default when unset or not a whole
    number of at least 1024 (reported through ``log``, the kernel's log)."""
    try:
        value = whole_number_from_environment(environ, QUEUE_BYTES_VARIABLE, unit="bytes",
                                              minimum=1024)
    except ValueError as ignored:
        log(str(ignored))
        return DEFAULT_QUEUE_BYTES
    return DEFAULT_QUEUE_BYTES if value is None else value


class Clock(Protocol):
    """Time as the batcher sees it: read, slept through (the flusher), and waited on (a
    condition, by a sender at the bound and by sync)."""

    def now_s(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...
    def wait(self, condition: threading.Condition, seconds: float) -> None: ...


class SystemClock:
    """The real time: ``time.monotonic``, ``time.sleep`` and ``Condition.wait``."""

    now_s = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    @staticmethod
    def wait(condition: threading.Condition, seconds: float) -> None:
        condition.wait(seconds)


SYSTEM_CLOCK = SystemClock()


def start_flusher_thread(run: Callable[[], None]) -> None:
    internal_thread(run, "comms-flusher").start()


class SendBatcher:
    """Writes the runtime's frames in order, its sent values in batches.

    ``send_frame`` writes one frame, ``send_encoded`` bytes of encoded frames (default:
    decoded again and given to ``send_frame``). ``open_batch(first_address, size_bytes,
    count)`` registers a batch with the runtime and returns its request id;
    ``abandon_batch(request_id)`` takes it back when it could not be written (False when
    its answer came first). ``failed()`` says a send failed and ``raise_failure()`` raises
    that failure, if not reported yet: a sender blocked at the bound stops waiting then.
    ``latest`` is the runtime's map of each address's latest value: a sent value's JSON
    text (a ``str``) is stored there as the value joins the batch, under the same lock,
    so the map follows the order of the batches.
    """

    def __init__(
        self,
        send_frame: Callable[[frames.WorkerToKernel], None],
        send_encoded: Callable[[bytes], None] | None,
        *,
        open_batch: Callable[[str, int, int], str],
        abandon_batch: Callable[[str], bool],
        failed: Callable[[], bool],
        raise_failure: Callable[[], None],
        log: Callable[[str], None],
        latest: dict[str, Any],
        queue_bytes: int,
        stall_s: float,
        clock: Clock = SYSTEM_CLOCK,
        start_flusher: Callable[[Callable[[], None]], None] = start_flusher_thread,
    ) -> None:
        self._send_frame = send_frame
        self._send_encoded = send_encoded or self._decode_and_send
        self._open_batch = open_batch
        self._abandon_batch = abandon_batch
        self._failed = failed
        self._raise_failure = raise_failure
        self._log = log
        self._latest = latest
        self._queue_bytes = queue_bytes
        self._stall_s = stall_s
        self._clock = clock
        self._now_s = clock.now_s
        self._start_flusher = start_flusher
        # Held while any frame is written, and guards the batch and the flusher's state.
        self._lock = threading.Lock()
        self._flush_wanted = threading.Condition(self._lock)
        self._batch: list[str] = []  # JSON texts of [address, value, size_bytes]
        self._batch_address = ""  # the first one's, for error messages
        self._batch_bytes = 0
        self._batch_began_s = 0.0
        # The batch's binary values: paths [item index, *path in its value], and buffers.
        self._batch_paths: list[list[Any]] = []
        self._batch_buffers: list[memoryview] = []
        self._last_flush_s = -math.inf  # so that the first value goes at once
        self._flusher_started = False
        self._flusher_parked = True  # waiting for a batch to begin, not sleeping to a due time
        # Batches handed to the kernel and not answered yet: their bytes and number.
        # Written under ``_settled``; read without it by ``add`` (a stale read only makes
        # a sender look at the bound once more, under the lock).
        self._settled = threading.Condition(threading.Lock())
        self._outstanding_bytes = 0
        self._outstanding_sends = 0

    # ------------------------------------------------------------------ callers' threads

    def add(self, address: str, json_text: str, binary: Binary | None = None) -> None:
        """Batch one sent value (``json_text`` is its JSON); blocks while it does not fit
        under the bound. It runs for every ``comms.send``: no lock but the one, no call that
        the common case can do without. A value with buffers comes with ``binary``: its
        JSON has null at each path, and the runtime's latest value is ``binary.latest``."""
        address_json = _address_json(address)
        # The item's size on its way to the page, {"address":A,"value":V}, for pacing.
        # Buffers do not count there: the pacing is for what the page parses as JSON.
        size = len(address_json) + len(json_text) + ITEM_ENVELOPE_BYTES
        item = f"[{address_json},{json_text},{size}]"
        item_bytes = len(item)
        if binary is not None:  # the bound is on memory: buffers count in full
            item_bytes += sum(buffer.nbytes for buffer in binary.buffers)
        if self._outstanding_bytes + self._batch_bytes + item_bytes > self._queue_bytes:
            self._wait_for_room(item_bytes)
        with self._lock:
            batch = self._batch
            # A single dict store: atomic, so the runtime may read ``latest`` meanwhile.
            if binary is None:
                self._latest[address] = json_text
            else:
                self._latest[address] = binary.latest
                index = len(batch)
                self._batch_paths += [[index, *path] for path in binary.paths]
                self._batch_buffers += binary.buffers
            batch.append(item)
            self._batch_bytes += item_bytes
            if len(batch) == 1:
                self._batch_address = address
                now = self._batch_began_s = self._now_s()
                if now - self._last_flush_s > BURST_GAP_S:
                    self._flush_locked()
                elif self._flusher_parked:
                    self._flusher_parked = False
                    if not self._flusher_started:
                        self._flusher_started = True
                        self._start_flusher(self._flush_forever)
                    self._flush_wanted.notify()
            elif len(batch) >= BATCH_ITEMS or self._batch_bytes >= BATCH_BYTES:
                self._flush_locked()

    def send_frame(self, frame: frames.WorkerToKernel) -> None:
        """Write ``frame`` after every value added before it."""
        with self._lock:
            self._flush_locked()
            self._send_frame(frame)

    def flush(self) -> None:
        """Hand every value added so far to the kernel."""
        with self._lock:
            self._flush_locked()

    def flush_if_due(self) -> bool:
        """Hand the batch over if it began ``FLUSH_DELAY_S`` ago or more: what the flusher
        thread does each time it wakes. True if a batch went."""
        with self._lock:
            if not self._batch or self._now_s() < self._batch_began_s + FLUSH_DELAY_S:
                return False  # handed over by a sender meanwhile, or a newer batch
            self._flush_locked()
            return True

    def wait_until_answered(self, stall_s: float) -> None:
        """Wait (interruptibly) until the kernel answered every batch handed to it (sync);
        ``CommsError`` once it answered none for ``stall_s``."""
        self._wait_until(lambda: self._outstanding_sends == 0, stall_s, "sync", stop=None)

    # ------------------------------------------------------------------ reader thread

    def answered(self, size_bytes: int) -> None:
        """The kernel answered a batch of ``size_bytes``: wake the senders waiting for room
        and a sync. The runtime calls this after it recorded what the answer said."""
        with self._settled:
            self._outstanding_bytes -= size_bytes
            self._outstanding_sends -= 1
            self._settled.notify_all()

    # ------------------------------------------------------------------ inside

    def _flush_locked(self) -> None:
        if not self._batch:
            return
        items, address, size = self._batch, self._batch_address, self._batch_bytes
        paths, buffers = self._batch_paths, self._batch_buffers
        self._batch, self._batch_bytes = [], 0
        self._batch_paths, self._batch_buffers = [], []
        self._last_flush_s = self._now_s()
        request_id = self._open_batch(address, size, len(items))
        with self._settled:
            self._outstanding_bytes += size
            self._outstanding_sends += 1
        tail = f'],"buffer_paths":{json.dumps(paths)}}}' if paths else "]}"
        body = (f'{{"type":"address_send_many","request_id":"{request_id}","items":['
                + ",".join(items) + tail).encode()
        try:
            self._send_encoded(encode_body(body, "address_send_many", buffers))
        except BaseException:
            if self._abandon_batch(request_id):
                with self._settled:
                    self._outstanding_bytes -= size
                    self._outstanding_sends -= 1
            raise

    def _decode_and_send(self, data: bytes) -> None:
        decoder: FrameDecoder[Any] = FrameDecoder(frames.WORKER_TO_KERNEL)
        (frame,) = decoder.feed(data)
        self._send_frame(frame)

    def _wait_for_room(self, size_bytes: int) -> None:
        """Block until ``size_bytes`` more fit under the bound (one value larger than the
        bound goes once nothing else is outstanding); raise a failed send's error."""
        self.flush()  # the batch's bytes count as outstanding from now on

        def room() -> bool:
            return (self._outstanding_bytes == 0
                    or self._outstanding_bytes + size_bytes <= self._queue_bytes)

        self._wait_until(room, self._stall_s, "send", stop=self._failed)
        self._raise_failure()

    def _wait_until(self, ready: Callable[[], bool], stall_s: float, op: str, *,
                    stop: Callable[[], bool] | None) -> None:
        """Wait (interruptibly) until ``ready()`` or ``stop()``; ``CommsError`` once the
        kernel answered nothing for ``stall_s``."""
        with self._settled:
            answered = self._outstanding_sends
            last_progress_s = self._now_s()
            while not ready() and not (stop is not None and stop()):
                self._clock.wait(self._settled, ROOM_POLL_S)
                now_s = self._now_s()
                if self._outstanding_sends != answered:
                    answered, last_progress_s = self._outstanding_sends, now_s
                elif now_s - last_progress_s > stall_s:
                    raise CommsError(
                        f"The kernel answered none of the {self._outstanding_sends} batches "
                        f"of values sent earlier within {stall_s:g} s, so {op}() gave up "
                        "waiting. The page may have stopped reading; reload it, or restart "
                        "the kernel if this keeps happening."
                    )

    def _flush_forever(self) -> None:
        # While values keep coming it wakes once per FLUSH_DELAY_S, sleeping without the
        # lock, so a sending loop is neither woken nor blocked by it; once no batch is
        # open it parks until a sender opens one.
        while True:
            with self._lock:
                while not self._batch:
                    self._flusher_parked = True
                    self._flush_wanted.wait()
                due_s = self._batch_began_s + FLUSH_DELAY_S
            wait_s = due_s - self._now_s()
            if wait_s > 0:
                self._clock.sleep(wait_s)
            try:
                self.flush_if_due()
            except BaseException as error:  # noqa: BLE001 - the one catch-all of this loop
                # Only a kernel that is gone fails a write; the worker exits right after.
                self._log(f"sent values could not be handed to the kernel: {error!r}")


@functools.lru_cache(maxsize=1024)
def _address_json(address: str) -> str:
    return json.dumps(address)
