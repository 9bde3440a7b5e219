"""Binary values: taking bytes-like objects out of a value and putting them back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wrapperkernel import buffers


def test_nested_bytes_like_values_leave_the_json_and_come_back_in_order() -> None:
    array = np.arange(6, dtype=np.float64)
    value = {"a": [b"xy", 0, {"b": bytearray(b"\x00\x01")}], "c": memoryview(b"m"),
             "d": array, "e": (1, b"t"), "f": False, "g": ""}
    out, paths, bufs = buffers.extract(value)
    assert paths == [["a", 0], ["a", 2, "b"], ["c"], ["d"], ["e", 1]]
    assert [bytes(b) for b in bufs] == [b"xy", b"\x00\x01", b"m", array.tobytes(), b"t"]
    assert json.loads(json.dumps(out)) == {"a": [None, 0, {"b": None}], "c": None, "d": None,
                                           "e": [1, None], "f": False, "g": ""}
    back = buffers.insert(json.loads(json.dumps(out)), paths, [bytes(b) for b in bufs])
    assert bytes(back["a"][0]) == b"xy" and bytes(back["d"]) == array.tobytes()
    assert isinstance(back["c"], memoryview)
    # The value given is unchanged.
    assert value["a"][0] == b"xy" and value["e"] == (1, b"t")


def test_a_contiguous_buffer_is_not_copied_and_a_strided_one_is_in_c_order() -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    _, _, (view,) = buffers.extract(array)
    assert view.obj is array and view.nbytes == 48
    strided = array[:, ::2]
    _, _, (copied,) = buffers.extract(strided)
    assert bytes(copied) == np.ascontiguousarray(strided).tobytes()


def test_a_value_without_buffers_is_returned_as_it_is() -> None:
    value = {"a": [1, 2, {"b": "c"}]}
    out, paths, bufs = buffers.extract(value)
    assert out is value and paths == [] and bufs == []


def test_a_buffer_as_the_whole_value_has_the_empty_path() -> None:
    out, paths, bufs = buffers.extract(b"whole")
    assert (out, paths) == (None, [[]])
    assert bytes(buffers.insert(None, paths, bufs)) == b"whole"


def test_size_counts_json_and_buffer_bytes() -> None:
    assert buffers.size({"v": b"12345"}) == len('{"v":null}') + 5
    with pytest.raises(TypeError, match="not JSON and not bytes-like"):
        buffers.size({"v": object()})


@pytest.mark.parametrize(("value", "paths", "count"), [
    ({"a": None}, [["b"]], 1),
    ([None], [[1]], 1),
    ([None], [[True]], 1),
    ({"a": None}, [["a"]], 2),
    ({"a": 1}, [["a", "x"]], 1),
])
def test_paths_that_do_not_fit_the_value_are_refused(value, paths, count) -> None:
    with pytest.raises(ValueError):
        buffers.insert(value, paths, [b"x"] * count)


@given(st.recursive(st.none() | st.integers() | st.text() | st.binary(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=10))
def test_extract_then_insert_gives_the_value_back(value) -> None:
    out, paths, bufs = buffers.extract(value)
    assert buffers.valid_paths(paths)
    back = buffers.insert(json.loads(json.dumps(out)), paths, [bytes(b) for b in bufs])

    def plain(x):
        if isinstance(x, (bytes, memoryview)):
            return ("bytes", bytes(x))
        if isinstance(x, list):
            return [plain(i) for i in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x

    assert plain(back) == plain(value)
