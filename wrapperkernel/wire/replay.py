"""The signatures of the last messages received, so that a replayed message is refused.

``jupyter_client.Session`` keeps up to 2^16 signatures in a set of bytes and culls a
tenth of them at random when it is full. Filled, that is about 9 MiB, and it fills at
the rate messages arrive, so a kernel's memory grows for as long as it serves: the
codec's first history, a dict of the same bytes, grew by 5.5 MiB over 40,000
``kernel_info_request``s, and by 0.38 MiB a minute in the chaos soak (docs/performance.md).

``SignatureWindow`` remembers exactly the last ``capacity`` signatures in two fixed
tables: an open-addressing hash table of 64-bit keys with twice as many slots as
signatures, and a ring of the same keys in arrival order, which says which one to forget
when a new one comes. For 2^16 signatures that is 1.5 MiB at most, allocated once as
anonymous memory, whose pages the system gives as they are first written. Keys land in
the table at random, so its 1 MiB is all there within the first few thousand messages;
the ring is written in order, a 4 KiB page per 512 messages, until its 0.5 MiB is full
after 2^16 messages. Nothing grows after that.

A key is the process's own ``hash()`` of the signature bytes (SipHash, with a key chosen
at random when the process starts), so the key of an attacker's signature cannot be
predicted. Two different signatures share a key with a chance of about 2^-47 per
message when the window is full; the newer one is then refused as a repeat. Zero marks
an empty slot, so every key has its lowest bit set.
"""

from __future__ import annotations

import mmap

_KEY_MASK = 0xFFFF_FFFF_FFFF_FFFF


def _table(slots: int) -> memoryview:
    return memoryview(mmap.mmap(-1, 8 * slots)).cast("Q")


class SignatureWindow:
    """``seen(signature)``: was it among the last ``capacity`` ``remember``-ed ones."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        slots = 2
        while slots < 2 * capacity:
            slots *= 2
        self.capacity = capacity
        self._mask = slots - 1
        self._table = _table(slots)
        self._ring = _table(capacity)
        self._count = 0  # signatures remembered, ever

    def __len__(self) -> int:
        return min(self._count, self.capacity)

    @staticmethod
    def key(signature: bytes) -> int:
        return (hash(signature) & _KEY_MASK) | 1

    def _home(self, key: int) -> int:
        return (key >> 1) & self._mask

    def seen(self, signature: bytes) -> bool:
        key = self.key(signature)
        table, mask = self._table, self._mask
        i = (key >> 1) & mask  # _home(key)
        slot = table[i]
        while slot:
            if slot == key:
                return True
            i = (i + 1) & mask
            slot = table[i]
        return False

    def remember(self, signature: bytes) -> None:
        """Add a signature that was not ``seen``; the oldest is forgotten when full."""
        key = self.key(signature)
        count, capacity = self._count, self.capacity
        position = count % capacity
        if count >= capacity:
            self._forget(self._ring[position])
        table, mask = self._table, self._mask
        i = self._home(key)
        slot = table[i]
        while slot:
            if slot == key:
                break  # a key shared by two signatures: kept once, forgotten once
            i = (i + 1) & mask
            slot = table[i]
        table[i] = key
        self._ring[position] = key
        self._count = count + 1

    def _forget(self, key: int) -> None:
        """Remove ``key`` and close the gap (backward-shift deletion): every key after it
        in its run moves back if its own home slot allows, so lookups never stop early."""
        table, mask = self._table, self._mask
        i = self._home(key)
        while table[i] != key:
            if table[i] == 0:
                return  # shared with a newer signature and forgotten already
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            moving = table[j]
            if moving == 0:
                break
            home = self._home(moving)
            # ``moving`` may fill the gap at i unless its home lies cyclically in (i, j].
            if (home <= i < j) or (i < j < home) or (j < home <= i):
                table[i] = moving
                i = j
        table[i] = 0
