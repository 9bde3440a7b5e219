"""A clock for the worker's send batcher whose time passes only when a test moves it.

It implements ``worker.send_batcher.Clock``. ``sleep`` and ``wait`` record how long they
were asked for. By default a ``wait`` returns at once as if its whole timeout had passed
without a notification (the time moves on by that much), so a sender blocked at the
bound gives up after an exact number of polls. A test that needs a real wait (for
another thread to make room) sets ``on_wait``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class FakeClock:
    def __init__(self, now_s: float = 0.0) -> None:
        self.time_s = now_s
        self.sleeps: list[float] = []
        self.waits: list[float] = []
        self.on_wait: Callable[[threading.Condition, float], None] | None = None

    def now_s(self) -> float:
        return self.time_s

    def advance(self, seconds: float) -> None:
        self.time_s += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time_s += seconds

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        self.waits.append(seconds)
        if self.on_wait is not None:
            self.on_wait(condition, seconds)
        else:
            self.time_s += seconds


class FlusherStarts:
    """Stands in for starting the flusher thread: records the loop instead of running it,
    so that only the test decides when a batch is due (``SendBatcher.flush_if_due``)."""

    def __init__(self) -> None:
        self.loops: list[Callable[[], None]] = []

    def __call__(self, run: Callable[[], None]) -> None:
        self.loops.append(run)
