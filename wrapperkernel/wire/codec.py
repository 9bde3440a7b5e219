"""Turns Jupyter messages into signed zmq frames and back, with less work per message than
``jupyter_client.Session``, for the same bytes on the wire.

The codec signs and checks with the connection file's key and scheme, as the Session
does, remembers as many of the signatures seen (a repeated one is refused; in fixed
memory: ``replay.py``), and writes headers with the Session's fields.
``jupyter_client.Session`` itself is imported only for what the fast path leaves to it:
a message of another protocol version, or without a date, to adapt; a content that is
not plain JSON (a date, bytes, NaN) to pack.
Importing it costs the kernel tornado, traitlets and dateutil (about 60 ms and 8 MB here),
so a kernel that never meets such a message never pays for it, and the first
``kernel_info_reply`` goes out sooner.

What the fast path leaves out, measured on the kernel's hot path (a relayed comm echo is
two messages in and three out, plus the hop to the worker):

- dates: the Session turns every header date into a ``datetime`` and back. The kernel never
  reads a date, so a received header keeps its ISO string, and a new header gets one
  written straight from the clock in the Session's format (UTC, ``Z``);
- re-encoding the parent: a reply or status carries the request's header as its parent,
  and that header arrived as JSON bytes, which are signed and sent again as they are
  (``Header.raw``);
- the ``default=`` hook and the retry with ``json_clean``: contents are encoded by the C
  encoder, and only one it refuses goes to the Session's own packer;
- a fresh HMAC per message is a copy of the keyed one, as in the Session.

Checks are the Session's: a missing, wrong or repeated signature is refused
(``ValueError``), as are too few frames (``TypeError``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from wrapperkernel.wire.replay import SignatureWindow

DELIMITER = b"<IDS|MSG>"
# jupyter_client's protocol version (``jupyter_client._version.protocol_version_info``).
PROTOCOL_VERSION = "5.4"
# As many signatures as jupyter_client.Session remembers (``digest_history_size``).
DIGEST_HISTORY_SIZE = 2 ** 16
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
    def __init__(self, key: bytes, signature_scheme: str = "hmac-sha256",
                 username: str = "kernel", session_id: str | None = None) -> None:
        self.key = key
        self.signature_scheme = signature_scheme
        self.username = username
        self.session_id = session_id or uuid.uuid4().hex
        if not signature_scheme.startswith("hmac-"):
            raise ValueError(f"signature scheme {signature_scheme!r} is not hmac-<hash>")
        digest = getattr(hashlib, signature_scheme.split("-", 1)[1], None)
        if digest is None:
            raise ValueError(f"hashlib has no {signature_scheme.split('-', 1)[1]!r}")
        self._auth = hmac.new(key, digestmod=digest) if key else None
        # The last 2^16, in fixed memory (replay.py).
        self._seen = SignatureWindow(DIGEST_HISTORY_SIZE)
        self._session: Any = None
        # A header is the Session's, field for field; only the id, type and date change.
        self._id_prefix = '{"msg_id":' + _dumps(f"{self.session_id}_{os.getpid()}_x")[:-1]
        self._middle = (f',"username":{_dumps(username)},'
                        f'"session":{_dumps(self.session_id)},"date":"')
        self._end = f'","version":{_dumps(PROTOCOL_VERSION)}}}'
        self._count = 0

    @property
    def session(self) -> Any:
        """A ``jupyter_client.Session`` with this codec's key and identity, made (and
        jupyter_client imported) the first time a message needs it."""
        if self._session is None:
            from wrapperkernel.wire.session import import_session_class

            self._session = import_session_class()(
                key=self.key, signature_scheme=self.signature_scheme,
                username=self.username, session=self.session_id)
        return self._session

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
            seen = self._seen
            if seen.seen(signature):
                raise ValueError(f"Duplicate Signature: {signature!r}")
            check = self._sign(header_raw, parent_raw, metadata_raw, content_raw)
            if not hmac.compare_digest(signature, check):
                raise ValueError(f"Invalid Signature: {signature!r}")
            seen.remember(signature)
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
        session = self.session
        auth, session.auth = session.auth, None  # checked above; not to be seen twice
        try:
            return session.deserialize(parts, content=True, copy=True)
        finally:
            session.auth = auth

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
