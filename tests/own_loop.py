"""Run a coroutine to completion on an event loop of its own, on a thread of its own.

Once the browser tests ran, Playwright's event loop is running in the test thread, and
``asyncio.run`` there raises "cannot be called from a running event loop". Tests that
drive the kernel's asyncio code directly use ``run`` instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
    """``asyncio.run(coroutine)`` on a new thread; its result, or its exception."""
    outcome: dict[str, Any] = {}

    def main() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine)
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=main, name="own-event-loop", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"the coroutine did not finish within {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
