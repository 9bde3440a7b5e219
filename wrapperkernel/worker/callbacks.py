"""The worker's one callback dispatcher: the thread that runs the program's subscription
callbacks, one at a time, in the order their values arrived, and in order with them the
jobs handed to it (the ``comm`` package's handlers, see ``worker.relay``).

Owns the queue of deliveries, the thread (started on first use), the count of deliveries
not handled yet, and the barrier a cell waits on so that what arrived before it is
handled before it runs.

Must never: run anything on the caller's thread (``deliver`` and ``submit`` only queue:
the reader thread calls them), let a failing callback or job stop the loop, or own the
subscriptions: which callback an id stands for is the runtime's, looked up when the
value's turn comes, so that a callback unsubscribed meanwhile gets none of the values
queued for it.

A subscription callback is the user's code: its traceback goes to stderr, into the
output of the running or last cell (``report_callback_error``, as docs/comms-api.md
says). A failing job is reported to the ``on_error`` it was submitted with (the relay's
log it to the kernel's log, as ipykernel logs a failing message handler), else to stderr.
"""

from __future__ import annotations

import queue
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from wrapperkernel.comms_base import report_callback_error
from wrapperkernel.threads import internal_thread

Callback = Callable[[str, Any], object]
Job = Callable[[], None]
# Told about a job's exception, on the dispatcher thread; it must not raise (a logging
# call does not).
ErrorReporter = Callable[[BaseException], None]


@dataclass(frozen=True, slots=True)
class Subscription:
    """One ``comms.subscribe`` call: its address and its callback."""

    address: str
    callback: Callback


@dataclass(frozen=True, slots=True)
class _Submitted:
    """A job, and whom to tell if it fails (None: stderr)."""

    job: Job
    on_error: ErrorReporter | None


# A value for the subscriptions with these ids, in subscription order; or a job.
_Delivery = Union[tuple[str, Any, tuple[int, ...]], _Submitted]


class CallbackDispatcher:
    """Runs callbacks and jobs on one thread, in the order they were queued.

    ``lookup(subscription_id)`` gives the subscription an id stands for now, or None once
    it is unsubscribed.
    """

    def __init__(self, lookup: Callable[[int], Subscription | None]) -> None:
        self._lookup = lookup
        self._deliveries: queue.SimpleQueue[_Delivery] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        # Deliveries queued or running; lets a cell skip the barrier (a wake-up of two
        # threads) when nothing arrived before it.
        self._pending = 0
        self._pending_lock = threading.Lock()

    def start(self) -> None:
        """Start the thread unless it runs already (the first subscription does this)."""
        with self._thread_lock:
            if self._thread is not None:
                return
            self._thread = internal_thread(self._dispatch_forever, "comms-dispatcher")
        self._thread.start()

    def deliver(self, address: str, value: Any, subscription_ids: tuple[int, ...]) -> None:
        """Queue ``value`` for the callbacks of these subscriptions."""
        self._queue((address, value, subscription_ids))

    def submit(self, job: Job, on_error: ErrorReporter | None = None) -> None:
        """Run ``job`` on the dispatcher thread, in order with the value callbacks.

        If it raises, ``on_error`` gets the exception; without one, its traceback goes
        to stderr."""
        self.start()
        self._queue(_Submitted(job, on_error))

    def barrier(self) -> threading.Event | None:
        """An event set once everything queued so far was handled; None when nothing is
        queued or running, so there is nothing to wait for."""
        with self._pending_lock:
            if self._pending == 0:
                return None
        handled = threading.Event()
        self.submit(handled.set)
        return handled

    def _queue(self, item: _Delivery) -> None:
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

    def _dispatch_one(self, item: _Delivery) -> None:
        if isinstance(item, _Submitted):
            try:
                item.job()
            except BaseException as error:  # noqa: BLE001 - the one catch-all of this loop
                if item.on_error is None:
                    traceback.print_exc(file=sys.stderr)
                else:
                    item.on_error(error)
            return
        address, value, subscription_ids = item
        for subscription_id in subscription_ids:
            subscription = self._lookup(subscription_id)
            if subscription is None:
                continue  # unsubscribed after the value arrived
            try:
                subscription.callback(address, value)
            except BaseException as error:  # noqa: BLE001 - the one catch-all of this loop
                report_callback_error(
                    f"wrapperkernel.comms: the callback {subscription.callback!r} for "
                    f"{subscription.address!r} raised; later values are still delivered.",
                    error)
