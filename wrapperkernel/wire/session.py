"""Gives the kernel ``jupyter_client.Session`` without paying for all of jupyter_client.

``import jupyter_client.session`` first runs the package ``__init__``, which imports the
clients, managers and provisioners (about 70 ms here) that a kernel never uses. The kernel
needs only ``session.py``, so it registers a bare parent package whose search path is the
real one and imports the submodule directly. If anything about that fails, the ordinary
import is used: correctness never depends on the shortcut.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
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
        module = importlib.import_module("jupyter_client.session")
    except ImportError:
        sys.modules.pop("jupyter_client", None)
        sys.modules.pop("jupyter_client.session", None)
        module = importlib.import_module("jupyter_client.session")
    return module.Session
