"""The outbox: every item comes out, in order, batched within caps, paced within budget."""

from __future__ import annotations

import json
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapperkernel.comm.outbox import Outbox

# Jupyter Server's defaults (ServerApp.iopub_msg_rate_limit, rate_limit_window).
SERVER_MSG_RATE_LIMIT = 1000
SERVER_RATE_LIMIT_WINDOW_S = 3.0


def item(address: str, value: object) -> tuple[dict, int]:
    data = {"address": address, "value": value}
    return data, len(json.dumps(data, separators=(",", ":")))


def drain(outbox: Outbox, start_s: float = 0.0, max_calls: int = 100_000):
    """Call ``take`` at the times it asks for; returns [(time, comm_id, data), ...].

    Also checks that a call at the returned time always makes progress."""
    sent = []
    now_s = start_s
    for call in range(max_calls):
        messages, next_due_s = outbox.take(now_s)
        if call > 0:
            assert messages, f"take({now_s}) at its own due time sent nothing"
        sent.extend((now_s, comm_id, data) for comm_id, data in messages)
        if next_due_s is None:
            assert len(outbox) == 0
            return sent
        assert next_due_s > now_s
        now_s = next_due_s
    raise AssertionError("outbox never drained")


def unpack(sent) -> list[tuple[str, dict]]:
    """The items carried by sent messages, in order."""
    items = []
    for _, comm_id, data in sent:
        if isinstance(data, dict) and "batch" in data:
            items.extend((comm_id, each) for each in data["batch"])
        else:
            items.append((comm_id, data))
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
    outbox.push("c1", data, size)
    assert outbox.take(0.0) == ([("c1", {"address": "/a", "value": 0})], None)


def test_consecutive_items_for_one_comm_are_coalesced_and_comms_are_not_mixed():
    outbox = Outbox()
    for comm_id, value in [("c1", 1), ("c1", 2), ("c2", 3), ("c1", 4), ("c1", 5)]:
        outbox.push(comm_id, *item("/a", value))
    messages, next_due = outbox.take(0.0)
    assert messages == [
        ("c1", {"batch": [{"address": "/a", "value": 1}, {"address": "/a", "value": 2}]}),
        ("c2", {"address": "/a", "value": 3}),
        ("c1", {"batch": [{"address": "/a", "value": 4}, {"address": "/a", "value": 5}]}),
    ]
    assert next_due is None


def test_push_many_queues_like_pushes_one_by_one():
    one_by_one, many = Outbox(), Outbox()
    pushed = [item("/a", n) for n in range(5)]
    for data, size in pushed:
        one_by_one.push("c1", data, size)
    many.push_many("c1", pushed)
    assert many.take(0.0) == one_by_one.take(0.0)
    with pytest.raises(ValueError, match="size_bytes"):
        many.push_many("c1", [({"address": "/a", "value": 1}, -1)])
    assert len(many) == 0  # nothing of a refused batch is queued


def test_ten_thousand_small_values_all_arrive_in_order_within_limits():
    outbox = Outbox(max_items_per_msg=1000, max_msgs_per_s=500, max_bytes_per_s=800_000)
    pushed = [item("/counter", n) for n in range(10_000)]
    for data, size in pushed:
        outbox.push("c1", data, size)
    sent = drain(outbox)
    assert [data for _, data in unpack(sent)] == [data for data, _ in pushed]
    assert all(len(data["batch"]) <= 1000 for _, _, data in sent)
    assert len(sent) == 10  # 1000 per message: far below any message budget
    assert max_in_window([(t, 1) for t, _, _ in sent], 1.0) <= outbox.msg_burst + 500


def test_unbatchable_flood_stays_under_jupyter_servers_message_rate_limit():
    # Messages that cannot be batched are paced one by one. Jupyter Server drops IOPub
    # messages once more than limit * window of them fall in its sliding window.
    outbox = Outbox(max_msgs_per_s=500)
    for n in range(5_000):
        outbox.push("c1", {"not_an_item": n}, 20)
    sent = drain(outbox)
    assert [data["not_an_item"] for _, _, data in sent] == list(range(5_000))
    server_budget = SERVER_MSG_RATE_LIMIT * SERVER_RATE_LIMIT_WINDOW_S
    assert max_in_window([(t, 1) for t, _, _ in sent], SERVER_RATE_LIMIT_WINDOW_S) <= server_budget
    assert sent[-1][0] == pytest.approx((5_000 - outbox.msg_burst) / 500, rel=1e-6)


def test_oversized_item_goes_alone_after_a_full_bucket_and_its_debt_is_repaid():
    outbox = Outbox(max_bytes_per_msg=1_000, max_bytes_per_s=10_000, per_msg_overhead_bytes=0)
    outbox.push("c1", *item("/small", 1))
    outbox.push("c1", {"address": "/big", "value": "x"}, 50_000)
    outbox.push("c1", *item("/small", 2))
    sent = drain(outbox)
    assert [data["address"] for _, data in unpack(sent)] == ["/small", "/big", "/small"]
    big_time = sent[1][0]
    after_time = sent[2][0]
    # The big item waited for a full bucket, then drove it 50_000 - burst into debt.
    debt = 50_000 - outbox.byte_burst
    assert after_time - big_time >= debt / 10_000


def test_urgent_items_jump_the_queue_but_respect_the_message_budget():
    outbox = Outbox(max_msgs_per_s=10, burst_s=0.1)  # a burst of one message
    for n in range(3):
        outbox.push("c1", {"not_an_item": n}, 10)
    outbox.take(0.0)  # sends item 0, bucket empty
    outbox.push("c1", {"address": "#heartbeat/ping", "value": 1}, 40, urgent=True)
    assert outbox.take(0.05) == ([], pytest.approx(0.1))
    sent = drain(outbox, 0.1)
    assert [data for _, _, data in sent] == [
        {"address": "#heartbeat/ping", "value": 1},
        {"not_an_item": 1},
        {"not_an_item": 2},
    ]


def test_time_going_backwards_sends_nothing_extra():
    outbox = Outbox(max_msgs_per_s=10, burst_s=0.1)
    for n in range(3):
        outbox.push("c1", {"not_an_item": n}, 10)
    first, due = outbox.take(10.0)
    assert len(first) == 1
    assert outbox.take(5.0)[0] == []
    assert outbox.take(due)[0] == [("c1", {"not_an_item": 1})]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_items_per_msg": 0}, {"max_bytes_per_s": 0}, {"burst_s": float("nan")}],
)
def test_rejects_non_positive_limits(kwargs):
    with pytest.raises(ValueError):
        Outbox(**kwargs)


pushes = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2"]),
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
    for serial, (comm_id, size, batchable) in enumerate(pushes):
        data = {"address": "/a", "value": serial} if batchable else {"raw": serial}
        outbox.push(comm_id, data, size)
        expected.append((comm_id, data, size))
    sizes = {json.dumps(data, sort_keys=True): size for _, data, size in expected}

    sent = drain(outbox)

    assert unpack(sent) == [(comm_id, data) for comm_id, data, _ in expected]
    costs = []
    for time_s, _, data in sent:
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
