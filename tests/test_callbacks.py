"""The worker's callback dispatcher on its own: jobs and value callbacks share one thread
and one order, a failing job does not stop it, and the barrier a cell waits on.

(The subscription callbacks through the runtime are tested in test_address_runtime.py.)
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from wrapperkernel.worker.callbacks import CallbackDispatcher, Subscription

WAIT_S = 5.0


def test_jobs_and_callbacks_run_in_the_order_they_were_queued_on_one_thread() -> None:
    ran: list[tuple[str, Any]] = []
    threads: set[int] = set()

    def record(who: str) -> Any:
        def callback(address: str, value: Any) -> None:
            threads.add(threading.get_ident())
            ran.append((who, value))

        return callback

    subscriptions = {1: Subscription("/a", record("first")), 2: Subscription("/a", record("second"))}
    dispatcher = CallbackDispatcher(subscriptions.get)
    gate = threading.Event()
    dispatcher.submit(lambda: gate.wait(WAIT_S))  # holds the queue until all is queued
    dispatcher.deliver("/a", 0, (1, 2))
    dispatcher.submit(lambda: record("job")("", None))
    dispatcher.deliver("/a", 1, (1, 2))
    del subscriptions[2]  # unsubscribed before its values' turn came: it gets none
    gate.set()
    barrier = dispatcher.barrier()
    assert barrier is not None and barrier.wait(WAIT_S)
    assert ran == [("first", 0), ("job", None), ("first", 1)]
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_the_barrier_is_none_when_nothing_is_queued_or_running() -> None:
    dispatcher = CallbackDispatcher(lambda subscription_id: None)
    assert dispatcher.barrier() is None
    done = threading.Event()
    dispatcher.submit(done.set)
    assert done.wait(WAIT_S)
    barrier = dispatcher.barrier()  # the job may still be finishing: then a real barrier
    assert barrier is None or barrier.wait(WAIT_S)
    assert dispatcher.barrier() is None


def test_a_job_that_raises_is_reported_and_the_next_one_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dispatcher = CallbackDispatcher(lambda subscription_id: None)
    done = threading.Event()
    dispatcher.submit(lambda: 1 / 0)
    dispatcher.submit(done.set)
    assert done.wait(WAIT_S)
    assert "ZeroDivisionError" in capsys.readouterr().err
