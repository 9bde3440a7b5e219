"""The threads wrapperkernel runs in the user's process, hidden from the debugger.

The worker's own threads (the kernel reader, the output flusher and pumps, the comm
callback dispatcher and send flusher, the widgets' and charts' flushers) are machinery,
not the user's program. debugpy's pydevd skips a thread that carries
``pydev_do_not_trace`` (it never traces it, so never pauses it at a breakpoint or a
"pause all") and leaves out of its thread list one that carries
``is_pydev_daemon_thread``. So while the program is stopped at a breakpoint, page
values still arrive, subscribe callbacks still run and output still flows, and the
debugger's thread list shows only the user's threads.

The attributes must be set before the thread starts: pydevd traces a new thread from
its first line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def hide_from_debugger(thread: threading.Thread) -> threading.Thread:
    thread.pydev_do_not_trace = True  # type: ignore[attr-defined]
    thread.is_pydev_daemon_thread = True  # type: ignore[attr-defined]
    return thread


def internal_thread(target: Callable[..., Any], name: str, args: tuple[Any, ...] = ()) -> threading.Thread:
    """A daemon thread of wrapperkernel's own, not started yet."""
    return hide_from_debugger(threading.Thread(target=target, name=name, args=args, daemon=True))
