"""The worker's end of the address channel: what ``wrapperkernel.comms`` calls into.

Owns, for one worker process: the program's requests to the kernel (``CommRequestFrame``)
and the waits for their replies; the subscriptions (callbacks and listeners) and the
``AddressSubscriptionFrame`` that tells the kernel which addresses to forward; the one
dispatcher thread that runs callbacks; and the program's latest value per address, used
to answer the page's read requests. The kernel's comm core decides everything about the
page connection (DESIGN.md, "The address channel"); this runtime only asks and waits.

Threads: user calls come from any thread (usually the main one, where a cell runs).
``on_frame`` runs on the worker's reader thread and must never block for long or run
user code: it wakes waiters, feeds listeners and queues callback deliveries. Callbacks
run on the dispatcher thread, one at a time, in arrival order.

Back-pressure: the kernel answers a batch of sends once the page acknowledged it (or
the connection it was handed to is gone, or it failed). The values sent and not answered
yet are bounded by ``queue_bytes`` (``WRAPPERKERNEL_COMM_QUEUE_BYTES``); past the bound a
``send`` blocks its thread until the page catches up, so the kernel's queue to the page
stays bounded and nothing is dropped. Ctrl-C interrupts that wait.

Must never: wait without a bound (every wait for the kernel ends in ``CommsError``;
a wait for room ends once the kernel makes no progress for ``reply_wait_s``), treat 0,
False, "" or None as "no value", or let a failing callback stop delivery.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import queue
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from wrapperkernel.address.defaults import READ_TIMEOUT_S
from wrapperkernel.comms_base import (
    CommsError,
    Listener,
    check_address,
    check_wait,
    install_backend,
    report_callback_error,
)
from wrapperkernel.workerlink import frames
from wrapperkernel.workerlink.framing import encode_body

# How long a blocking request waits for the kernel's reply when the caller gives no bound.
# The kernel itself answers a start within WAIT_FOR_CONNECTION_S (3 s) plus a heartbeat,
# so hitting this means the kernel is stuck, not that no page is open.
REPLY_WAIT_S = 10.0
# Sends are batched. A value sent after a pause longer than BURST_GAP_S goes to the
# kernel at once, by the calling thread. One sent sooner (a loop) joins a batch, which
# the calling thread hands over once it holds BATCH_ITEMS values or BATCH_BYTES, and
# the flusher thread FLUSH_DELAY_S after it began, for the tail of a burst. A loop of
# sends then costs a few microseconds a value instead of a frame and a reply each, and
# no thread hand-over per batch.
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


def queue_bytes_from_environment(environ: dict[str, str] | os._Environ[str] = os.environ) -> int:
    """The bound of ``QUEUE_BYTES_VARIABLE``, or the default when unset or not a whole
    number of at least 1024 (reported on stderr, which goes to the kernel's log)."""
    text = environ.get(QUEUE_BYTES_VARIABLE)
    if text is None:
        return DEFAULT_QUEUE_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1024:
        sys.__stderr__.write(f"wrapperkernel: ignored {QUEUE_BYTES_VARIABLE}={text!r}: expected "
                             f"a whole number of bytes, at least 1024\n")
        return DEFAULT_QUEUE_BYTES
    return value

Callback = Callable[[str, Any], object]


class _Latest(NamedTuple):
    """The program's latest value for an address, to answer the page's read requests.

    Values the program sent are kept as their JSON text: a snapshot that later mutation
    of the user's object cannot change, and already computed by the validation.
    """

    json_text: str | None
    value: Any

    def get(self) -> Any:
        return self.value if self.json_text is None else json.loads(self.json_text)


@dataclass(slots=True)
class _Waiter:
    """One blocking request waiting for its ``AddressReplyFrame``."""

    done: threading.Event
    ok: bool = False
    value: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Unwaited:
    """A fire-and-forget request: a user ``send``, or the answer to a page read request."""

    kind: Literal["send", "answer"]
    epoch: int
    address: str
    size_bytes: int = 0  # of the values, counted against the queue bound
    count: int = 1  # values carried


@dataclass(frozen=True, slots=True)
class _Subscription:
    address: str
    callback: Callback


class AddressRuntime:
    """The program side of the address channel in one worker process.

    ``send`` writes one frame to the kernel (thread-safe); ``send_encoded`` writes bytes
    of encoded frames (default: decoded again and given to ``send``). ``log`` writes one
    line to the kernel's log. ``reply_wait_s`` is the default bound on waits for the kernel.
    """

    def __init__(
        self,
        send: Callable[[frames._Frame], None],
        log: Callable[[str], None],
        reply_wait_s: float = REPLY_WAIT_S,
        send_encoded: Callable[[bytes], None] | None = None,
        queue_bytes: int | None = None,
    ) -> None:
        self._send_frame = send
        self._send_encoded = send_encoded or self._decode_and_send
        self._log = log
        self._reply_wait_s = reply_wait_s
        self._queue_bytes = queue_bytes_from_environment() if queue_bytes is None else queue_bytes
        self._id_prefix = uuid.uuid4().hex[:8] + "-"
        self._request_ids = itertools.count(1)
        self._subscription_ids = itertools.count(1)
        # Guards the state below; never held while calling user code or sending a frame.
        self._lock = threading.Lock()
        # Held while a subscriber count changes and its frame is sent, so the kernel
        # sees subscribe/unsubscribe frames in the order the counts changed.
        self._subscription_lock = threading.Lock()
        self._connected = False  # a start succeeded and no send failed since
        self._waiting: dict[str, _Waiter] = {}
        self._unwaited: dict[str, _Unwaited] = {}
        # The first failed send of the current epoch, raised by the next API call. Each
        # raise opens a new epoch; failures of older sends are then only logged, so one
        # lost connection is reported once, not once per value sent into it.
        self._send_error: str | None = None
        self._failed_address = ""  # where the first value not delivered was sent
        self._undelivered = 0  # values not delivered in this epoch
        self._quiet_epoch = -1  # the epoch whose late failures were logged once
        self._epoch = 0
        # Sends handed to the kernel and not answered yet: their bytes and number. Waited
        # on by a sender at the bound and by sync().
        self._outstanding_bytes = 0
        self._outstanding_sends = 0
        self._settled = threading.Condition(self._lock)
        self._latest: dict[str, _Latest] = {}
        self._callbacks: dict[int, _Subscription] = {}
        self._callback_ids: dict[str, dict[int, None]] = {}  # address -> ids, in order
        self._listeners: dict[str, list[Listener]] = {}
        self._deliveries: queue.SimpleQueue[tuple[str, Any, tuple[int, ...]]] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None
        # Deliveries queued or running on the dispatcher; lets a cell skip the barrier
        # (a wake-up of two threads) when nothing arrived before it.
        self._pending = 0
        self._pending_lock = threading.Lock()
        # The batch of sent values not yet handed to the kernel. ``_out_lock`` is held
        # while any frame of this runtime is written, so a batch always goes out before
        # the frames that follow it (a sync, a read, a subscription).
        self._out_lock = threading.Lock()
        self._flush_wanted = threading.Condition(self._out_lock)
        self._batch: list[str] = []  # JSON texts of [address, value, size_bytes]
        self._batch_address = ""  # the first one's, for error messages
        self._batch_bytes = 0
        self._batch_began_s = 0.0
        self._last_flush_s = 0.0
        self._flusher: threading.Thread | None = None
        self._flusher_parked = True  # waiting for a batch to begin, not sleeping to a due time

    # ------------------------------------------------------------------ wiring

    def install(self, shell: Any) -> None:
        """Make this runtime the one ``wrapperkernel.comms`` finds, and add ``%widgets``."""
        shell.wrapperkernel_comms = self
        install_backend(self)

        def widgets(line: str = "") -> None:
            """Install the wrapperkernel page client now (see wrapperkernel.comms.start)."""
            self.start()

        shell.register_magic_function(widgets, magic_kind="line", magic_name="widgets")

    @property
    def connected(self) -> bool:
        """True once a start succeeded and no send has failed since."""
        return self._connected

    # ------------------------------------------------------------------ user API

    def start(self, timeout_s: float | None = None) -> None:
        self._raise_send_error()
        self._start(timeout_s, retry=True)

    def send(self, address: str, value: Any) -> None:
        check_address(address)
        json_text = _json_text(address, value)
        self._raise_send_error()
        if not self._connected:
            self._start(None)
        address_json = _address_json(address)
        # The item's size on its way to the page, {"address":A,"value":V}, for pacing.
        size = len(address_json) + len(json_text) + ITEM_ENVELOPE_BYTES
        item = f"[{address_json},{json_text},{size}]"
        if self._outstanding_bytes + self._batch_bytes + len(item) > self._queue_bytes:
            self._wait_for_room(len(item))
        with self._out_lock:
            # A single dict store: atomic, so the reader thread may look at _latest under
            # _lock meanwhile.
            self._latest[address] = _Latest(json_text, None)
            batch = self._batch
            batch.append(item)
            self._batch_bytes += len(item)
            if len(batch) == 1:
                self._batch_address = address
                now = self._batch_began_s = time.monotonic()
                if now - self._last_flush_s > BURST_GAP_S:
                    self._flush_locked()
                elif self._flusher_parked:
                    self._flusher_parked = False
                    self._ensure_flusher()
                    self._flush_wanted.notify()
            elif len(batch) >= BATCH_ITEMS or self._batch_bytes >= BATCH_BYTES:
                self._flush_locked()

    def flush(self) -> None:
        """Hand every value sent so far to the kernel (the worker does this after a cell)."""
        with self._out_lock:
            self._flush_locked()

    def subscribe(self, address: str, callback: Callback) -> int:
        check_address(address)
        if not callable(callback):
            raise TypeError(
                f"callback must be callable as callback(address, value), got {callback!r}"
            )
        self._raise_send_error()
        if not self._connected:
            self._start(None)
        self._ensure_dispatcher()
        subscription_id = next(self._subscription_ids)

        def add() -> None:
            self._callbacks[subscription_id] = _Subscription(address, callback)
            self._callback_ids.setdefault(address, {})[subscription_id] = None

        self._change_subscribers(address, add)
        return subscription_id

    def unsubscribe(self, subscription_id: int) -> bool:
        with self._lock:
            subscription = self._callbacks.get(subscription_id)
        if subscription is None:
            return False
        address = subscription.address

        def remove() -> None:
            if self._callbacks.pop(subscription_id, None) is None:
                return  # another thread won the race
            ids = self._callback_ids[address]
            del ids[subscription_id]
            if not ids:
                del self._callback_ids[address]

        self._change_subscribers(address, remove)
        return True

    def listen(self, address: str, latest_only: bool = False) -> Listener:
        check_address(address)
        self._raise_send_error()
        if not self._connected:
            self._start(None)
        listener = Listener(address, latest_only=latest_only, on_close=self._listener_closed)
        self._change_subscribers(
            address, lambda: self._listeners.setdefault(address, []).append(listener)
        )
        return listener

    def read_value(self, address: str, timeout: float = READ_TIMEOUT_S) -> Any:
        check_address(address)
        timeout_s = check_wait(timeout, "timeout")
        self._raise_send_error()
        if not self._connected:
            self._start(None)
        # The kernel bounds the read by ``timeout``; the margin covers a reconnect.
        return self._request(
            "read", wait_s=timeout_s + self._reply_wait_s,
            frame=lambda request_id: frames.AddressReadFrame(
                request_id=request_id, address=address, timeout_s=timeout_s),
        )

    def sync(self, timeout_s: float | None = None) -> None:
        self._raise_send_error()
        wait_s = self._reply_wait_s if timeout_s is None else check_wait(timeout_s, "timeout_s")
        try:
            self._request("sync", wait_s=wait_s,
                          frame=lambda request_id: frames.AddressSyncFrame(request_id=request_id))
        except CommsError as error:
            # The same lost connection: report it once, with the count of values lost
            # (the kernel answers the sends before the sync behind them).
            counted = self._take_send_error()
            if counted is not None:
                raise CommsError(counted) from error
            raise
        # Every send before the sync has reached the kernel; wait until each is answered:
        # acknowledged by the page, handed to a connection that went away, or failed.
        # Failures too, so that the error counts every value lost.
        self._wait_until(lambda: self._outstanding_sends == 0, wait_s, "sync",
                         stop_on_failure=False)
        self._raise_send_error()

    def _wait_for_room(self, size_bytes: int) -> None:
        """Block until ``size_bytes`` more fit under the queue bound (one value larger
        than the bound goes once nothing else is outstanding)."""
        self.flush()  # the batch's bytes count as outstanding from now on

        def room() -> bool:
            return (self._outstanding_bytes == 0
                    or self._outstanding_bytes + size_bytes <= self._queue_bytes)

        self._wait_until(room, self._reply_wait_s, "send")
        self._raise_send_error()

    def _wait_until(self, ready: Callable[[], bool], stall_s: float, op: str, *,
                    stop_on_failure: bool = True) -> None:
        """Wait (interruptibly) until ``ready()``, or a send failed (``stop_on_failure``);
        ``CommsError`` once the kernel answered nothing for ``stall_s``."""
        with self._settled:
            answered = self._outstanding_sends
            last_progress_s = time.monotonic()
            while not ready() and not (stop_on_failure and self._send_error is not None):
                self._settled.wait(ROOM_POLL_S)
                now_s = time.monotonic()
                if self._outstanding_sends != answered:
                    answered, last_progress_s = self._outstanding_sends, now_s
                elif now_s - last_progress_s > stall_s:
                    raise CommsError(
                        f"The kernel answered none of the {self._outstanding_sends} batches "
                        f"of values sent earlier within {stall_s:g} s, so {op}() gave up "
                        "waiting. The page may have stopped reading; reload it, or restart "
                        "the kernel if this keeps happening."
                    )

    # ------------------------------------------------------------------ reader thread

    def on_frame(self, frame: frames._Frame) -> None:
        """Route one frame from the kernel. Runs on the reader thread; never blocks long."""
        if isinstance(frame, frames.AddressReplyFrame):
            self._on_reply(frame)
        elif isinstance(frame, frames.AddressValueFrame):
            self._on_value(frame.address, frame.value)
        elif isinstance(frame, frames.AddressReadRequestFrame):
            self._on_read_request(frame.address)
        else:
            self._log(f"comms runtime ignored a {type(frame).__name__}: not a comm frame")

    def _on_reply(self, frame: frames.AddressReplyFrame) -> None:
        if not frame.request_id.startswith(self._id_prefix):
            # Sends of the program this worker replaced, answered after the restart.
            return
        note: str | None = None
        with self._lock:
            waiter = self._waiting.get(frame.request_id)
            if waiter is not None:
                waiter.ok, waiter.value, waiter.error = frame.ok, frame.value, frame.error
                waiter.done.set()
                return
            unwaited = self._unwaited.pop(frame.request_id, None)
            if unwaited is not None and unwaited.kind == "send":
                self._outstanding_bytes -= unwaited.size_bytes
                self._outstanding_sends -= 1
                self._settled.notify_all()
            if unwaited is None:
                note = f"reply to request {frame.request_id!r}, which nobody waits for: dropped"
            elif frame.ok:
                return
            elif unwaited.kind == "answer":
                note = f"answer to the page's read of {unwaited.address!r} failed: {frame.error}"
            elif unwaited.epoch == self._epoch:
                # The kernel says how many of the batch's values were lost.
                lost = frame.value if type(frame.value) is int else unwaited.count
                self._undelivered += lost
                if self._send_error is None:
                    self._send_error = frame.error or "the kernel gave no reason."
                    self._failed_address = unwaited.address
                    self._connected = False
                self._settled.notify_all()
            elif unwaited.epoch != self._quiet_epoch:
                # Reported already; one log line per lost connection, not one per batch.
                self._quiet_epoch = unwaited.epoch
                note = (f"send to {unwaited.address!r} failed too: {frame.error} (later "
                        "failures of values sent before that error are not logged)")
        if note is not None:
            self._log(note)

    def _on_value(self, address: str, value: Any) -> None:
        with self._lock:
            self._latest[address] = _Latest(None, value)
            listeners = list(self._listeners.get(address, ()))
            ids = tuple(self._callback_ids.get(address, ()))
        for listener in listeners:
            listener.put(value)
        if ids:
            self._deliver((address, value, ids))
        elif not listeners:
            self._log(f"value for {address!r} arrived after its last subscriber left: dropped")

    def _on_read_request(self, address: str) -> None:
        with self._lock:
            latest = self._latest.get(address)
            if latest is not None:
                request_id = self._new_request_id()
                self._unwaited[request_id] = _Unwaited("answer", self._epoch, address)
        if latest is None:
            self._log(
                f"the page asked for the program's value of {address!r}, but the program "
                "has neither sent nor received one: not answered"
            )
            return
        self._send_unwaited(request_id, address, latest.get())

    # ------------------------------------------------------------------ dispatcher thread

    def _ensure_dispatcher(self) -> None:
        with self._lock:
            if self._dispatcher is not None:
                return
            self._dispatcher = threading.Thread(
                target=self._dispatch_forever, name="comms-dispatcher", daemon=True
            )
        self._dispatcher.start()

    def run_on_dispatcher(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the dispatcher thread, in order with value callbacks (relayed
        comm messages of the ``comm`` package use this, see ``worker.relay``)."""
        self._ensure_dispatcher()
        self._deliver(job)

    def barrier(self) -> threading.Event | None:
        """An event set once everything queued for the dispatcher so far was handled;
        None when nothing is queued or running, so there is nothing to wait for."""
        with self._pending_lock:
            if self._pending == 0:
                return None
        handled = threading.Event()
        self.run_on_dispatcher(handled.set)
        return handled

    def _deliver(self, item: Any) -> None:
        with self._pending_lock:
            self._pending += 1
        self._deliveries.put(item)

    def _dispatch_forever(self) -> None:
        while True:
            item = self._deliveries.get()
            try:
                self._dispatch_one(item)
            finally:
                with self._pending_lock:
                    self._pending -= 1

    def _dispatch_one(self, item: Any) -> None:
        if callable(item):
            try:
                item()
            except BaseException:  # noqa: BLE001 - the one catch-all of this loop
                traceback.print_exc(file=sys.stderr)
            return
        address, value, ids = item
        for subscription_id in ids:
            with self._lock:
                subscription = self._callbacks.get(subscription_id)
            if subscription is None:
                continue  # unsubscribed after the value arrived
            try:
                subscription.callback(address, value)
            except BaseException as error:  # noqa: BLE001 - the one catch-all of this loop
                report_callback_error(
                    f"wrapperkernel.comms: the callback {subscription.callback!r} for "
                    f"{subscription.address!r} raised; later values are still delivered.",
                    error)

    # ------------------------------------------------------------------ helpers

    def _new_request_id(self) -> str:
        return self._id_prefix + str(next(self._request_ids))

    # ------------------------------------------------------------------ frames out

    def _send(self, frame: frames._Frame) -> None:
        with self._out_lock:
            self._flush_locked()
            self._send_frame(frame)

    def _flush_locked(self) -> None:
        if not self._batch:
            return
        items, address, size = self._batch, self._batch_address, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        self._last_flush_s = time.monotonic()
        with self._lock:
            request_id = self._new_request_id()
            self._unwaited[request_id] = _Unwaited("send", self._epoch, address, size, len(items))
            self._outstanding_bytes += size
            self._outstanding_sends += 1
        body = (f'{{"type":"address_send_many","request_id":"{request_id}","items":['
                + ",".join(items) + "]}").encode()
        try:
            self._send_encoded(encode_body(body, "address_send_many"))
        except BaseException:
            with self._lock:
                if self._unwaited.pop(request_id, None) is not None:
                    self._outstanding_bytes -= size
                    self._outstanding_sends -= 1
            raise

    def _decode_and_send(self, data: bytes) -> None:
        self._send_frame(frames.WORKER_TO_KERNEL.validate_json(data[4:]))

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_forever, name="comms-flusher",
                                             daemon=True)
            self._flusher.start()

    def _flush_forever(self) -> None:
        # While values keep coming it wakes once per FLUSH_DELAY_S, sleeping without the
        # lock, so a sending loop is neither woken nor blocked by it; once no batch is
        # open it parks until a sender opens one.
        while True:
            with self._out_lock:
                while not self._batch:
                    self._flusher_parked = True
                    self._flush_wanted.wait()
                due_s = self._batch_began_s + FLUSH_DELAY_S
            wait_s = due_s - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
            with self._out_lock:
                if not self._batch or time.monotonic() < self._batch_began_s + FLUSH_DELAY_S:
                    continue  # handed over by a sender meanwhile, or a newer batch
                try:
                    self._flush_locked()
                except BaseException as error:  # noqa: BLE001 - the one catch-all of this loop
                    # Only a kernel that is gone fails a write; the worker exits right after.
                    self._log(f"sent values could not be handed to the kernel: {error!r}")

    def _start(self, timeout_s: float | None, *, retry: bool = False) -> None:
        """``retry``: an explicit start, which tries the install again after a failure;
        the implicit start before other calls fails fast while no page connects."""
        wait_s = self._reply_wait_s if timeout_s is None else check_wait(timeout_s, "timeout_s")
        try:
            self._request("start", wait_s=wait_s,
                          frame=lambda request_id: frames.AddressStartFrame(
                              request_id=request_id, retry=retry))
        except CommsError:
            self._connected = False
            raise
        self._connected = True

    def _request(
        self,
        op: Literal["start", "read", "sync"],
        *,
        wait_s: float,
        frame: Callable[[str], frames.AddressRequestFrame],
    ) -> Any:
        """Send one request and wait (interruptibly, at most ``wait_s``) for its reply."""
        waiter = _Waiter(threading.Event())
        with self._lock:
            request_id = self._new_request_id()
            self._waiting[request_id] = waiter
        try:
            self._send(frame(request_id))
            if not waiter.done.wait(wait_s):
                raise CommsError(
                    f"The kernel did not answer the program's {op!r} request within "
                    f"{wait_s:g} s. It may be overloaded or stuck; run the cell again, and "
                    "restart the kernel if this keeps happening."
                )
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)
        if not waiter.ok:
            raise CommsError(
                waiter.error or f"The kernel refused the {op!r} request without a reason."
            )
        return waiter.value

    def _send_unwaited(self, request_id: str, address: str, value: Any) -> None:
        try:
            self._send(
                frames.AddressSendFrame(request_id=request_id, address=address, value=value)
            )
        except BaseException:
            with self._lock:
                self._unwaited.pop(request_id, None)
            raise

    def _take_send_error(self) -> str | None:
        with self._lock:
            reason, self._send_error = self._send_error, None
            if reason is None:
                return None
            count, self._undelivered = self._undelivered, 0
            self._epoch += 1
            self._connected = False
            values = "1 value" if count == 1 else f"{count} values"
            verb = "was" if count == 1 else "were"
            return (f"{values} sent earlier (the first to {self._failed_address!r}) {verb} "
                    f"not delivered: {reason}")

    def _raise_send_error(self) -> None:
        if self._send_error is None:  # the common case, without taking the lock
            return
        error = self._take_send_error()
        if error is not None:
            raise CommsError(error)

    def _subscriber_count(self, address: str) -> int:
        return len(self._callback_ids.get(address, ())) + len(self._listeners.get(address, ()))

    def _change_subscribers(self, address: str, change: Callable[[], None]) -> None:
        """Apply ``change`` to the subscriptions; tell the kernel when the first subscriber
        of ``address`` appeared or the last one left."""
        with self._subscription_lock:
            with self._lock:
                before = self._subscriber_count(address)
                change()
                after = self._subscriber_count(address)
            if (before == 0) != (after == 0):
                self._send(frames.AddressSubscriptionFrame(address=address, subscribed=after > 0))

    def _listener_closed(self, listener: Listener) -> None:
        address = listener.address

        def remove() -> None:
            listeners = self._listeners.get(address, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._listeners.pop(address, None)

        self._change_subscribers(address, remove)


@functools.lru_cache(maxsize=1024)
def _address_json(address: str) -> str:
    return json.dumps(address)


# allow_nan=False: NaN and Infinity are not JSON; pydantic would turn them into null.
_ENCODER = json.JSONEncoder(allow_nan=False)
# Larger ints go the general way, which reports Python's limit on digits as a TypeError.
_HUGE_INT = 10**4000


def _json_text(address: str, value: Any) -> str:
    kind = type(value)
    # The common scalars without the encoder's machinery (same text as json.dumps; int
    # and float subclasses such as bool or enums take the general way).
    if kind is int and -_HUGE_INT < value < _HUGE_INT:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"the value for {address!r} is not JSON-serialisable ({error}); send a dict, "
            "list, str, int, finite float, bool or None, e.g. convert with .tolist() or str()."
        ) from None
    if "\\ud" in text:  # an escaped surrogate: a pair (fine) or a lone one (not UTF-8)
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise TypeError(
                f"the value for {address!r} holds a string with a lone surrogate "
                "(such as '\\ud800'), which has no UTF-8 form; fix the text, e.g. "
                "text.encode('utf-8', 'replace').decode()."
            ) from None
    return text
