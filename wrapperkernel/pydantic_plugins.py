"""Builds wrapperkernel's own pydantic models without looking for pydantic plugins.

The first validator pydantic builds in a process asks ``pydantic.plugin._loader`` for the
installed plugins, and that module imports ``importlib.metadata`` to read entry points
(with ``email``, ``zipfile``, ``csv`` and ``tempfile``): 2.4 MiB and about 28 ms in each
of the kernel and the worker here (docs/benchmarks.md, the memory-bench section). Plugins
observe validation (logfire is one); the kernel's frames and messages are internal and
nobody asks to observe them.

``hold_back()`` puts a stand-in for that module in ``sys.modules`` whose ``get_plugins``
finds none, so the models wrapperkernel defines meanwhile get plain validators.
``release()`` takes it away again, and the next validator pydantic builds imports the real
module, finds the real plugins and keeps them for every model after it:

- the kernel process holds them back for its whole life (it never runs user code);
- the worker holds them back while it starts, and releases them before the first request,
  so the models of the user's program get their plugins as they would anywhere else.

The stand-in is used only with the pydantic 2 releases whose plugin loader this was
written against; with any other version both calls do nothing.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable

LOADER = "pydantic.plugin._loader"
# pydantic 2.5 added plugins and the loader's get_plugins(); the shape is the same since.
KNOWN_MAJOR = "2"

_stand_in: types.ModuleType | None = None


def _no_plugins() -> Iterable[object]:
    return ()


def hold_back() -> None:
    """Until ``release()``, pydantic validators are built without plugins."""
    global _stand_in
    if LOADER in sys.modules:
        return  # already looked up (or held back): nothing left to save
    from pydantic.version import VERSION

    if VERSION.split(".")[0] != KNOWN_MAJOR:
        return
    _stand_in = types.ModuleType(LOADER, "wrapperkernel's stand-in: no plugins")
    _stand_in.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[LOADER] = _stand_in


def release() -> None:
    """Validators built from now on get the installed plugins."""
    global _stand_in
    if _stand_in is not None and sys.modules.get(LOADER) is _stand_in:
        del sys.modules[LOADER]
    _stand_in = None
