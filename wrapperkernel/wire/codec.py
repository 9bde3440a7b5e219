"""Jupyter messages to and from zmq frames, signed by ``jupyter_client.Session``.

The kernel's hot path: every request is decoded here once and every reply, status and
output message encoded here. ``Session.serialize`` / ``deserialize`` do the same job with
more generality than a kernel needs, and it shows in the round trip: they turn ISO dates
into ``datetime`` objects and back, and pack the parent header again for every message
sent in reply to one request. This codec keeps what the spec requires and nothing else:

- the HMAC signature is computed by the ``Session`` (``Session.sign``) over the four
  JSON frames, checked in constant time, and a signature seen before is rejected as a
  replay, as ``Session`` does;
- dates stay ISO 8601 strings; the header of an incoming request is kept as the bytes
  that arrived, and used as the parent header of everything sent in reply to it
  (byte-for-byte the header the client sent, as the spec asks).

Anything that cannot be decoded raises ``ValueError`` with a sentence saying why.
"""

from __future__ import annotations

import hmac
import json
import os
from collections import OrderedDict, deque
from datetime import datetime, timezone
from typing import Any

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.5"
EMPTY = b"{}"
# Signatures remembered to reject replays, and parent headers kept packed.
DIGESTS_KEPT = 65536
PARENTS_KEPT = 64


class WireCodec:
    def __init__(self, session: Any) -> None:
        self._session = session
        self._signed = session.auth is not None
        self._header_base = {"username": session.username, "session": session.session,
                             "version": PROTOCOL_VERSION}
        self._id_prefix = f"{session.session}_{os.getpid()}_"
        self._count = 0
        self._digests: set[bytes] = set()
        self._digest_order: deque[bytes] = deque()
        # msg_id -> (header dict, the bytes it arrived as)
        self._packed_parents: OrderedDict[str, tuple[dict[str, Any], bytes]] = OrderedDict()

    # ------------------------------------------------------------------ decoding

    def decode(self, frames: list[bytes]) -> tuple[list[bytes], dict[str, Any]]:
        """Routing identities and the message dict of one multipart message."""
        try:
            split = frames.index(DELIM)
        except ValueError:
            raise ValueError("no <IDS|MSG> delimiter in the message") from None
        idents, parts = frames[:split], frames[split + 1:]
        if len(parts) < 5:
            raise ValueError(f"a message needs at least 5 frames after the delimiter, "
                             f"got {len(parts)}")
        signature, header_bytes = parts[0], parts[1]
        if self._signed:
            self._check_signature(signature, parts[1:5])
        header = _load(header_bytes, "header")
        msg = {
            "header": header,
            "parent_header": _load(parts[2], "parent_header"),
            "metadata": _load(parts[3], "metadata"),
            "content": _load(parts[4], "content"),
            "buffers": parts[5:],
        }
        if isinstance(header, dict):
            msg["msg_id"] = header.get("msg_id")
            msg["msg_type"] = header.get("msg_type")
            msg_id = header.get("msg_id")
            if isinstance(msg_id, str):
                self._keep_parent(msg_id, header, header_bytes)
        return idents, msg

    def _check_signature(self, signature: bytes, signed: list[bytes]) -> None:
        if not signature:
            raise ValueError("unsigned message (the connection file has a key)")
        if signature in self._digests:
            raise ValueError("duplicate signature: a replayed message")
        if not hmac.compare_digest(signature, self._session.sign(signed)):
            raise ValueError("invalid signature")
        self._digests.add(signature)
        self._digest_order.append(signature)
        if len(self._digest_order) > DIGESTS_KEPT:
            self._digests.discard(self._digest_order.popleft())

    def _keep_parent(self, msg_id: str, header: dict[str, Any], packed: bytes) -> None:
        parents = self._packed_parents
        parents[msg_id] = (header, packed)
        if len(parents) > PARENTS_KEPT:
            parents.popitem(last=False)

    # ------------------------------------------------------------------ encoding

    def encode(
        self,
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any] | None,
        idents: list[bytes] | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: list[bytes] | None = None,
    ) -> list[bytes]:
        """The frames of a new message, signed, ready for ``send_multipart``."""
        self._count += 1
        header = dict(self._header_base)
        header["msg_id"] = self._id_prefix + str(self._count)
        header["msg_type"] = msg_type
        header["date"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        packed = [_dump(header), self._pack_parent(parent),
                  _dump(metadata) if metadata else EMPTY, _dump(content)]
        frames = list(idents or ())
        frames.append(DELIM)
        frames.append(self._session.sign(packed))
        frames.extend(packed)
        if buffers:
            frames.extend(buffers)
        return frames

    def _pack_parent(self, parent: dict[str, Any] | None) -> bytes:
        if not parent:
            return EMPTY
        msg_id = parent.get("msg_id")
        kept = self._packed_parents.get(msg_id) if isinstance(msg_id, str) else None
        if kept is not None and kept[0] is parent:
            return kept[1]
        return _dump(parent)


def _load(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, TypeError, RecursionError) as error:  # incl. UnicodeDecodeError
        raise ValueError(f"the {what} frame is not JSON: {error}") from None


def _dump(obj: Any) -> bytes:
    # As jupyter_client packs: UTF-8, no NaN (JSON has none), dates as ISO 8601.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False,
                      default=_json_default).encode("utf-8", "surrogateescape")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        if obj.tzinfo is None:
            obj = obj.astimezone()
        return obj.isoformat().replace("+00:00", "Z")
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raise TypeError("bytes cannot go into a JSON frame; send them as a buffer")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
