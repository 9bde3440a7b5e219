"""The Debug Adapter Protocol's byte framing: ``Content-Length: N\\r\\n\\r\\n`` + N bytes of JSON.

This is how debugpy's pydevd speaks on its socket (DAP "Base protocol"). The decoder is
sans-I/O: bytes in, whole messages out, in any chunking. It never touches a socket.
"""

from __future__ import annotations

import json
from typing import Any

HEADER_END = b"\r\n\r\n"
# A header block longer than this is not a DAP peer talking.
MAX_HEADER_BYTES = 1024


class DapFramingError(ValueError):
    """The peer sent bytes that are not DAP framing: the connection cannot go on."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class DapDecoder:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._length: int | None = None

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages: list[dict[str, Any]] = []
        while True:
            if self._length is None:
                end = self._buffer.find(HEADER_END)
                if end < 0:
                    if len(self._buffer) > MAX_HEADER_BYTES:
                        raise DapFramingError("no end of DAP header in the first "
                                              f"{MAX_HEADER_BYTES} bytes")
                    return messages
                self._length = _content_length(bytes(self._buffer[:end]))
                del self._buffer[:end + len(HEADER_END)]
            if len(self._buffer) < self._length:
                return messages
            body = bytes(self._buffer[:self._length])
            del self._buffer[:self._length]
            self._length = None
            try:
                message = json.loads(body)
            except ValueError as error:
                raise DapFramingError(f"a DAP body is not JSON: {error}") from error
            if not isinstance(message, dict):
                raise DapFramingError("a DAP message is not a JSON object")
            messages.append(message)


def _content_length(header: bytes) -> int:
    for line in header.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                break
            if length >= 0:
                return length
    raise DapFramingError(f"DAP header without a valid Content-Length: {header[:200]!r}")
