"""Gives the kernel ``jupyter_client.Session`` without paying for all of jupyter_client.

``import jupyter_client.session`` first runs the package ``__init__``, which imports the
clients, managers and provisioners (about 70 ms here) that a kernel never uses. The kernel
needs only ``session.py``, so it registers a bare parent package whose search path is the
real one and imports the submodule directly.

``session.py`` also imports tornado (for a type and an isinstance check on ``ZMQStream``,
which the kernel never passes it) and dateutil (to turn the ``date`` of every header into
a ``datetime``): about 2.5 MB of the kernel's memory, and curses, ctypes, decimal and
importlib.resources with them. While ``session.py`` is imported, small stand-ins take
their place in ``sys.modules``; they are removed right after, so a later ``import
tornado`` or ``import dateutil`` gets the real package. The stand-ins behave as the real
names do for everything ``Session`` calls: the ISO 8601 dates that ``jsonutil`` accepts
are parsed by ``datetime.fromisoformat`` (it reads all of them from Python 3.11 on, and
the kernel serialises the result back to the same text), and the rare calls that need the
real thing (a naive date's local zone, ``IOLoop.current()``) import it then.

If anything about either shortcut fails, the ordinary import is used: correctness never
depends on them.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any


def import_session_class() -> Any:
    if "jupyter_client" not in sys.modules:
        spec = importlib.util.find_spec("jupyter_client")
        if spec is not None and spec.submodule_search_locations:
            bare = types.ModuleType("jupyter_client")
            bare.__path__ = list(spec.submodule_search_locations)
            bare.__spec__ = spec
            bare.__file__ = spec.origin
            sys.modules["jupyter_client"] = bare
    try:
        with _stand_ins():
            module = importlib.import_module("jupyter_client.session")
    except ImportError:
        sys.modules.pop("jupyter_client", None)
        sys.modules.pop("jupyter_client.session", None)
        sys.modules.pop("jupyter_client.jsonutil", None)
        module = importlib.import_module("jupyter_client.session")
    return module.Session


def _local_zone() -> Any:
    from dateutil.tz import tzlocal

    return tzlocal()


class _IOLoop:
    """tornado's ``IOLoop`` as ``session.py`` uses it: ``IOLoop.current()``."""

    @staticmethod
    def current(*args: Any, **kwargs: Any) -> Any:
        from tornado.ioloop import IOLoop

        return IOLoop.current(*args, **kwargs)


class _ZMQStream:
    """Never instantiated: no object the kernel gives ``Session`` is a ``ZMQStream``."""


def _module(name: str, **names: Any) -> types.ModuleType:
    module = types.ModuleType(name, "a stand-in while jupyter_client.session is imported")
    module.__dict__.update(names)
    return module


@contextlib.contextmanager
def _stand_ins() -> Iterator[None]:
    """The stand-ins (see the module docstring), for the names not imported yet."""
    if sys.version_info < (3, 11):  # fromisoformat reads no "Z" before 3.11
        yield
        return
    stand_ins = {
        "dateutil": _module("dateutil"),
        "dateutil.parser": _module("dateutil.parser", isoparse=datetime.datetime.fromisoformat),
        "dateutil.tz": _module("dateutil.tz", tzlocal=_local_zone),
        "tornado": _module("tornado"),
        "tornado.ioloop": _module("tornado.ioloop", IOLoop=_IOLoop),
        "zmq.eventloop": _module("zmq.eventloop"),
        "zmq.eventloop.zmqstream": _module("zmq.eventloop.zmqstream", ZMQStream=_ZMQStream),
    }
    added = {name: module for name, module in stand_ins.items() if name not in sys.modules}
    if len(added) != len(stand_ins):  # one of them is loaded already: nothing to save
        yield
        return
    import zmq  # the real parent of zmq.eventloop

    sys.modules.update(added)
    try:
        yield
    finally:
        for name, module in added.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
        if getattr(zmq, "eventloop", None) is added["zmq.eventloop"]:
            del zmq.eventloop
