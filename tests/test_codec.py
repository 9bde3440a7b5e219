"""The kernel's message codec (``wire/codec.py``) against ``jupyter_client.Session``: what
one writes the other reads, signatures are checked the same way, and a reply's parent is
the request's header byte for byte."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jupyter_client.session import Session

from wrapperkernel.wire.codec import Codec, Header

KEY = b"a-test-key"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def kernel_and_client(key: bytes = KEY) -> tuple[Codec, Session]:
    return Codec(key=key, username="kernel-user"), Session(key=key)


def from_client(client: Session, msg_type: str, content: dict, **kw) -> list[bytes]:
    return list(client.serialize(client.msg(msg_type, content, **kw), ident=[b"peer"]))


def read_as_client(client: Session, frames: list[bytes]) -> dict:
    _, parts = client.feed_identities(frames)
    return client.deserialize(parts)


@settings(max_examples=60, deadline=None)
@given(content=st.dictionaries(st.text(), json_values, max_size=5),
       metadata=st.dictionaries(st.text(), json_values, max_size=3))
def test_what_a_client_sends_is_read_as_the_session_reads_it(content, metadata) -> None:
    codec, client = kernel_and_client()
    frames = from_client(client, "comm_msg", content, metadata=metadata)
    idents, msg = codec.parse(frames)
    expected = Session(key=KEY).deserialize(client.feed_identities(frames)[1])
    assert idents == [b"peer"]
    assert msg["content"] == expected["content"] == content
    assert msg["metadata"] == expected["metadata"]
    assert msg["msg_id"] == expected["msg_id"]
    assert msg["header"]["msg_type"] == "comm_msg"
    # The date stays the string the client wrote; the Session would make a datetime.
    assert datetime.fromisoformat(msg["header"]["date"].replace("Z", "+00:00")) == \
        expected["header"]["date"]


@settings(max_examples=60, deadline=None)
@given(content=st.dictionaries(st.text(), json_values, max_size=5))
def test_what_the_kernel_sends_is_read_by_a_client(content) -> None:
    codec, client = kernel_and_client()
    _, request = codec.parse(from_client(client, "execute_request", {"code": "1"}))
    frames = codec.frames("execute_reply", content, request["header"], [b"peer"],
                          {"started": "now"})
    assert frames[0] == b"peer"
    msg = read_as_client(client, frames)
    assert msg["content"] == content
    assert msg["metadata"] == {"started": "now"}
    assert msg["msg_type"] == "execute_reply"
    assert msg["parent_header"]["msg_id"] == request["msg_id"]
    header = msg["header"]
    assert header["session"] == codec.session_id
    assert header["username"] == "kernel-user"
    # The header the Session itself would write, field for field.
    expected = Session(key=KEY, session=codec.session_id, username="kernel-user").msg_header("x")
    assert list(header) == list(expected)
    assert header["version"] == expected["version"]
    assert abs((datetime.now(timezone.utc) - header["date"]).total_seconds()) < 60


def test_a_reply_carries_the_request_header_as_it_arrived() -> None:
    codec, client = kernel_and_client()
    frames = from_client(client, "kernel_info_request", {})
    _, request = codec.parse(frames)
    header_bytes = frames[frames.index(b"<IDS|MSG>") + 2]
    reply = codec.frames("kernel_info_reply", {}, request["header"])
    assert reply[reply.index(b"<IDS|MSG>") + 3] == header_bytes


def test_a_changed_header_is_sent_as_it_is_now() -> None:
    codec, client = kernel_and_client()
    _, request = codec.parse(from_client(client, "execute_request", {}))
    header = request["header"]
    assert isinstance(header, Header) and header.raw is not None
    header["subshell_id"] = "abc"
    assert header.raw is None
    msg = read_as_client(client, codec.frames("status", {"execution_state": "busy"}, header))
    assert msg["parent_header"]["subshell_id"] == "abc"


@pytest.mark.parametrize("change", ["signature", "content", "unsigned"])
def test_a_bad_signature_is_refused(change: str) -> None:
    codec, client = kernel_and_client()
    frames = from_client(client, "execute_request", {"code": "1"})
    at = frames.index(b"<IDS|MSG>")
    if change == "signature":
        frames[at + 1] = b"0" * len(frames[at + 1])
    elif change == "content":
        frames[at + 5] = b'{"code": "2"}'
    else:
        frames[at + 1] = b""
    with pytest.raises(ValueError, match="Signature|Unsigned"):
        codec.parse(frames)


def test_a_message_seen_twice_is_refused_the_second_time() -> None:
    codec, client = kernel_and_client()
    frames = from_client(client, "execute_request", {"code": "1"})
    codec.parse(list(frames))
    with pytest.raises(ValueError, match="Duplicate Signature"):
        codec.parse(list(frames))


def test_a_message_signed_with_another_key_is_refused() -> None:
    codec, _ = kernel_and_client()
    with pytest.raises(ValueError, match="Invalid Signature"):
        codec.parse(from_client(Session(key=b"other"), "execute_request", {}))


def test_too_few_frames_and_no_delimiter_are_refused() -> None:
    codec, client = kernel_and_client()
    frames = from_client(client, "execute_request", {})
    with pytest.raises(TypeError, match="at least 5"):
        codec.parse(frames[:4])
    with pytest.raises(ValueError, match="DELIM"):
        codec.parse([b"peer", b"x", b"{}"])


def test_without_a_key_nothing_is_signed_and_anything_is_read() -> None:
    codec, client = kernel_and_client(key=b"")
    _, msg = codec.parse(from_client(client, "execute_request", {"code": "1"}))
    assert msg["content"] == {"code": "1"}
    frames = codec.frames("status", {"execution_state": "idle"}, msg["header"])
    assert frames[frames.index(b"<IDS|MSG>") + 1] == b""
    assert read_as_client(client, frames)["content"] == {"execution_state": "idle"}


def test_an_older_protocol_version_is_adapted_by_the_session() -> None:
    codec, client = kernel_and_client()
    header = client.msg_header("execute_request")
    header["version"] = "4.1"
    frames = from_client(client, "execute_request", {"code": "1"}, header=header)
    _, msg = codec.parse(frames)
    # jupyter_client's 4 -> 5 adapter renames the fields it knows; the message is read.
    assert msg["header"]["version"].startswith("5")
    assert msg["content"]["code"] == "1"


def test_a_header_without_a_date_gets_one() -> None:
    codec, client = kernel_and_client()
    header = client.msg_header("execute_request")
    del header["date"]
    _, msg = codec.parse(from_client(client, "execute_request", {}, header=header))
    assert "date" in msg["header"]


def test_content_that_is_not_plain_json_goes_through_the_session_packer() -> None:
    codec, client = kernel_and_client()
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    value = {"when": when, "x": math.nan}
    with pytest.warns(UserWarning):  # jupyter_client warns that NaN is not JSON
        frames = codec.frames("display_data", value, None)
        by_session = client.pack(value)
    sent = frames[frames.index(b"<IDS|MSG>") + 5]
    assert sent == by_session
    assert json.loads(sent)["when"].startswith("2026-01-02T03:04:05")


def test_every_message_gets_its_own_id() -> None:
    codec, client = kernel_and_client()
    ids = {read_as_client(client, codec.frames("status", {}, None))["msg_id"]
           for _ in range(100)}
    assert len(ids) == 100


def test_the_kernel_never_imports_jupyter_client_for_plain_messages() -> None:
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from jupyter_client.session import Session\n"
        "client = Session(key=b'k')\n"
        "frames = list(client.serialize(client.msg('execute_request', {'code': '1'}), ident=[b'p']))\n"
        "for name in [m for m in sys.modules if m.startswith(('jupyter_client', 'tornado', 'traitlets', 'dateutil'))]:\n"
        "    del sys.modules[name]\n"
        "from wrapperkernel.wire.codec import Codec\n"
        "codec = Codec(key=b'k')\n"
        "_, msg = codec.parse(frames)\n"
        "codec.frames('execute_reply', {'status': 'ok'}, msg['header'], [b'p'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jupyter_client', 'tornado', 'traitlets', 'dateutil'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_signature_scheme_hashlib_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="no 'md17'"):
        Codec(key=KEY, signature_scheme="hmac-md17")
