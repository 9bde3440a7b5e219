"""The address channel as cell code sees it: ``from wrapperkernel import comms``.

Owns the user-facing surface (DESIGN.md, "User API"): the module functions; the
``Listener`` type and ``CommsError`` live in ``wrapperkernel.comms_base`` and are
re-exported here. The work is done by a ``CommsBackend``: in a worker, its
``AddressRuntime`` (``wrapperkernel.worker.address_runtime``), which installs itself at
startup (``comms_base.install_backend``); see docs/comms-api.md.

Must never: hold mutable state (the backend is the worker's), or import anything heavy at
import time (no IPython, no pydantic): importing this module must stay cheap everywhere,
inside the kernel or not.

Threading model, in short: values from the page arrive on the worker's reader thread.
Callbacks given to ``subscribe`` run on ONE dispatcher thread, in arrival order, never
two at once; a listener is fed directly, so a slow callback never holds it up. Every
function here may be called from any thread, including from inside a callback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wrapperkernel.comms_base import CommsError, Listener, find_backend

__all__ = [
    "CommsError",
    "Listener",
    "listen",
    "read_value",
    "send",
    "start",
    "subscribe",
    "sync",
    "unsubscribe",
]

def start(timeout_s: float | None = None) -> None:
    """Make sure the page client is installed and connected; blocks until it is.

    Waits for the kernel's answer: it installs the client in the open notebook page and
    gives up after about 3 s when no page connects (nbclient, papermill, jupyter console,
    closed tab). ``timeout_s`` bounds the wait (default 10 s). Raises ``CommsError``
    with the kernel's explanation. Calling it again after a failure retries. ``%widgets``
    does the same.
    """
    find_backend().start(timeout_s)


def send(address: str, value: Any) -> None:
    """Send ``value`` (any JSON value: dict, list, str, int, float, bool, None) to ``address``.

    Fast once the channel is connected: the value is handed to the kernel and the call
    returns without waiting for delivery. If delivery fails, the *next* call of this
    module raises ``CommsError`` saying how many values were not delivered; call
    ``sync()`` to wait for everything sent so far. The first call (or the first after a
    failure) blocks like ``start()``, and a call blocks while the values not yet
    delivered fill the queue bound (``WRAPPERKERNEL_COMM_QUEUE_BYTES``, 1 MiB): a page
    that reads slowly slows the sender down instead of filling memory; Ctrl-C ends that
    wait. ``address`` is a non-empty string not starting with '#' (ValueError
    otherwise); a value that is not JSON (a set, an object, NaN) raises TypeError.
    """
    find_backend().send(address, value)


def subscribe(address: str, callback: Callable[[str, Any], object], *,
              wait_for_page: bool = True) -> int:
    """Call ``callback(address, value)`` for every value the page sends to ``address``.

    Returns an id for ``unsubscribe``. Callbacks run on one dispatcher thread, in the
    order values arrived, never two at once (also across addresses), so they must not
    block for long. A callback that raises prints its traceback to stderr (it shows in
    the output of the running or last cell) and later values are still delivered.
    Blocks like ``start()`` if the channel is not connected yet; with
    ``wait_for_page=False`` it neither installs the page client nor waits, and the
    callback gets the values of any page that connects later (Voila runs a notebook
    before its page connects).
    """
    return find_backend().subscribe(address, callback, wait_for_page=wait_for_page)


def unsubscribe(subscription_id: int) -> bool:
    """Stop the callback registered under ``subscription_id``; False if there was none.

    Values already queued for it are not delivered. Never blocks, never raises for an
    earlier failed send.
    """
    return find_backend().unsubscribe(subscription_id)


def listen(address: str, *, latest_only: bool = False) -> Listener:
    """A ``Listener``: iterate over (or ``get``) the values the page sends to ``address``.

    With ``latest_only=True`` only the newest unread value is kept (for sliders and other
    controls whose intermediate positions do not matter). Close it (or use ``with``) when
    done. Blocks like ``start()`` if the channel is not connected yet.
    """
    return find_backend().listen(address, latest_only=latest_only)


def read_value(address: str, timeout: float | None = None) -> Any:
    """Ask the page for its current value of ``address`` and return it; blocks.

    The page answers from its synced variable for the address
    (``wrapperkernel_comm.newSyncedVariable``). Raises ``CommsError`` when the page has
    no value for it or does not answer within ``timeout`` seconds. ``None`` means the
    kernel's setting ``WRAPPERKERNEL_READ_TIMEOUT_S`` (3 s unless set).
    """
    return find_backend().read_value(address, timeout)


def sync(timeout_s: float | None = None) -> None:
    """Block until everything sent before this call has been delivered to the page
    (acknowledged by it, or handed to a connection that went away since).

    Raises ``CommsError`` saying how many values were not delivered, if any. Use it before a cell ends
    when the page must have every value, or to surface delivery errors at a known point.
    ``timeout_s`` bounds the wait (default 10 s).
    """
    find_backend().sync(timeout_s)
