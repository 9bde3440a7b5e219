"""Batching and pacing of comm messages to the pages, so Jupyter Server never drops them.

Owns: the queues of items for the page connections between the comm core and the
kernel's IOPub socket, one ``Outbox`` per page (a *lane*) and one for values that wait
for a page while none is connected. It coalesces consecutive items into one
``{"batch": [item, ...]}`` message (DESIGN.md, "The address channel") and paces
messages with two token buckets, one counting messages and one counting bytes, which
every lane made by ``lane()`` shares: IOPub is broadcast, so each page's websocket
carries the messages meant for every page, and the server's limit counts them all. The
comm core owns the outboxes: it decides which comm a lane's messages go to, and when
(never to a comm it knows is gone), and learns from ``take`` which program requests have
left the kernel in full on that lane.

Items are not addressed to a comm: a lane belongs to one page. A program value's item is
shared by every lane it was pushed to (``push_to_lanes``) and knows whether some lane has
sent it, so that a page that joins can be given the values no page has been sent yet
(``copy_unsent``), and when the last page goes away those values move to the waiting
outbox (``adopt``), then to the lane of the next page. An item may carry a ``tag`` (the
program request it belongs to); the message holding a request's last item reports that
tag as done. An untagged item may be *watched* (a page's value the kernel passes on to the
other pages): the core then watches the page's silence for it as for the program's.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# {"batch":[ ... ]} around the items, plus one comma per item.
BATCH_ENVELOPE_BYTES = len('{"batch":[]}')

# Lets float round-off in refills count as a full token, so that calling back at the
# returned time always makes progress.
_TOLERANCE = 1e-9


class _Item:
    """One item; a program value's item is shared by every lane it was pushed to
    (``push_to_lanes``), so that ``sent`` says whether any page has been sent it."""

    __slots__ = ("batchable", "data", "last", "sent", "size_bytes", "tag", "watched")

    def __init__(self, data: Any, size_bytes: int, batchable: bool, tag: str | None = None,
                 last: bool = False, watched: bool = False) -> None:
        self.data = data
        self.size_bytes = size_bytes
        # Only single items go into a batch: a batch inside a batch is not in the protocol.
        self.batchable = batchable
        self.tag = tag  # the program request this item belongs to
        self.last = last  # the request's last item: its message completes the request
        self.watched = watched  # untagged, yet the core watches the page's silence for it
        self.sent = False  # taken out of some lane for its page


def _value_items(items: Iterable[tuple[dict[str, Any], int]], tag: str | None) -> list[_Item]:
    """Value items (``{"address": ..., "value": ...}``) of one request, its last one marked."""
    queued = [_Item(data, size_bytes, True, tag) for data, size_bytes in items]
    if any(item.size_bytes < 0 for item in queued):
        raise ValueError("size_bytes must be >= 0")
    if queued and tag is not None:
        queued[-1].last = True
    return queued


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


class _Pacing:
    """The two buckets and the time of their last refill, shared by an outbox's lanes."""

    def __init__(self, msgs: _Bucket, byte_bucket: _Bucket) -> None:
        self.msgs = msgs
        self.bytes = byte_bucket
        self.last_s: float | None = None

    def refill(self, now_s: float) -> None:
        """Refill for the time since the last call (once per instant, whichever lane asks)."""
        if self.last_s is not None and now_s > self.last_s:
            self.msgs.refill(now_s - self.last_s)
            self.bytes.refill(now_s - self.last_s)
        if self.last_s is None or now_s > self.last_s:
            self.last_s = now_s


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
        largest_msg_bytes = max_bytes_per_msg + self._envelope_bytes(max_items_per_msg)
        self._pacing = _Pacing(
            _Bucket(max_msgs_per_s, max(1.0, max_msgs_per_s * burst_s)),
            _Bucket(max_bytes_per_s, max(largest_msg_bytes, max_bytes_per_s * byte_burst_s)))
        self._queue: deque[_Item] = deque()
        self._urgent: deque[_Item] = deque()
        self._tagged = 0  # items in _queue that belong to a program request
        self._watched = 0  # untagged items in _queue that the core watches (see _Item)

    def lane(self) -> Outbox:
        """A new, empty outbox with this one's limits, sharing its budget: what one lane
        sends, the others cannot send in the same instant."""
        twin = Outbox(max_items_per_msg=self.max_items_per_msg,
                      max_bytes_per_msg=self.max_bytes_per_msg,
                      per_msg_overhead_bytes=self.per_msg_overhead_bytes)
        twin._pacing = self._pacing  # the same class: its budget is the one being shared
        return twin

    @property
    def msg_burst(self) -> float:
        """Most messages sent at once (the message bucket's capacity)."""
        return self._pacing.msgs.capacity

    @property
    def byte_burst(self) -> float:
        """Most bytes sent at once, oversized single items aside."""
        return self._pacing.bytes.capacity

    def __len__(self) -> int:
        return len(self._queue) + len(self._urgent)

    def push(self, data: Any, size_bytes: int, *, urgent: bool = False,
             tag: str | None = None, watched: bool = False) -> None:
        """Queue one item; with ``tag`` it is a whole request of one item; ``watched``:
        an untagged item the core watches the page's silence for."""
        if size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
        if urgent and (tag is not None or watched):
            raise ValueError("an urgent item is the protocol's: neither tagged nor watched")
        batchable = isinstance(data, dict) and "address" in data
        watched = watched and tag is None
        (self._urgent if urgent else self._queue).append(
            _Item(data, size_bytes, batchable, tag, tag is not None, watched))
        if tag is not None and not urgent:
            self._tagged += 1
        self._watched += watched

    def push_many(self, items: Iterable[tuple[dict[str, Any], int]], tag: str | None = None) -> None:
        """``push`` for each ``(data, size_bytes)`` of a value item (``{"address": ...,
        "value": ...}``), in order, not urgent; ``tag`` is done with the last one."""
        push_to_lanes([self], items, tag)

    @property
    def queued_bytes(self) -> int:
        """The item bytes waiting, urgent ones included."""
        return sum(item.size_bytes for item in itertools.chain(self._urgent, self._queue))

    def has_tagged(self) -> bool:
        """Whether items of a program request are waiting."""
        return self._tagged > 0

    def has_watched(self) -> bool:
        """Whether items the core watches are waiting: a program request's, or watched."""
        return self._tagged + self._watched > 0

    def tags(self) -> set[str]:
        """The program requests that have items waiting here."""
        return {item.tag for item in self._queue if item.tag is not None}

    def forget_connection(self) -> None:
        """The page connection is gone: drop what was meant for it alone (urgent
        protocol messages and untagged items, such as read requests, which the core asks
        again); the program's values stay queued, in order, for ``adopt``."""
        self._urgent.clear()
        self._queue = deque(item for item in self._queue if item.tag is not None)
        self._tagged = len(self._queue)
        self._watched = 0

    def adopt(self, other: Outbox) -> set[str]:
        """Take the program's values queued in ``other`` (the lane of the last page, gone,
        or the values that waited for a page) that no page has been sent, after those
        queued here, in order; ``other`` keeps nothing. Returns their requests' tags."""
        moved = [item for item in other._queue if item.tag is not None and not item.sent]
        other.clear()
        self._queue.extend(moved)
        self._tagged += len(moved)
        return {item.tag for item in moved if item.tag is not None}

    def copy_unsent(self, other: Outbox) -> set[str]:
        """Queue here, after what is queued, the program's values queued in ``other``
        that no page has been sent yet (for a page that joins while they wait); the
        items are shared, as ``push_to_lanes`` shares them. Returns their requests' tags."""
        unsent = [item for item in other._queue if item.tag is not None and not item.sent]
        self._queue.extend(unsent)
        self._tagged += len(unsent)
        return {item.tag for item in unsent if item.tag is not None}

    def clear(self) -> Counter[str]:
        """Drop everything; returns how many items of each tagged request were dropped."""
        dropped = Counter(item.tag for item in self._queue if item.tag is not None)
        self._queue.clear()
        self._urgent.clear()
        self._tagged = self._watched = 0
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
        self._pacing.refill(now_s)
        msgs, byte_bucket = self._pacing.msgs, self._pacing.bytes
        out: list[Message] = []
        while self._urgent:
            if not msgs.has(1):
                return out, now_s + msgs.wait_s(1)
            item = self._urgent.popleft()
            self._charge(self.message_cost_bytes([item.size_bytes]))
            out.append(Message(item.data, (item.tag,) if item.last else ()))
        left = math.inf if max_messages is None else max_messages
        while self._queue and not urgent_only and left > 0:
            left -= 1
            count = self._next_message_length()
            items = list(itertools.islice(self._queue, count))
            cost = self.message_cost_bytes([item.size_bytes for item in items])
            needed = min(cost, byte_bucket.capacity)  # an oversized item waits for a full bucket
            if not (msgs.has(1) and byte_bucket.has(needed)):
                return out, now_s + max(msgs.wait_s(1), byte_bucket.wait_s(needed))
            for _ in range(count):
                item = self._queue.popleft()
                item.sent = True
                if item.tag is not None:
                    self._tagged -= 1
                self._watched -= item.watched
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
        self._pacing.msgs.tokens -= 1
        self._pacing.bytes.tokens -= cost_bytes

    @staticmethod
    def _envelope_bytes(item_count: int) -> int:
        return BATCH_ENVELOPE_BYTES + max(0, item_count - 1)


def push_to_lanes(lanes: Sequence[Outbox], items: Iterable[tuple[dict[str, Any], int]],
                  tag: str | None) -> None:
    """``push_many`` on every lane at once, with the same items: a lane can then tell
    whether another one's page has been sent an item (``adopt``, ``copy_unsent``)."""
    queued = _value_items(items, tag)
    for lane in lanes:
        lane._queue.extend(queued)
        if tag is not None:
            lane._tagged += len(queued)
