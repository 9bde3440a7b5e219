"""The kernel<->worker framing: every frame type survives encode -> decode however the
byte stream is chunked, and anything that is not a valid frame stream is a
``FramingError`` (on ``feed`` or at ``eof``) — never another exception, never a wait.

Strategies are derived from the frame models' own field annotations, so a new frame
type or field is covered without touching this file.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
import strategies
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from wrapperkernel.workerlink import frames, framing
from wrapperkernel.workerlink.framing import (
    HEADER,
    MAX_FRAME_BYTES,
    FrameDecoder,
    FramingError,
    encode,
)

json_values = strategies.json_values()


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of a frame field's type (the types frames.py uses)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return json_values
    if annotation is type(None):
        return st.none()
    if annotation in (str, bool, int):
        return {str: st.text(), bool: st.booleans(), int: st.integers()}[annotation]
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (Union, types.UnionType):
        return st.one_of(*(strategy_for(arg) for arg in args))
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=4)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=4)
    if origin is tuple:
        return st.tuples(*(strategy_for(arg) for arg in args))
    if origin is Annotated:  # only Annotated[int, Field(ge=0)] so far
        bounds = [getattr(c, "ge", None) for m in args[1:] for c in m.metadata]
        assert args[0] is int and bounds == [0], annotation
        return st.integers(min_value=0)
    raise TypeError(f"no strategy for {annotation!r}: teach strategy_for this type")


def members(union: Any) -> list[type[frames.Frame]]:
    """The frame classes of an ``Annotated[Union[...], Field(discriminator=...)]``."""
    return list(get_args(get_args(union)[0]))


# A program request's fields depend on its op (checked at the boundary): only valid ones.
VALID_READS = st.builds(frames.AddressReadFrame, request_id=st.text(), address=st.text(),
                        timeout_s=st.none() | st.floats(min_value=1e-3, max_value=1e6))


def frame_strategy(model: type[frames.Frame]) -> st.SearchStrategy[frames.Frame]:
    if model is frames.AddressReadFrame:
        return VALID_READS
    fields = {name: strategy_for(field.annotation) for name, field in model.model_fields.items()}
    if issubclass(model, frames.BinaryFrame):
        # Binary buffers cross the link after the JSON (framing.py), in any chunking too.
        fields["buffers"] = st.lists(st.binary(max_size=64), max_size=3)
    return st.builds(model, **fields)


@pytest.mark.parametrize(("op", "fields"), [
    ("address_send", {}),
    ("address_send", {"address": None, "value": 1}),
    ("address_read", {"address": None}),
    ("address_read", {"address": "/a", "timeout_s": 0}),
    ("address_read", {"address": "/a", "timeout_s": True}),
    ("address_read", {"address": "/a", "timeout_s": "3"}),
    ("address_start", {"retry": 3}),
    ("address_start", {"retry": "yes"}),
    ("address_start", {"address": "/a"}),
    ("address_sync", {"value": 1}),
])
def test_a_program_request_that_does_not_fit_its_op_is_rejected_at_the_boundary(op, fields):
    body = json.dumps({"type": op, "request_id": "r1", **fields}).encode()
    with pytest.raises(FramingError, match=op):
        FrameDecoder(frames.WORKER_TO_KERNEL).parse(body)


DIRECTIONS = {
    "kernel-to-worker": (members(frames.KernelToWorker), frames.KERNEL_TO_WORKER),
    "worker-to-kernel": (members(frames.WorkerToKernel), frames.WORKER_TO_KERNEL),
}
ALL_MODELS = list(dict.fromkeys(model for models, _ in DIRECTIONS.values() for model in models))
# Frames only the worker may send (some, like relayed comm messages, go both ways).
WORKER_ONLY = [m for m in DIRECTIONS["worker-to-kernel"][0]
               if m not in DIRECTIONS["kernel-to-worker"][0]]


def frames_of(direction: str) -> st.SearchStrategy[frames.Frame]:
    return st.one_of(*(frame_strategy(model) for model in DIRECTIONS[direction][0]))


def decode_all(adapter: TypeAdapter[Any], chunks: list[bytes]) -> list[Any]:
    decoder: FrameDecoder[Any] = FrameDecoder(adapter)
    decoded: list[Any] = []
    for chunk in chunks:
        decoded.extend(decoder.feed(chunk))
    decoder.eof()
    return decoded


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


# ---------------------------------------------------------------------- the models


def test_every_frame_class_can_cross_the_channel() -> None:
    declared = {cls for cls in vars(frames).values()
                if isinstance(cls, type) and issubclass(cls, frames.Frame)
                and cls not in (frames.Frame, frames.BinaryFrame)}
    assert {c.__name__ for c in ALL_MODELS} == {c.__name__ for c in declared}
    for models, _ in DIRECTIONS.values():
        type_names = [model.model_fields["type"].default for model in models]
        assert len(type_names) == len(set(type_names))


# ---------------------------------------------------------------------- round trips


@settings(max_examples=200, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_frames_round_trip_through_any_chunking(direction: str, data: st.DataObject) -> None:
    sent = data.draw(st.lists(frames_of(direction), max_size=6), label="frames")
    stream = b"".join(encode(frame) for frame in sent)
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=8), label="cuts")

    received = decode_all(DIRECTIONS[direction][1], split(stream, cuts))

    assert received == sent
    assert [type(frame) for frame in received] == [type(frame) for frame in sent]


@settings(max_examples=100, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_byte_at_a_time_feeding_yields_each_frame_once_complete(
    direction: str, data: st.DataObject
) -> None:
    frame = data.draw(frames_of(direction))
    encoded = encode(frame)
    decoder: FrameDecoder[Any] = FrameDecoder(DIRECTIONS[direction][1])

    early = [decoder.feed(encoded[i : i + 1]) for i in range(len(encoded) - 1)]
    last = decoder.feed(encoded[-1:])

    assert all(got == [] for got in early)
    assert last == [frame]
    decoder.eof()


@settings(max_examples=100, deadline=None)
@given(frame=st.one_of(*(frame_strategy(model) for model in WORKER_ONLY)))
def test_a_worker_only_frame_is_rejected_by_the_worker_side(frame: frames.Frame) -> None:
    decoder: FrameDecoder[Any] = FrameDecoder(frames.KERNEL_TO_WORKER)

    with pytest.raises(FramingError):
        decoder.feed(encode(frame))


# ---------------------------------------------------------------------- bad streams


def accepted_exactly(adapter: TypeAdapter[Any], data: bytes) -> bool:
    """Decode ``data``; False on FramingError, else check it really was valid frames."""
    try:
        decoded = decode_all(adapter, [data])
    except FramingError:
        return False
    assert b"".join(encode(frame) for frame in decoded) == data
    return True


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_random_bytes_are_a_framing_error(direction: str, data: bytes) -> None:
    accepted = accepted_exactly(DIRECTIONS[direction][1], data)

    assert accepted is (data == b"")


bodies = st.one_of(
    st.binary(max_size=100),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(["type", "req", "code", "text", "name", "value"]),
                    json_values, max_size=4).map(lambda value: json.dumps(value).encode()),
)


@settings(max_examples=300, deadline=None)
@given(body=bodies)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_well_framed_body_that_is_not_a_frame_is_a_framing_error(
    direction: str, body: bytes
) -> None:
    adapter = DIRECTIONS[direction][1]
    decoder: FrameDecoder[Any] = FrameDecoder(adapter)
    try:
        decoded = decoder.feed(HEADER.pack(len(body)) + body)
    except FramingError:
        return
    # Accepted: then it must have been a valid frame all along.
    assert decoded == [adapter.validate_json(body)]


def test_known_bad_bodies_are_framing_errors() -> None:
    for body in (b"", b"{", b"null", b"[]", b"{}", b'{"type": "no_such_frame"}',
                 b'{"type": "shutdown", "extra": 1}', b"\xff\xfe\x00",
                 b'{"type": "execute", "req": 5, "code": "1"}'):
        decoder: FrameDecoder[Any] = FrameDecoder(frames.KERNEL_TO_WORKER)
        with pytest.raises(FramingError):
            decoder.feed(HEADER.pack(len(body)) + body)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_stream_cut_inside_a_frame_fails_at_eof(direction: str, data: st.DataObject) -> None:
    sent = data.draw(st.lists(frames_of(direction), min_size=1, max_size=4), label="frames")
    encoded = [encode(frame) for frame in sent]
    stream = b"".join(encoded)
    ends = [sum(len(e) for e in encoded[: i + 1]) for i in range(len(encoded))]
    cut = data.draw(st.integers(1, len(stream) - 1).filter(lambda c: c not in ends), label="cut")
    decoder: FrameDecoder[Any] = FrameDecoder(DIRECTIONS[direction][1])

    complete = decoder.feed(stream[:cut])

    assert complete == [frame for frame, end in zip(sent, ends, strict=True) if end <= cut]
    with pytest.raises(FramingError, match="stream ended inside a frame"):
        decoder.eof()


# ---------------------------------------------------------------------- size limits


@settings(max_examples=50, deadline=None)
@given(length=st.integers(MAX_FRAME_BYTES + 1, 2**32 - 1))
def test_an_oversized_length_header_is_rejected_at_once(length: int) -> None:
    decoder: FrameDecoder[Any] = FrameDecoder(frames.WORKER_TO_KERNEL)

    # Only the 4 header bytes: the decoder must not wait for a body that size.
    with pytest.raises(FramingError, match="over the"):
        decoder.feed(HEADER.pack(length))


def test_a_custom_limit_is_enforced_from_the_header() -> None:
    frame = frames.StreamFrame(req="r", name="stdout", text="x" * 100)
    decoder: FrameDecoder[Any] = FrameDecoder(frames.WORKER_TO_KERNEL, max_frame_bytes=64)

    with pytest.raises(FramingError):
        decoder.feed(encode(frame)[: HEADER.size])


def test_encode_refuses_a_frame_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(framing, "MAX_FRAME_BYTES", 64)

    with pytest.raises(FramingError, match="exceeds"):
        encode(frames.StreamFrame(req="r", name="stdout", text="x" * 100))


@pytest.mark.parametrize("adapter, frame", [
    (frames.WORKER_TO_KERNEL, frames.ReadyFrame(pid=1, ipython_version="9.18.1, a version")),
    (frames.KERNEL_TO_WORKER, frames.ExecuteFrame(req="a-request-id", code="print(1)")),
])
def test_decoded_strings_are_not_kept_in_the_parsers_cache(adapter: Any, frame: Any) -> None:
    """Frame values rarely repeat: pydantic's JSON string cache would hold thousands of
    them for nothing (docs/benchmarks.md, the memory soak). Two parses of the same frame
    give equal strings, not the one cached object."""
    decoder = FrameDecoder(adapter)
    first, second = (decoder.feed(encode(frame))[0] for _ in range(2))
    assert first == second == frame
    name = "ipython_version" if isinstance(frame, frames.ReadyFrame) else "req"
    assert getattr(first, name) is not getattr(second, name)
