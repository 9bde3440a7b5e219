"""What the page sends on the address channel, parsed: typed items, or what is wrong.

Owns the reading of page payloads (DESIGN.md, "The address channel"): the ``data`` of a
``comm_msg`` (one ``{address, value | read_request | read_error}`` item, or
``{"batch": [item, ...]}``), the ``seq`` the page acknowledges with ``#ack``, and the
kernel id of a ``comm_open``; and the short preview of a payload that goes in a log line.

Must never: raise on anything the page sent (bad input is the peer's mistake: it comes
back as a problem text, or as None, for the core to log), hold state, do I/O, or import
another wrapperkernel module. What an item means is the core's business
(``address.core``); this module only says what it is.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any, TypeAlias

from wrapperkernel.buffers import insert as insert_buffers
from wrapperkernel.buffers import valid_paths


@dataclass(frozen=True, slots=True)
class PageValue:
    address: str
    value: Any


@dataclass(frozen=True, slots=True)
class PageReadRequest:
    address: str


@dataclass(frozen=True, slots=True)
class PageReadError:
    address: str
    error: str


PageItem: TypeAlias = "PageValue | PageReadRequest | PageReadError"
_ITEM_KINDS = ("value", "read_request", "read_error")

# Log lines quote what the page sent, cut short: a page can send megabytes.
_preview = reprlib.Repr()
_preview.maxlevel = 3
_preview.maxstring = 80
_preview.maxother = 80


def preview(value: object) -> str:
    """A short ``repr`` of a page payload, for a log line."""
    return _preview.repr(value)


def _parse_item(raw: object) -> PageItem | str:
    """One ``{address, value | read_request | read_error}`` item, or what is wrong with it."""
    if not isinstance(raw, dict):
        return f"expected an object, got {type(raw).__name__}"
    address = raw.get("address")
    if not isinstance(address, str):
        return "missing or non-string 'address'"
    kinds = [kind for kind in _ITEM_KINDS if kind in raw]
    if len(kinds) != 1:
        return f"expected exactly one of 'value', 'read_request', 'read_error', got {kinds}"
    if kinds[0] == "value":
        return PageValue(address, raw["value"])  # null, 0, false and "" are values too
    if kinds[0] == "read_request":
        if raw["read_request"] is not True:
            return "'read_request' must be true"
        return PageReadRequest(address)
    if not isinstance(raw["read_error"], str):
        return "'read_error' must be a string"
    return PageReadError(address, raw["read_error"])


def parse_page_data(data: object) -> tuple[list[PageItem], list[str]]:
    """Items of a comm_msg in order, plus one problem text per item that was rejected."""
    if isinstance(data, dict) and "batch" in data:
        batch = data["batch"]
        if not isinstance(batch, list):
            return [], [f"'batch' must be a list, got {type(batch).__name__}"]
        items: list[PageItem] = []
        problems: list[str] = []
        for index, raw in enumerate(batch):
            parsed = _parse_item(raw)
            if isinstance(parsed, str):
                problems.append(f"batch item {index}: {parsed}: {preview(raw)}")
            else:
                items.append(parsed)
        return items, problems
    parsed = _parse_item(data)
    if isinstance(parsed, str):
        return [], [f"{parsed}: {preview(data)}"]
    return [parsed], []


def parse_ack_seq(value: object) -> int | None:
    """The ``seq`` an ``#ack`` acknowledges up to, or None if ``value`` is not a seq (a
    seq is an int >= 0; JSON's ``true`` is not one, though Python counts bool as int)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def kernel_id_of(data: object) -> object:
    """The ``kernel_id`` a comm_open's data names (whatever its type), or None."""
    return data.get("kernel_id") if isinstance(data, dict) else None


def with_buffers(data: Any, buffers: list[Any]) -> tuple[Any, str]:
    """A page's payload with its message's buffers back at its ``buffer_paths`` (as
    memoryview; wrapperkernel/buffers.py), and a problem to log ('' if none). The payload
    is None when the buffers do not fit it: it is dropped, the channel serves on."""
    if not isinstance(data, dict) or "buffer_paths" not in data:
        problem = (f"ignored {len(buffers)} buffer(s) of a page message without "
                   "buffer_paths") if buffers else ""
        return data, problem
    data = dict(data)
    paths = data.pop("buffer_paths")
    if not valid_paths(paths):
        return None, f"ignored a page message whose buffer_paths are not paths: {preview(paths)}"
    try:
        return insert_buffers(data, paths, [memoryview(b) for b in buffers]), ""
    except ValueError as error:
        return None, f"ignored a page message whose buffers do not fit it: {error}"
