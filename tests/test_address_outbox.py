"""The outbox: every item comes out, in order, batched within caps, paced within budget;
a request's tag is done with the message carrying its last item; on a lost connection
only the program's values stay queued."""

from __future__ import annotations

import json
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapperkernel.address.outbox import Message, Outbox

# Jupyter Server's defaults (ServerApp.iopub_msg_rate_limit, rate_limit_window).
SERVER_MSG_RATE_LIMIT = 1000
SERVER_RATE_LIMIT_WINDOW_S = 3.0


def item(address: str, value: object) -> tuple[dict, int]:
    data = {"address": address, "value": value}
    return data, len(json.dumps(data, separators=(",", ":")))


def drain(outbox: Outbox, start_s: float = 0.0, max_calls: int = 100_000):
    """Call ``take`` at the times it asks for; returns [(time, data), ...].

    Also checks that a call at the returned time always makes progress."""
    sent = []
    now_s = start_s
    for call in range(max_calls):
        messages, next_due_s = outbox.take(now_s)
        if call > 0:
            assert messages, f"take({now_s}) at its own due time sent nothing"
        sent.extend((now_s, message.data) for message in messages)
        if next_due_s is None:
            assert len(outbox) == 0
            return sent
        assert next_due_s > now_s
        now_s = next_due_s
    raise AssertionError("outbox never drained")


def unpack(sent) -> list[dict]:
    """The items carried by sent messages, in order."""
    items = []
    for _, data in sent:
        if isinstance(data, dict) and "batch" in data:
            items.extend(data["batch"])
        else:
            items.append(data)
    return items


def max_in_window(times_and_costs, window_s: float) -> float:
    """Largest total cost of messages sent within any closed window of ``window_s``."""
    best = total = 0.0
    window: deque[tuple[float, float]] = deque()
    for time_s, cost in times_and_costs:
        window.append((time_s, cost))
        total += cost
        while window[0][0] < time_s - window_s:
            total -= window.popleft()[1]
        best = max(best, total)
    return best


def test_single_item_is_not_wrapped_in_a_batch():
    outbox = Outbox()
    data, size = item("/a", 0)
    outbox.push(data, size)
    assert outbox.take(0.0) == ([Message({"address": "/a", "value": 0})], None)


def test_consecutive_items_are_coalesced_and_a_tag_is_done_with_its_last_item():
    outbox = Outbox(max_items_per_msg=3)
    outbox.push_many([item("/a", 1), item("/a", 2)], tag="r1")
    outbox.push(*item("/a", 3), tag="r2")
    outbox.push_many([item("/a", 4), item("/a", 5)], tag="r3")
    messages, next_due = outbox.take(0.0)
    assert messages == [
        Message({"batch": [{"address": "/a", "value": n} for n in (1, 2, 3)]}, ("r1", "r2")),
        Message({"batch": [{"address": "/a", "value": n} for n in (4, 5)]}, ("r3",)),
    ]
    assert next_due is None


def test_a_request_split_over_messages_is_done_with_the_last_one():
    outbox = Outbox(max_items_per_msg=2)
    outbox.push_many([item("/a", n) for n in range(5)], tag="r1")
    messages, _ = outbox.take(0.0)
    assert [m.done for m in messages] == [(), (), ("r1",)]


def test_a_lost_connection_keeps_only_the_programs_values_in_order():
    outbox = Outbox()
    outbox.push({"address": "#comm_open_ack", "value": True}, 40, urgent=True)
    outbox.push(*item("/a", 1), tag="r1")
    outbox.push({"address": "/b", "read_request": True}, 40)  # asked again by the core
    outbox.push_many([item("/a", 2), item("/a", 3)], tag="r2")
    assert outbox.has_tagged()
    outbox.forget_connection()
    messages, _ = outbox.take(0.0)
    assert messages == [Message({"batch": [{"address": "/a", "value": n} for n in (1, 2, 3)]},
                                ("r1", "r2"))]


def test_clear_counts_the_values_of_each_request_it_drops():
    outbox = Outbox(max_items_per_msg=2)
    outbox.push_many([item("/a", n) for n in range(3)], tag="r1")
    outbox.push(*item("/a", 9), tag="r2")
    outbox.push({"address": "/b", "read_request": True}, 40)
    outbox.take(0.0, urgent_only=True)  # values wait: nothing leaves
    assert outbox.clear() == {"r1": 3, "r2": 1}
    assert len(outbox) == 0 and not outbox.has_tagged()


def test_push_many_queues_like_pushes_one_by_one():
    one_by_one, many = Outbox(), Outbox()
    pushed = [item("/a", n) for n in range(5)]
    for data, size in pushed:
        one_by_one.push(data, size)
    many.push_many(pushed)
    assert many.take(0.0) == one_by_one.take(0.0)
    with pytest.raises(ValueError, match="size_bytes"):
        many.push_many([({"address": "/a", "value": 1}, -1)])
    assert len(many) == 0  # nothing of a refused batch is queued


def test_ten_thousand_small_values_all_arrive_in_order_within_limits():
    outbox = Outbox(max_items_per_msg=1000, max_msgs_per_s=500, max_bytes_per_s=800_000)
    pushed = [item("/counter", n) for n in range(10_000)]
    for data, size in pushed:
        outbox.push(data, size)
    sent = drain(outbox)
    assert unpack(sent) == [data for data, _ in pushed]
    assert all(len(data["batch"]) <= 1000 for _, data in sent)
    assert len(sent) == 10  # 1000 per message: far below any message budget
    assert max_in_window([(t, 1) for t, _ in sent], 1.0) <= outbox.msg_burst + 500


def test_unbatchable_flood_stays_under_jupyter_servers_message_rate_limit():
    # Messages that cannot be batched are paced one by one. Jupyter Server drops IOPub
    # messages once more than limit * window of them fall in its sliding window.
    outbox = Outbox(max_msgs_per_s=500)
    for n in range(5_000):
        outbox.push({"not_an_item": n}, 20)
    sent = drain(outbox)
    assert [data["not_an_item"] for _, data in sent] == list(range(5_000))
    server_budget = SERVER_MSG_RATE_LIMIT * SERVER_RATE_LIMIT_WINDOW_S
    assert max_in_window([(t, 1) for t, _ in sent], SERVER_RATE_LIMIT_WINDOW_S) <= server_budget
    assert sent[-1][0] == pytest.approx((5_000 - outbox.msg_burst) / 500, rel=1e-6)


def test_oversized_item_goes_alone_after_a_full_bucket_and_its_debt_is_repaid():
    outbox = Outbox(max_bytes_per_msg=1_000, max_bytes_per_s=10_000, per_msg_overhead_bytes=0)
    outbox.push(*item("/small", 1))
    outbox.push({"address": "/big", "value": "x"}, 50_000)
    outbox.push(*item("/small", 2))
    sent = drain(outbox)
    assert [data["address"] for data in unpack(sent)] == ["/small", "/big", "/small"]
    big_time = sent[1][0]
    after_time = sent[2][0]
    # The big item waited for a full bucket, then drove it 50_000 - burst into debt.
    debt = 50_000 - outbox.byte_burst
    assert after_time - big_time >= debt / 10_000


def test_urgent_items_jump_the_queue_but_respect_the_message_budget():
    outbox = Outbox(max_msgs_per_s=10, burst_s=0.1)  # a burst of one message
    for n in range(3):
        outbox.push({"not_an_item": n}, 10)
    outbox.take(0.0)  # sends item 0, bucket empty
    outbox.push({"address": "#heartbeat/ping", "value": 1}, 40, urgent=True)
    assert outbox.take(0.05) == ([], pytest.approx(0.1))
    sent = drain(outbox, 0.1)
    assert [data for _, data in sent] == [
        {"address": "#heartbeat/ping", "value": 1},
        {"not_an_item": 1},
        {"not_an_item": 2},
    ]


def test_time_going_backwards_sends_nothing_extra():
    outbox = Outbox(max_msgs_per_s=10, burst_s=0.1)
    for n in range(3):
        outbox.push({"not_an_item": n}, 10)
    first, due = outbox.take(10.0)
    assert len(first) == 1
    assert outbox.take(5.0)[0] == []
    assert outbox.take(due)[0] == [Message({"not_an_item": 1})]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_items_per_msg": 0}, {"max_bytes_per_s": 0}, {"burst_s": float("nan")}],
)
def test_rejects_non_positive_limits(kwargs):
    with pytest.raises(ValueError):
        Outbox(**kwargs)


pushes = st.lists(
    st.tuples(
        st.sampled_from([None, "r"]),  # a tagged request's one item, or untagged
        st.integers(min_value=0, max_value=3_000),  # item size, sometimes > max_bytes_per_msg
        st.booleans(),  # batchable item or not
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(
    pushes=pushes,
    max_items=st.integers(min_value=1, max_value=50),
    max_bytes=st.integers(min_value=1, max_value=2_000),
    msgs_per_s=st.floats(min_value=1, max_value=2_000),
    bytes_per_s=st.floats(min_value=100, max_value=1e6),
    burst_s=st.floats(min_value=0.01, max_value=2),
    overhead=st.integers(min_value=0, max_value=500),
)
def test_any_load_is_complete_ordered_capped_and_paced(
    pushes, max_items, max_bytes, msgs_per_s, bytes_per_s, burst_s, overhead
):
    outbox = Outbox(
        max_items_per_msg=max_items,
        max_bytes_per_msg=max_bytes,
        max_msgs_per_s=msgs_per_s,
        max_bytes_per_s=bytes_per_s,
        per_msg_overhead_bytes=overhead,
        burst_s=burst_s,
    )
    expected = []
    tags = []
    for serial, (tag, size, batchable) in enumerate(pushes):
        data = {"address": "/a", "value": serial} if batchable else {"raw": serial}
        outbox.push(data, size, tag=None if tag is None else f"{tag}{serial}")
        expected.append((data, size))
        if tag is not None:
            tags.append(f"{tag}{serial}")
    sizes = {json.dumps(data, sort_keys=True): size for data, size in expected}

    sent, done = [], []
    now_s = 0.0
    while True:
        messages, due_s = outbox.take(now_s)
        sent.extend((now_s, message.data) for message in messages)
        done.extend(tag for message in messages for tag in message.done)
        assert outbox.has_tagged() == any(tag is not None for tag, _, _ in pushes[len(unpack(sent)):])
        if due_s is None:
            break
        now_s = due_s

    assert unpack(sent) == [data for data, _ in expected]
    assert done == tags  # every tag done once, in order
    assert not outbox.has_tagged()
    costs = []
    for time_s, data in sent:
        carried = data["batch"] if "batch" in data else [data]
        item_sizes = [sizes[json.dumps(each, sort_keys=True)] for each in carried]
        if "batch" in data:
            assert 2 <= len(carried) <= max_items
            assert sum(item_sizes) <= max_bytes
            assert all("address" in each for each in carried)
        costs.append((time_s, outbox.message_cost_bytes(item_sizes)))

    slack = 1e-6
    for window_s in (0.0, 0.5, 1.0, 3.0):
        msgs = max_in_window([(t, 1) for t, _ in costs], window_s)
        assert msgs <= outbox.msg_burst + msgs_per_s * window_s + slack
        # Only a message bigger than the bucket may exceed it, by its own excess.
        excess = max((cost - outbox.byte_burst for _, cost in costs), default=0)
        byte_bound = outbox.byte_burst + bytes_per_s * window_s + max(0, excess)
        assert max_in_window(costs, window_s) <= byte_bound * (1 + slack)


# --- lanes: one outbox per page, one budget ----------------------------------------------


def test_lanes_share_one_budget_and_keep_their_own_queues():
    waiting = Outbox(max_msgs_per_s=10, burst_s=0.2)  # a burst of two messages
    first, second = waiting.lane(), waiting.lane()
    assert first.msg_burst == second.msg_burst == waiting.msg_burst == 2
    first.push(*item("/a", 1))
    second.push(*item("/a", 2))
    second.push({"address": "#ping", "value": 1}, 30, urgent=True)
    assert first.take(0.0) == ([Message({"address": "/a", "value": 1})], None)
    # The first lane took one of the two messages: the second gets the ping, then waits.
    messages, due_s = second.take(0.0)
    assert messages == [Message({"address": "#ping", "value": 1})]
    assert due_s == pytest.approx(0.1)
    # The budget refills once per instant, whichever lane asks first.
    assert first.take(0.1) == ([], None)
    assert second.take(0.1) == ([Message({"address": "/a", "value": 2})], None)


def test_adopt_moves_the_programs_values_after_those_already_queued():
    waiting = Outbox()
    gone = waiting.lane()
    gone.push({"address": "#comm_open_ack", "value": True}, 40, urgent=True)
    gone.push(*item("/a", 1), tag="r1")
    gone.push(*item("/a", 9), watched=True)  # a page's value passed on: for that page only
    gone.push_many([item("/a", 2), item("/a", 3)], tag="r2")
    gone.forget_connection()
    waiting.adopt(gone)
    assert len(gone) == 0 and not gone.has_tagged()
    assert waiting.tags() == {"r1", "r2"}
    fresh = waiting.lane()
    fresh.push({"address": "#comm_open_ack", "value": True}, 40, urgent=True)
    fresh.adopt(waiting)
    messages, _ = fresh.take(0.0)
    assert messages == [
        Message({"address": "#comm_open_ack", "value": True}),
        Message({"batch": [{"address": "/a", "value": n} for n in (1, 2, 3)]}, ("r1", "r2"))]


def test_watched_items_count_until_they_leave():
    outbox = Outbox(max_items_per_msg=1)
    outbox.push({"address": "/b", "read_request": True}, 40)
    assert not outbox.has_watched()
    outbox.push(*item("/a", 1), watched=True)
    assert outbox.has_watched() and not outbox.has_tagged()
    outbox.take(0.0, max_messages=1)  # the read request
    assert outbox.has_watched()
    outbox.take(0.0, max_messages=1)
    assert not outbox.has_watched()
    with pytest.raises(ValueError, match="urgent"):
        outbox.push({"address": "#ping", "value": 1}, 30, urgent=True, watched=True)
