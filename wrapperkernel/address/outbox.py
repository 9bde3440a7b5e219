"""Batching and pacing of comm messages to the page, so Jupyter Server never drops them.

Owns: the queue of items for the page connection between the comm core and the
kernel's IOPub socket. It coalesces consecutive items into one ``{"batch": [item, ...]}``
message (DESIGN.md, "The address channel") and paces messages with two token buckets,
one counting messages and one counting bytes. The comm core owns it: the core decides
which comm the messages go to, and when (never to a comm it knows is gone), and learns
from ``take`` which program requests have left the kernel in full.

Items are not addressed to a comm: the queue belongs to "the page connection", and
values still queued when the page is replaced go to the new one. An item may carry a
``tag`` (the program request it belongs to); the message holding a request's last item
reports that tag as done.

Must never: touch a socket, read a clock, or log. The core calls ``take(now_s)`` and
gets back what to send now and when to call again.

Why pace at all: Jupyter Server counts every IOPub message except ``status``,
``comm_open`` and ``execute_input`` over a sliding ``rate_limit_window`` (3 s) and
stops forwarding to a websocket whose rate goes above ``iopub_msg_rate_limit``
(1000 msg/s), until it falls below 80 % of it; ``iopub_data_rate_limit`` (1 MB/s)
counts only ``stream`` bytes. The program's own output shares the message budget,
hence a default well below it. Comm bytes are not limited by the server; the byte
bucket is ours, so that a flood of values cannot stall the page (the browser parses
every message twice: the notebook's connection sees it too). 4 MB/s is about 100,000
small values a second. A token bucket of capacity C refilled at rate r sends at most
C + r*W in any window of W seconds.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# {"batch":[ ... ]} around the items, plus one comma per item.
BATCH_ENVELOPE_BYTES = len('{"batch":[]}')

# Lets float round-off in refills count as a full token, so that calling back at the
# returned time always makes progress.
_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class _Item:
    data: Any
    size_bytes: int
    # Only single items go into a batch: a batch inside a batch is not in the protocol.
    batchable: bool
    tag: str | None = None  # the program request this item belongs to
    last: bool = False  # the request's last item: its message completes the request


@dataclass(frozen=True, slots=True)
class Message:
    """One comm_msg's data, and the tags of the requests whose last item it carries."""

    data: Any
    done: tuple[str, ...] = ()


class _Bucket:
    def __init__(self, rate_per_s: float, capacity: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = capacity

    def refill(self, elapsed_s: float) -> None:
        self.tokens = min(self.capacity, self.tokens + elapsed_s * self.rate_per_s)

    def has(self, amount: float) -> bool:
        return self.tokens >= amount - _TOLERANCE * max(1.0, amount)

    def wait_s(self, amount: float) -> float:
        return max(0.0, (amount - self.tokens) / self.rate_per_s)


class Outbox:
    """FIFO of comm items; ``take`` returns the messages the rate budget allows now.

    ``size_bytes`` is the caller's measure of an item's encoded size (its compact JSON
    length); a message costs its items' bytes, the batch envelope, and
    ``per_msg_overhead_bytes`` for the Jupyter message around it (header, parent
    header, signature). Each message holds at most ``max_items_per_msg`` items and
    ``max_bytes_per_msg`` item bytes, except that one item larger than that goes alone:
    it waits for a full byte bucket and its excess is repaid before the next message.
    Urgent items (protocol ack, ping, pong, whose timing matters) go ahead of queued
    items and obey the message budget but not the byte budget; they are tiny, and the
    server does not count comm bytes.
    """

    def __init__(
        self,
        *,
        max_items_per_msg: int = 1000,
        max_bytes_per_msg: int = 100_000,
        max_msgs_per_s: float = 500.0,
        max_bytes_per_s: float = 4_000_000.0,
        per_msg_overhead_bytes: int = 1_000,
        burst_s: float = 2.0,
        byte_burst_s: float = 0.5,
    ) -> None:
        for name, number in [
            ("max_items_per_msg", max_items_per_msg),
            ("max_bytes_per_msg", max_bytes_per_msg),
            ("max_msgs_per_s", max_msgs_per_s),
            ("max_bytes_per_s", max_bytes_per_s),
            ("burst_s", burst_s),
            ("byte_burst_s", byte_burst_s),
        ]:
            if not (math.isfinite(number) and number > 0):
                raise ValueError(f"{name} must be a positive number, got {number!r}")
        if per_msg_overhead_bytes < 0:
            raise ValueError(f"per_msg_overhead_bytes must be >= 0, got {per_msg_overhead_bytes}")
        self.max_items_per_msg = max_items_per_msg
        self.max_bytes_per_msg = max_bytes_per_msg
        self.per_msg_overhead_bytes = per_msg_overhead_bytes
        # A burst is at least one full message, or a full message could never go out.
        # Messages: 2 s worth by default, so at most 1000 + 500 * 3 = 2500 fall in the
        # server's 3 s window (its limit is 3000), and a page and program answering
        # each other one value at a time (a round trip takes about 1 ms) are not
        # slowed down before a thousand round trips.
        self._msgs = _Bucket(max_msgs_per_s, max(1.0, max_msgs_per_s * burst_s))
        largest_msg_bytes = max_bytes_per_msg + self._envelope_bytes(max_items_per_msg)
        self._bytes = _Bucket(max_bytes_per_s,
                              max(largest_msg_bytes, max_bytes_per_s * byte_burst_s))
        self._queue: deque[_Item] = deque()
        self._urgent: deque[_Item] = deque()
        self._tagged = 0  # items in _queue that belong to a program request
        self._last_s: float | None = None

    @property
    def msg_burst(self) -> float:
        """Most messages sent at once (the message bucket's capacity)."""
        return self._msgs.capacity

    @property
    def byte_burst(self) -> float:
        """Most bytes sent at once, oversized single items aside."""
        return self._bytes.capacity

    def __len__(self) -> int:
        return len(self._queue) + len(self._urgent)

    def push(self, data: Any, size_bytes: int, *, urgent: bool = False,
             tag: str | None = None) -> None:
        """Queue one item; with ``tag`` it is a whole request of one item."""
        if size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
        batchable = isinstance(data, dict) and "address" in data
        (self._urgent if urgent else self._queue).append(
            _Item(data, size_bytes, batchable, tag, tag is not None))
        if tag is not None and not urgent:
            self._tagged += 1

    def push_many(self, items: Iterable[tuple[dict[str, Any], int]], tag: str | None = None) -> None:
        """``push`` for each ``(data, size_bytes)`` of a value item (``{"address": ...,
        "value": ...}``), in order, not urgent; ``tag`` is done with the last one."""
        queued = [_Item(data, size_bytes, True, tag) for data, size_bytes in items]
        if any(item.size_bytes < 0 for item in queued):
            raise ValueError("size_bytes must be >= 0")
        if queued and tag is not None:
            end = queued[-1]
            queued[-1] = _Item(end.data, end.size_bytes, True, tag, True)
            self._tagged += len(queued)
        self._queue.extend(queued)

    @property
    def queued_bytes(self) -> int:
        """The item bytes waiting, urgent ones included."""
        return sum(item.size_bytes for item in itertools.chain(self._urgent, self._queue))

    def has_tagged(self) -> bool:
        """Whether items of a program request are waiting."""
        return self._tagged > 0

    def forget_connection(self) -> None:
        """The page connection is gone: drop what was meant for it alone (urgent
        protocol messages and untagged items, such as read requests, which the core asks
        again); the program's values stay queued for the next connection, in order."""
        self._urgent.clear()
        self._queue = deque(item for item in self._queue if item.tag is not None)
        self._tagged = len(self._queue)

    def clear(self) -> Counter[str]:
        """Drop everything; returns how many items of each tagged request were dropped."""
        dropped = Counter(item.tag for item in self._queue if item.tag is not None)
        self._queue.clear()
        self._urgent.clear()
        self._tagged = 0
        return dropped

    def message_cost_bytes(self, item_sizes: list[int]) -> int:
        """Bytes charged for one message carrying items of these sizes."""
        envelope = self._envelope_bytes(len(item_sizes)) if len(item_sizes) > 1 else 0
        return self.per_msg_overhead_bytes + envelope + sum(item_sizes)

    def take(self, now_s: float, *, urgent_only: bool = False,
             max_messages: int | None = None) -> tuple[list[Message], float | None]:
        """Messages to send now, in order, and when to call again (None when nothing
        is waiting that this call may send). ``urgent_only``: leave queued items be
        (the core is checking that the page is still there); ``max_messages``: at most
        that many messages of queued items (the page's window), urgent ones aside."""
        if max_messages is not None and max_messages <= 0:
            urgent_only = True
        if self._last_s is not None and now_s > self._last_s:
            self._msgs.refill(now_s - self._last_s)
            self._bytes.refill(now_s - self._last_s)
        if self._last_s is None or now_s > self._last_s:
            self._last_s = now_s
        out: list[Message] = []
        while self._urgent:
            if not self._msgs.has(1):
                return out, now_s + self._msgs.wait_s(1)
            item = self._urgent.popleft()
            self._charge(self.message_cost_bytes([item.size_bytes]))
            out.append(Message(item.data, (item.tag,) if item.last else ()))
        left = math.inf if max_messages is None else max_messages
        while self._queue and not urgent_only and left > 0:
            left -= 1
            count = self._next_message_length()
            items = list(itertools.islice(self._queue, count))
            cost = self.message_cost_bytes([item.size_bytes for item in items])
            needed = min(cost, self._bytes.capacity)  # an oversized item waits for a full bucket
            if not (self._msgs.has(1) and self._bytes.has(needed)):
                return out, now_s + max(self._msgs.wait_s(1), self._bytes.wait_s(needed))
            for _ in range(count):
                if self._queue.popleft().tag is not None:
                    self._tagged -= 1
            self._charge(cost)
            done = tuple([item.tag for item in items if item.last])  # type: ignore[misc]
            if count == 1:
                out.append(Message(items[0].data, done))
            else:
                out.append(Message({"batch": [item.data for item in items]}, done))
        return out, None  # emptied, or the window is full: the caller calls again

    def _next_message_length(self) -> int:
        """How many items from the head of the queue go into the next message."""
        first = self._queue[0]
        if not first.batchable:
            return 1
        count, item_bytes = 1, first.size_bytes
        for item in itertools.islice(self._queue, 1, None):
            if (
                count >= self.max_items_per_msg
                or not item.batchable
                or item_bytes + item.size_bytes > self.max_bytes_per_msg
            ):
                break
            count += 1
            item_bytes += item.size_bytes
        return count

    def _charge(self, cost_bytes: int) -> None:
        self._msgs.tokens -= 1
        self._bytes.tokens -= cost_bytes

    @staticmethod
    def _envelope_bytes(item_count: int) -> int:
        return BATCH_ENVELOPE_BYTES + max(0, item_count - 1)
