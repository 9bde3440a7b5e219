"""Byte framing for the kernel<->worker link (see docs/workerlink.md).

A frame on the byte stream is a 4-byte big-endian unsigned length followed by that many
bytes of UTF-8 JSON, which must validate as one of the models in ``frames``. A frame that
carries binary buffers (``frames.BinaryFrame``: the address channel's binary values) has
instead a body that starts with a zero byte (JSON never does), then the 4-byte length of
its JSON, the JSON, a 4-byte count of buffers and, for each, a 4-byte length and its
bytes: buffers cross the link as they are, never as base64. The decoder
is sans-I/O: feed it whatever bytes arrived, get whole frames back. It never blocks and
never guesses: an oversized length, bad JSON, an unknown frame type, or a stream that
ends inside a frame raises ``FramingError`` naming what was wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

from wrapperkernel.workerlink.frames import BinaryFrame, Frame

HEADER = struct.Struct("!I")
BINARY_MARK = b"\x00"
# Large enough for a big image or dataframe repr, small enough that random bytes read as a
# length are rejected at once instead of waiting for gigabytes that never come.
MAX_FRAME_BYTES = 256 * 1024 * 1024

T = TypeVar("T")


class FramingError(Exception):
    """The byte stream does not hold a valid frame; the link cannot be trusted further."""


def encode(frame: Frame) -> bytes:
    buffers = frame.buffers if isinstance(frame, BinaryFrame) else ()
    return encode_body(frame.model_dump_json().encode(), frame.type, buffers)


def encode_body(body: bytes, frame_type: str, buffers: Sequence[Any] = ()) -> bytes:
    """Frame JSON written by hand (the worker's batched values); the reader validates it.
    ``buffers`` (bytes-like) follow it as they are."""
    if buffers:
        parts = [BINARY_MARK, HEADER.pack(len(body)), body, HEADER.pack(len(buffers))]
        for buffer in buffers:
            parts += [HEADER.pack(memoryview(buffer).nbytes), buffer]
        body = b"".join(parts)
    if len(body) > MAX_FRAME_BYTES:
        raise FramingError(
            f"{frame_type!r} frame of {len(body)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
        )
    return HEADER.pack(len(body)) + body


class FrameDecoder(Generic[T]):
    """Turns a byte stream into validated frames of the union ``adapter`` describes."""

    def __init__(self, adapter: TypeAdapter[T], max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._adapter = adapter
        self._max = max_frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[T]:
        self._buffer += data
        frames: list[T] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max:
                raise FramingError(
                    f"frame header announces {length} bytes, over the {self._max}-byte limit"
                )
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            if body[:1] == BINARY_MARK:
                json_body, buffers = _split_binary(body)
                frames.append(_with_buffers(self.parse(json_body), buffers))
            else:
                frames.append(self.parse(body))
        return frames

    def parse(self, body: bytes) -> T:
        try:
            return self._adapter.validate_json(body)
        except ValidationError as error:
            raise FramingError(f"invalid frame: {_summary(error)}") from error

    def eof(self) -> None:
        """Call when the stream ended; raises if it ended inside a frame."""
        if self._buffer:
            expected: Any = "?"
            if len(self._buffer) >= HEADER.size:
                expected = HEADER.size + HEADER.unpack_from(self._buffer)[0]
            raise FramingError(
                f"stream ended inside a frame: {len(self._buffer)} of {expected} bytes arrived"
            )


def _split_binary(body: bytes) -> tuple[bytes, list[bytes]]:
    """The JSON and the buffers of a binary frame's body (see the module docstring)."""
    view = memoryview(body)
    try:
        at = 1
        (json_length,) = HEADER.unpack_from(view, at)
        at += HEADER.size
        json_body = bytes(view[at : at + json_length])
        at += json_length
        (count,) = HEADER.unpack_from(view, at)
        at += HEADER.size
        buffers = []
        for _ in range(count):
            (size,) = HEADER.unpack_from(view, at)
            at += HEADER.size
            if at + size > len(view):
                raise FramingError("a binary frame's buffer runs past the frame")
            buffers.append(bytes(view[at : at + size]))
            at += size
    except struct.error as error:
        raise FramingError(f"a binary frame ends early: {error}") from None
    if at != len(view) or len(json_body) != json_length:
        raise FramingError("a binary frame's parts do not add up to its length")
    return json_body, buffers


def _with_buffers(frame: Any, buffers: list[bytes]) -> Any:
    if not isinstance(frame, BinaryFrame):
        raise FramingError(f"a {frame.type!r} frame cannot carry buffers")
    return frame.model_copy(update={"buffers": buffers})


def _summary(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "frame"
    return f"{where}: {first['msg']} ({error.error_count()} error(s))"
