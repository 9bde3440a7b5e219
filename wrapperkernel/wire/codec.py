"""Turns Jupyter messages into signed zmq frames and back, with less work per message than
``Session.serialize`` / ``Session.deserialize``, for the same bytes on the wire.

The kernel's ``jupyter_client.Session`` stays the authority: its key, signature scheme,
session id, user name, header fields and digest history are the ones used here, and any
message the fast path does not cover goes through the Session itself. What the fast path
leaves out, measured on the kernel's hot path (a relayed comm echo is two messages in and
three out, plus the hop to the worker):

- dates: the Session turns every header date into a ``datetime`` and back. The kernel never
  reads a date, so a received header keeps its ISO string, and a new header gets one
  written straight from the clock in the Session's format (UTC, ``Z``);
- re-encoding the parent: a reply or status carries the request's header as its parent,
  and that header arrived as JSON bytes, which are signed and sent again as they are
  (``Header.raw``);
- the ``default=`` hook and the retry with ``json_clean``: contents are encoded by the C
  encoder, and only one it refuses (not JSON, NaN) goes to the Session's own packer;
- a fresh HMAC per message is a copy of the keyed one, as in the Session.

Checks are the Session's: a missing, wrong or repeated signature is refused
(``ValueError``), as are too few frames (``TypeError``).
"""

from __future__ import annotations

import hmac
import json
import time
from datetime import datetime, timezone
from typing import Any

DELIMITER = b"<IDS|MSG>"
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_loads = json.loads
_EMPTY = b"{}"


class Header(dict):
    """A received header, with the JSON bytes it arrived as (``raw``), sent again as
    they are when a message names it as its parent. Any change drops ``raw``."""

    __slots__ = ("raw",)

    def __init__(self, fields: Any = (), raw: bytes | None = None) -> None:
        super().__init__(fields)
        self.raw = raw

    def __setitem__(self, key: str, value: Any) -> None:
        self.raw = None
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.raw = None
        super().__delitem__(key)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.raw = None
        super().update(*args, **kwargs)

    def pop(self, *args: Any) -> Any:  # type: ignore[override]
        self.raw = None
        return super().pop(*args)

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.raw = None
        return super().setdefault(key, default)

    def clear(self) -> None:
        self.raw = None
        super().clear()

    def popitem(self) -> Any:
        self.raw = None
        return super().popitem()


class Codec:
    def __init__(self, session: Any) -> None:
        self.session = session
        self._auth = session.auth  # a keyed HMAC, or None when the key is empty
        # A header is the Session's, field for field; only the id, type and date change.
        template = session.msg_header("status")
        self._id_prefix = '{"msg_id":' + _dumps(template["msg_id"].rsplit("_", 1)[0] + "_x")[:-1]
        self._middle = (f',"username":{_dumps(template["username"])},'
                        f'"session":{_dumps(template["session"])},"date":"')
        self._end = f'","version":{_dumps(template["version"])}}}'
        self._count = 0

    # ------------------------------------------------------------------ receiving

    def parse(self, frames: list[bytes]) -> tuple[list[bytes], dict[str, Any]]:
        """``(idents, msg)`` of one received message; raises as ``Session.deserialize``."""
        try:
            at = frames.index(DELIMITER)
        except ValueError:
            raise ValueError("DELIM not in msg_list") from None
        idents, parts = frames[:at], frames[at + 1:]
        if len(parts) < 5:
            raise TypeError(f"malformed message, must have at least 5 elements, not {len(parts)}")
        signature, header_raw, parent_raw, metadata_raw, content_raw = parts[:5]
        if self._auth is not None:
            if not signature:
                raise ValueError("Unsigned Message")
            digests = self.session.digest_history
            if signature in digests:
                raise ValueError(f"Duplicate Signature: {signature!r}")
            check = self._sign(header_raw, parent_raw, metadata_raw, content_raw)
            if not hmac.compare_digest(signature, check):
                raise ValueError(f"Invalid Signature: {signature!r}")
            self.session._add_digest(signature)  # the Session's bounded history
        header = _loads(header_raw)
        version = header.get("version") if isinstance(header, dict) else None
        if not (isinstance(version, str) and version.startswith("5.") and "date" in header):
            # Another protocol version, or no date: the Session adapts it (the signature
            # was checked above; the Session must not see it twice).
            return idents, self._parse_slowly(parts)
        parent = _loads(parent_raw)
        msg = {
            "header": Header(header, header_raw),
            "msg_id": header.get("msg_id"),
            "msg_type": header.get("msg_type"),
            "parent_header": parent,
            "metadata": _loads(metadata_raw),
            "content": _loads(content_raw),
            "buffers": [memoryview(b) for b in parts[5:]],
        }
        return idents, msg

    def _parse_slowly(self, parts: list[bytes]) -> dict[str, Any]:
        auth, self.session.auth = self.session.auth, None
        try:
            return self.session.deserialize(parts, content=True, copy=True)
        finally:
            self.session.auth = auth

    # ------------------------------------------------------------------ sending

    def frames(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None,
               idents: list[bytes] | None = None,
               metadata: dict[str, Any] | None = None) -> list[bytes]:
        """The signed frames of a new message (idents first, buffers not included)."""
        self._count += 1
        header = (f'{self._id_prefix}{self._count}","msg_type":{_dumps(msg_type)}'
                  f'{self._middle}{_now()}{self._end}').encode()
        if not parent:
            parent_raw = _EMPTY
        else:
            parent_raw = getattr(parent, "raw", None) or self._pack(parent)
        metadata_raw = self._pack(metadata) if metadata else _EMPTY
        content_raw = self._pack(content)
        signature = (self._sign(header, parent_raw, metadata_raw, content_raw)
                     if self._auth is not None else b"")
        return [*(idents or ()), DELIMITER, signature, header, parent_raw, metadata_raw,
                content_raw]

    def _pack(self, value: Any) -> bytes:
        try:
            return _dumps(value).encode("utf8", errors="surrogateescape")
        except (TypeError, ValueError):
            # Not plain JSON (a date, bytes, NaN...): the Session's packer decides.
            return self.session.pack(value)

    def _sign(self, *parts: bytes) -> bytes:
        mac = self._auth.copy()  # type: ignore[union-attr]
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def _now() -> str:
    """Now in UTC, as the Session writes a header's date (formatting the date and time
    once per second: ``strftime`` costs more than the rest of a status message)."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = [second, datetime.fromtimestamp(second, timezone.utc)
                      .strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{int((now - second) * 1_000_000):06d}Z"
