"""The worker's end of the address channel: what ``wrapperkernel.comms`` calls into.

Owns, for one worker process: the program's requests to the kernel (start, read, sync,
the answers to the page's reads, and the batches of sends its ``SendBatcher`` writes) and
the waits for their replies; the error epochs, in which the values a lost connection did
not deliver are counted and reported once; the subscriptions (callbacks and listeners)
and the ``AddressSubscriptionFrame`` that tells the kernel which addresses to forward;
and the program's latest value per address, used to answer the page's read requests.
The kernel's address core decides everything about the page connection (DESIGN.md,
"The address channel"); this runtime only asks and waits. Batching and the queue bound
are ``worker.send_batcher``'s; running callbacks is ``worker.callbacks``'s.

Threads: user calls come from any thread (usually the main one, where a cell runs).
``on_frame`` runs on the worker's reader thread and must never block for long or run
user code: it wakes waiters, feeds listeners and queues callback deliveries.

Back-pressure: the kernel answers a batch of sends once the page acknowledged it (or
the connection it was handed to is gone, or it failed); past the queue bound a ``send``
blocks its thread until the page catches up (``worker.send_batcher``).

Must never: wait without a bound (every wait for the kernel ends in ``CommsError``),
treat 0, False, "" or None as "no value", or let a failing callback stop delivery.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from wrapperkernel.address.defaults import READ_TIMEOUT_S
from wrapperkernel.buffers import extract as extract_buffers
from wrapperkernel.buffers import insert as insert_buffers
from wrapperkernel.comms_base import (
    CommsError,
    Listener,
    check_address,
    check_wait,
    install_backend,
)
from wrapperkernel.settings import READ_TIMEOUT_VARIABLE, seconds_from_environment
from wrapperkernel.worker.callbacks import Callback, CallbackDispatcher, Subscription
from wrapperkernel.worker.send_batcher import (
    SYSTEM_CLOCK,
    Binary,
    Clock,
    SendBatcher,
    queue_bytes_from_environment,
    start_flusher_thread,
)
from wrapperkernel.workerlink import frames

# How long a blocking request waits for the kernel's reply when the caller gives no bound.
# The kernel itself answers a start within WAIT_FOR_CONNECTION_S (3 s) plus a heartbeat,
# so hitting this means the kernel is stuck, not that no page is open.
REPLY_WAIT_S = 10.0


def read_timeout_from_environment(
    log: Callable[[str], None], environ: Mapping[str, str] = os.environ
) -> float:
    """The default timeout of ``read_value``: ``READ_TIMEOUT_VARIABLE``, which the worker
    inherits from the kernel and reads as the kernel does, else ``READ_TIMEOUT_S``."""
    try:
        seconds = seconds_from_environment(environ, READ_TIMEOUT_VARIABLE)
    except ValueError as ignored:
        log(str(ignored))
        return READ_TIMEOUT_S
    return READ_TIMEOUT_S if seconds is None else seconds


class _Received(NamedTuple):
    """A value the page sent, as the program's latest value for its address.

    In ``AddressRuntime._latest`` a value the program sent is kept as its JSON text (a
    ``str``, stored by the batcher): a snapshot that later mutation of the user's object
    cannot change, and already computed by the validation. A received value is wrapped,
    so that a received string is not taken for JSON text.
    """

    value: Any


@dataclass(slots=True)
class _Waiter:
    """One blocking request waiting for its ``AddressReplyFrame``."""

    done: threading.Event
    ok: bool = False
    value: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Unwaited:
    """A fire-and-forget request: a batch of ``send`` calls, or the answer to a page read
    request."""

    kind: Literal["send", "answer"]
    epoch: int
    address: str
    size_bytes: int = 0  # of the values, counted against the queue bound
    count: int = 1  # values carried


class AddressRuntime:
    """The program side of the address channel in one worker process.

    ``send`` writes one frame to the kernel (thread-safe); ``send_encoded`` writes bytes
    of encoded frames (default: decoded again and given to ``send``). ``log`` writes one
    line to the kernel's log. ``reply_wait_s`` is the default bound on waits for the kernel.
    ``queue_bytes`` and ``read_timeout_s`` default to the environment's settings. ``clock``
    and ``start_flusher`` are the send batcher's time and thread (tests pass fakes).
    """

    def __init__(
        self,
        send: Callable[[frames.WorkerToKernel], None],
        log: Callable[[str], None],
        reply_wait_s: float = REPLY_WAIT_S,
        send_encoded: Callable[[bytes], None] | None = None,
        queue_bytes: int | None = None,
        read_timeout_s: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        start_flusher: Callable[[Callable[[], None]], None] = start_flusher_thread,
    ) -> None:
        self._log = log
        self._reply_wait_s = reply_wait_s
        self._read_timeout_s = (read_timeout_from_environment(log) if read_timeout_s is None
                                else check_wait(read_timeout_s, "read_timeout_s"))
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
        # Address -> the JSON text of the value the program sent last, or the _Received
        # value the page sent last: whichever came later.
        self._latest: dict[str, str | _Received] = {}
        self._callbacks: dict[int, Subscription] = {}
        self._callback_ids: dict[str, dict[int, None]] = {}  # address -> ids, in order
        self._listeners: dict[str, list[Listener]] = {}
        self._dispatcher = CallbackDispatcher(self._subscription)
        self._out = SendBatcher(
            send, send_encoded,
            open_batch=self._open_batch,
            abandon_batch=self._abandon,
            failed=lambda: self._send_error is not None,
            raise_failure=self._raise_send_error,
            log=log,
            latest=self._latest,
            queue_bytes=(queue_bytes_from_environment(log) if queue_bytes is None
                         else queue_bytes),
            stall_s=reply_wait_s,
            clock=clock,
            start_flusher=start_flusher,
        )
        # Bound once: ``send`` is hot, and these save it a lookup per call.
        self._add = self._out.add
        self._send = self._out.send_frame

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

    @property
    def dispatcher(self) -> CallbackDispatcher:
        """The thread that runs the callbacks; the relay's handlers run on it too, and a
        cell waits on its barrier."""
        return self._dispatcher

    # ------------------------------------------------------------------ user API

    def start(self, timeout_s: float | None = None) -> None:
        self._raise_send_error()
        self._start(timeout_s, retry=True)

    def send(self, address: str, value: Any) -> None:
        check_address(address)
        try:
            json_text, binary = _json_text(address, value), None
        except TypeError:
            json_text, binary = _binary_json(address, value)  # or the JSON error again
        if self._send_error is not None:  # tested here: the common case makes no call
            self._raise_send_error()
        if not self._connected:
            self._start(None)
        if binary is None:
            self._add(address, json_text)
        else:
            self._out.add(address, json_text, binary)

    def flush(self) -> None:
        """Hand every value sent so far to the kernel (the worker does this after a cell)."""
        self._out.flush()

    def subscribe(self, address: str, callback: Callback, *, wait_for_page: bool = True) -> int:
        check_address(address)
        if not callable(callback):
            raise TypeError(
                f"callback must be callable as callback(address, value), got {callback!r}"
            )
        self._raise_send_error()
        if wait_for_page and not self._connected:
            self._start(None)
        self._dispatcher.start()
        subscription_id = next(self._subscription_ids)

        def add() -> None:
            self._callbacks[subscription_id] = Subscription(address, callback)
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

    def read_value(self, address: str, timeout: float | None = None) -> Any:
        check_address(address)
        timeout_s = self._read_timeout_s if timeout is None else check_wait(timeout, "timeout")
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
        self._out.wait_until_answered(wait_s)
        self._raise_send_error()

    # ------------------------------------------------------------------ reader thread

    def on_frame(self, frame: frames.KernelToWorker) -> None:
        """Route one frame from the kernel. Runs on the reader thread; never blocks long."""
        if isinstance(frame, frames.AddressReplyFrame):
            self._on_reply(frame)
        elif isinstance(frame, frames.AddressValueFrame):
            self._on_value(frame.address, _value_of(frame))
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
                waiter.ok, waiter.value, waiter.error = frame.ok, _value_of(frame), frame.error
                waiter.done.set()
                return
            unwaited = self._unwaited.pop(frame.request_id, None)
            if unwaited is None:
                note = f"reply to request {frame.request_id!r}, which nobody waits for: dropped"
            elif frame.ok:
                pass
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
            elif unwaited.epoch != self._quiet_epoch:
                # Reported already; one log line per lost connection, not one per batch.
                self._quiet_epoch = unwaited.epoch
                note = (f"send to {unwaited.address!r} failed too: {frame.error} (later "
                        "failures of values sent before that error are not logged)")
        if unwaited is not None and unwaited.kind == "send":
            # Only now that the failure, if any, is recorded: a sync or a sender that
            # wakes to find nothing outstanding then also finds the error.
            self._out.answered(unwaited.size_bytes)
        if note is not None:
            self._log(note)

    def _on_value(self, address: str, value: Any) -> None:
        with self._lock:
            self._latest[address] = _Received(value)
            listeners = list(self._listeners.get(address, ()))
            ids = tuple(self._callback_ids.get(address, ()))
        for listener in listeners:
            listener.put(value)
        if ids:
            self._dispatcher.deliver(address, value, ids)
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
        value = json.loads(latest) if isinstance(latest, str) else latest.value
        self._send_unwaited(request_id, address, value)

    # ------------------------------------------------------------------ requests

    def _new_request_id(self) -> str:
        return self._id_prefix + str(next(self._request_ids))

    def _open_batch(self, address: str, size_bytes: int, count: int) -> str:
        """Register a batch of sends the batcher is about to write; its request id."""
        with self._lock:
            request_id = self._new_request_id()
            self._unwaited[request_id] = _Unwaited("send", self._epoch, address, size_bytes,
                                                   count)
        return request_id

    def _abandon(self, request_id: str) -> bool:
        """Forget a fire-and-forget request that could not be written; False if its
        reply came first."""
        with self._lock:
            return self._unwaited.pop(request_id, None) is not None

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
            value, paths, buffers = extract_buffers(value)
            self._send(frames.AddressSendFrame(request_id=request_id, address=address,
                                               value=value, buffer_paths=paths,
                                               buffers=buffers))
        except BaseException:
            self._abandon(request_id)
            raise

    # ------------------------------------------------------------------ error epochs

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

    # ------------------------------------------------------------------ subscriptions

    def _subscription(self, subscription_id: int) -> Subscription | None:
        with self._lock:
            return self._callbacks.get(subscription_id)

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


# allow_nan=False: NaN and Infinity are not JSON; pydantic would turn them into null.
_ENCODER = json.JSONEncoder(allow_nan=False)
# Larger ints go the general way, which reports Python's limit on digits as a TypeError.
_HUGE_INT = 10**4000


def _binary_json(address: str, value: Any) -> tuple[str, Binary]:
    """The JSON of a value that holds bytes-like objects (null in their slots), and its
    buffers; the JSON error of ``_json_text`` if it holds none, or holds other non-JSON."""
    out, paths, buffers = extract_buffers(value)
    if not paths:
        _json_text(address, value)  # raises the error that brought us here
    text = _json_text(address, out)
    # A snapshot, as for JSON values: the caller may change its array right after send().
    # One copy, shared by the batch and by the latest value (the page's reads).
    copies = [memoryview(buffer.tobytes()) for buffer in buffers]
    latest = _Received(insert_buffers(json.loads(text), paths, copies))
    return text, Binary(paths, copies, latest)


def _value_of(frame: frames.AddressValueFrame | frames.AddressReplyFrame) -> Any:
    """A frame's value with its buffers back in it, as memoryview."""
    if not frame.buffer_paths:
        return frame.value
    return insert_buffers(frame.value, frame.buffer_paths, frame.buffers)


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
