"""The window of signatures the codec refuses to see again (``wrapperkernel/wire/replay.py``).

Checked against the plainest model of "the last N signatures": a deque and a set. Small
capacities make the hash table's runs long and wrap around its end, which is where
backward-shift deletion can go wrong; forced keys put many signatures on one home slot.
"""

from __future__ import annotations

import os
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapperkernel.wire import replay
from wrapperkernel.wire.codec import DIGEST_HISTORY_SIZE, Codec
from wrapperkernel.wire.replay import SignatureWindow


class Reference:
    def __init__(self, capacity: int) -> None:
        self.order: deque[bytes] = deque()
        self.capacity = capacity

    def seen(self, signature: bytes) -> bool:
        return signature in self.order

    def remember(self, signature: bytes) -> None:
        self.order.append(signature)
        if len(self.order) > self.capacity:
            self.order.popleft()


def check_against_reference(window: SignatureWindow, arrivals: list[bytes]) -> None:
    reference = Reference(window.capacity)
    for signature in arrivals:
        expected = reference.seen(signature)
        assert window.seen(signature) is expected, (signature, list(reference.order))
        if not expected:
            reference.remember(signature)
            window.remember(signature)
        assert len(window) == len(reference.order)
    for signature in set(arrivals):  # every one still in the window, and only those
        assert window.seen(signature) is reference.seen(signature)


@settings(max_examples=300)
@given(capacity=st.integers(1, 9),
       arrivals=st.lists(st.integers(0, 40).map(lambda n: b"%064x" % n), max_size=200))
def test_it_remembers_exactly_the_last_capacity_signatures(capacity: int,
                                                           arrivals: list[bytes]) -> None:
    check_against_reference(SignatureWindow(capacity), arrivals)


class ForcedKeys(SignatureWindow):
    """Signature ``b"sig<n>"`` gets a key whose home is one of the last ``homes`` slots
    of the table: long runs of keys that share a home and wrap around its end."""

    def __init__(self, capacity: int, homes: int) -> None:
        super().__init__(capacity)
        self.homes = homes

    def key(self, signature: bytes) -> int:  # type: ignore[override]
        n = int(signature[3:])
        home = (self._mask - n % self.homes) & self._mask
        return (((n + 1) << 24 | home) << 1) | 1


@settings(max_examples=300)
@given(capacity=st.integers(1, 6), homes=st.integers(1, 3),
       arrivals=st.lists(st.integers(0, 30), max_size=150))
def test_keys_that_share_home_slots_are_found_and_forgotten_in_order(
        capacity: int, homes: int, arrivals: list[int]) -> None:
    window = ForcedKeys(capacity, homes)
    assert window._home(window.key(b"sig0")) == window._mask
    check_against_reference(window, [b"sig%d" % n for n in arrivals])


def test_a_full_window_of_real_signatures_forgets_the_oldest_first() -> None:
    window = SignatureWindow(1000)
    signatures = [os.urandom(32).hex().encode() for _ in range(3000)]
    for signature in signatures:
        assert not window.seen(signature)
        window.remember(signature)
    assert len(window) == 1000
    assert all(window.seen(s) for s in signatures[-1000:])
    assert not any(window.seen(s) for s in signatures[:-1000])


def test_the_codec_refuses_a_replay_within_the_sessions_bound_and_not_beyond(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_client.session import Session

    monkeypatch.setattr("wrapperkernel.wire.codec.DIGEST_HISTORY_SIZE", 4)
    codec = Codec(b"secret")
    client = Session(key=b"secret")
    sent = [client.serialize(client.msg("kernel_info_request", {})) for _ in range(6)]
    codec.parse(list(sent[0]))
    with pytest.raises(ValueError, match="Duplicate Signature"):
        codec.parse(list(sent[0]))
    for frames in sent[1:5]:
        codec.parse(list(frames))
    # Four newer ones came since: the first is forgotten (as the Session's history would
    # be), the last four are not.
    codec.parse(list(sent[0]))
    with pytest.raises(ValueError, match="Duplicate Signature"):
        codec.parse(list(sent[4]))
    assert DIGEST_HISTORY_SIZE == Session().digest_history_size


def test_memory_is_fixed_when_the_window_is_made() -> None:
    window = SignatureWindow(DIGEST_HISTORY_SIZE)
    assert window._table.nbytes == 8 * 2 * DIGEST_HISTORY_SIZE
    assert window._ring.nbytes == 8 * DIGEST_HISTORY_SIZE
    with pytest.raises(ValueError, match="at least 1"):
        SignatureWindow(0)
    assert replay.SignatureWindow.key(b"x") & 1 == 1
