"""Binary values of the address channel: bytes-like objects inside JSON values, and the
``buffer_paths`` that carry them as binary buffers on every hop (docs/comms-api.md,
"Binary values").

A value may hold ``bytes``, ``bytearray``, ``memoryview`` or any object with the buffer
protocol (a numpy array) anywhere in its lists and dicts. On the way, each such object
leaves the JSON: its slot becomes ``null``, its place is a path of keys and indices, and
its bytes travel as one buffer, in the order of the paths, as ipywidgets does with its
state. ``extract`` takes them out, ``insert`` puts them back (as ``memoryview``), and
``size`` counts a value's bytes on the way (its JSON plus its buffers).

Pure and standard-library only: both processes import it, on hot paths.

Must never: copy a contiguous buffer when it takes it out (a ``memoryview`` cast to bytes
is enough), take a ``str`` for bytes, or change the value it is given (``extract``
returns a copy of the containers it changed; ``insert`` fills a value just decoded).
"""

from __future__ import annotations

import json
from typing import Any

Path = list[str | int]

# Types that are JSON on their own: never buffers, nothing inside.
_SCALARS = (str, int, float, bool, type(None))


def as_buffer(obj: Any) -> memoryview | None:
    """``obj``'s bytes as a flat byte view, or None if it is not bytes-like. A view that is
    not contiguous (a strided numpy slice) is copied, in C order."""
    if isinstance(obj, _SCALARS) or isinstance(obj, (list, tuple, dict)):
        return None
    try:
        view = memoryview(obj)
    except TypeError:
        return None
    if view.contiguous:
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    return memoryview(view.tobytes())


def extract(value: Any) -> tuple[Any, list[Path], list[memoryview]]:
    """``value`` with every bytes-like object replaced by None, the paths of those slots,
    and their bytes, in the same order. Containers without buffers are returned as they
    are; the others are copied (tuples become lists, as in JSON)."""
    paths: list[Path] = []
    buffers: list[memoryview] = []
    out = _extract(value, [], paths, buffers, set())
    return out, paths, buffers


def _extract(value: Any, path: Path, paths: list[Path], buffers: list[memoryview],
             active: set[int]) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (dict, list, tuple)):
        if id(value) in active:
            return value  # a cycle: not JSON, and the caller's encoder says so
        active.add(id(value))
        before = len(buffers)
        if isinstance(value, dict):
            items: Any = {key: _extract(item, [*path, key], paths, buffers, active)
                          for key, item in value.items()}
        else:
            items = [_extract(item, [*path, index], paths, buffers, active)
                     for index, item in enumerate(value)]
        active.discard(id(value))
        changed = len(buffers) > before or isinstance(value, tuple)
        return items if changed else value
    buffer = as_buffer(value)
    if buffer is None:
        return value  # not JSON either: the caller's encoder says so
    paths.append(path)
    buffers.append(buffer)
    return None


def insert(value: Any, paths: list[Path], buffers: list[Any]) -> Any:
    """Put each buffer (as a ``memoryview``) at its path in ``value``, a value just decoded
    from JSON; returns the value (a new one when a path is empty: the value is a buffer).
    Raises ``ValueError`` for paths and buffers that do not match."""
    if len(paths) != len(buffers):
        raise ValueError(f"{len(paths)} buffer paths for {len(buffers)} buffers")
    for path, buffer in zip(paths, buffers, strict=True):
        view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
        if not path:
            value = view
            continue
        container = value
        for key in path[:-1]:
            container = _step(container, key, path)
        last = path[-1]
        _step(container, last, path)  # it must exist (a null slot)
        container[last] = view
    return value


def _step(container: Any, key: Any, path: Path) -> Any:
    if isinstance(container, dict) and isinstance(key, str) and key in container:
        return container[key]
    if isinstance(container, list) and isinstance(key, int) and not isinstance(key, bool) \
            and 0 <= key < len(container):
        return container[key]
    raise ValueError(f"buffer path {path!r} does not lead to a slot of the value")


def valid_paths(paths: Any) -> bool:
    """Whether ``paths`` is a list of paths (lists of strings and non-negative ints)."""
    return isinstance(paths, list) and all(
        isinstance(path, list) and all(
            isinstance(key, str) or (type(key) is int and key >= 0) for key in path)
        for path in paths)


def size(value: Any) -> int:
    """The bytes ``value`` takes on the way: its JSON (buffers as null) plus its buffers."""
    extra = 0

    def count(obj: Any) -> None:
        nonlocal extra
        buffer = as_buffer(obj)
        if buffer is None:
            raise TypeError(f"{type(obj).__name__} is not JSON and not bytes-like")
        extra += buffer.nbytes

    return len(json.dumps(value, separators=(",", ":"), default=count)) + extra
