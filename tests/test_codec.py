"""The wire codec against ``jupyter_client.Session``: each reads what the other writes.

A client decodes the kernel's messages with ``Session.deserialize`` and the kernel decodes
the client's with ``WireCodec.decode``, so both directions are checked against the real
thing, with the signature, replays, garbage and Hypothesis-generated contents.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jupyter_client.session import Session

from wrapperkernel.wire.codec import DELIM, PROTOCOL_VERSION, WireCodec

KEY = b"a-secret-key"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def pair() -> tuple[Session, WireCodec, Session]:
    """A client session, the kernel's codec and the session the codec signs with."""
    client = Session(key=KEY)
    kernel_session = Session(key=KEY, username="kernel")
    return client, WireCodec(kernel_session), kernel_session


def test_a_client_message_decodes_with_routing_identities() -> None:
    client, codec, _ = pair()
    msg = client.msg("execute_request", {"code": "1 + 1", "silent": False})
    frames = client.serialize(msg, ident=[b"client-1"])

    idents, decoded = codec.decode(frames)

    assert idents == [b"client-1"]
    for field in ("msg_id", "msg_type", "session", "username", "version"):
        assert decoded["header"][field] == msg["header"][field]
    assert decoded["msg_type"] == "execute_request"
    assert decoded["content"] == {"code": "1 + 1", "silent": False}
    assert isinstance(decoded["header"]["date"], str)  # dates stay ISO strings
    assert decoded["buffers"] == []


def test_a_kernel_message_decodes_with_jupyter_client() -> None:
    client, codec, kernel_session = pair()
    request = client.msg("kernel_info_request", {})
    _, decoded_request = codec.decode(client.serialize(request, ident=[b"c"]))

    frames = codec.encode("kernel_info_reply", {"status": "ok"}, decoded_request["header"],
                          idents=[b"c"], metadata={"m": 1}, buffers=[b"\x00\x01"])
    idents, parts = client.feed_identities(frames)
    reply = client.deserialize(parts)

    assert idents == [b"c"]
    assert reply["msg_type"] == "kernel_info_reply"
    assert reply["content"] == {"status": "ok"}
    assert reply["metadata"] == {"m": 1}
    assert reply["parent_header"]["msg_id"] == request["header"]["msg_id"]
    assert reply["header"]["version"] == PROTOCOL_VERSION
    assert reply["header"]["session"] == kernel_session.session
    assert reply["header"]["username"] == "kernel"
    assert isinstance(reply["header"]["date"], datetime)
    assert reply["header"]["date"].utcoffset().total_seconds() == 0
    assert [bytes(b) for b in reply["buffers"]] == [b"\x00\x01"]


def test_the_parent_header_is_sent_as_the_bytes_that_arrived() -> None:
    client, codec, _ = pair()
    frames = client.serialize(client.msg("execute_request", {"code": ""}), ident=[b"c"])
    arrived_header = frames[frames.index(DELIM) + 2]
    _, request = codec.decode(frames)

    busy = codec.encode("status", {"execution_state": "busy"}, request["header"])
    idle = codec.encode("status", {"execution_state": "idle"}, request["header"])

    parent_frame = busy.index(DELIM) + 3
    assert busy[parent_frame] == arrived_header
    assert idle[parent_frame] == arrived_header
    # A different dict with the same msg_id is packed afresh, not taken from the cache.
    changed = dict(request["header"], msg_type="other")
    other = codec.encode("status", {"execution_state": "idle"}, changed)
    assert json.loads(other[parent_frame])["msg_type"] == "other"


def test_a_parent_header_of_any_shape_is_packed() -> None:
    _, codec, _ = pair()
    for parent in ({"msg_id": {"not": "a string"}}, {"msg_id": ["x"]}, {"no_id": 1}):
        frames = codec.encode("status", {"execution_state": "idle"}, parent)
        assert json.loads(frames[frames.index(DELIM) + 3]) == parent


def test_message_ids_are_unique() -> None:
    _, codec, _ = pair()
    ids = {json.loads(codec.encode("status", {}, None)[2])["msg_id"] for _ in range(100)}
    assert len(ids) == 100


@pytest.mark.parametrize("tamper, problem", [
    (lambda f: f[:1] + [b"0" * 64] + f[2:], "invalid signature"),
    (lambda f: f[:1] + [b""] + f[2:], "unsigned"),
    (lambda f: f[1:], "delimiter"),
    (lambda f: f[:4], "at least 5 frames"),
])
def test_bad_messages_raise_value_error_saying_why(tamper, problem) -> None:  # type: ignore[no-untyped-def]
    client, codec, _ = pair()
    frames = client.serialize(client.msg("kernel_info_request", {}))  # [DELIM, sig, ...]
    assert frames[0] == DELIM

    with pytest.raises(ValueError, match=problem):
        codec.decode(tamper(frames))


def test_a_replayed_message_is_rejected() -> None:
    client, codec, _ = pair()
    frames = client.serialize(client.msg("kernel_info_request", {}))
    codec.decode(frames)

    with pytest.raises(ValueError, match="duplicate signature"):
        codec.decode(frames)


def test_frames_that_are_not_json_raise_value_error() -> None:
    _, codec, kernel_session = pair()
    for bad in (b"{not json", b"\xff\xfe", b"[" * 100_000):
        parts = [b"{}", b"{}", b"{}", bad]
        frames = [DELIM, kernel_session.sign(parts), *parts]
        with pytest.raises(ValueError, match="content frame is not JSON"):
            codec.decode(frames)


def test_without_a_key_nothing_is_signed_or_checked() -> None:
    client, codec = Session(key=b""), WireCodec(Session(key=b""))
    frames = client.serialize(client.msg("kernel_info_request", {}))
    _, msg = codec.decode(frames)
    assert msg["msg_type"] == "kernel_info_request"
    assert codec.encode("status", {}, None)[1] == b""


def test_bytes_in_content_are_refused_with_a_clear_error() -> None:
    _, codec, _ = pair()
    with pytest.raises(TypeError, match="buffer"):
        codec.encode("comm_msg", {"data": b"raw"}, None)


@settings(max_examples=200, deadline=None)
@given(content=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
       metadata=st.dictionaries(st.text(max_size=10), json_values, max_size=3))
def test_any_json_content_round_trips_both_ways(content, metadata) -> None:  # type: ignore[no-untyped-def]
    client, codec, _ = pair()

    frames = codec.encode("comm_msg", content, None, metadata=metadata)
    _, parts = client.feed_identities(frames)
    received = client.deserialize(parts)
    assert received["content"] == content
    assert received["metadata"] == metadata

    _, decoded = codec.decode(client.serialize(client.msg("comm_msg", content, metadata=metadata)))
    assert decoded["content"] == content
    assert decoded["metadata"] == metadata
